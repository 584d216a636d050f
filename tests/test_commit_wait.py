"""How long lifecycle calls wait before returning: the commit wait behind the guarantee.

On a fake clock `sleep` advances time at once and is recorded, so these tests state
exactly how long each call waited, without measuring wall time.
"""

from __future__ import annotations

import pytest

from campaign_states import FakeClock, Registry
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


class TestCommitWait:
    """Archives and stops wait lease + grace (with the clock margin) once per call."""

    def test_archive_waits_the_commit_wait_once(self, reg, clock):
        (cid,) = _running(reg)
        wait = reg.lease_settings().commit_wait()
        clock.slept.clear()
        reg.archive(cid)
        assert [pytest.approx(wait)] == clock.slept

    def test_bulk_and_segment_archive_wait_once_per_call(self, reg, clock):
        reg.create_segment("seg")
        ids = _running(reg, 5, segment="seg")
        more = _running(reg, 5)
        wait = reg.lease_settings().commit_wait()
        clock.slept.clear()
        reg.archive_many(more)
        reg.archive_segment("seg")
        assert [pytest.approx(wait)] * 2 == clock.slept
        assert len(ids) == len(reg.list(segment="seg"))

    def test_stop_waits_and_resume_unarchive_do_not(self, reg, clock):
        (cid,) = _running(reg)
        wait = reg.lease_settings().commit_wait()
        clock.slept.clear()
        reg.stop(cid)
        assert [pytest.approx(wait)] == clock.slept
        clock.slept.clear()
        reg.resume(cid)
        reg.archive(cid)
        reg.unarchive(cid)
        assert [pytest.approx(wait)] == clock.slept  # the archive's only

    def test_memory_store_needs_no_commit_wait(self, clock):
        reg = Registry(MemoryStore(clock=clock))
        (cid,) = _running(reg)
        clock.slept.clear()
        reg.archive(cid)
        reg.stop_many([cid])
        assert [] == [s for s in clock.slept if s > 0]


class TestRetryWait:
    """A retried archive waits what remains of the first one's wait, and no more."""

    @pytest.mark.parametrize(
        ("elapsed_in_waits", "expected_in_waits"),
        [(0.0, 1.0), (0.5, 1.0), (1.5, 0.5), (2.0, 0.0), (10.0, 0.0)],
    )
    def test_rearchive_waits_the_remainder(self, reg, clock, elapsed_in_waits, expected_in_waits):
        (cid,) = _running(reg)
        reg.archive(cid)
        wait = reg.lease_settings().commit_wait()
        # The first archive recorded its time inside its transaction, then slept `wait`.
        # Moving the fake clock back models a retry from another process that arrives
        # while the first call is still waiting (elapsed < 1 wait).
        clock.advance(elapsed_in_waits * wait - wait)
        clock.slept.clear()
        result = reg.archive(cid)
        assert result.changed is False
        assert pytest.approx(expected_in_waits * wait) == sum(clock.slept)

    def test_retry_waits_the_whole_wait_when_clocks_are_not_shared(self, reg, store, clock):
        (cid,) = _running(reg)
        reg.archive(cid)
        clock.advance(100.0)  # on a shared clock this archive would be long settled
        store.clock_is_shared = False  # as on PostgreSQL: writers on several hosts
        clock.slept.clear()
        reg.archive(cid)
        assert [pytest.approx(reg.lease_settings().commit_wait())] == clock.slept

    def test_segment_rearchive_waits_for_its_cascaded_campaigns(self, reg, clock):
        reg.create_segment("seg")
        _running(reg, 3, segment="seg")
        reg.archive_segment("seg")
        wait = reg.lease_settings().commit_wait()
        clock.slept.clear()
        assert reg.archive_segment("seg").changed is False
        assert pytest.approx(wait) == sum(clock.slept)


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
