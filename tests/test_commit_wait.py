"""How long lifecycle calls wait before returning: acknowledgements, else the lease.

On a fake clock `sleep` advances time at once and is recorded, so these tests state
exactly how long each call waited, without measuring wall time.
"""

from __future__ import annotations

import os

import pytest

from campaign_states import FakeClock, Registry
from campaign_states.exceptions import StoreUnavailableError
from campaign_states.stores import MemoryStore, SQLiteStore


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock):
    s = SQLiteStore(tmp_path / "c.db", clock=clock)
    yield s
    s.close()


@pytest.fixture
def reg(store):
    return Registry(store)


def _running(reg, n=1, segment=None):
    ids = []
    for i in range(n):
        c = reg.create_campaign(
            name=f"c{i}", channels=["email"], segments=[segment] if segment else []
        )
        reg.resume(c.id)
        ids.append(c.id)
    return ids


def _remote_gate(store, *, acked=0, age=0.0, clock=None):
    """Register a gate row as another process's gate would (it never acks unless told)."""
    table = store.gate_table()
    gid = table.register(lease=store.lease_settings().lease)
    if acked:
        table.ack(gid, acked)
    if age and clock is not None:
        clock.advance(age)
    return gid


class TestCommitWait:
    """How long archives and stops wait after their commit (DESIGN 2.1), exactly.

    The rule: once per call, until every registered gate has acknowledged the change's
    sequence, each unacknowledged gate costing at most what may remain of its lease:
    min(commit + W, its last heartbeat + W), W = (lease + grace) * (1 + clock margin).
    """

    def test_no_registered_gate_means_no_wait(self, reg, clock):
        (cid,) = _running(reg)
        clock.slept.clear()
        result = reg.archive(cid)
        assert 0 == pytest.approx(sum(clock.slept))
        assert "acknowledged" == result.wait.outcome
        assert (0, ()) == (result.wait.acknowledged, result.wait.waited_out)
        assert result.wait is reg.last_wait

    def test_a_gate_that_acknowledged_costs_nothing(self, reg, store, clock):
        (cid,) = _running(reg)
        # The archive's change will be the next sequence: a gate that read it acks it.
        # (Cumulative: an ack covers every sequence up to it.)
        _remote_gate(store, acked=store.current_seq() + 1)
        clock.slept.clear()
        result = reg.archive(cid)
        assert store.current_seq() == result.wait.seq
        assert 0 == pytest.approx(sum(clock.slept))
        assert ("acknowledged", 1) == (result.wait.outcome, result.wait.acknowledged)

    def test_an_ack_above_the_stores_sequence_counts_for_nothing(self, reg, store, clock):
        # A gate still reading another incarnation of the file (a backup restored over
        # it) may have acked a sequence this store never reached: it is waited for.
        (cid,) = _running(reg)
        _remote_gate(store, acked=store.current_seq() + 1000)
        wait = reg.lease_settings().commit_wait()
        clock.slept.clear()
        result = reg.archive(cid)
        assert wait == pytest.approx(sum(clock.slept))
        assert "lease" == result.wait.outcome

    def test_a_silent_live_gate_costs_the_whole_wait_once(self, reg, store, clock):
        (cid,) = _running(reg)
        gid = _remote_gate(store)
        wait = reg.lease_settings().commit_wait()
        clock.slept.clear()
        result = reg.archive(cid)
        assert pytest.approx(wait) == sum(clock.slept)
        assert "lease" == result.wait.outcome
        (waited,) = result.wait.waited_out
        assert (gid, os.getpid()) == (waited.gate_id, waited.pid)
        assert pytest.approx(wait) == waited.seconds

    def test_a_gate_dead_for_most_of_a_lease_costs_the_rest(self, reg, store, clock):
        (cid,) = _running(reg)
        wait = reg.lease_settings().commit_wait()
        _remote_gate(store, age=0.9 * wait, clock=clock)
        clock.slept.clear()
        result = reg.archive(cid)
        assert pytest.approx(0.1 * wait) == sum(clock.slept)
        assert 1 == len(result.wait.waited_out)

    def test_a_gate_dead_longer_than_a_lease_costs_nothing(self, reg, store, clock):
        (cid,) = _running(reg)
        wait = reg.lease_settings().commit_wait()
        _remote_gate(store, age=wait + 1.0, clock=clock)
        clock.slept.clear()
        result = reg.archive(cid)
        assert 0 == pytest.approx(sum(clock.slept))
        assert "lease" == result.wait.outcome  # waited out, at no cost

    def test_bulk_and_segment_archive_wait_once_per_call(self, reg, store, clock):
        reg.create_segment("seg")
        ids = _running(reg, 5, segment="seg")
        more = _running(reg, 5)
        _remote_gate(store)
        wait = reg.lease_settings().commit_wait()
        clock.slept.clear()
        bulk = reg.archive_many(more)
        assert pytest.approx(wait) == sum(clock.slept)
        clock.slept.clear()
        seg = reg.archive_segment("seg")
        # The gate's heartbeat is now older than a lease: it costs nothing more.
        assert 0 == pytest.approx(sum(clock.slept))
        assert ("lease", "lease") == (bulk.wait.outcome, seg.wait.outcome)
        assert len(ids) == len(reg.list(segment="seg"))

    def test_stop_waits_and_resume_unarchive_do_not(self, reg, store, clock):
        (cid,) = _running(reg)
        table = store.gate_table()
        gid = _remote_gate(store)
        wait = reg.lease_settings().commit_wait()
        clock.slept.clear()
        assert reg.stop(cid).wait is not None
        assert pytest.approx(wait) == sum(clock.slept)
        table.heartbeat(gid, lease=1.0)
        clock.slept.clear()
        assert reg.resume(cid).wait is None
        assert reg.unarchive(reg.archive(cid).campaign.id).wait is None
        assert pytest.approx(wait) == sum(clock.slept)  # the archive's only

    def test_memory_store_needs_no_commit_wait(self, clock):
        reg = Registry(MemoryStore(clock=clock))
        (cid,) = _running(reg)
        clock.slept.clear()
        assert "local" == reg.archive(cid).wait.outcome
        reg.stop_many([cid])
        assert [] == [s for s in clock.slept if s > 0]
        assert [] == reg.gates()

    def test_an_unreadable_gate_table_means_the_whole_lease(self, reg, store, clock, monkeypatch):
        (cid,) = _running(reg)

        def broken():
            raise StoreUnavailableError("gates file gone")

        monkeypatch.setattr(store, "gate_table", broken)
        wait = reg.lease_settings().commit_wait()
        clock.slept.clear()
        result = reg.archive(cid)
        assert [pytest.approx(wait)] == clock.slept
        assert "lease" == result.wait.outcome
        assert "gates file gone" in result.wait.reason

    def test_local_gates_count_as_acknowledged(self, reg, clock):
        # A gate on the archiving registry is fenced, applied and drained in-process.
        from delivery_gate import DeliveryGate

        (cid,) = _running(reg)
        with DeliveryGate(reg, background_refresh=False) as gate:
            assert 1 == len(reg.gates())
            clock.slept.clear()
            result = reg.archive(cid)
            assert 0 == pytest.approx(sum(clock.slept))
            assert ("acknowledged", 1) == (result.wait.outcome, result.wait.acknowledged)
            assert not gate.check(cid, "email").admitted
        assert [] == reg.gates()  # closing deregisters


