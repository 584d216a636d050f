"""Acknowledged invalidation (DESIGN 2.1): the sharp cases, and broken gates they catch.

Two registries on one SQLite file stand for two processes (each has its own connections;
the gate table is the store's, shared through the file). On a shared fake clock an
archive's wait for a silent gate runs in milliseconds, and the facts asserted are logical
(which gate was waited out, what a gate decides afterwards), never wall time.
"""

from __future__ import annotations

import math
import threading
import time

import pytest

from campaign_states import FakeClock, LeaseSettings, open_registry
from campaign_states import _invalidation as invalidation
from campaign_states._stores.sqlite.gates import PRUNE_AFTER
from delivery_gate import DeliveryGate
from delivery_gate._refresh import Refresher

LEASE = LeaseSettings(lease=1.0, grace=0.05, refresh=0.2)


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'ack.db'}"


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def archiver(url, clock):
    reg = open_registry(url, clock=clock, lease=LEASE)
    yield reg
    reg.close()


@pytest.fixture
def elsewhere(url, clock, archiver):
    """The registry of "another process" on the same file (and, here, the same fake clock)."""
    reg = open_registry(url, clock=clock)
    yield reg
    reg.close()


def _running(reg, cid="c-1"):
    reg.create_campaign(name="c", channels=["email"], campaign_id=cid)
    return reg.resume(cid).campaign


class Pausing(Refresher):
    """Pauses a refresh right after its read, before it installs (a slow read, a GC pause).

    The events are set on the class by `_paused_first_read` (the first read happens in the
    gate's constructor).
    """

    pause_next = False
    read_done = threading.Event()
    resume = threading.Event()

    def _read(self, reader):
        batch = super()._read(reader)  # the pre-archive state
        if type(self).pause_next:
            type(self).pause_next = False
            self.read_done.set()
            self.resume.wait(10)
        return batch


class RegisterLate(Pausing):
    """Broken: registers after its first read (the registration race)."""

    def _heartbeat(self):
        pass  # not before the read...

    def _read(self, reader):
        batch = super()._read(reader)
        super()._heartbeat()  # ...but after it
        return batch


class LeaseAfterRead(Pausing):
    """Broken: measures its lease from after the read."""

    def _renew(self, started):
        super()._renew(self._now())


class NoReregister(Refresher):
    """Broken: finding its row gone, goes on unregistered instead of registering anew."""

    def _heartbeat(self):
        reg = self.registration
        table = reg.table()
        if reg.gate_id is None:
            reg.gate_id = table.register(lease=self.lease(), in_flight=0)
        else:
            table.heartbeat(reg.gate_id, lease=self.lease(), in_flight=0)


class AckBeforeDrain(Refresher):
    """Broken: acknowledges as soon as the view is installed, permits in flight or not."""

    def _ack_if_drained(self):
        self.registration.waiting = []
        super()._ack_if_drained()


def gate_with(refresher: type[Refresher]) -> type[DeliveryGate]:
    """A gate class whose refresher is ``refresher``."""
    return type(f"{refresher.__name__}Gate", (DeliveryGate,), {"_refresher_type": refresher})


PausingGate = gate_with(Pausing)
RegisterLateGate = gate_with(RegisterLate)
LeaseAfterReadGate = gate_with(LeaseAfterRead)
NoReregisterGate = gate_with(NoReregister)
AckBeforeDrainGate = gate_with(AckBeforeDrain)


def _paused_first_read(gate_cls, archiver, elsewhere, cid):
    """A gate whose first read sees the campaign running pauses before installing it; the
    archive runs meanwhile; then the gate goes on. Returns (archive result, gate, whether
    the gate admits the campaign after the archive returned)."""
    made = {}
    pausing = gate_cls._refresher_type
    pausing.read_done = threading.Event()
    pausing.resume = threading.Event()
    pausing.pause_next = True
    builder = threading.Thread(
        target=lambda: made.update(gate=gate_cls(elsewhere, background_refresh=False))
    )
    builder.start()
    try:
        assert pausing.read_done.wait(10)
        result = archiver.archive(cid)  # returned: the guarantee must hold from here on
    finally:
        pausing.resume.set()
        builder.join(10)
    gate = made["gate"]
    return result, gate, gate.check(cid, "email").admitted


