"""The demo's verdict, computed from the sink's records and the archive-return times alone.

A send is a violation when its ``CLOCK_BOOTTIME`` stamp is later than the moment the
archive that covers its campaign returned, and earlier than the moment that campaign's
resume was called (only the scripted comeback campaign is resumed). Sends between an
archive's call and its return are allowed: a gate in another process admits until its next
refresh shows the change, and that is exactly what the archive waits out (commit time plus
lease plus grace) before it returns.
"""

from __future__ import annotations

import enum
import math
from array import array
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._demo_worker import Counters, read_sink
from ._experiment import FINISHED, Action, Silence, silences

if TYPE_CHECKING:
    from ._demo import Planned

__all__ = ["Action", "CampaignTally", "DemoReport", "Role", "analyse", "render_report"]


class Role(enum.Enum):
    """What the script does to a campaign."""

    COMEBACK = "archive, unarchive, resume"
    BULK = "bulk archive"
    SEGMENT = "segment archive"
    CONTROL = "kept running"


@attrs.frozen(kw_only=True)
class CampaignTally:
    """One campaign's sends and denials, as the report's line for it shows them.

    ``results`` is what the gates recorded in the store's results for it (``None`` when not
    read); the other counts come from the sink. ``None`` means "does not apply": the
    ``sent_*`` windows and ``latency`` for a campaign never archived, ``sent_after_resume``
    for one never resumed.
    """

    id: str
    channels: tuple[str, ...]
    role: Role
    sent_total: int
    results: int | None
    sent_before: int | None
    sent_during: int | None
    sent_after: int | None
    sent_after_resume: int | None
    denied: dict[str, int]
    latency: float | None


@attrs.frozen(kw_only=True)
class DemoReport:
    """What the demo found.

    Attributes:
        rows: One per campaign.
        violations: Sends recorded after the archive covering their campaign returned.
        total_sends: Every send in the sink.
        control_after: Sends by never-archived campaigns after the last archive returned
            (proof the sink was recording while the archived ones were silent).
        problems: Why the run is inconclusive (a worker failed, nothing recorded...).
        broken_gate: Whether the workers' gates were wrapped (the test suite's
            deliberately broken gate).
    """

    rows: tuple[CampaignTally, ...]
    violations: int
    total_sends: int
    control_after: int
    problems: tuple[str, ...]
    broken_gate: bool = False

    @property
    def exit_code(self) -> int:
        """1 if any delivery happened after an archive returned, or nothing was proved."""
        return 1 if self.violations or self.problems else 0


def _denials(
    raw: Sequence[int], c: Planned, campaigns: int, workers: int, reasons: Sequence[Any]
) -> dict[str, int]:
    """One campaign's denials by reason name, summed over the workers' counters (``raw``)."""
    stride = len(reasons)
    out: dict[str, int] = {}
    for w in range(workers):
        base = (w * campaigns + c.index) * stride
        for i, reason in enumerate(reasons):
            if raw[base + i]:
                name = getattr(reason, "name", str(reason))
                out[name] = out.get(name, 0) + raw[base + i]
    return out


def _tally(
    c: Planned, times: array[float], silence: Silence | None, **fields: Any
) -> CampaignTally:
    """Count one campaign's sends in its silence's windows (none if it was never archived)."""
    windows: tuple[int | None, ...] = (None, None, None, None)
    if silence is not None:
        before, during, late, resumed = silence.windows(times)
        windows = (before, during, late, None if silence.until == math.inf else resumed)
    return CampaignTally(
        id=c.id,
        channels=c.channels,
        role=c.role,
        sent_total=len(times),
        sent_before=windows[0],
        sent_during=windows[1],
        sent_after=windows[2],
        sent_after_resume=windows[3],
        latency=None if silence is None else silence.action.returned - silence.action.called,
        **fields,
    )


def analyse(
    planned: Sequence[Planned],
    actions: Sequence[Action],
    *,
    sink: Path,
    counters: Counters,
    workers: int,
    reasons: Sequence[Any],
    results: Mapping[str, int] | None = None,
    broken_gate: bool = False,
) -> DemoReport:
    """Count sends per window from the sink, denials from the workers' counters.

    ``results`` (campaign id -> total in the store's results, read after every gate closed)
    must equal the sink's count: each permit left cleanly after ``still_valid()`` is one
    send and one counted delivery.
    """
    sends = read_sink(sink)
    silenced = silences(actions)
    last_return = max((s.action.returned for s in silenced.values()), default=math.inf)
    denied_raw = list(counters.denied)  # one copy of the shared memory, not one per campaign
    rows, control_after, mismatched = [], 0, []
    for c in planned:
        times = sends.get(c.index, array("d"))
        recorded = None if results is None else results.get(c.id, 0)
        if recorded is not None and recorded != len(times):
            mismatched.append(f"{c.id} sink {len(times):,} vs store {recorded:,}")
        silence = silenced.get(c.id)
        if silence is None:
            control_after += sum(1 for t in times if t >= last_return)
        denied = _denials(denied_raw, c, len(planned), workers, reasons)
        rows.append(_tally(c, times, silence, results=recorded, denied=denied))
    return DemoReport(
        rows=tuple(rows),
        violations=sum(r.sent_after or 0 for r in rows),
        total_sends=sum(len(t) for t in sends.values()),
        control_after=control_after,
        problems=_problems(counters, mismatched if not broken_gate else [], control_after),
        broken_gate=broken_gate,
    )


