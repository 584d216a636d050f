"""Output: rich tables for people, plain JSON for scripts.

User data (names, ids, actors, causes, error messages) goes through `safe` and is wrapped in
`rich.text.Text`, never passed as a markup string: a campaign named ``[red]x`` prints as
typed, and one named ``"\x1b[31mx"`` prints ``\x1b[31mx`` as visible text instead of turning
the terminal red (or, with OSC ``\x1b]0;``, retitling the window). JSON output needs none
of this: `json.dumps` escapes every control character itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from campaign_states import BulkResult, Campaign, HistoryEntry, Outcome, Results, Segment

__all__ = [
    "STATE_STYLE",
    "bulk_json",
    "bulk_table",
    "campaign_json",
    "campaigns_table",
    "console",
    "counts_line",
    "history_json",
    "history_table",
    "print_json",
    "results_json",
    "segment_json",
    "safe",
    "segments_table",
    "text",
    "when",
]

STATE_STYLE = {
    "active_running": "green",
    "active_stopped": "yellow",
    "archived": "dim",
    "active": "green",
}

_OUTCOME_STYLE = {
    Outcome.CHANGED: "green",
    Outcome.UNCHANGED: "cyan",
    Outcome.REFUSED: "red",
    Outcome.NOT_FOUND: "red",
}


_NO_REASON = {Outcome.NOT_FOUND: "no such campaign", Outcome.UNCHANGED: "already there"}


def _escape(cp: int) -> str:
    named = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
    return named.get(cp) or (f"\\x{cp:02x}" if cp <= 0xFF else f"\\u{cp:04x}")


# C0 controls, DEL and C1 controls (0x9b is a one-byte CSI to many terminals), plus the
# bidirectional overrides and isolates, which reorder what is shown ("Trojan Source").
_CONTROLS: Final = {
    cp: _escape(cp)
    for cp in (
        *range(0x20),
        *range(0x7F, 0xA0),
        0x061C,
        0x200E,
        0x200F,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    )
}


def safe(value: object) -> str:
    """``value`` as text with every control character shown as an escape (``\\x1b``).

    A terminal then shows exactly what is stored and interprets none of it. Applied to
    everything user-supplied the CLI prints, in tables and plain lines alike.
    """
    s = value if isinstance(value, str) else str(value)
    # isprintable() is False for every character `_CONTROLS` holds: the common case costs
    # one C scan.
    return s if s.isprintable() else s.translate(_CONTROLS)


def text(value: object, style: str = "") -> Text:
    """User data as a rich `Text`: control characters escaped, no markup interpreted."""
    return Text(safe(value), style=style)


def console(*, stderr: bool = False) -> Console:
    """A console on the current stdout/stderr (so click's test runner captures it)."""
    # Off a terminal rich defaults to 80 columns and folds ids; pipes and CI logs are wide.
    width = None if os.environ.get("COLUMNS", "").strip().isdigit() else 200
    con = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not con.is_terminal and width is not None:
        con.width = width
    return con


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout (no colour, stable key order)."""
    click.echo(json.dumps(obj, indent=2))


def when(timestamp: float) -> str:
    """A wall-clock UNIX time as ISO 8601 UTC."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def _title(title: str | None) -> Text | None:
    # A str title would be parsed as markup: an id holding "[" would vanish or restyle it.
    return None if title is None else text(title, style="italic")


def _state_text(state: str) -> Text:
    return text(state, style=STATE_STYLE.get(state, ""))


def campaign_json(c: Campaign) -> dict[str, Any]:
    """A campaign as a JSON-ready dict."""
    return {
        "id": c.id,
        "name": c.name,
        "state": c.state.value,
        "channels": sorted(ch.value for ch in c.channels),
        "segments": sorted(c.segments),
        "content": c.content,
        "version": c.version,
        "archive_cause": c.archive_cause,
        "created_at": when(c.created_at),
    }


def segment_json(s: Segment) -> dict[str, Any]:
    """A segment as a JSON-ready dict."""
    return {"id": s.id, "name": s.name, "state": s.state.value, "version": s.version}


def results_json(r: Results) -> dict[str, Any]:
    """Results as a JSON-ready dict."""
    return {
        "delivered": {
            ch.value: n for ch, n in sorted(r.delivered.items(), key=lambda i: i[0].value)
        },
        "impressions": r.impressions,
        "total": r.total,
    }


def history_json(h: HistoryEntry) -> dict[str, Any]:
    """A history entry as a JSON-ready dict."""
    return {
        "seq": h.seq,
        "time": when(h.time),
        "trigger": h.trigger,
        "from": None if h.from_state is None else h.from_state.value,
        "to": h.to_state.value,
        "actor": h.actor,
        "cause": h.cause,
        "version": h.version,
    }


def campaigns_table(campaigns: Iterable[Campaign], *, title: str | None = None) -> Table:
    """One row per campaign."""
    table = Table(title=_title(title))
    for col in ("id", "name", "state", "channels", "segments", "version"):
        table.add_column(col, overflow="fold")
    for c in campaigns:
        table.add_row(
            text(c.id),
            text(c.name),
            _state_text(c.state.value),
            text(", ".join(sorted(ch.value for ch in c.channels))),
            text(", ".join(sorted(c.segments)) or "-"),
            str(c.version),
        )
    return table


def segments_table(segments: Iterable[Segment]) -> Table:
    """One row per segment."""
    table = Table()
    for col in ("id", "name", "state", "version"):
        table.add_column(col, overflow="fold")
    for s in segments:
        table.add_row(text(s.id), text(s.name), _state_text(s.state.value), str(s.version))
    return table


def history_table(entries: Sequence[HistoryEntry], *, title: str | None = None) -> Table:
    """One row per history entry, oldest first."""
    table = Table(title=_title(title))
    for col in ("seq", "time (UTC)", "trigger", "from -> to", "actor", "cause", "version"):
        table.add_column(col, overflow="fold")
    for h in entries:
        src = "-" if h.from_state is None else h.from_state.value
        table.add_row(
            str(h.seq),
            when(h.time).replace("+00:00", ""),
            text(h.trigger),
            text(f"{src} -> {h.to_state.value}"),
            text(h.actor or "-"),
            text(h.cause or "-"),
            str(h.version),
        )
    return table


def bulk_table(result: BulkResult, *, verb: str) -> Table:
    """Per-id outcomes of a bulk action."""
    table = Table(title=_title(f"{verb} {len(result)} campaign(s)"))
    for col in ("id", "outcome", "state", "reason"):
        table.add_column(col, overflow="fold")
    for cid, item in result.items():
        state = item.campaign.state.value if item.campaign is not None else "-"
        table.add_row(
            text(cid),
            text(item.outcome.value, style=_OUTCOME_STYLE[item.outcome]),
            _state_text(state),
            text(item.reason or _NO_REASON.get(item.outcome, "")),
        )
    return table


def bulk_json(result: BulkResult) -> dict[str, Any]:
    """Per-id outcomes as a JSON-ready dict (request order kept); ``from`` is not known
    per id in a bulk call (null), as it is for a single id."""
    return {
        cid: {
            "outcome": item.outcome.value,
            "from": None,
            "state": None if item.campaign is None else item.campaign.state.value,
            "reason": item.reason,
        }
        for cid, item in result.items()
    }


def counts_line(counts: Mapping[Outcome, int]) -> str:
    """``2 changed, 1 not found`` (zero counts omitted)."""
    parts = [f"{n} {o.value.replace('_', ' ')}" for o, n in counts.items() if n]
    return ", ".join(parts) or "nothing to do"
