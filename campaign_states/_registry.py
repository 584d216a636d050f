"""The registry: every lifecycle operation, decided by the machine, persisted by a store."""

from __future__ import annotations

from collections.abc import Iterable

from . import _registry_campaigns as _campaigns
from . import _registry_reads as _reads
from . import _registry_segments as _segments
from . import _registry_triggers as _triggers
from ._clock import Clock
from ._gates import GateStore, GateTable, RegisteredGate, WaitReport
from ._lease import change_lease_settings
from ._lifecycle import State, Trigger
from ._listeners import ChangeListener, Listeners
from ._outcomes import BulkResult, SegmentChange, TransitionResult
from ._planning import Plan, plan
from ._queries import HistoryQuery
from ._records import Campaign, Channel, Delivery, HistoryEntry, Results, Segment
from ._store import LeaseSettings, Reader, Store, WriteTx
from ._validation import (
    ACTOR_LIMIT,
    CONTENT_LIMIT,
    NAME_LIMIT,
    check_distinct_ids,
    check_id,
    check_limit,
    check_positive_seconds,
)
from .exceptions import CampaignNotFoundError, InvalidSettingsError, SegmentNotFoundError

__all__ = ["Registry"]


class Registry:
    """Campaigns and segments, their lifecycle, history and results, on one store.

    Open one with `open_registry`. Thread-safe; share one per process and per store, and
    build gates on it so they are fenced and updated by its changes.

    Args:
        store: Where records live.
        bulk_limit: Most distinct ids one bulk call may name (checked before any work).
        drain_timeout: How long an archive or stop waits for local permits in flight.
        name_limit: Most characters in a campaign's or segment's name (default 200).
        content_limit: Most UTF-8 bytes in a campaign's content (default 128 KiB).
        actor_limit: Most characters in an actor (default 254, an email address's most).

    Names, content and actors over their limit raise `TextTooLongError`, and ones holding
    a NUL or a lone surrogate `InvalidTextError`, before any store work.
    """

    def __init__(
        self,
        store: Store,
        *,
        bulk_limit: int = 100_000,
        drain_timeout: float = 30.0,
        name_limit: int = NAME_LIMIT,
        content_limit: int = CONTENT_LIMIT,
        actor_limit: int = ACTOR_LIMIT,
    ) -> None:
        if isinstance(bulk_limit, bool) or not isinstance(bulk_limit, int) or bulk_limit < 1:
            raise InvalidSettingsError(f"bulk_limit must be a positive int, not {bulk_limit!r}.")
        self.store = store
        self.bulk_limit = bulk_limit
        self.drain_timeout = check_positive_seconds("drain_timeout", drain_timeout)
        self.name_limit = check_limit("name_limit", name_limit)
        self.content_limit = check_limit("content_limit", content_limit)
        self.actor_limit = check_limit("actor_limit", actor_limit)
        self._listeners = Listeners()
        self._last_wait: WaitReport | None = None

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        """The clock commit waits are measured on (the store's)."""
        return self.store.clock

    @property
    def url(self) -> str:
        """The store's URL, any password masked (``postgresql://app:***@db/app``)."""
        return self.store.url

    @property
    def last_wait(self) -> WaitReport | None:
        """How the most recent archive or stop through this registry reached its promise.

        The same `WaitReport` the call's result carries as ``wait`` (with several threads
        archiving, the last one to finish). None before the first.
        """
        return self._last_wait

    def gate_table(self) -> GateTable | None:
        """The store's table of registered gates, or None (memory: no other process)."""
        store = self.store
        if not store.needs_commit_wait or not isinstance(store, GateStore):
            return None
        return store.gate_table()

    def gates(self) -> list[RegisteredGate]:
        """The gates registered on this store, oldest first (who is connected, who lags).

        Rows whose heartbeat is older than their lease belong to gates that stalled or died
        without closing: archives no longer wait for them.
        """
        table = self.gate_table()
        return [] if table is None else table.rows()

    def subscribe(self, listener: ChangeListener) -> None:
        """Have ``listener`` fenced, updated and drained around every change (gates do this)."""
        self._listeners.add(listener)

    def unsubscribe(self, listener: ChangeListener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def open_reader(self) -> Reader:
        """A dedicated reader on the store, for a gate's refresher."""
        return self.store.open_reader()

    def lease_settings(self) -> LeaseSettings:
        """The store's lease settings, which every gate and archiver on it obeys."""
        return self.store.lease_settings()

    def set_lease_settings(
        self, *, lease: float, grace: float, refresh: float, clock_margin: float = 0.01
    ) -> LeaseSettings:
        """Change the store's lease settings; returns once no gate can hold an older lease.

        Two writes: the new settings carry the old commit wait as ``previous_wait``, so
        every archiver (on any host) waits at least as long as before while gates may still
        hold old leases; after waiting those out, a second write clears it. Shortening the
        lease is therefore safe at every instant, with no clock compared across hosts. If
        this process dies in between, archives keep the longer wait until the next change:
        conservative, never unsafe. Make one change at a time.

        Bounds: ``refresh`` at least 0.001 s and below ``lease``; ``lease`` 0.002 s to
        86,400 s; ``grace`` 0 to 86,400 s; ``clock_margin`` below 1 (see `LeaseSettings`).

        Raises:
            InvalidSettingsError: A value is out of bounds; nothing was written.
            StoreError: A write failed. If the first did, nothing was changed. If the second
                did (the same error type), the new settings are in force with the old commit
                wait still pending: archives wait at least the old wait, which is safe, until
                a later `set_lease_settings` succeeds; the message says so.
        """
        return change_lease_settings(
            self.store, lease=lease, grace=grace, refresh=refresh, clock_margin=clock_margin
        )

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- segments ---------------------------------------------------------------------------

    def create_segment(self, segment_id: str, *, name: str | None = None) -> Segment:
        """Create an active segment.

        Raises:
            DuplicateIdError: A segment with this id exists.
        """
        return _segments.create_segment(self, segment_id, name)

    def get_segment(self, segment_id: str) -> Segment:
        """One segment, or `SegmentNotFoundError`."""
        segment_id = check_id(segment_id, "segment")
        seg = self.store.get_segment(segment_id)
        if seg is None:
            raise SegmentNotFoundError(segment_id)
        return seg

    def segments(self) -> list[Segment]:
        """Every segment, ordered by id."""
        return self.store.list_segments()

    def archive_segment(
        self, segment_id: str, *, actor: str | None = None, dry_run: bool = False
    ) -> SegmentChange:
        """Archive a segment and, in the same transaction, every campaign that targets it.

        Each cascaded campaign's history names the segment as the cause. With
        ``dry_run=True`` nothing changes and ``campaign_ids`` lists what would be archived.
        Returns once no gate anywhere admits those campaigns (see the guarantee).
        Archiving an archived segment is an unchanged no-op: it cascades nothing (a
        campaign unarchived since, to be retargeted, stays as it is).
        """
        return _segments.archive_segment(self, segment_id, actor, dry_run=dry_run)

    def unarchive_segment(
        self, segment_id: str, *, actor: str | None = None, restore_campaigns: bool = False
    ) -> SegmentChange:
        """Unarchive a segment.

        Its campaigns stay archived unless ``restore_campaigns`` is true: then the ones this
        segment's archive cascaded (and nobody unarchived or re-archived since) return to
        ``active_stopped``, never running. A restored campaign that also targets another
        archived segment cannot be resumed until that one is unarchived too. Asking again
        with ``restore_campaigns`` after a plain unarchive restores them then.
        """
        return _segments.unarchive_segment(
            self, segment_id, actor, restore_campaigns=restore_campaigns
        )

    # -- campaigns: create, read, edit -----------------------------------------------------

    def create_campaign(
        self,
        *,
        name: str,
        channels: Iterable[Channel | str],
        segments: Iterable[str] = (),
        content: str = "",
        campaign_id: str | None = None,
        actor: str | None = None,
    ) -> Campaign:
        """Create a campaign in ``active_stopped``; `resume` launches it.

        Raises:
            SegmentNotFoundError: A named segment does not exist.
            InvalidChannelError: A channel is unknown, or none is given.
        """
        return _campaigns.create_campaign(
            self, name=name, channels=channels, segments=segments, content=content,
            campaign_id=campaign_id, actor=actor,
        )  # fmt: skip

    def get(self, campaign_id: str) -> Campaign:
        """One campaign, or `CampaignNotFoundError`."""
        campaign_id = check_id(campaign_id)
        c = self.store.get_campaign(campaign_id)
        if c is None:
            raise CampaignNotFoundError(campaign_id)
        return c

    def campaigns(
        self,
        *,
        state: State | str | None = None,
        segment: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[Campaign]:
        """Campaigns ordered by id, optionally only those in ``state`` or targeting ``segment``.

        Pages by id (keyset paging, a query on the id index, as fast deep in a million
        campaigns as at the start): ``limit`` caps how many, ``after`` starts past an id
        (any string; it need not exist). The next page is ``after=page[-1].id``.
        ``list`` is the old name of this method, kept as an alias (deprecated).

        Args:
            state: Only campaigns in this state.
            segment: Only campaigns targeting this segment.
            limit: At most this many (an int >= 1); None: all.
            after: Only campaigns whose id sorts after this one.

        Raises:
            InvalidValueError: ``state`` is not a `State` (or a state's value), or ``limit``
                is not an int >= 1.
            InvalidIdTypeError: ``after`` is not a str.
            InvalidIdError: ``after`` holds a lone surrogate.
            SegmentNotFoundError: ``segment`` does not exist.
        """
        return _reads.campaigns(self, state, segment, limit, after)

    def count(
        self,
        *,
        state: State | str | None = None,
        segment: str | None = None,
        after: str | None = None,
    ) -> int:
        """How many campaigns `campaigns` would return with these filters and no limit.

        One ``count(*)`` query: on SQLite, about 0.1 s per million campaigns counted
        (see the README's figures).

        Raises:
            InvalidValueError: ``state`` is not a `State` (or a state's value).
            InvalidIdTypeError: ``after`` is not a str.
            SegmentNotFoundError: ``segment`` does not exist.
        """
        return _reads.count(self, state, segment, after)

    def edit(
        self,
        campaign_id: str,
        *,
        name: str | None = None,
        content: str | None = None,
        channels: Iterable[Channel | str] | None = None,
        segments: Iterable[str] | None = None,
        actor: str | None = None,
    ) -> Campaign:
        """Change a campaign's name, content, channels or segments.

        Raises:
            CampaignArchivedError: The campaign is archived: unarchive it first.
            SegmentArchivedError: A running campaign cannot start targeting an archived segment.
        """
        return _campaigns.edit(
            self, campaign_id, name=name, content=content, channels=channels,
            segments=segments, actor=actor,
        )  # fmt: skip

    def history(self, campaign_id: str) -> list[HistoryEntry]:
        """Every change to a campaign, oldest first (readable when archived)."""
        campaign_id = self.get(campaign_id).id
        return self.store.history(campaign_id)

    def results(self, campaign_id: str) -> Results:
        """What a campaign delivered (kept across archive and unarchive)."""
        campaign_id = self.get(campaign_id).id
        return self.store.results(campaign_id)

    def record_results(self, deliveries: Iterable[Delivery]) -> None:
        """Add delivered messages and impressions to campaigns' results, in one transaction.

        Recording is allowed on archived campaigns: emissions admitted before an archive
        complete after it.

        Raises:
            CampaignNotFoundError: A campaign does not exist.
            InvalidChannelError: A delivery is on a channel its campaign does not have.
            InvalidValueError: An in-app impression on a channel other than ``in_app``.
        """
        _campaigns.record_results(self, deliveries)

    # -- campaigns: triggers ---------------------------------------------------------------

    def resume(self, campaign_id: str, *, actor: str | None = None) -> TransitionResult:
        """Launch a stopped campaign (refused while it targets an archived segment)."""
        return _triggers.one(self, campaign_id, Trigger.RESUME, actor)

    def stop(self, campaign_id: str, *, actor: str | None = None) -> TransitionResult:
        """Stop a running campaign; returns once no gate anywhere admits it."""
        return _triggers.one(self, campaign_id, Trigger.STOP, actor)

    def archive(self, campaign_id: str, *, actor: str | None = None) -> TransitionResult:
        """Archive a campaign; returns once no gate anywhere admits it (see the guarantee)."""
        return _triggers.one(self, campaign_id, Trigger.ARCHIVE, actor)

    def unarchive(self, campaign_id: str, *, actor: str | None = None) -> TransitionResult:
        """Unarchive a campaign to ``active_stopped``: never straight to running."""
        return _triggers.one(self, campaign_id, Trigger.UNARCHIVE, actor)

    def resume_many(self, campaign_ids: Iterable[str], *, actor: str | None = None) -> BulkResult:
        """`resume` many campaigns in one transaction; per-id outcomes."""
        return _triggers.many(self, campaign_ids, Trigger.RESUME, actor)

    def stop_many(self, campaign_ids: Iterable[str], *, actor: str | None = None) -> BulkResult:
        """`stop` many campaigns in one transaction and one wait; per-id outcomes."""
        return _triggers.many(self, campaign_ids, Trigger.STOP, actor)

    def archive_many(self, campaign_ids: Iterable[str], *, actor: str | None = None) -> BulkResult:
        """`archive` many campaigns in one transaction and one wait; per-id outcomes."""
        return _triggers.many(self, campaign_ids, Trigger.ARCHIVE, actor)

    def unarchive_many(
        self, campaign_ids: Iterable[str], *, actor: str | None = None
    ) -> BulkResult:
        """`unarchive` many campaigns in one transaction; per-id outcomes."""
        return _triggers.many(self, campaign_ids, Trigger.UNARCHIVE, actor)

    def _plan(self, tx: WriteTx, ids: list[str], trigger: Trigger, actor: str | None) -> Plan:
        """Decide ``trigger`` for every id, then write the changes (see `_planning`)."""
        return plan(self.clock, tx, ids, trigger, actor)

    # -- paged reads for operator screens (the console's list and event log) -----------

    def find_campaigns(
        self,
        *,
        states: Iterable[State | str] | None = None,
        segment: str | None = None,
        text: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> list[Campaign]:
        """One page of campaigns, ordered by id, filtered in the store.

        Keyset paging: pass the last id of a page as ``after`` to get the next one, so
        every page costs the same however many campaigns there are.

        Args:
            states: Only campaigns in one of these states (default: every state).
            segment: Only campaigns targeting this segment.
            text: Only campaigns whose id or name contains this (A-Z compared
                case-insensitively, every other character exactly).
            after: Only campaigns whose id sorts after this one.
            limit: At most this many, 1 to 1,000.

        Raises:
            InvalidValueError: An unknown state, an empty ``states``, a bad ``limit`` or
                ``text`` (empty or longer than an id).
            InvalidIdError: ``segment`` or ``after`` is not a well-formed id.
            SegmentNotFoundError: ``segment`` does not exist.
        """
        return _reads.find_campaigns(
            self, states=states, segment=segment, text=text, after=after, limit=limit
        )

    def event_log(
        self,
        *,
        actor: str | None = None,
        trigger: str | None = None,
        campaign: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[HistoryEntry]:
        """One page of history across every campaign, filtered in the store.

        Ordered by the store's global sequence number (oldest first, or newest first).
        Pass the last entry's ``seq`` as ``after`` for the next page, keeping the other
        arguments. Segment cascades appear as their campaigns' entries, each with
        ``cause="segment:<id>"``.

        Args:
            actor: Only entries recorded for this actor (exact match).
            trigger: Only entries of this trigger: ``create``, ``edit``, or a `Trigger` value.
            campaign: Only this campaign's entries (it need not exist: no entries then).
            since: Only entries at or after this wall time (UNIX seconds).
            until: Only entries before this wall time.
            after: Only entries after this seq in the page's order.
            limit: At most this many, 1 to 1,000.
            newest_first: Highest seq first.

        Raises:
            InvalidValueError: An unknown trigger, a non-finite time, a bad ``after`` or
                ``limit``.
            InvalidFieldError: ``actor`` is not a str, ``newest_first`` not a bool.
            InvalidIdError: ``campaign`` is not a well-formed id.
        """
        return self.store.query_history(
            HistoryQuery(
                actor=actor, trigger=trigger, campaign=campaign, since=since, until=until,
                after=after, limit=limit, newest_first=newest_first,
            )
        )  # fmt: skip

    def results_many(self, campaign_ids: Iterable[str]) -> dict[str, Results]:
        """What each of several campaigns delivered, in one read (unknown ids: empty results).

        Raises:
            BulkLimitError: More distinct ids than ``bulk_limit``.
        """
        ids = check_distinct_ids(campaign_ids, self.bulk_limit)
        return self.store.results_many(ids) if ids else {}

    # The old name of `campaigns`, kept working (deprecated, without a warning: code and
    # docs call it). Defined last: mypy reads ``list`` in the annotations above as the
    # builtin only while the class has no attribute of that name yet.
    list = campaigns
