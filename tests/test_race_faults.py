"""Faults around the gate: a worker killed mid-emit, a worker paused past its lease."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time

from race import procs
from race.harness import now

from campaign_states import LeaseSettings, Registry, State
from campaign_states.stores import SQLiteStore
from delivery_gate import DeliveryGate, Reason

SETTINGS = LeaseSettings(lease=0.1, grace=0.05, refresh=0.02)


def _store(tmp_path):
    reg = Registry(SQLiteStore(tmp_path / "f.db", lease=SETTINGS), drain_timeout=5.0)
    cid = reg.create_campaign(name="c", channels={"email"}, campaign_id="c-1").id
    reg.resume(cid)
    return reg, f"sqlite:///{tmp_path / 'f.db'}", cid


def _spawn(target, *args):
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=target, args=(*args[:2], ready, *args[2:]), daemon=True)
    p.start()
    assert ready.wait(60), "the worker did not start"
    return p, ctx


class TestKilledWorker:
    """A worker SIGKILLed mid-emit or mid-write leaves the store usable and archives working."""

    def test_killed_inside_a_permit(self, tmp_path):
        reg, url, cid = _store(tmp_path)
        p, _ = _spawn(procs.hold_permit_forever, url, cid)
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        assert State.ARCHIVED == reg.archive(cid).campaign.state
        with DeliveryGate(reg) as gate:
            assert Reason.ARCHIVED == gate.check(cid, "email").reason
        reg.close()

    def test_killed_while_recording_results(self, tmp_path):
        reg, url, cid = _store(tmp_path)
        p, _ = _spawn(procs.emit_and_flush, url, cid)
        time.sleep(0.3)  # let it hold the write lock often
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        assert State.ARCHIVED == reg.archive(cid).campaign.state
        assert 0 <= reg.results(cid).total
        reg.close()


class TestPausedWorker:
    """A worker paused past its lease inside a permit finds still_valid() false on resuming."""

    def test_sigstop_past_the_lease(self, tmp_path):
        reg, url, cid = _store(tmp_path)
        out = tmp_path / "paused.json"
        ctx = multiprocessing.get_context("spawn")
        ready, go = ctx.Event(), tmp_path / "go"
        p = ctx.Process(
            target=procs.pause_inside_permit, args=(url, cid, ready, str(go), str(out)), daemon=True
        )
        p.start()
        assert ready.wait(60)
        os.kill(p.pid, signal.SIGSTOP)
        try:
            reg.archive(cid)
            returned = now()
            time.sleep(SETTINGS.lease)  # paused well past its lease
            go.touch()
        finally:
            os.kill(p.pid, signal.SIGCONT)
        p.join(60)
        result = json.loads(out.read_text())
        assert {"admitted": True, "valid": False, "sent_at": None} == result
        assert now() > returned
        reg.close()
