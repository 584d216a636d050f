"""The registry: every lifecycle operation, decided by the machine, persisted by a store."""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs

from ._clock import Clock
from ._lifecycle import (
    SegmentState,
    SegmentTrigger,
    State,
    Trigger,
    Verdict,
    campaign_triggers_allowed,
    decide_cached,
    decide_segment,
)
from ._listeners import ChangeListener, Listeners, settle
from ._outcomes import BulkResult, ItemOutcome, Outcome, SegmentChange, TransitionResult
from ._records import Campaign, Channel, Delivery, HistoryEntry, Results, Segment
from ._store import LeaseSettings, Reader, Store, WriteTx
from ._validation import check_channels, check_id, check_ids, check_positive_seconds
from .exceptions import (
    BulkLimitError,
    CampaignArchivedError,
    CampaignNotFoundError,
    ConcurrentUpdateError,
    InvalidChannelError,
    InvalidFieldError,
    InvalidSettingsError,
    InvalidTransitionError,
    SegmentArchivedError,
    SegmentNotFoundError,
)

__all__ = ["Registry"]

# Triggers after which nothing may be admitted: they fence, drain and wait.
_SILENCING = frozenset({Trigger.ARCHIVE, Trigger.STOP})
_CAS_ATTEMPTS = 5


@attrs.frozen
class _Decided:
    outcome: Outcome
    campaign: Campaign | None = None
    previous: State | None = None
    error: Exception | None = None


@attrs.frozen
class _Plan:
    """What one write decided: outcomes per id, the records to write, what to wait for."""

    outcomes: dict[str, _Decided]
    written: builtins.list[Campaign]
    # Campaigns already in the silencing target before this call, with their
    # state_changed_at: a retry must wait out what remains of the first call's wait.
    held_since: dict[str, float]


