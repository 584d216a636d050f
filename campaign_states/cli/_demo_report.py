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

if TYPE_CHECKING:
    from ._demo import Planned

__all__ = ["Action", "DemoReport", "Role", "Row", "analyse", "render_report"]


class Role(enum.Enum):
    """What the script does to a campaign."""

    COMEBACK = "archive, unarchive, resume"
    BULK = "bulk archive"
    SEGMENT = "segment archive"
    CONTROL = "kept running"


@attrs.frozen(kw_only=True)
class Action:
    """One lifecycle call the demo made, stamped on ``CLOCK_BOOTTIME``."""

    kind: str
    label: str
    campaign_ids: tuple[str, ...]
    called: float
    returned: float


@attrs.frozen(kw_only=True)
class Row:
    """One campaign's line in the report (sends counted from the sink's records).

    ``results`` is what the gates recorded in the store's results for it (``None`` when not
    read); the other counts come from the sink. ``None`` means "does not apply".
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
        broken_gate: Whether the deliberately broken gate was used.
    """

    rows: tuple[Row, ...]
    violations: int
    total_sends: int
    control_after: int
    problems: tuple[str, ...]
    broken_gate: bool = False

    @property
    def exit_code(self) -> int:
        """1 if any delivery happened after an archive returned, or nothing was proved."""
        return 1 if self.violations or self.problems else 0


def _count(times: array[float], lo: float, hi: float) -> int:
    """Sends stamped in ``[lo, hi)``."""
    return sum(1 for t in times if lo <= t < hi)


def analyse(  # noqa: PLR0912 (one pass over the sink classifies each send; split: issue 12)
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
    archived: dict[str, Action] = {}
    resumed: dict[str, Action] = {}
    for a in actions:
        for cid in a.campaign_ids:
            if a.kind == "archive":
                archived.setdefault(cid, a)
            elif a.kind == "resume":
                resumed[cid] = a
    last_return = max((a.returned for a in archived.values()), default=math.inf)
    n, stride = len(planned), len(reasons)
    denied_raw = list(counters.denied)
    rows, violations, control_after, mismatched = [], 0, 0, []
    for c in planned:
        times = sends.get(c.index, array("d"))
        denied: dict[str, int] = {}
        for w in range(workers):
            base = (w * n + c.index) * stride
            for i, reason in enumerate(reasons):
                if denied_raw[base + i]:
                    name = getattr(reason, "name", str(reason))
                    denied[name] = denied.get(name, 0) + denied_raw[base + i]
        recorded = None if results is None else results.get(c.id, 0)
        if recorded is not None and recorded != len(times):
            mismatched.append(f"{c.id} sink {len(times):,} vs store {recorded:,}")
        arch = archived.get(c.id)
        if arch is None:
            control_after += _count(times, last_return, math.inf)
            rows.append(
                Row(
                    id=c.id,
                    channels=c.channels,
                    role=c.role,
                    sent_total=len(times),
                    results=recorded,
                    sent_before=None,
                    sent_during=None,
                    sent_after=None,
                    sent_after_resume=None,
                    denied=denied,
                    latency=None,
                )
            )
            continue
        resume = resumed.get(c.id)
        silent_until = resume.called if resume is not None else math.inf
        after = _count(times, math.nextafter(arch.returned, math.inf), silent_until)
        violations += after
        rows.append(
            Row(
                id=c.id,
                channels=c.channels,
                role=c.role,
                sent_total=len(times),
                results=recorded,
                sent_before=_count(times, -math.inf, arch.called),
                sent_during=_count(times, arch.called, math.nextafter(arch.returned, math.inf)),
                sent_after=after,
                sent_after_resume=None
                if resume is None
                else _count(times, resume.called, math.inf),
                denied=denied,
                latency=arch.returned - arch.called,
            )
        )
    problems = []
    states = list(counters.ready)
    if any(s != 2 for s in states):
        problems.append(
            f"{sum(s != 2 for s in states)} worker(s) did not finish cleanly, "
            "so some sends may be missing from the sink"
        )
    if mismatched and not broken_gate:
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
    return DemoReport(
        rows=tuple(rows),
        violations=violations,
        total_sends=sum(len(t) for t in sends.values()),
        control_after=control_after,
        problems=tuple(problems),
        broken_gate=broken_gate,
    )


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
