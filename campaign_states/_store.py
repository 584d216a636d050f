"""The store protocol every backend satisfies, and the values that cross it.

The registry holds all lifecycle logic and talks to a store only through `Store`,
`WriteTx` and `Reader`, so the memory, SQLite and PostgreSQL stores persist the same
decisions and pass one contract suite.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs

from ._clock import Clock
from ._lifecycle import State
from ._queries import CampaignQuery, HistoryQuery
from ._records import Campaign, Channel, Delivery, HistoryEntry, Results, Segment
from ._rows import GateRow, channels_from_text, ids_from_text, state_from_value
from .exceptions import InvalidSettingsError

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

log = logging.getLogger("campaign_states")


# Bounds on the lease settings (also `LeaseSettings.MIN_REFRESH` etc.): below a millisecond a
# refresher would spin; past a day an archive would wait a day. previous_wait is not bounded:
# it is an old commit wait, computed, never typed in.
_MIN_REFRESH = 0.001
_MIN_LEASE = 0.002
_MAX_SECONDS = 86_400.0


def _seconds(
    *, allow_zero: bool, low: float = 0.0, high: float = math.inf
) -> Callable[[object, attrs.Attribute[float], float], None]:
    def check(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidSettingsError(f"{attribute.name} must be a number, not {value!r}.")
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise InvalidSettingsError(
                f"{attribute.name} must be finite and {'>= 0' if allow_zero else '> 0'}, "
                f"not {value!r}."
            )
        if not low <= value <= high:
            raise InvalidSettingsError(
                f"{attribute.name} must be between {low:g} and {high:g} seconds, not {value!r}."
            )

    return check


@attrs.frozen(kw_only=True)
class LeaseSettings:
    """How long a gate may trust its snapshot, and so how long an archive waits.

    They belong to the store (persisted in it), not to each process: an archiver must wait
    at least as long as the longest lease any gate holds.

    Attributes:
        lease: A gate denies (STALE) once this long has passed since its last successful
            refresh *started*; 0.002 s to 86,400 s (one day). Shorter: archives return
            sooner; longer: store blips of up to about ``lease - refresh`` go unnoticed.
        grace: Time allowed between ``still_valid()`` and the bytes leaving; 0 to 86,400 s.
        refresh: How often a gate polls the store: at least 0.001 s, below ``lease``.
        clock_margin: Relative clock-rate error allowed between hosts.
        previous_wait: While changed settings are taking effect, the old commit wait:
            archivers wait at least this long until `Registry.set_lease_settings` has
            waited out the old leases and cleared it.

    The bounds are class attributes: ``MIN_REFRESH`` (0.001 s), ``MIN_LEASE`` (0.002 s) and
    ``MAX_LEASE`` (86,400 s, also the most ``grace`` may be).
    """

    MIN_REFRESH: ClassVar[float] = _MIN_REFRESH
    MIN_LEASE: ClassVar[float] = _MIN_LEASE
    MAX_LEASE: ClassVar[float] = _MAX_SECONDS

    # Defaults chosen for availability (README, "Settings and their trade-offs"): with
    # acknowledged invalidation an archive waits the lease only for a gate that does not
    # answer, so the lease can be long enough to ride out seconds-long stalls.
    lease: float = attrs.field(
        default=10.0, validator=_seconds(allow_zero=False, low=_MIN_LEASE, high=_MAX_SECONDS)
    )
    grace: float = attrs.field(default=0.1, validator=_seconds(allow_zero=True, high=_MAX_SECONDS))
    refresh: float = attrs.field(
        default=1.0, validator=_seconds(allow_zero=False, low=_MIN_REFRESH, high=_MAX_SECONDS)
    )
    clock_margin: float = attrs.field(default=0.01, validator=_seconds(allow_zero=True))
    previous_wait: float = attrs.field(default=0.0, validator=_seconds(allow_zero=True))

    def __attrs_post_init__(self) -> None:
        if self.refresh >= self.lease:
            raise InvalidSettingsError(
                f"refresh ({self.refresh}s) must be shorter than lease ({self.lease}s): "
                "a gate would lapse between refreshes."
            )
        if self.clock_margin >= 1:
            raise InvalidSettingsError("clock_margin is a fraction; use e.g. 0.01.")

    @classmethod
    def stored(cls, **values: Any) -> LeaseSettings:
        """Settings as a store persisted them, by this version or an older one.

        A store written before the bounds existed may hold settings outside them (a
        refresh of 1e-9 s). Refusing to load those would make every gate deny for good and
        leave `Registry.set_lease_settings` unable to read what it must wait out, so they
        load as they are (a warning is logged); only non-numbers are refused.
        """
        try:
            return cls(**values)
        except InvalidSettingsError:
            fields = {f.name: f.default for f in attrs.fields(cls)}
            clean: dict[str, float] = {}
            for name, default in fields.items():
                v = values.get(name, default)
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise
                clean[name] = float(v)
            log.warning(
                "the store's lease settings are outside today's bounds (%s); loaded as they "
                "are: set new ones with Registry.set_lease_settings()",
                clean,
            )
            settings = object.__new__(cls)
            for name, v in clean.items():
                object.__setattr__(settings, name, v)
            return settings

    def commit_wait(self) -> float:
        """How long an archive waits after its commit.

        A pending ``previous_wait`` applies until it is cleared in the store, not until a
        time on some host's clock (hosts' clocks are not comparable).
        """
        return max((self.lease + self.grace) * (1 + self.clock_margin), self.previous_wait)


@attrs.frozen(kw_only=True)
class ChangeBatch:
    """What changed since a sequence number (all of it, from 0).

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

    A `ChangeBatch` builds a `Campaign` record per changed campaign; loading a million
    campaigns into a gate spends most of its time there. These rows are the stored columns
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