class Registry:
    """Campaigns and segments, their lifecycle, history and results, on one store.

    Open one with `open_registry`. Thread-safe; share one per process and per store, and
    build gates on it so they are fenced and updated by its changes.

    Args:
        store: Where records live.
        bulk_limit: Most distinct ids one bulk call may name (checked before any work).
        drain_timeout: How long an archive or stop waits for local permits in flight.
    """

    def __init__(self, store: Store, *, bulk_limit: int = 100_000, drain_timeout: float = 30.0) -> None:
        if isinstance(bulk_limit, bool) or not isinstance(bulk_limit, int) or bulk_limit < 1:
            raise InvalidSettingsError(f"bulk_limit must be a positive int, not {bulk_limit!r}.")
        self.store = store
        self.bulk_limit = bulk_limit
        self.drain_timeout = check_positive_seconds("drain_timeout", drain_timeout)
        self._listeners = Listeners()

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        """The clock commit waits are measured on (the store's)."""
        return self.store.clock

    @property
    def url(self) -> str:
        """The URL that reopens this registry's store."""
        return self.store.url

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

    def set_lease_settings(self, *, lease: float, grace: float, refresh: float,
                           clock_margin: float = 0.01) -> LeaseSettings:
        """Change the store's lease settings; returns once no gate can hold an older lease.

        Archivers use the longer of the old and new waits until the old leases have lapsed,
        so shortening the lease is safe at every instant, not only after this returns.
        """
        old = self.store.lease_settings()
        now = self.clock.now()
        old_wait = old.commit_wait(now)
        new = LeaseSettings(
            lease=lease, grace=grace, refresh=refresh, clock_margin=clock_margin,
            previous_wait=old_wait, previous_until=now + old_wait,
        )
        self.store.set_lease_settings(new)
        if self.store.needs_commit_wait:
            self.clock.sleep(old_wait)
        return new

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retrying(self) -> Iterator[int]:
        # A compare-and-set can only lose to a writer that slipped in between our read and
        # our write; every store locks what it reads, so this is a backstop, not a hot path.
        yield from range(_CAS_ATTEMPTS)

    @contextmanager
    def _write(self, fenced: builtins.list[str]) -> Iterator[WriteTx]:
        """A store write whose fences are lifted if it fails (the change did not happen)."""
        try:
            with self.store.write() as tx:
                yield tx
        except BaseException:
            if fenced:
                self._listeners.unfence(fenced)
            raise

    def _fence(self, fenced: builtins.list[str], ids: Sequence[str]) -> None:
        # Called inside the write transaction, before its commit: from here on local gates
        # deny these campaigns, so no local admit can slip in between the commit becoming
        # visible and the listeners' apply.
        if ids:
            fenced.extend(ids)
            self._listeners.fence(ids)

    def _settle(self, written: Sequence[Campaign], segments: Sequence[Segment],
                silenced: Collection[str], held_since: dict[str, float],
                lease: LeaseSettings) -> None:
        """After a commit: update local gates, drain their permits, wait out remote leases."""
        settle(self._listeners, self.store, written, segments, silenced, held_since, lease,
               drain_timeout=self.drain_timeout)

    # -- segments ---------------------------------------------------------------------------

    def create_segment(self, segment_id: str, *, name: str | None = None) -> Segment:
        """Create an active segment."""
        check_id(segment_id, "segment")
        seg = Segment(id=segment_id, name=segment_id if name is None else name)
        with self._write([]) as tx:
            seg = attrs.evolve(seg, seq=tx.next_seq(1))
            tx.insert_segment(seg)
        self._listeners.apply((), (seg,))
        return seg

    def get_segment(self, segment_id: str) -> Segment:
        """One segment, or `SegmentNotFoundError`."""
        check_id(segment_id, "segment")
        seg = self.store.get_segment(segment_id)
        if seg is None:
            raise SegmentNotFoundError(segment_id)
        return seg

    def segments(self) -> builtins.list[Segment]:
        """Every segment, ordered by id."""
        return self.store.list_segments()

    def archive_segment(self, segment_id: str, *, actor: str | None = None,
                        dry_run: bool = False) -> SegmentChange:
        """Archive a segment and, in the same transaction, every campaign that targets it.

        Each cascaded campaign's history names the segment as the cause. With
        ``dry_run=True`` nothing changes and ``campaign_ids`` lists what would be archived.
        Returns once no gate anywhere admits those campaigns (see the guarantee).
        """
        check_id(segment_id, "segment")
        for _ in self._retrying():
            fenced: builtins.list[str] = []
            try:
                with self._write(fenced) as tx:
                    seg = tx.segments([segment_id]).get(segment_id)
                    if seg is None:
                        raise SegmentNotFoundError(segment_id)
                    verdict, new_state = decide_segment(seg.state, SegmentTrigger.ARCHIVE)
                    targets = tx.campaigns_targeting(segment_id)
                    victims = [c for c in targets if c.state is not State.ARCHIVED]
                    held = {c.id: c.state_changed_at for c in targets
                            if c.state is State.ARCHIVED and c.archive_cause == segment_id}
                    if dry_run:
                        return SegmentChange(segment=seg, changed=False, dry_run=True,
                                             campaign_ids=tuple(c.id for c in victims))
                    lease = tx.lease_settings()
                    written: builtins.list[Campaign] = []
                    if verdict is Verdict.CHANGED:
                        first = tx.next_seq(len(victims) + 1)
                        seg = attrs.evolve(seg, state=new_state, version=seg.version + 1,
                                           seq=first + len(victims))
                        tx.update_segment(seg)
                        written = self._write_transitions(
                            tx, victims, Trigger.ARCHIVE, State.ARCHIVED, first, actor,
                            cause=f"segment:{segment_id}", archive_cause=segment_id,
                        )
                        self._fence(fenced, [c.id for c in written])
            except ConcurrentUpdateError:
                continue
            self._settle(written, (seg,) if written or verdict is Verdict.CHANGED else (),
                         [c.id for c in written] + list(held), held, lease)
            return SegmentChange(segment=seg, changed=verdict is Verdict.CHANGED,
                                 campaign_ids=tuple(c.id for c in written))
        raise ConcurrentUpdateError(f"Segment {segment_id!r} kept changing; try again.")

    def unarchive_segment(self, segment_id: str, *, actor: str | None = None,
                          restore_campaigns: bool = False) -> SegmentChange:
        """Unarchive a segment.

        Its campaigns stay archived unless ``restore_campaigns`` is true: then the ones this
        segment's archive cascaded return to ``active_stopped`` (never running). A restored
        campaign that also targets another archived segment cannot be resumed until that one
        is unarchived too.
        """
        check_id(segment_id, "segment")
        for _ in self._retrying():
            try:
                with self._write([]) as tx:
                    seg = tx.segments([segment_id]).get(segment_id)
                    if seg is None:
                        raise SegmentNotFoundError(segment_id)
                    verdict, new_state = decide_segment(seg.state, SegmentTrigger.UNARCHIVE)
                    restored: builtins.list[Campaign] = []
                    if restore_campaigns:
                        restored = [c for c in tx.campaigns_targeting(segment_id)
                                    if c.state is State.ARCHIVED
                                    and c.archive_cause == segment_id]
                    changed_seg = verdict is Verdict.CHANGED
                    first = tx.next_seq(len(restored) + int(changed_seg))
                    if changed_seg:
                        seg = attrs.evolve(seg, state=new_state, version=seg.version + 1,
                                           seq=first + len(restored))
                        tx.update_segment(seg)
                    written = self._write_transitions(
                        tx, restored, Trigger.UNARCHIVE, State.ACTIVE_STOPPED, first, actor,
                        cause=f"segment:{segment_id}", archive_cause=None,
                    )
            except ConcurrentUpdateError:
                continue
            self._listeners.apply(written, (seg,) if changed_seg else ())
            return SegmentChange(segment=seg, changed=changed_seg,
                                 campaign_ids=tuple(c.id for c in written))
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
        cid = check_id(campaign_id, "campaign") if campaign_id is not None else (
            f"c-{uuid.uuid4().hex[:12]}"
        )
        chans = _nonempty_channels(channels)
        segs = frozenset(check_ids(segments, "segment"))
        _check_text("name", name)
        _check_text("content", content)
        campaign = Campaign(id=cid, name=name, content=content, channels=chans, segments=segs,
                            created_at=time.time(), state_changed_at=self.clock.now())
        with self._write([]) as tx:
            self._require_segments(tx, segs)
            seq = tx.next_seq(1)
            campaign = attrs.evolve(campaign, seq=seq)
            tx.insert_campaign(campaign, segs)
            tx.append_history([_entry(campaign, "create", None, actor, None, seq)])
        self._listeners.apply((campaign,))
        return campaign

    def get(self, campaign_id: str) -> Campaign:
        """One campaign, or `CampaignNotFoundError`."""
        check_id(campaign_id)
        c = self.store.get_campaign(campaign_id)
        if c is None:
            raise CampaignNotFoundError(campaign_id)
        return c

    def list(self, *, state: State | None = None, segment: str | None = None) -> builtins.list[Campaign]:
        """Campaigns ordered by id, optionally only those in ``state`` or targeting ``segment``."""
        if state is not None and not isinstance(state, State):
            state = State(state)
        if segment is not None:
            check_id(segment, "segment")
        return self.store.list_campaigns(state, segment)

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
        check_id(campaign_id)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = _check_text("name", name)
        if content is not None:
            changes["content"] = _check_text("content", content)
        if channels is not None:
            changes["channels"] = _nonempty_channels(channels)
        if segments is not None:
            changes["segments"] = frozenset(check_ids(segments, "segment"))
        for _ in self._retrying():
            try:
                with self._write([]) as tx:
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
                        archived = [s.id for s in segs.values()
                                    if s.state is SegmentState.ARCHIVED]
                        if archived and old.state is State.ACTIVE_RUNNING:
                            raise SegmentArchivedError(campaign_id, archived, action="retarget")
                    seq = tx.next_seq(1)
                    new = attrs.evolve(new, version=old.version + 1, seq=seq)
                    tx.update_campaigns([new])
                    tx.append_history([_entry(new, "edit", old.state, actor, None, seq)])
            except ConcurrentUpdateError:
                continue
            self._listeners.apply((new,))
            return new
        raise ConcurrentUpdateError(f"Campaign {campaign_id!r} kept changing; try again.")

    def history(self, campaign_id: str) -> builtins.list[HistoryEntry]:
        """Every change to a campaign, oldest first (readable when archived)."""
        self.get(campaign_id)
        return self.store.history(campaign_id)

    def results(self, campaign_id: str) -> Results:
        """What a campaign delivered (kept across archive and unarchive)."""
        self.get(campaign_id)
        return self.store.results(campaign_id)

    def record_results(self, deliveries: Iterable[Delivery]) -> None:
        """Add delivered messages and impressions to campaigns' results, in one transaction.

        Recording is allowed on archived campaigns: emissions admitted before an archive
        complete after it.
        """
        rows = list(deliveries)
        for d in rows:
            if not isinstance(d, Delivery):
                raise TypeError(f"record_results takes Delivery records, not {type(d).__name__}.")
        for cid in {d.campaign_id for d in rows}:
            if self.store.get_campaign(cid) is None:
                raise CampaignNotFoundError(cid)
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

    def unarchive_many(self, campaign_ids: Iterable[str], *, actor: str | None = None) -> BulkResult:
        """`unarchive` many campaigns in one transaction; per-id outcomes."""
        return self._many(campaign_ids, Trigger.UNARCHIVE, actor)

    def _one(self, campaign_id: str, trigger: Trigger, actor: str | None) -> TransitionResult:
        check_id(campaign_id)
        _check_actor(actor)
        outcome = self._transition([campaign_id], trigger, actor)[campaign_id]
        if outcome.outcome is Outcome.NOT_FOUND:
            raise CampaignNotFoundError(campaign_id)
        if outcome.outcome is Outcome.REFUSED:
            assert isinstance(outcome.error, Exception)
            raise outcome.error
        assert outcome.campaign is not None
        return TransitionResult(campaign=outcome.campaign,
                                changed=outcome.outcome is Outcome.CHANGED,
                                previous=outcome.previous)

    def _many(self, campaign_ids: Iterable[str], trigger: Trigger, actor: str | None) -> BulkResult:
        ids = list(dict.fromkeys(check_ids(campaign_ids)))  # duplicates folded, order kept
        if len(ids) > self.bulk_limit:
            raise BulkLimitError(len(ids), self.bulk_limit)
        _check_actor(actor)
        found = self._transition(ids, trigger, actor) if ids else {}
        return BulkResult({
            cid: ItemOutcome(id=cid, outcome=o.outcome, campaign=o.campaign,
                             reason=None if o.error is None else str(o.error))
            for cid, o in found.items()
        })

    def _transition(self, ids: builtins.list[str], trigger: Trigger,
                    actor: str | None) -> dict[str, _Decided]:
        silencing = trigger in _SILENCING
        for _ in self._retrying():
            fenced: builtins.list[str] = []
            try:
                with self._write(fenced) as tx:
                    plan = self._plan(tx, ids, trigger, actor)
                    lease = tx.lease_settings() if silencing else None
                    if silencing:
                        self._fence(fenced, [c.id for c in plan.written])
            except ConcurrentUpdateError:
                continue
            if silencing:
                assert lease is not None
                self._settle(plan.written, (), [c.id for c in plan.written] + list(plan.held_since),
                             plan.held_since, lease)
            else:
                self._listeners.apply(plan.written)
            return plan.outcomes
        raise ConcurrentUpdateError("Campaigns kept changing under this call; try again.")

    def _plan(self, tx: WriteTx, ids: builtins.list[str], trigger: Trigger, actor: str | None) -> _Plan:
        found = tx.campaigns(ids)
        archived_segs: set[str] = set()
        if trigger is Trigger.RESUME:
            wanted = set().union(*(c.segments for c in found.values()))
            archived_segs = {s.id for s in tx.segments(wanted).values()
                             if s.state is SegmentState.ARCHIVED}
        target = _target(trigger)
        outcomes: dict[str, _Decided] = {}
        moving: builtins.list[Campaign] = []
        held: dict[str, float] = {}
        for cid in ids:
            c = found.get(cid)
            if c is None:
                outcomes[cid] = _Decided(Outcome.NOT_FOUND)
                continue
            blocking = c.segments & archived_segs
            verdict, _new = decide_cached(c.state, trigger, bool(blocking))
            if verdict is Verdict.CHANGED:
                moving.append(c)
                continue
            if verdict is Verdict.UNCHANGED:
                outcomes[cid] = _Decided(Outcome.UNCHANGED, c, c.state)
                if c.state is target:
                    held[cid] = c.state_changed_at
            elif verdict is Verdict.GUARD_FAILED:
                outcomes[cid] = _Decided(Outcome.REFUSED, c, c.state,
                                         SegmentArchivedError(cid, blocking))
            else:
                outcomes[cid] = _Decided(Outcome.REFUSED, c, c.state, _invalid(c, trigger))
        written = self._write_transitions(
            tx, moving, trigger, None, tx.next_seq(len(moving)) if moving else 0, actor,
            cause=None, archive_cause=None,
        ) if moving else []
        for old, new in zip(moving, written, strict=True):
            outcomes[old.id] = _Decided(Outcome.CHANGED, new, old.state)
        # Keep the caller's order.
        return _Plan(outcomes={cid: outcomes[cid] for cid in ids}, written=written,
                     held_since=held)

    def _write_transitions(
        self, tx: WriteTx, campaigns: Sequence[Campaign], trigger: Trigger,
        dest: State | None, first_seq: int, actor: str | None, *, cause: str | None,
        archive_cause: str | None,
    ) -> builtins.list[Campaign]:
        """Persist ``trigger`` on each campaign (already decided CHANGED) with history."""
        if not campaigns:
            return []
        now, wall = self.clock.now(), time.time()
        new: builtins.list[Campaign] = []
        entries: builtins.list[HistoryEntry] = []
        for i, c in enumerate(campaigns):
            to = dest or decide_cached(c.state, trigger, False)[1]
            n = attrs.evolve(c, state=to, version=c.version + 1, seq=first_seq + i,
                             archive_cause=archive_cause, state_changed_at=now)
            new.append(n)
            entries.append(HistoryEntry(
                campaign_id=c.id, trigger=trigger.value, from_state=c.state, to_state=to,
                actor=actor, cause=cause, time=wall, seq=n.seq, version=n.version,
            ))
        tx.update_campaigns(new)
        tx.append_history(entries)
        return new

    def _require_segments(self, tx: WriteTx, ids: Collection[str]) -> dict[str, Segment]:
        found = tx.segments(ids)
        for sid in sorted(ids):
            if sid not in found:
                raise SegmentNotFoundError(sid)
        return found