def _problems(counters: Counters, mismatched: list[str], control_after: int) -> tuple[str, ...]:
    """Why the run proves nothing, if it does not."""
    problems = []
    states = list(counters.ready)
    if any(s != FINISHED for s in states):
        problems.append(
            f"{sum(s != FINISHED for s in states)} worker(s) did not finish cleanly, "
            "so some sends may be missing from the sink"
        )
    if mismatched:
        problems.append(
            "the results the gates recorded in the store differ from the sink ("
            + "; ".join(mismatched)
            + ")"
        )
    if control_after == 0:
        problems.append(
            "no running campaign sent after the last archive returned, so the "
            "silence of the archived ones proves nothing"
        )
    return tuple(problems)


def _num(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _table(title: str, caption: str | None = None) -> Table:
    # Light borders and one space of padding: three narrow tables stacked read well at 80
    # columns, where one wide table had every figure cut ("177,6…").
    return Table(
        title=title,
        caption=caption,
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        title_justify="left",
        caption_justify="left",
    )


def _column(table: Table, name: str, *, right: bool = False) -> None:
    # "fold", never "ellipsis": a narrow terminal wraps a cell, it never cuts a figure.
    table.add_column(name, justify="right" if right else "left", overflow="fold")


def render_report(report: DemoReport, console: Console) -> None:
    """The verdict's evidence as three tables that each fit 80 columns, then the verdict.

    1. every campaign: its script, channels, sends, what the gates recorded, denials;
    2. each archived campaign around its archive: sends before, during and after it;
    3. denials by reason, over all campaigns.
    """
    sends = _table(
        "Sends per campaign (counted from the sink's timestamped records)",
        "in results: what the gates recorded in the store (must equal sent).",
    )
    for col, right in (
        ("campaign", False),
        ("script", False),
        ("channels", False),
        ("sent", True),
        ("in results", True),
        ("denied", True),
    ):
        _column(sends, col, right=right)
    for row in report.rows:
        sends.add_row(
            row.id,
            row.role.value,
            ", ".join(row.channels),
            _num(row.sent_total),
            _num(row.results),
            _num(sum(row.denied.values())),
        )
    console.print(sends)

    archived = [row for row in report.rows if row.sent_after is not None]
    if archived:
        around = _table(
            "Around each archive",
            "during: sent between the archive call and its return (a gate admits until it "
            "has installed the change; the archive returns once every gate acknowledged it).",
        )
        for col, right in (
            ("campaign", False),
            ("before archive", True),
            ("during", True),
            ("after archive returned", True),
            ("after resume", True),
            ("archive took", True),
        ):
            _column(around, col, right=right)
        for row in archived:
            after = Text(_num(row.sent_after), style="bold red" if row.sent_after else "green")
            around.add_row(
                row.id,
                _num(row.sent_before),
                _num(row.sent_during),
                after,
                _num(row.sent_after_resume),
                "-" if row.latency is None else f"{row.latency * 1000:,.0f} ms",
            )
        console.print()
        console.print(around)

    by_reason: dict[str, tuple[int, list[str]]] = {}
    for row in report.rows:
        for name, n in row.denied.items():
            total, ids = by_reason.get(name, (0, []))
            by_reason[name] = (total + n, [*ids, row.id])
    if by_reason:
        reasons = _table("Denied, by reason")
        _column(reasons, "reason")
        _column(reasons, "denied", right=True)
        _column(reasons, "campaigns")
        for name, (total, ids) in sorted(by_reason.items(), key=lambda i: -i[1][0]):
            reasons.add_row(name.lower(), _num(total), ", ".join(ids))
        console.print()
        console.print(reasons)
    for problem in report.problems:
        console.print(Text(f"INCONCLUSIVE: {problem}.", style="yellow"), soft_wrap=False)
    comeback = [r for r in report.rows if r.sent_after_resume is not None]
    if report.violations:
        bad = ", ".join(f"{r.id} {r.sent_after:,}" for r in report.rows if r.sent_after)
        console.print(
            Text(
                f"FAIL: {report.violations:,} deliveries after an archive returned ({bad})"
                + (" (the deliberately broken gate)" if report.broken_gate else "")
                + ".",
                style="bold red",
            ),
            soft_wrap=False,
        )
        return
    if report.problems:
        return
    extra = "".join(
        f"; {r.id} stayed silent while unarchived and sent {r.sent_after_resume:,} after its resume"
        for r in comeback
    )
    console.print(
        Text(
            f"PASS: 0 deliveries after an archive returned, out of {report.total_sends:,} sends "
            f"recorded; campaigns left running sent {report.control_after:,} after the last "
            f"archive returned{extra}.",
            style="bold green",
        ),
        soft_wrap=False,
    )
