"""Output: rich tables for people, plain JSON for scripts.

User data (names, ids, error messages) is always wrapped in `rich.text.Text`, never passed
as a markup string: a campaign named ``[red]x`` must print as typed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
    "segments_table",
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


def _state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


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
    table = Table(title=title)
    for col in ("id", "name", "state", "channels", "segments", "version"):
        table.add_column(col, overflow="fold")
    for c in campaigns:
        table.add_row(
            Text(c.id),
            Text(c.name),
            _state_text(c.state.value),
            Text(", ".join(sorted(ch.value for ch in c.channels))),
            Text(", ".join(sorted(c.segments)) or "-"),
            str(c.version),
        )
    return table


def segments_table(segments: Iterable[Segment]) -> Table:
    """One row per segment."""
    table = Table()
    for col in ("id", "name", "state", "version"):
        table.add_column(col, overflow="fold")
    for s in segments:
        table.add_row(Text(s.id), Text(s.name), _state_text(s.state.value), str(s.version))
    return table


def history_table(entries: Sequence[HistoryEntry], *, title: str | None = None) -> Table:
    """One row per history entry, oldest first."""
    table = Table(title=title)
    for col in ("seq", "time (UTC)", "trigger", "from -> to", "actor", "cause", "version"):
        table.add_column(col, overflow="fold")
    for h in entries:
        src = "-" if h.from_state is None else h.from_state.value
        table.add_row(
            str(h.seq),
            when(h.time).replace("+00:00", ""),
            Text(h.trigger),
            Text(f"{src} -> {h.to_state.value}"),
            Text(h.actor or "-"),
            Text(h.cause or "-"),
            str(h.version),
        )
    return table


def bulk_table(result: BulkResult, *, verb: str) -> Table:
    """Per-id outcomes of a bulk action."""
    table = Table(title=f"{verb} {len(result)} campaign(s)")
    for col in ("id", "outcome", "state", "reason"):
        table.add_column(col, overflow="fold")
    for cid, item in result.items():
        state = item.campaign.state.value if item.campaign is not None else "-"
        table.add_row(
            Text(cid),
            Text(item.outcome.value, style=_OUTCOME_STYLE[item.outcome]),
            _state_text(state),
            Text(item.reason or _NO_REASON.get(item.outcome, "")),
        )
    return table


def bulk_json(result: BulkResult) -> dict[str, Any]:
    """Per-id outcomes as a JSON-ready dict (request order kept)."""
    return {
        cid: {
            "outcome": item.outcome.value,
            "state": None if item.campaign is None else item.campaign.state.value,
            "reason": item.reason,
        }
        for cid, item in result.items()
    }


def counts_line(counts: Mapping[Outcome, int]) -> str:
    """``2 changed, 1 not found`` (zero counts omitted)."""
    parts = [f"{n} {o.value.replace('_', ' ')}" for o, n in counts.items() if n]
    return ", ".join(parts) or "nothing to do"
