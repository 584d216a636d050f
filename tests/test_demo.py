"""`campaign-states demo`: the zero-after-archive verdict comes from the sink's records."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from array import array
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from campaign_states.cli import _demo, _demo_report, _demo_worker, app
from campaign_states.cli._demo_report import Action, Role


def quiet_console() -> Console:
    return Console(file=io.StringIO(), width=200)


TESTS = Path(__file__).parent


def run_demo_with_broken_gate(*args: str) -> subprocess.CompletedProcess[str]:
    """``campaign-states demo ARGS`` in a fresh process, every worker's gate wrapped in the
    test suite's deliberately broken `race.broken.StaleCacheGate` (not shipped in the wheel)."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", "import race.broken as b; b.demo_with_stale_cache_gate()", *args],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class _Counters:
    """Stand-in for the shared-memory counters: every worker finished, nothing denied."""

    def __init__(self, workers: int, campaigns: int, reasons: int) -> None:
        self.ready = [2] * workers
        self.sent = [0] * (workers * campaigns)
        self.denied = [0] * (workers * campaigns * reasons)
        self.reasons = reasons


def _write_sends(sink: Path, worker: int, campaign: int, times: list[float]) -> None:
    with open(sink / _demo_worker.sink_name(worker, campaign), "ab") as f:
        array("d", times).tofile(f)


class TestVerdictFromSink:
    """The checker counts a send as a violation exactly when it is stamped after the archive
    covering its campaign returned and before that campaign's resume was called."""

    @pytest.fixture
    def setup(self, tmp_path: Path):
        planned = _demo.plan(6)
        actions = [
            Action(kind="archive", label="a", campaign_ids=("c-00",), called=10.0, returned=10.5),
            Action(
                kind="archive", label="b", campaign_ids=("c-01", "c-02"), called=11.0, returned=11.5
            ),
            Action(
                kind="archive", label="s", campaign_ids=("c-03", "c-04"), called=12.0, returned=12.5
            ),
            Action(kind="unarchive", label="u", campaign_ids=("c-00",), called=13.0, returned=13.1),
            Action(kind="resume", label="r", campaign_ids=("c-00",), called=14.0, returned=14.1),
        ]
        for ci in range(6):
            _write_sends(tmp_path, 0, ci, [1.0, 2.0])  # before every archive
        _write_sends(tmp_path, 1, 5, [13.0, 15.0])  # the control keeps sending
        return planned, actions, tmp_path

    def analyse(self, planned, actions, sink, results=None):
        return _demo_report.analyse(
            planned,
            actions,
            sink=sink,
            counters=_Counters(2, len(planned), 3),
            workers=2,
            reasons=["A", "B", "C"],
            results=results,
        )

    def test_clean_run_passes(self, setup):
        planned, actions, sink = setup
        _write_sends(sink, 1, 1, [11.2, 11.5])  # while the bulk archive waited: allowed
        _write_sends(sink, 0, 0, [14.05, 16.0])  # after the resume was called: allowed
        report = self.analyse(planned, actions, sink)
        assert (0, 0, ()) == (report.violations, report.exit_code, report.problems)
        rows = {r.id: r for r in report.rows}
        assert (2, 2, 0) == (
            rows["c-01"].sent_before,
            rows["c-01"].sent_during,
            rows["c-01"].sent_after,
        )
        assert 2 == rows["c-00"].sent_after_resume
        assert 2 == report.control_after

    @pytest.mark.parametrize(
        ("campaign", "stamp"),
        [
            (0, 10.500001),  # just after the single archive returned
            (0, 13.5),  # unarchived but not yet resumed: must stay silent
            (2, 100.0),  # bulk-archived, long after
            (4, 12.6),  # archived by its segment's cascade
        ],
    )
    def test_a_send_after_return_is_a_violation(self, setup, campaign, stamp):
        planned, actions, sink = setup
        _write_sends(sink, 1, campaign, [stamp])
        report = self.analyse(planned, actions, sink)
        assert (1, 1) == (report.violations, report.exit_code)
        assert 1 == {r.id: r for r in report.rows}[f"c-{campaign:02d}"].sent_after

    def test_store_results_must_match_the_sink(self, setup):
        planned, actions, sink = setup
        matching = {f"c-{i:02d}": 2 for i in range(5)} | {"c-05": 4}
        assert () == self.analyse(planned, actions, sink, matching).problems
        lost = matching | {"c-03": 1}
        report = self.analyse(planned, actions, sink, lost)
        assert 1 == report.exit_code
        assert "c-03 sink 2 vs store 1" in report.problems[0]

    def test_silent_control_is_inconclusive(self, setup):
        planned, actions, sink = setup
        (sink / _demo_worker.sink_name(1, 5)).unlink()
        report = self.analyse(planned, actions, sink)
        assert (0, 1) == (report.violations, report.exit_code)
        assert "proves nothing" in report.problems[0]

    def test_plan_covers_every_channel_and_role(self):
        planned = _demo.plan(6)
        assert set(_demo.CHANNELS) == {ch for c in planned for ch in c.channels}
        assert [Role.COMEBACK, Role.BULK, Role.BULK, Role.SEGMENT, Role.SEGMENT, Role.CONTROL] == [
            c.role for c in planned
        ]


class TestDemoOptions:
    """The demo refuses to reuse a store: it needs a fresh SQLite file."""

    def test_existing_db_is_a_usage_error(self, tmp_path: Path):
        db = tmp_path / "old.db"
        db.write_bytes(b"")
        result = CliRunner().invoke(app(), ["demo", "--db", str(db)])
        assert 2 == result.exit_code
        assert "needs a fresh SQLite file" in result.stderr

    def test_broken_gate_flag_points_to_the_test_suite(self):
        """The flag is still accepted: it says where the broken gate went, exit 2 (usage)."""
        result = CliRunner().invoke(app(), ["demo", "--broken-gate"])
        assert 2 == result.exit_code
        assert "lives with the test suite (tests/race/broken.py)" in result.stderr


class TestDemoRun:
    """A short real run: worker processes, a real gate each, a real SQLite file."""

    def test_no_delivery_after_archive_returned(self, tmp_path: Path):
        con = quiet_console()
        report = _demo.run_demo(
            duration=2.5, workers=2, campaigns=6, db=tmp_path / "d.db", console=con
        )
        out = con.file.getvalue()
        assert (0, 0, ()) == (report.exit_code, report.violations, report.problems), out
        rows = {r.id: r for r in report.rows}
        # Not vacuous: the archived campaigns sent before their archive, the others kept
        # sending after it, and the resumed one sent again.
        for cid in ("c-00", "c-01", "c-02", "c-03", "c-04"):
            assert rows[cid].sent_before > 0, out
            assert rows[cid].results == rows[cid].sent_total
            assert 0 == rows[cid].sent_after
        assert report.control_after > 0
        assert rows["c-00"].sent_after_resume > 0, out
        assert "PASS: 0 deliveries after an archive returned" in " ".join(out.split())

    def test_broken_gate_fails_the_demo(self):
        """The deliberately broken gate (admits cached forever) makes the CLI exit 1."""
        done = run_demo_with_broken_gate(
            "demo", "--duration", "2", "--workers", "1", "--campaigns", "6"
        )
        assert 1 == done.returncode, done.stdout + done.stderr
        words = " ".join(done.stdout.split())  # the verdict wraps at the terminal's width
        assert "FAIL:" in words
        assert "deliberately broken gate" in words
