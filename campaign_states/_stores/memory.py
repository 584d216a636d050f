"""The in-memory store: the reference semantics, and a verified fake for tests.

One process only: no other process can read it, so archives need no commit wait (local gates
are fenced and updated synchronously through the registry's listeners).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from types import TracebackType

import attrs

from campaign_states._clock import Clock, SystemClock
from campaign_states._fork import reopen_after_fork
from campaign_states._lifecycle import State
from campaign_states._queries import CampaignQuery, HistoryQuery, matches_campaign, matches_history
from campaign_states._records import (
    Campaign,
    Channel,
    Delivery,
    Emission,
    HistoryEntry,
    Results,
    Segment,
)
from campaign_states._rows import gate_row
from campaign_states._store import GateRowBatch, LeaseSettings, WriteTx
from campaign_states.exceptions import ConcurrentUpdateError, DuplicateIdError

__all__ = ["MemoryStore"]


class _Tx(WriteTx, AbstractContextManager["_Tx"]):
    """Stages every write and applies them together on commit (all or nothing).

    It subclasses `WriteTx` to inherit its generic `move_campaigns` (staged records are
    cheap to read back, so the default is this store's fast path too).

    Entering takes the store's lock (one writer at a time, as SQLite's write lock); leaving
    cleanly applies the staged writes, leaving on an exception drops them.
    """

    def __init__(self, store: MemoryStore) -> None:
        self._s = store
        self.campaigns_new: dict[str, Campaign] = {}
        self.segments_new: dict[str, Segment] = {}
        self.history_new: list[HistoryEntry] = []
        self.seq = 0

    def __enter__(self) -> _Tx:
        self._s._lock.acquire()
        self.seq = self._s._seq
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._s._apply(self)
        finally:
            self._s._lock.release()

    def _campaign(self, cid: str) -> Campaign | None:
        return self.campaigns_new.get(cid) or self._s._campaigns.get(cid)

    def campaigns(self, ids: Collection[str]) -> dict[str, Campaign]:
        staged = self.campaigns_new
        stored = self._s._campaigns
        out: dict[str, Campaign] = {}
        for cid in ids:
            c = staged.get(cid) or stored.get(cid)
            if c is not None:
                out[cid] = c
        return out

    def campaigns_targeting(self, segment_id: str) -> list[Campaign]:
        ids = set(self._s._by_segment.get(segment_id, ()))
        ids |= {c.id for c in self.campaigns_new.values() if segment_id in c.segments}
        out = [self._campaign(cid) for cid in sorted(ids)]
        return [c for c in out if c is not None and segment_id in c.segments]

    def segments(self, ids: Collection[str]) -> dict[str, Segment]:
        found = {sid: self.segments_new.get(sid) or self._s._segments.get(sid) for sid in ids}
        return {sid: s for sid, s in found.items() if s is not None}

    def next_seq(self, count: int) -> int:
        first = self.seq + 1
        self.seq += count
        return first

    def insert_campaign(self, campaign: Campaign, segments: Collection[str]) -> None:
        if self._campaign(campaign.id) is not None:
            raise DuplicateIdError(f"Campaign {campaign.id!r} already exists.")
        self.campaigns_new[campaign.id] = campaign

    def insert_segment(self, segment: Segment) -> None:
        if self.segments([segment.id]):
            raise DuplicateIdError(f"Segment {segment.id!r} already exists.")
        self.segments_new[segment.id] = segment

    def update_campaigns(self, campaigns: Sequence[Campaign]) -> None:
        for c in campaigns:
            old = self._campaign(c.id)
            if old is None or old.version != c.version - 1:
                raise ConcurrentUpdateError(f"Campaign {c.id!r} changed under this write.")
            self.campaigns_new[c.id] = c

    def update_segment(self, segment: Segment) -> None:
        old = self.segments([segment.id]).get(segment.id)
        if old is None or old.version != segment.version - 1:
            raise ConcurrentUpdateError(f"Segment {segment.id!r} changed under this write.")
        self.segments_new[segment.id] = segment

    def append_history(self, entries: Sequence[HistoryEntry]) -> None:
        self.history_new.extend(entries)

    def lease_settings(self) -> LeaseSettings:
        return self._s._lease


class MemoryStore:
    """A store in this process's memory (``memory://``).

    Args:
        clock: The clock for commit times; tests pass a `FakeClock`.
        lease: Lease settings (memory stores need no commit wait, but gates still lease).
    """

    needs_commit_wait = False
    clock_is_shared = True

    def _after_fork_in_child(self) -> None:
        self._lock = threading.RLock()

    def __init__(self, *, clock: Clock | None = None, lease: LeaseSettings | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.url = "memory://"
        # One lock serializes writers, as SQLite's write lock does; readers take it too so
        # they never see a transaction half-applied.
        self._lock = threading.RLock()
        # After a fork the child has its own copy of the store (it is memory, not shared),
        # and a lock a parent thread may have held: a fresh one.
        reopen_after_fork(self)
        self._campaigns: dict[str, Campaign] = {}
        self._sorted_ids: list[str] | None = None
        self._segments: dict[str, Segment] = {}
        self._by_segment: dict[str, set[str]] = defaultdict(set)
        self._history: dict[str, list[HistoryEntry]] = defaultdict(list)
        self._results: dict[str, dict[tuple[Channel, Emission], int]] = {}
        self._seq = 0
        self._lease = lease or LeaseSettings()
        # The change index: campaign ids in the order of the seq of each of their writes
        # (`_log_seqs[i]` is the seq `_log_ids[i]` was written with), so a reader's delta
        # is a bisect and a slice, not a scan of every campaign. An id written again
        # appears again; stale entries are skipped on read and dropped by `_compact`.
        self._log_seqs: list[int] = []
        self._log_ids: list[str] = []

    def write(self) -> _Tx:
        """A write transaction: staged, applied whole when the block exits cleanly."""
        return _Tx(self)

    def _apply(self, tx: _Tx) -> None:
        # Called with the lock held. Nothing here can fail half-way on data the
        # transaction already checked (dict and set updates only).
        campaigns = self._campaigns
        by_segment = self._by_segment
        for c in tx.campaigns_new.values():
            old = campaigns.get(c.id)
            if old is None:
                self._sorted_ids = None  # a new id: `_ids_in_order` sorts again
            if old is None or old.segments is not c.segments:
                if old is not None:
                    for sid in old.segments - c.segments:
                        by_segment[sid].discard(c.id)
                for sid in c.segments:
                    by_segment[sid].add(c.id)
            campaigns[c.id] = c
        self._index(tx.campaigns_new.values())
        self._segments.update(tx.segments_new)
        history = self._history
        for e in tx.history_new:
            history[e.campaign_id].append(e)
        self._seq = tx.seq

    def _index(self, written: Iterable[Campaign]) -> None:
        # Called with the lock held. A transaction's seqs are all above those already
        # indexed (each write reserves new ones); if one is not, rebuild the index from the
        # campaigns rather than let it go out of order: a delta read must never miss one.
        seqs, ids = self._log_seqs, self._log_ids
        for c in sorted(written, key=_by_seq):
            if seqs and c.seq <= seqs[-1]:
                self._compact()
                return
            seqs.append(c.seq)
            ids.append(c.id)
        if len(seqs) > 2 * len(self._campaigns) + 1024:
            self._compact()

    def _compact(self) -> None:
        # Called with the lock held: one entry per campaign, at its current seq.
        ordered = sorted(self._campaigns.values(), key=_by_seq)
        self._log_seqs = [c.seq for c in ordered]
        self._log_ids = [c.id for c in ordered]

    def _changed(self, seq: int) -> list[Campaign]:
        # Called with the lock held: each campaign last written after `seq`, once, in seq
        # order. An entry whose campaign was written again later is skipped here and
        # picked up at its later entry.
        start = bisect.bisect_right(self._log_seqs, seq)
        campaigns = self._campaigns
        out: list[Campaign] = []
        for i in range(start, len(self._log_ids)):
            c = campaigns[self._log_ids[i]]
            if c.seq == self._log_seqs[i]:
                out.append(c)
        return out

    def get_campaign(self, campaign_id: str) -> Campaign | None:
        """One campaign, or None."""
        return self._campaigns.get(campaign_id)

    def get_segment(self, segment_id: str) -> Segment | None:
        """One segment, or None."""
        return self._segments.get(segment_id)

    def list_campaigns(
        self,
        state: State | None,
        segment: str | None,
        *,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[Campaign]:
        """Campaigns, optionally filtered, ordered by id: at most ``limit``, ids > ``after``."""
        with self._lock:
            ids = self._ids_in_order(segment)
            campaigns = self._campaigns
            out: list[Campaign] = []
            for i in range(0 if after is None else bisect.bisect_right(ids, after), len(ids)):
                c = campaigns[ids[i]]
                if state is None or c.state is state:
                    out.append(c)
                    if limit is not None and len(out) >= limit:
                        break
            return out

    def count_campaigns(
        self, state: State | None, segment: str | None, *, after: str | None = None
    ) -> int:
        """How many campaigns `list_campaigns` would return with no limit."""
        with self._lock:
            ids = self._ids_in_order(segment)
            start = 0 if after is None else bisect.bisect_right(ids, after)
            if state is None:
                return len(ids) - start
            campaigns = self._campaigns
            return sum(1 for i in range(start, len(ids)) if campaigns[ids[i]].state is state)

    def _ids_in_order(self, segment: str | None) -> list[str]:
        # Called with the lock held. Every id, sorted once and kept until a campaign is
        # added (ids are never removed), so a page is a bisect, not a sort of every id.
        if segment is not None:
            return sorted(self._by_segment.get(segment, ()))
        if self._sorted_ids is None:
            self._sorted_ids = sorted(self._campaigns)
        return self._sorted_ids

    def list_segments(self) -> list[Segment]:
        """Every segment, ordered by id."""
        with self._lock:
            return sorted(self._segments.values(), key=lambda s: s.id)

    def history(self, campaign_id: str) -> list[HistoryEntry]:
        """A campaign's history, oldest first."""
        with self._lock:
            return list(self._history.get(campaign_id, ()))

    def results(self, campaign_id: str) -> Results:
        """A campaign's results."""
        with self._lock:
            counts = dict(self._results.get(campaign_id, {}))
        delivered = {ch: n for (ch, kind), n in counts.items() if kind is Emission.MESSAGE}
        shown = sum(n for (_, kind), n in counts.items() if kind is Emission.IN_APP_IMPRESSION)
        return Results(campaign_id=campaign_id, delivered=delivered, impressions=shown)

    def add_results(self, deliveries: Iterable[Delivery]) -> None:
        """Add delivery counts."""
        rows = list(deliveries)
        with self._lock:
            for d in rows:
                per = self._results.setdefault(d.campaign_id, {})
                key = (d.channel, d.kind)
                per[key] = per.get(key, 0) + d.count

    def lease_settings(self) -> LeaseSettings:
        """The lease settings."""
        return self._lease

    def set_lease_settings(self, settings: LeaseSettings) -> None:
        """Replace the lease settings."""
        with self._lock:
            self._lease = settings

    def open_reader(self) -> _MemoryReader:
        """A reader over this store (no connection to open)."""
        return _MemoryReader(self)

    def gate_rows_since(self, seq: int) -> GateRowBatch:
        """Everything changed after ``seq``, as `GateRow` tuples."""
        with self._lock:
            return GateRowBatch(
                seq=self._seq,
                rows=[gate_row(c) for c in self._changed(seq)],
                segments=[s for s in self._segments.values() if s.seq > seq],
                lease=self._lease,
            )

    def close(self) -> None:
        """Nothing to release."""

    # -- paged reads for operator screens: a scan, the reference semantics -------------

    def find_campaigns(self, query: CampaignQuery) -> list[Campaign]:
        """One page of the campaigns ``query`` selects, ordered by id."""
        with self._lock:
            pool = (
                [self._campaigns[c] for c in self._by_segment.get(query.segment, ())]
                if query.segment is not None
                else list(self._campaigns.values())
            )
        found = sorted((c for c in pool if matches_campaign(query, c)), key=lambda c: c.id)
        return found[: query.limit]

    def query_history(self, query: HistoryQuery) -> list[HistoryEntry]:
        """One page of history entries across campaigns, ordered by seq as asked."""
        with self._lock:
            if query.campaign is not None:
                pool = list(self._history.get(query.campaign, ()))
            else:
                pool = [e for entries in self._history.values() for e in entries]
        found = sorted(
            (e for e in pool if matches_history(query, e)),
            key=lambda e: e.seq,
            reverse=query.newest_first,
        )
        return found[: query.limit]

    def results_many(self, campaign_ids: Collection[str]) -> dict[str, Results]:
        """Results of each of ``campaign_ids``."""
        return {cid: self.results(cid) for cid in campaign_ids}


def _by_seq(c: Campaign) -> int:
    return c.seq


@attrs.frozen
class _MemoryReader:
    _store: MemoryStore

    def version_token(self) -> object:
        return (self._store._seq, self._store._lease)

    def gate_rows_since(self, seq: int) -> GateRowBatch:
        return self._store.gate_rows_since(seq)

    def close(self) -> None:
        pass