def _target(trigger: Trigger) -> State:
    from ._lifecycle import CAMPAIGN_LIFECYCLE

    dest = CAMPAIGN_LIFECYCLE.dest(trigger)
    assert isinstance(dest, State)
    return dest


def _invalid(c: Campaign, trigger: Trigger) -> InvalidTransitionError:
    allowed = [t.value for t in campaign_triggers_allowed(c.state)]
    if c.state is State.ARCHIVED:
        return CampaignArchivedError(c.id, trigger.value, allowed)
    return InvalidTransitionError(c.id, trigger.value, c.state.value, allowed)


def _entry(c: Campaign, trigger: str, from_state: State | None, actor: str | None,
           cause: str | None, seq: int) -> HistoryEntry:
    return HistoryEntry(campaign_id=c.id, trigger=trigger, from_state=from_state,
                        to_state=c.state, actor=actor, cause=cause, time=time.time(),
                        seq=seq, version=c.version)


def _nonempty_channels(channels: object) -> frozenset[Channel]:
    chans = check_channels(channels, Channel)
    if not chans:
        raise InvalidChannelError(None, [c.value for c in Channel],
                                  message="A campaign needs at least one channel.")
    return chans


def _check_text(field: str, value: object) -> str:
    if type(value) is not str:
        raise InvalidFieldError(f"{field} must be a str, not {type(value).__name__}.")
    return value


def _check_actor(actor: object) -> None:
    if actor is not None and type(actor) is not str:
        raise InvalidFieldError(f"actor must be a str or None, not {type(actor).__name__}.")