class WriteTx(Protocol):
    """**Protocol:** one write transaction; writes are all or nothing.

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


@runtime_checkable
class SetWriteTx(WriteTx, Protocol):
    """**Protocol (optional):** a `WriteTx` that moves many campaigns in set form.

    The registry decides, from the lifecycle declaration, which source states a trigger
    changes and to what; a store offering this applies that decision to a whole bulk
    request in a few statements instead of reading, rebuilding and rewriting every record
    (the difference between about 0.6 s and 1.3 s for 100,000 campaigns on SQLite).
    Stores without it get the general path; the outcomes are the same.
    """

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
        state, ``dest``, ``actor``, ``cause``, ``wall``). The state test and the write are
        one statement under the transaction's lock: the compare-and-set happens in the
        database. Sequence numbers are reserved one per candidate id, so unmoved ids
        leave gaps.

        Returns:
            The moved campaigns as now stored, in sequence (candidate) order; and, for
            the candidates that were already in ``dest`` with this ``archive_cause``, the
            time their state changed (a retry waits out what remains of their wait).
        """


class Reader(Protocol):
    """**Protocol:** a dedicated read connection for a gate's refresher."""

    def version_token(self) -> object:
        """A cheap value that changes whenever anything commits (SQLite ``data_version``)."""

    def changes_since(self, seq: int) -> ChangeBatch:
        """Everything changed after ``seq``, in one consistent read."""

    def close(self) -> None:
        """Release the connection."""


@runtime_checkable
class GateReader(Reader, Protocol):
    """**Protocol (optional):** a `Reader` that also reads changes as plain `GateRow` tuples.

    A gate uses it when its reader has it, else `Reader.changes_since`: both describe the
    same changes in the same snapshot, so the gate decides the same either way; this one
    skips building a record per campaign (a million-campaign SQLite load takes less than
    half the time).
    """

    def gate_rows_since(self, seq: int) -> GateRowBatch:
        """Everything changed after ``seq``, as rows, in one consistent read."""


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