class TestRetryWait:
    """A retried archive waits until the gates acknowledged the first call's change."""

    def test_retry_with_every_gate_acknowledged_returns_at_once(self, reg, store, clock):
        (cid,) = _running(reg)
        reg.archive(cid)
        _remote_gate(store, acked=store.current_seq())  # it read the first archive
        clock.slept.clear()
        result = reg.archive(cid)
        assert result.changed is False
        assert 0 == pytest.approx(sum(clock.slept))
        assert "acknowledged" == result.wait.outcome

    def test_retry_waits_for_a_gate_that_has_not_acknowledged(self, reg, store, clock):
        (cid,) = _running(reg)
        first = reg.archive(cid).campaign.seq
        table = store.gate_table()
        gid = _remote_gate(store)
        table.ack(gid, first - 1)  # saw an older change only
        wait = reg.lease_settings().commit_wait()
        clock.slept.clear()
        result = reg.archive(cid)
        assert pytest.approx(wait) == sum(clock.slept)
        assert first == result.wait.seq

    def test_segment_rearchive_waits_for_its_cascaded_campaigns(self, reg, store, clock):
        reg.create_segment("seg")
        ids = _running(reg, 3, segment="seg")
        reg.archive_segment("seg")
        _remote_gate(store)
        wait = reg.lease_settings().commit_wait()
        clock.slept.clear()
        again = reg.archive_segment("seg")
        assert again.changed is False
        assert pytest.approx(wait) == sum(clock.slept)
        assert max(reg.get(c).seq for c in ids) <= again.wait.seq


class _WatchingClock(FakeClock):
    """Records the store's commit wait at the moment someone sleeps."""

    def __init__(self):
        super().__init__()
        self.store = None
        self.seen = []

    def sleep(self, seconds):
        if self.store is not None:
            self.seen.append(self.store.lease_settings().commit_wait())
        super().sleep(seconds)


class TestLeaseChange:
    """Changing the store's lease never lets an archive wait less than a live lease."""

    def test_shortening_waits_out_the_old_lease_then_clears_it(self, tmp_path):
        clock = _WatchingClock()
        store = SQLiteStore(tmp_path / "c.db", clock=clock)
        clock.store = store
        reg = Registry(store)
        old_wait = reg.lease_settings().commit_wait()
        new = reg.set_lease_settings(lease=0.2, grace=0.01, refresh=0.05)
        # While the old leases may live, archivers (on any host) wait the old, longer wait.
        assert [pytest.approx(old_wait)] == clock.seen
        assert [pytest.approx(old_wait)] == clock.slept
        # Afterwards only the new settings count.
        assert pytest.approx(new.commit_wait()) == reg.lease_settings().commit_wait()
        assert 0.0 == reg.lease_settings().previous_wait
        assert new.commit_wait() < old_wait
        store.close()

    def test_a_pending_previous_wait_holds_past_its_recorded_time(self):
        from campaign_states import LeaseSettings

        pending = LeaseSettings(lease=0.2, grace=0.0, refresh=0.05, previous_wait=3.0)
        assert 3.0 == pending.commit_wait()