class TestPausedAfterReading:
    """A gate paused right after reading the pre-archive state: the archive waits for it."""

    def test_archive_waits_out_the_paused_gate(self, archiver, elsewhere):
        cid = _running(archiver).id
        result, gate, admitted = _paused_first_read(PausingGate, archiver, elsewhere, cid)
        try:
            # It registered before its read, so the archive saw it, and without its ack
            # waited until its lease was certainly over.
            assert "lease" == result.wait.outcome
            assert [gate._gate_id] == [w.gate_id for w in result.wait.waited_out]
            assert not admitted  # its stale view lapsed: STALE, never RUNNING
            assert gate.refresh()
            assert not gate.check(cid, "email").admitted
        finally:
            gate.close()

    @pytest.mark.parametrize("broken", [RegisterLateGate, LeaseAfterReadGate])
    def test_the_same_check_catches_a_broken_gate(self, archiver, elsewhere, broken):
        cid = _running(archiver).id
        _, gate, admitted = _paused_first_read(broken, archiver, elsewhere, cid)
        try:
            assert admitted  # admits an archived campaign after archive() returned
        finally:
            gate.close()

    def test_a_shorter_dead_gate_threshold_is_caught(self, archiver, elsewhere, monkeypatch):
        # Broken archiver: counts a gate dead after half the wait.
        real = invalidation.wait_for_gates

        def short(table, clock, *, wait, **kw):
            return real(table, clock, wait=wait / 2, **kw)

        monkeypatch.setattr(invalidation, "wait_for_gates", short)
        cid = _running(archiver).id
        _, gate, admitted = _paused_first_read(PausingGate, archiver, elsewhere, cid)
        try:
            assert admitted
        finally:
            gate.close()


class TestDeclaredDead:
    """A gate whose row was removed as dead re-registers before it admits again."""

    def _declare_dead(self, gate, archiver, clock):
        clock.advance(PRUNE_AFTER + 1)  # silent past any lease a store allows
        archiver.gate_table().deregister(archiver.gate_table().register(lease=1.0))  # prunes
        assert gate._gate_id not in {g.gate_id for g in archiver.gates()}

    def test_comes_back_registered(self, archiver, elsewhere, clock):
        cid = _running(archiver).id
        with DeliveryGate(elsewhere, background_refresh=False) as gate:
            old = gate._gate_id
            self._declare_dead(gate, archiver, clock)
            assert not gate.check(cid, "email").admitted  # its lease lapsed long ago
            assert gate.refresh()
            assert gate._gate_id not in (None, old)
            assert gate._gate_id in {g.gate_id for g in archiver.gates()}
            assert gate.check(cid, "email").admitted
            result = archiver.archive(cid)
            assert [gate._gate_id] == [w.gate_id for w in result.wait.waited_out]
            assert not gate.check(cid, "email").admitted

    def test_a_gate_that_does_not_reregister_is_caught(self, archiver, elsewhere, clock):
        cid = _running(archiver).id
        with NoReregisterGate(elsewhere, background_refresh=False) as gate:
            self._declare_dead(gate, archiver, clock)
            assert gate.refresh()
            result = archiver.archive(cid)
            assert () == result.wait.waited_out  # nobody waited for it...
            assert gate.check(cid, "email").admitted  # ...and it admits: the violation


