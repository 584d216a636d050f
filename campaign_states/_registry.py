"""The registry: every lifecycle operation, decided by the machine, persisted by a store."""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import attrs

from ._clock import Clock
from ._gates import GateStore, GateTable, RegisteredGate, WaitReport
from ._invalidation import Silenced, silence
from ._lifecycle import (
    CAMPAIGN_LIFECYCLE,
    SegmentState,
    SegmentTrigger,
    State,
    Trigger,
    Verdict,
    decide_segment,
)
from ._listeners import ChangeListener, Listeners
from ._outcomes import BulkResult, Outcome, SegmentChange, TransitionResult
from ._planning import Plan, gc_paused, plan, write_transitions
from ._queries import CampaignQuery, HistoryQuery
from ._records import Campaign, Channel, Delivery, Emission, HistoryEntry, Results, Segment
from ._store import LeaseSettings, Reader, SetWriteTx, Store, WriteTx
from ._validation import (
    ACTOR_LIMIT,
    CONTENT_LIMIT,
    NAME_LIMIT,
    check_channels,
    check_distinct_ids,
    check_id,
    check_ids,
    check_limit,
    check_positive_seconds,
    check_text,
)
from .exceptions import (
    CampaignArchivedError,
    CampaignNotFoundError,
    ConcurrentUpdateError,
    InvalidChannelError,
    InvalidFieldError,
    InvalidIdError,
    InvalidIdTypeError,
    InvalidSettingsError,
    InvalidValueError,
    SegmentArchivedError,
    SegmentNotFoundError,
    StoreError,
)

__all__ = ["Registry"]

