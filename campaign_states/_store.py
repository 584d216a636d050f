"""The store protocol every backend satisfies, and the values that cross it.

The registry holds all lifecycle logic and talks to a store only through `Store`,
`WriteTx` and `Reader`, so the memory, SQLite and PostgreSQL stores persist the same
decisions and pass one contract suite.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import attrs

from ._clock import Clock
from ._lease import LeaseSettings
from ._lifecycle import State
from ._planning import persist_moves
from ._queries import CampaignQuery, HistoryQuery
from ._records import Campaign, Channel, Delivery, HistoryEntry, Results, Segment
from ._rows import GateRow, channels_from_text, ids_from_text, state_from_value

__all__ = [
    "ChangeBatch",
    "GateReader",
    "GateRow",
    "GateRowBatch",
    "LeaseSettings",
    "Reader",
    "SetWriteTx",
    "Store",
    "WriteTx",
]


@attrs.frozen(kw_only=True)
class ChangeBatch:
    """Deprecated: what changed since a sequence number, as records (all of it, from 0).

    The batch of the old record read (``changes_since``), no longer part of `Reader`
    (which reads `GateRowBatch`); kept importable for code that still builds one.

    Attributes:
        seq: The store's sequence number this batch brings a reader up to.
        campaigns: Campaigns whose last change is after the asked-for sequence.
        segments: Segments likewise.
        lease: The store's lease settings, read in the same transaction.
    """

    seq: int
    campaigns: Sequence[Campaign]
    segments: Sequence[Segment]
    lease: LeaseSettings


@attrs.frozen(kw_only=True)
class GateRowBatch:
    """What changed since a sequence number, as plain rows: what a gate needs, no more.

    No `Campaign` record is built per changed campaign (loading a million campaigns into
    a gate would spend most of its time there): these rows are the stored columns
    as the database returns them, and decoding the texts is left to the few distinct
    values (`channels`, `segment_ids` and `state` decode them, cached).

    Attributes:
        seq: The store's sequence number this batch brings a reader up to.
        rows: One `GateRow` per campaign whose last change is after the asked-for sequence:
            ``(id, state value, channels text, segments text, version, archive_cause)``;
            decode the texts with `channels` and `segment_ids`, the state with `state`.
        segments: Segments changed after the asked-for sequence.
        lease: The store's lease settings, read in the same transaction.
    """

    seq: int
    rows: Sequence[GateRow]
    segments: Sequence[Segment]
    lease: LeaseSettings

    @staticmethod
    def channels(text: str) -> frozenset[Channel]:
        """A row's channels text as the channel set (equal texts share one set)."""
        return channels_from_text(text)

    @staticmethod
    def segment_ids(text: str) -> frozenset[str]:
        """A row's segments text as the set of segment ids (equal texts share one set)."""
        return ids_from_text(text)

    @staticmethod
    def state(value: str) -> State:
        """A row's state value as the `State`."""
        return state_from_value(value)


@runtime_checkable
class WriteTx(Protocol):
    """**Protocol:** one write transaction; writes are all or nothing.

    A store may subclass it explicitly to inherit the default `move_campaigns`.

    Reads inside it see its own writes and lock what they read against other writers
    (SQLite: the database write lock from ``BEGIN IMMEDIATE``; PostgreSQL: row locks).
    """

    def campaigns(self, ids: Collection[str]) -> dict[str, Campaign]:
        """The campaigns among ``ids`` that exist, locked for update."""

    def campaigns_targeting(self, segment_id: str) -> list[Campaign]:
        """Every campaign that targets ``segment_id``, locked for update."""

    def segments(self, ids: Collection[str]) -> dict[str, Segment]:
        """The segments among ``ids`` that exist, locked against concurrent change."""

    def next_seq(self, count: int) -> int:
        """Reserve ``count`` global sequence numbers; return the first."""

    def insert_campaign(self, campaign: Campaign, segments: Collection[str]) -> None:
        """Add a new campaign (DuplicateIdError if the id exists)."""

    def insert_segment(self, segment: Segment) -> None:
        """Add a new segment (DuplicateIdError if the id exists)."""

    def update_campaigns(self, campaigns: Sequence[Campaign]) -> None:
        """Write new versions; each is a compare-and-set on ``version - 1``."""

    def update_segment(self, segment: Segment) -> None:
        """Write a segment's new version (compare-and-set on ``version - 1``)."""

    def append_history(self, entries: Sequence[HistoryEntry]) -> None:
        """Append history entries."""

    def lease_settings(self) -> LeaseSettings:
        """The store's lease settings, read in this transaction."""

    def move_campaigns(
        self,
        ids: Sequence[str] | None,
        segment: str | None,
        sources: Collection[State],
        dest: State,
        *,
        trigger: str,
        actor: str | None,
        cause: str | None,
        archive_cause: str | None,
        now: float,
        wall: float,
    ) -> tuple[list[Campaign], dict[str, float]]:
        """Move to ``dest`` every campaign among ``ids`` (or, if ``ids`` is None, every one
        targeting ``segment``) whose state is in ``sources``.

        Each moved campaign gets its version bumped, ``archive_cause``, ``state_changed_at
        = now`` and a sequence number; each gets a history entry (``trigger``, its old
        state, ``dest``, ``actor``, ``cause``, ``wall``). The state test and the write happen
        under the transaction's lock (in the SQL stores, in one statement), so a move is
        a compare-and-set. Sequence numbers are reserved one per candidate id, so unmoved
        ids leave gaps.

        This default does it with the other methods: it reads the candidates (locked,
        as ``campaigns`` and ``campaigns_targeting`` lock), decides, and writes the moved
        ones with ``update_campaigns`` (a compare-and-set on each version) and
        ``append_history``. A store may override it with something faster (the SQL stores
        move a whole bulk request in a few statements: about 0.6 s instead of 1.3 s for
        100,000 campaigns on SQLite); the outcomes are the same.

        Returns:
            The moved campaigns as now stored, in sequence (candidate) order; and, for
            the candidates that were already in ``dest`` with this ``archive_cause``, the
            time their state changed (a retry waits out what remains of their wait).
        """
        if ids is None:
            assert segment is not None
            targets = self.campaigns_targeting(segment)  # id order, as the SQL stores list them
            ids = [c.id for c in targets]
            found = {c.id: c for c in targets}
        else:
            found = self.campaigns(ids)
        if not ids:
            return [], {}
        first = self.next_seq(len(ids))
        movable = frozenset(sources)
        moving: list[Campaign] = []
        seqs: list[int] = []
        already: dict[str, float] = {}
        for i, cid in enumerate(ids):
            c = found.get(cid)
            if c is None:
                continue
            if c.state in movable:
                moving.append(c)
                seqs.append(first + i)
            elif c.state is dest and c.archive_cause == archive_cause:
                already[cid] = c.state_changed_at
        written = persist_moves(
            self, moving, seqs, trigger=trigger, dest=dest, actor=actor, cause=cause,
            archive_cause=archive_cause, now=now, wall=wall,
        )  # fmt: skip
        return written, already


