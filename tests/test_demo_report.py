"""The demo's report reads well in an ordinary terminal: nothing cut at 80 columns."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from campaign_states.cli import _demo_report
from campaign_states.cli._demo_report import CampaignTally, DemoReport, Role, render_report

ROLES = [Role.COMEBACK, Role.BULK, Role.BULK, Role.SEGMENT, Role.SEGMENT] + [Role.CONTROL] * 5
CHANNELS = ["email", "push", "sms", "in_app", "webhook"]
DENIED = {"ARCHIVED": 12_345_678, "SEGMENT_ARCHIVED": 987_654, "STOPPED": 80_588}
ARCHIVED_ROWS = 5


def report(*, violations: int = 0, problems: tuple[str, ...] = ()) -> DemoReport:
    """Figures as large as a long run on a fast machine gives (millions of denials)."""
    rows = []
    for i, role in enumerate(ROLES):
        archived = role is not Role.CONTROL
        rows.append(
            CampaignTally(
                id=f"c-{i:02d}",
                channels=(CHANNELS[i % 5], CHANNELS[(i + 3) % 5])
                if i % 2 == 0
                else (CHANNELS[i % 5],),
                role=role,
                sent_total=1_177_612 + i,
                results=1_177_612 + i,
                sent_before=1_150_321 if archived else None,
                sent_during=12_345 if archived else None,
                sent_after=(violations if i == 1 else 0) if archived else None,
                sent_after_resume=132_150 if role is Role.COMEBACK else None,
                denied=dict(DENIED) if archived else {},
                latency=0.5623 if archived else None,
            )
        )
    return DemoReport(
        rows=tuple(rows),
        violations=violations,
        total_sends=12_629_084,
        control_after=911_190,
        problems=problems,
    )


def rendered(rep: DemoReport, width: int) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=False)
    render_report(rep, console)
    return out.getvalue()


FIGURES = [
    "1,177,612",
    "1,150,321",
    "12,345",
    "132,150",
    "562 ms",
    "in results",
    "c-09",
    f"{sum(DENIED.values()):,}",  # one campaign's denials
    *(f"{n * ARCHIVED_ROWS:,}" for n in DENIED.values()),  # by reason, over all campaigns
    *(name.lower() for name in DENIED),
]


def readable(text: str, width: int) -> None:
    """No cell cut ("…"), no line past ``width``, every figure printed whole."""
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= width, text
    for figure in FIGURES:
        assert figure in text, (figure, text)


class TestReadableAt80Columns:
    """Every figure that matters is printed whole at 80 columns (and wider)."""

    @pytest.mark.parametrize("width", [80, 100, 200])
    def test_pass_report(self, width: int):
        text = rendered(report(), width)
        readable(text, width)
        assert "PASS: 0 deliveries after an archive returned" in " ".join(text.split())

    def test_fail_report(self):
        text = rendered(report(violations=3), 80)
        readable(text, 80)
        assert "FAIL: 3 deliveries after an archive returned (c-01 3)" in " ".join(text.split())

    def test_inconclusive_report(self):
        text = rendered(report(problems=("2 worker(s) did not finish cleanly",)), 80)
        readable(text, 80)
        assert "INCONCLUSIVE: 2 worker(s) did not finish cleanly." in " ".join(text.split())

    def test_every_campaign_and_reason_is_listed(self):
        text = rendered(report(), 80)
        for i in range(len(ROLES)):
            assert f"c-{i:02d}" in text
        for word in ("archive,", "unarchive,", "resume", "bulk archive", "kept running"):
            assert word in text

    def test_broken_variant_is_caught(self, monkeypatch: pytest.MonkeyPatch):
        """Columns that cut instead of wrapping (the old report) fail the check."""

        def cutting(table: Table, name: str, *, right: bool = False) -> None:
            table.add_column(name, justify="right" if right else "left", no_wrap=True)

        monkeypatch.setattr(_demo_report, "_column", cutting)
        with pytest.raises(AssertionError):
            readable(rendered(report(), 80), 80)