# Triggers after which nothing may be admitted: they fence, drain and wait.
_SILENCING = CAMPAIGN_LIFECYCLE.silencing_triggers()
_CAS_ATTEMPTS = 5


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

    def gates(self) -> builtins.list[RegisteredGate]:
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
        old = self.store.lease_settings()
        old_wait = old.commit_wait()
        pending = LeaseSettings(
            lease=lease,
            grace=grace,
            refresh=refresh,
            clock_margin=clock_margin,
            previous_wait=old_wait,
        )
        self.store.set_lease_settings(pending)
        settled = attrs.evolve(pending, previous_wait=0.0)
        try:
            if self.store.needs_commit_wait:
                self.clock.sleep(old_wait)
            self.store.set_lease_settings(settled)
        except StoreError as e:
            # The store's own message says its write changed nothing, which is true of the
            # second write only: say what the first one left in force.
            raise type(e)(
                f"The new lease settings (lease={lease:g}s, grace={grace:g}s, "
                f"refresh={refresh:g}s) are in force, but clearing the old commit wait "
                f"failed, so archives still wait at least {old_wait:g}s (safe, only slower) "
                f"until set_lease_settings() is called again and succeeds. The failed write: "
                f"{e}"
            ) from e
        return settled

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
        segment_id = check_id(segment_id, "segment")
        if name is not None:
            self._check_text("name", name)
        seg = Segment(id=segment_id, name=segment_id if name is None else name)
        with self.store.write() as tx:
            seg = attrs.evolve(seg, seq=tx.next_seq(1))
            tx.insert_segment(seg)
        self._listeners.apply((), (seg,))
        return seg

    def get_segment(self, segment_id: str) -> Segment:
        """One segment, or `SegmentNotFoundError`."""
        segment_id = check_id(segment_id, "segment")
        seg = self.store.get_segment(segment_id)
        if seg is None:
            raise SegmentNotFoundError(segment_id)
        return seg

    def segments(self) -> builtins.list[Segment]:
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
        segment_id = check_id(segment_id, "segment")
        self._check_actor(actor)
        if dry_run:
            return self._archive_segment_preview(segment_id)
        cause = f"segment:{segment_id}"

        def body(tx: WriteTx) -> tuple[SegmentChange, Silenced | None]:
            seg = tx.segments([segment_id]).get(segment_id)
            if seg is None:
                raise SegmentNotFoundError(segment_id)
            verdict, new_state = decide_segment(seg.state, SegmentTrigger.ARCHIVE)
            changed = verdict is Verdict.CHANGED
            written: builtins.list[Campaign] = []
            # Campaigns this segment's archive already silenced: a retry waits until
            # the gates acknowledged (or outlived) the first call's change.
            held: dict[str, float] = {}
            if changed and isinstance(tx, SetWriteTx):
                written, held = tx.move_campaigns(
                    None, segment_id, (State.ACTIVE_RUNNING, State.ACTIVE_STOPPED),
                    State.ARCHIVED, trigger=Trigger.ARCHIVE.value, actor=actor,
                    cause=cause, archive_cause=segment_id, now=self.clock.now(),
                    wall=time.time(),
                )  # fmt: skip
                seg = attrs.evolve(
                    seg, state=new_state, version=seg.version + 1, seq=tx.next_seq(1)
                )
                tx.update_segment(seg)
            else:
                targets = tx.campaigns_targeting(segment_id)
                held = {
                    c.id: c.state_changed_at
                    for c in targets
                    if c.state is State.ARCHIVED and c.archive_cause == segment_id
                }
                if changed:
                    victims = [c for c in targets if c.state is not State.ARCHIVED]
                    first = tx.next_seq(len(victims) + 1)
                    seg = attrs.evolve(
                        seg, state=new_state, version=seg.version + 1,
                        seq=first + len(victims),
                    )  # fmt: skip
                    tx.update_segment(seg)
                    written = write_transitions(
                        self.clock, tx, victims, Trigger.ARCHIVE,
                        dest=State.ARCHIVED, actor=actor, cause=cause,
                        archive_cause=segment_id, first_seq=first,
                    )  # fmt: skip
            segs = (seg,) if changed else ()
            change = SegmentChange(
                segment=seg, changed=changed, campaign_ids=tuple(c.id for c in written)
            )
            return change, Silenced(
                written=written,
                segments=segs,
                held_since=held,
                # Read after the writes reserved sequence numbers (see `Silenced.lease`).
                lease=tx.lease_settings(),
                seq=_silenced_seq(tx, written, segs, held),
            )

        change, report = silence(
            self.store,
            self._listeners,
            body,
            drain_timeout=self.drain_timeout,
            conflict=f"Segment {segment_id!r} kept changing; try again.",
            change="segment archive",
            pause_gc=True,
        )
        if report is not None:
            self._last_wait = report
            change = attrs.evolve(change, wait=report)
        return change

    def _archive_segment_preview(self, segment_id: str) -> SegmentChange:
        # Reads only (works on a read-only store, takes no write lock): what archiving now
        # would cascade to. A preview: a write may land between it and the real call.
        seg = self.get_segment(segment_id)
        verdict = decide_segment(seg.state, SegmentTrigger.ARCHIVE)[0]
        ids: tuple[str, ...] = ()
        if verdict is Verdict.CHANGED:
            ids = tuple(
                c.id
                for c in self.store.list_campaigns(None, segment_id)
                if c.state is not State.ARCHIVED
            )
        return SegmentChange(segment=seg, changed=False, dry_run=True, campaign_ids=ids)

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
        segment_id = check_id(segment_id, "segment")
        self._check_actor(actor)
        if type(restore_campaigns) is not bool:
            raise InvalidFieldError("restore_campaigns must be a bool.")
        for _ in range(_CAS_ATTEMPTS):
            try:
                with self.store.write() as tx:
                    seg = tx.segments([segment_id]).get(segment_id)
                    if seg is None:
                        raise SegmentNotFoundError(segment_id)
                    verdict, new_state = decide_segment(seg.state, SegmentTrigger.UNARCHIVE)
                    changed = verdict is Verdict.CHANGED
                    restored: builtins.list[Campaign] = []
                    if restore_campaigns:
                        restored = [
                            c
                            for c in tx.campaigns_targeting(segment_id)
                            if c.state is State.ARCHIVED and c.archive_cause == segment_id
                        ]
                    written: builtins.list[Campaign] = []
                    if changed or restored:
                        first = tx.next_seq(len(restored) + int(changed))
                        if changed:
                            seg = attrs.evolve(
                                seg,
                                state=new_state,
                                version=seg.version + 1,
                                seq=first + len(restored),
                            )
                            tx.update_segment(seg)
                        written = write_transitions(
                            self.clock,
                            tx,
                            restored,
                            Trigger.UNARCHIVE,
                            dest=State.ACTIVE_STOPPED,
                            actor=actor,
                            cause=f"segment:{segment_id}",
                            archive_cause=None,
                            first_seq=first,
                        )
            except ConcurrentUpdateError:
                continue
            if written or changed:
                self._listeners.apply(written, (seg,) if changed else ())
            return SegmentChange(
                segment=seg, changed=changed, campaign_ids=tuple(c.id for c in written)
            )
        raise ConcurrentUpdateError(f"Segment {segment_id!r} kept changing; try again.")

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
        cid = (
            check_id(campaign_id, "campaign")
            if campaign_id is not None
            else (f"c-{uuid.uuid4().hex[:12]}")
        )
        chans = _nonempty_channels(channels)
        segs = frozenset(check_ids(segments, "segment"))
        self._check_text("name", name)
        self._check_text("content", content)
        self._check_actor(actor)
        campaign = Campaign(
            id=cid,
            name=name,
            content=content,
            channels=chans,
            segments=segs,
            created_at=time.time(),
            state_changed_at=self.clock.now(),
        )
        with self.store.write() as tx:
            self._require_segments(tx, segs)
            seq = tx.next_seq(1)
            campaign = attrs.evolve(campaign, seq=seq)
            tx.insert_campaign(campaign, segs)
            tx.append_history([_entry(campaign, "create", None, actor)])
        self._listeners.apply((campaign,))
        return campaign

    def get(self, campaign_id: str) -> Campaign:
        """One campaign, or `CampaignNotFoundError`."""
        campaign_id = check_id(campaign_id)
        c = self.store.get_campaign(campaign_id)
        if c is None:
            raise CampaignNotFoundError(campaign_id)
        return c

    def list(
        self,
        *,
        state: State | str | None = None,
        segment: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> builtins.list[Campaign]:
        """Campaigns ordered by id, optionally only those in ``state`` or targeting ``segment``.

        Pages by id (keyset paging, a query on the id index, as fast deep in a million
        campaigns as at the start): ``limit`` caps how many, ``after`` starts past an id
        (any string; it need not exist). The next page is ``after=page[-1].id``.

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
        wanted, after = self._list_args(state, segment, after)
        if limit is not None and (type(limit) is not int or limit < 1):
            raise InvalidValueError(f"limit must be an int >= 1 (or None for all), not {limit!r}.")
        return self.store.list_campaigns(wanted, segment, limit=limit, after=after)

    def count(
        self,
        *,
        state: State | str | None = None,
        segment: str | None = None,
        after: str | None = None,
    ) -> int:
        """How many campaigns `list` would return with these filters and no limit.

        One ``count(*)`` query: on SQLite, about 0.1 s per million campaigns counted
        (see the README's figures).

        Raises:
            InvalidValueError: ``state`` is not a `State` (or a state's value).
            InvalidIdTypeError: ``after`` is not a str.
            SegmentNotFoundError: ``segment`` does not exist.
        """
        wanted, after = self._list_args(state, segment, after)
        return self.store.count_campaigns(wanted, segment, after=after)

    def _list_args(
        self, state: State | str | None, segment: str | None, after: object
    ) -> tuple[State | None, str | None]:
        wanted = _state(state) if state is not None else None
        if segment is not None:
            self.get_segment(segment)
        if after is None:
            return wanted, None
        if not isinstance(after, str):
            raise InvalidIdTypeError(
                f"after must be a campaign id (a str), not {type(after).__name__}: {after!r}."
            )
        # A str subclass is read as its text (str.__str__ copies it to an exact str); a
        # lone surrogate cannot be sent to a SQL store, and no id holds one.
        text = str.__str__(after)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidIdError(f"after holds a lone surrogate: {after!r}.") from None
        return wanted, text

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
        campaign_id = check_id(campaign_id)
        self._check_actor(actor)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = self._check_text("name", name)
        if content is not None:
            changes["content"] = self._check_text("content", content)
        if channels is not None:
            changes["channels"] = _nonempty_channels(channels)
        if segments is not None:
            changes["segments"] = frozenset(check_ids(segments, "segment"))
        for _ in range(_CAS_ATTEMPTS):
            try:
                with self.store.write() as tx:
                    old = tx.campaigns([campaign_id]).get(campaign_id)
                    if old is None:
                        raise CampaignNotFoundError(campaign_id)
                    if old.state is State.ARCHIVED:
                        raise CampaignArchivedError(campaign_id, "edit")
                    new = attrs.evolve(old, **changes)
                    if new == old:
                        return old
                    if "segments" in changes:
                        segs = self._require_segments(tx, new.segments)
                        archived = [s.id for s in segs.values() if s.state is SegmentState.ARCHIVED]
                        # The invariant: a running campaign never targets an archived
                        # segment, so it cannot start to.
                        if archived and old.state is State.ACTIVE_RUNNING:
                            raise SegmentArchivedError(
                                campaign_id, archived, action="retarget", state=old.state.value
                            )
                    seq = tx.next_seq(1)
                    new = attrs.evolve(new, version=old.version + 1, seq=seq)
                    tx.update_campaigns([new])
                    tx.append_history([_entry(new, "edit", old.state, actor)])
            except ConcurrentUpdateError:
                continue
            self._listeners.apply((new,))
            return new
        raise ConcurrentUpdateError(f"Campaign {campaign_id!r} kept changing; try again.")

    def history(self, campaign_id: str) -> builtins.list[HistoryEntry]:
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
        if isinstance(deliveries, Delivery) or not isinstance(deliveries, Iterable):
            raise InvalidFieldError("record_results takes an iterable of Delivery records.")
        rows = builtins.list(deliveries)
        for d in rows:
            if type(d) is not Delivery:
                raise InvalidFieldError(
                    f"record_results takes Delivery records, not {type(d).__name__}."
                )
        # Campaigns are never deleted, so checking existence before the write is enough.
        campaigns: dict[str, Campaign] = {}
        for cid in sorted({d.campaign_id for d in rows}):
            c = self.store.get_campaign(cid)
            if c is None:
                raise CampaignNotFoundError(cid)
            campaigns[cid] = c
        # What the gate would call INVALID_REQUEST is refused here alike, nothing recorded.
        for d in rows:
            if d.kind is Emission.IN_APP_IMPRESSION and d.channel is not Channel.IN_APP:
                raise InvalidValueError(
                    f"An in-app impression is counted on the in_app channel only, not "
                    f"{d.channel.value} (campaign {d.campaign_id!r}); nothing was recorded."
                )
            channels = campaigns[d.campaign_id].channels
            if d.channel not in channels:
                raise InvalidChannelError(
                    d.channel.value,
                    sorted(ch.value for ch in channels),
                    message=(
                        f"Campaign {d.campaign_id!r} does not deliver on {d.channel.value} "
                        f"(its channels: {', '.join(sorted(ch.value for ch in channels))}); "
                        "nothing was recorded."
                    ),
                )
        if rows:
            self.store.add_results(rows)

    # -- campaigns: triggers ---------------------------------------------------------------

    def resume(self, campaign_id: str, *, actor: str | None = None) -> TransitionResult:
        """Launch a stopped campaign (refused while it targets an archived segment)."""
        return self._one(campaign_id, Trigger.RESUME, actor)

    def stop(self, campaign_id: str, *, actor: str | None = None) -> TransitionResult:
        """Stop a running campaign; returns once no gate anywhere admits it."""
        return self._one(campaign_id, Trigger.STOP, actor)

    def archive(self, campaign_id: str, *, actor: str | None = None) -> TransitionResult:
        """Archive a campaign; returns once no gate anywhere admits it (see the guarantee)."""
        return self._one(campaign_id, Trigger.ARCHIVE, actor)

    def unarchive(self, campaign_id: str, *, actor: str | None = None) -> TransitionResult:
        """Unarchive a campaign to ``active_stopped``: never straight to running."""
        return self._one(campaign_id, Trigger.UNARCHIVE, actor)

    def resume_many(self, campaign_ids: Iterable[str], *, actor: str | None = None) -> BulkResult:
        """`resume` many campaigns in one transaction; per-id outcomes."""
        return self._many(campaign_ids, Trigger.RESUME, actor)

    def stop_many(self, campaign_ids: Iterable[str], *, actor: str | None = None) -> BulkResult:
        """`stop` many campaigns in one transaction and one wait; per-id outcomes."""
        return self._many(campaign_ids, Trigger.STOP, actor)

    def archive_many(self, campaign_ids: Iterable[str], *, actor: str | None = None) -> BulkResult:
        """`archive` many campaigns in one transaction and one wait; per-id outcomes."""
        return self._many(campaign_ids, Trigger.ARCHIVE, actor)

    def unarchive_many(
        self, campaign_ids: Iterable[str], *, actor: str | None = None
    ) -> BulkResult:
        """`unarchive` many campaigns in one transaction; per-id outcomes."""
        return self._many(campaign_ids, Trigger.UNARCHIVE, actor)

    def _one(self, campaign_id: str, trigger: Trigger, actor: str | None) -> TransitionResult:
        campaign_id = check_id(campaign_id)
        self._check_actor(actor)
        plan, report = self._transition([campaign_id], trigger, actor)
        outcome, campaign, error = plan.outcomes[campaign_id]
        if outcome is Outcome.NOT_FOUND:
            raise CampaignNotFoundError(campaign_id)
        if error is not None:
            raise error
        assert campaign is not None
        if outcome is Outcome.CHANGED:
            return TransitionResult(
                campaign=campaign, changed=True, previous=plan.moved[0].state, wait=report
            )
        return TransitionResult(
            campaign=campaign, changed=False, previous=campaign.state, wait=report
        )

    def _many(self, campaign_ids: Iterable[str], trigger: Trigger, actor: str | None) -> BulkResult:
        # Ids are checked, folded (first occurrence order) and counted against the cap
        # while they are read: an oversized request is refused before any store work.
        self._check_actor(actor)
        with gc_paused():
            ids = check_distinct_ids(campaign_ids, self.bulk_limit)
        if not ids:
            return BulkResult({})
        plan, report = self._transition(ids, trigger, actor)
        return BulkResult(plan.outcomes, wait=report)

    def _transition(
        self, ids: builtins.list[str], trigger: Trigger, actor: str | None
    ) -> tuple[Plan, WaitReport | None]:
        silencing = trigger in _SILENCING

        def body(tx: WriteTx) -> tuple[Plan, Silenced | None]:
            plan = self._plan(tx, ids, trigger, actor)
            if not silencing:
                return plan, None
            return plan, Silenced(
                written=plan.written,
                held_since=plan.held_since,
                lease=tx.lease_settings(),
                seq=_silenced_seq(tx, plan.written, (), plan.held_since),
            )

        # Bulk writes pause the collector (see `gc_paused`) for the write only, never for
        # the wait; a single trigger must not pay for it.
        plan, report = silence(
            self.store,
            self._listeners,
            body,
            drain_timeout=self.drain_timeout,
            conflict="Campaigns kept changing under this call; try again.",
            change=trigger.value,
            pause_gc=len(ids) > 1,
        )
        if report is not None:
            self._last_wait = report
        elif plan.written:
            self._listeners.apply(plan.written)
        return plan, report

    def _plan(
        self, tx: WriteTx, ids: builtins.list[str], trigger: Trigger, actor: str | None
    ) -> Plan:
        """Decide ``trigger`` for every id, then write the changes (see `_planning`)."""
        return plan(self.clock, tx, ids, trigger, actor)

    def _check_text(self, field: str, value: object) -> str:
        if field == "content":
            return check_text("content", value, self.content_limit, "content_limit", in_bytes=True)
        return check_text(field, value, self.name_limit, "name_limit", in_bytes=False)

    def _check_actor(self, actor: object) -> None:
        if actor is None:
            return
        if type(actor) is not str:
            raise InvalidFieldError(f"actor must be a str or None, not {type(actor).__name__}.")
        check_text("actor", actor, self.actor_limit, "actor_limit", in_bytes=False)

    # -- paged reads for operator screens (the console's list and event log) -----------

    def find_campaigns(
        self,
        *,
        states: Iterable[State | str] | None = None,
        segment: str | None = None,
        text: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> builtins.list[Campaign]:
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
        query = CampaignQuery(states=states, segment=segment, text=text, after=after, limit=limit)
        if segment is not None:
            self.get_segment(segment)
        return self.store.find_campaigns(query)

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
    ) -> builtins.list[HistoryEntry]:
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
        query = HistoryQuery(
            actor=actor,
            trigger=trigger,
            campaign=campaign,
            since=since,
            until=until,
            after=after,
            limit=limit,
            newest_first=newest_first,
        )
        return self.store.query_history(query)

    def results_many(self, campaign_ids: Iterable[str]) -> dict[str, Results]:
        """What each of several campaigns delivered, in one read (unknown ids: empty results).

        Raises:
            BulkLimitError: More distinct ids than ``bulk_limit``.
        """
        ids = check_distinct_ids(campaign_ids, self.bulk_limit)
        return self.store.results_many(ids) if ids else {}

    def _require_segments(self, tx: WriteTx, ids: Collection[str]) -> dict[str, Segment]:
        found = tx.segments(ids)
        for sid in sorted(ids):
            if sid not in found:
                raise SegmentNotFoundError(sid)
        return found


def _state(value: object) -> State:
    if isinstance(value, State):
        return value
    if type(value) is str:
        try:
            return State(value)
        except ValueError:
            pass
    raise InvalidValueError(
        f"Unknown state {value!r:.40}: use one of {', '.join(s.value for s in State)}."
    )


def _entry(c: Campaign, trigger: str, from_state: State | None, actor: str | None) -> HistoryEntry:
    """The history entry of a create or an edit (the actor's own request: no cause)."""
    return HistoryEntry(
        campaign_id=c.id,
        trigger=trigger,
        from_state=from_state,
        to_state=c.state,
        actor=actor,
        cause=None,
        time=time.time(),
        seq=c.seq,
        version=c.version,
    )


def _nonempty_channels(channels: object) -> frozenset[Channel]:
    chans = check_channels(channels, Channel)
    if not chans:
        raise InvalidChannelError(
            None, [c.value for c in Channel], message="A campaign needs at least one channel."
        )
    return chans


def _silenced_seq(
    tx: WriteTx,
    written: Sequence[Campaign],
    segments: Sequence[Segment],
    held: Collection[str] = (),
) -> int:
    """The sequence gates must acknowledge: the last this call wrote, and for campaigns a
    previous call already silenced (a retry), their last change, read here (a read only:
    a retry works on a read-only store)."""
    seqs = [c.seq for c in written] + [s.seq for s in segments]
    if held:
        seqs.extend(c.seq for c in tx.campaigns(held).values())
    return max(seqs, default=0)