@runtime_checkable
class Reader(Protocol):
    """**Protocol:** a dedicated read connection for a gate's refresher.

    A gate reads changes as plain `GateRow` tuples (`gate_rows_since`), never as records:
    loading a million campaigns then spends its time in the store's read, not in building
    a `Campaign` per row.
    """

    def version_token(self) -> object:
        """A cheap value that changes whenever anything commits (SQLite ``data_version``)."""

    def gate_rows_since(self, seq: int) -> GateRowBatch:
        """Everything changed after ``seq``, as rows, in one consistent read."""

    def close(self) -> None:
        """Release the connection."""


# Deprecated aliases (kept so imports keep working): the optional fast paths are folded
# into the protocols. `SetWriteTx.move_campaigns` is part of `WriteTx` (with a default),
# and `GateReader.gate_rows_since` is `Reader`'s one read.
SetWriteTx = WriteTx
GateReader = Reader


class Store(Protocol):
    """**Protocol:** where campaigns, segments, history and results live.

    Attributes:
        clock: The clock commit times are measured on (shared by all users of the store).
        needs_commit_wait: False only for a store no other process can read (memory).
        clock_is_shared: Whether every writer's ``clock`` is one clock (one host's
            ``CLOCK_BOOTTIME``), so times recorded by one compare with another's now.
    """

    clock: Clock
    needs_commit_wait: bool
    clock_is_shared: bool

    @property
    def url(self) -> str:
        """The store's URL, any password masked (``***``): safe to log and show."""

    def write(self) -> AbstractContextManager[WriteTx]:
        """A durable write transaction, committed when the block exits cleanly."""

    def get_campaign(self, campaign_id: str) -> Campaign | None:
        """One campaign, or None."""

    def get_segment(self, segment_id: str) -> Segment | None:
        """One segment, or None."""

    def list_campaigns(
        self,
        state: State | None,
        segment: str | None,
        *,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[Campaign]:
        """Campaigns, optionally filtered, ordered by id: at most ``limit``, ids > ``after``.

        Keyset paging: a query on the id index, as fast at the millionth campaign as at the
        first (no OFFSET, no scan of what comes before ``after``).
        """

    def count_campaigns(
        self, state: State | None, segment: str | None, *, after: str | None = None
    ) -> int:
        """How many campaigns `list_campaigns` would return with no limit."""

    def list_segments(self) -> list[Segment]:
        """Every segment, ordered by id."""

    def history(self, campaign_id: str) -> list[HistoryEntry]:
        """A campaign's history, oldest first."""

    def results(self, campaign_id: str) -> Results:
        """A campaign's results."""

    def add_results(self, deliveries: Iterable[Delivery]) -> None:
        """Add delivery counts, in one transaction."""

    def lease_settings(self) -> LeaseSettings:
        """The store's persisted lease settings."""

    def set_lease_settings(self, settings: LeaseSettings) -> None:
        """Persist new lease settings."""

    def open_reader(self) -> Reader:
        """A new dedicated reader (its own connection)."""

    def close(self) -> None:
        """Release connections."""

    # -- paged reads for operator screens (see `_queries`) -----------------------------

    def find_campaigns(self, query: CampaignQuery) -> list[Campaign]:
        """One page of the campaigns ``query`` selects, ordered by id."""

    def query_history(self, query: HistoryQuery) -> list[HistoryEntry]:
        """One page of history entries across campaigns, ordered by seq as asked."""

    def results_many(self, campaign_ids: Collection[str]) -> dict[str, Results]:
        """Results of each of ``campaign_ids`` (absent ids get empty results)."""