class TestPermitInFlightElsewhere:
    """A gate acknowledges only once its permits on the archived campaign have left."""

    @pytest.fixture
    def real(self, tmp_path):
        # The real clock and a long lease: an ack is the only way the archive returns soon.
        url = f"sqlite:///{tmp_path / 'inflight.db'}"
        lease = LeaseSettings(lease=20.0, grace=0.05, refresh=1.0)
        a, b = open_registry(url, lease=lease), open_registry(url)
        yield a, b
        b.close()
        a.close()

    def _acked_while_in_flight(self, gate_cls, archiver, elsewhere):
        cid = _running(archiver).id
        gate = gate_cls(elsewhere)
        entered, leave = threading.Event(), threading.Event()

        def send():
            with gate.permit(cid, "email") as p:
                assert p.admitted
                entered.set()
                leave.wait(30)

        sender = threading.Thread(target=send)
        sender.start()
        assert entered.wait(10)
        results = []
        archiving = threading.Thread(target=lambda: results.append(archiver.archive(cid)))
        archiving.start()
        try:
            end = time.monotonic() + 10
            while gate.check(cid, "email").admitted:  # until its probe installed the archive
                assert time.monotonic() < end
                time.sleep(0.001)
            with gate._refresher._lock:  # the step that installed it (and may ack) is over
                (row,) = [g for g in archiver.gates() if g.gate_id == gate._gate_id]
            seq = archiver.get(cid).seq
            acked_early = row.acked_seq >= seq
        finally:
            leave.set()
            sender.join(10)
            archiving.join(30)
            gate.close()
        return acked_early, results[0]

    def test_no_ack_until_the_permit_exits(self, real):
        acked_early, result = self._acked_while_in_flight(DeliveryGate, *real)
        assert not acked_early
        # Then the permit left, the gate acknowledged, and the archive returned on it.
        assert ("acknowledged", 1, ()) == (
            result.wait.outcome,
            result.wait.acknowledged,
            result.wait.waited_out,
        )

    def test_ack_before_drain_is_caught(self, real):
        acked_early, _ = self._acked_while_in_flight(AckBeforeDrainGate, *real)
        assert acked_early


class TestHealthyGates:
    """With every gate live, an archive returns on acknowledgements, not on a lease."""

    def test_many_gates_acknowledge(self, tmp_path):
        url = f"sqlite:///{tmp_path / 'many.db'}"
        lease = LeaseSettings(lease=20.0, grace=0.05, refresh=1.0)
        archiver = open_registry(url, lease=lease)
        ids = [_running(archiver, f"c-{i}").id for i in range(3)]
        others = [open_registry(url) for _ in range(4)]
        gates = [DeliveryGate(r) for r in others]
        try:
            for g in gates:
                assert all(g.check(c, "email").admitted for c in ids)
            one = archiver.archive(ids[0])
            bulk = archiver.stop_many(ids[1:])
            for report in (one.wait, bulk.wait, archiver.last_wait):
                assert ("acknowledged", 4, ()) == (
                    report.outcome,
                    report.acknowledged,
                    report.waited_out,
                )
            for g in gates:
                assert not any(g.check(c, "email").admitted for c in ids)
            assert math.isfinite(one.wait.seconds)
        finally:
            for g in gates:
                g.close()
            for r in others:
                r.close()
            archiver.close()


class TestCannotRegister:
    """A gate whose registration fails admits nothing: fail closed, with the reason."""

    def test_denies_store_unavailable(self, archiver, elsewhere, monkeypatch):
        from campaign_states.exceptions import StoreUnavailableError
        from delivery_gate import Reason

        cid = _running(archiver).id

        def broken():
            raise StoreUnavailableError("gates file not writable")

        monkeypatch.setattr(elsewhere.store, "gate_table", broken)
        with DeliveryGate(elsewhere, background_refresh=False) as gate:
            assert Reason.STORE_UNAVAILABLE == gate.check(cid, "email").reason
            assert "gates file not writable" in gate.status().last_error
            monkeypatch.undo()
            assert gate.refresh()  # registers now, then reads
            assert gate.check(cid, "email").admitted
