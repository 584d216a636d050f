"""Acknowledged invalidation with real gate processes: stopped and killed gates.

The facts asserted are logical (which gate an archive waited out, what a resumed gate
decides first); how long the waits take is measured in bench/bench_ack.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from campaign_states import LeaseSettings, open_registry

LEASE = LeaseSettings(lease=1.0, grace=0.05, refresh=0.2)
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def reg(tmp_path):
    r = open_registry(f"sqlite:///{tmp_path / 'procs.db'}", lease=LEASE)
    yield r
    r.close()


@pytest.fixture
def child(reg):
    """Start a gate process answering "check" for campaign c-1 (running)."""
    reg.create_campaign(name="c", channels=["email"], campaign_id="c-1")
    reg.resume("c-1")
    procs = []

    def start():
        p = subprocess.Popen(
            [sys.executable, "-c", f"from race.procs import answer_checks; "
             f"answer_checks({reg.url!r}, 'c-1')"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(TESTS)},
        )  # fmt: skip
        procs.append(p)
        word, gate_id = p.stdout.readline().split()
        assert "ready" == word
        return p, gate_id

    yield start
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
        p.wait(10)
        for f in (p.stdin, p.stdout):
            f.close()


def _ask(p) -> bool:
    p.stdin.write("check\n")
    p.stdin.flush()
    return p.stdout.readline().strip() == "1"


class TestStoppedGate:
    """A SIGSTOPped gate holding a view: the archive waits its lease out; after SIGCONT
    its first decision on that campaign is a denial."""

    def test_stopped_then_resumed(self, reg, child):
        p, gate_id = child()
        assert _ask(p)
        os.kill(p.pid, signal.SIGSTOP)
        try:
            result = reg.archive("c-1")
        finally:
            os.kill(p.pid, signal.SIGCONT)
        assert "lease" == result.wait.outcome
        assert [(gate_id, p.pid)] == [(w.gate_id, w.pid) for w in result.wait.waited_out]
        assert not _ask(p)


class TestKilledGate:
    """A gate SIGKILLed most of a lease ago is waited out (for what remains of its lease)."""

    def test_killed_gate_is_waited_out(self, reg, child):
        p, gate_id = child()
        assert _ask(p)
        p.kill()
        p.wait(10)
        end = time.monotonic() + 30
        while True:  # until its last heartbeat is 0.9 lease old
            (row,) = [g for g in reg.gates() if g.gate_id == gate_id]
            if row.heartbeat_age >= 0.9 * LEASE.lease:
                break
            assert time.monotonic() < end
            time.sleep(0.01)
        result = reg.archive("c-1")
        assert "lease" == result.wait.outcome
        assert [gate_id] == [w.gate_id for w in result.wait.waited_out]


class TestHealthyGateProcess:
    """A live gate process acknowledges: the archive returns on its ack, and it denies."""

    def test_acknowledged(self, tmp_path, child, reg):
        reg.set_lease_settings(lease=20.0, grace=0.05, refresh=1.0)
        p, _ = child()
        assert _ask(p)
        result = reg.archive("c-1")
        assert ("acknowledged", 1, ()) == (
            result.wait.outcome,
            result.wait.acknowledged,
            result.wait.waited_out,
        )
        assert not _ask(p)
