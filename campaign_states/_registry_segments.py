"""Segment operations behind `Registry`: create, archive (with its cascade), unarchive.

Module functions that take the registry (its store, listeners and limits are read at call
time, so a changed ``drain_timeout`` applies to the next call).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import attrs

from ._invalidation import Silenced, attempts, silence
from ._lifecycle import SegmentTrigger, State, Trigger, Verdict, decide_segment
from ._outcomes import SegmentChange
from ._planning import write_transitions
from ._records import Campaign, Segment
from ._registry_triggers import silenced_seq
from ._store import WriteTx
from ._validation import check_actor, check_field_text, check_id
from .exceptions import InvalidFieldError, SegmentNotFoundError

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["archive_segment", "create_segment", "unarchive_segment"]

# The states a segment archive moves its campaigns from (everything but archived).
_CASCADED = (State.ACTIVE_RUNNING, State.ACTIVE_STOPPED)


def create_segment(reg: Registry, segment_id: str, name: str | None) -> Segment:
    segment_id = check_id(segment_id, "segment")
    if name is not None:
        check_field_text(reg, "name", name)
    seg = Segment(id=segment_id, name=segment_id if name is None else name)
    with reg.store.write() as tx:
        seg = attrs.evolve(seg, seq=tx.next_seq(1))
        tx.insert_segment(seg)
    reg._listeners.apply((), (seg,))
    return seg


def archive_segment(
    reg: Registry, segment_id: str, actor: str | None, *, dry_run: bool
) -> SegmentChange:
    segment_id = check_id(segment_id, "segment")
    check_actor(reg, actor)
    if dry_run:
        return _preview(reg, segment_id)
    cause = f"segment:{segment_id}"

    def body(tx: WriteTx) -> tuple[SegmentChange, Silenced | None]:
        seg = _locked_segment(tx, segment_id)
        verdict, new_state = decide_segment(seg.state, SegmentTrigger.ARCHIVE)
        changed = verdict is Verdict.CHANGED
        written: list[Campaign] = []
        if changed:
            # The candidates are every campaign targeting the segment; the moved ones get
            # their sequence numbers first, the segment the next one (after them).
            written, already = tx.move_campaigns(
                None, segment_id, _CASCADED, State.ARCHIVED, trigger=Trigger.ARCHIVE.value,
                actor=actor, cause=cause, archive_cause=segment_id, now=reg.clock.now(),
                wall=time.time(),
            )  # fmt: skip
            seg = attrs.evolve(seg, state=new_state, version=seg.version + 1, seq=tx.next_seq(1))
            tx.update_segment(seg)
        else:
            # Already archived: nothing to write (a retry works on a read-only store), only
            # what the first call silenced, to wait for.
            already = {
                c.id: c.state_changed_at
                for c in tx.campaigns_targeting(segment_id)
                if c.state is State.ARCHIVED and c.archive_cause == segment_id
            }
        segs = (seg,) if changed else ()
        change = SegmentChange(
            segment=seg, changed=changed, campaign_ids=tuple(c.id for c in written)
        )
        return change, Silenced(
            written=written,
            segments=segs,
            # Campaigns this segment's archive already silenced: a retry waits until
            # the gates acknowledged (or outlived) the first call's change.
            already_silenced_at=already,
            # Read after the writes reserved sequence numbers (see `Silenced.lease`).
            lease=tx.lease_settings(),
            seq=silenced_seq(tx, written, segs, already),
        )

    change, report = silence(
        reg.store,
        reg._listeners,
        body,
        drain_timeout=reg.drain_timeout,
        conflict=f"Segment {segment_id!r} kept changing; try again.",
        change="segment archive",
        pause_gc=True,
    )
    if report is not None:
        reg._last_wait = report
        change = attrs.evolve(change, wait=report)
    return change


def _locked_segment(tx: WriteTx, segment_id: str) -> Segment:
    seg = tx.segments([segment_id]).get(segment_id)
    if seg is None:
        raise SegmentNotFoundError(segment_id)
    return seg


def _preview(reg: Registry, segment_id: str) -> SegmentChange:
    # Reads only (works on a read-only store, takes no write lock): what archiving now
    # would cascade to. A preview: a write may land between it and the real call.
    seg = reg.get_segment(segment_id)
    verdict = decide_segment(seg.state, SegmentTrigger.ARCHIVE)[0]
    ids: tuple[str, ...] = ()
    if verdict is Verdict.CHANGED:
        ids = tuple(
            c.id
            for c in reg.store.list_campaigns(None, segment_id)
            if c.state is not State.ARCHIVED
        )
    return SegmentChange(segment=seg, changed=False, dry_run=True, campaign_ids=ids)


def unarchive_segment(
    reg: Registry, segment_id: str, actor: str | None, *, restore_campaigns: bool
) -> SegmentChange:
    segment_id = check_id(segment_id, "segment")
    check_actor(reg, actor)
    if type(restore_campaigns) is not bool:
        raise InvalidFieldError("restore_campaigns must be a bool.")
    conflict = f"Segment {segment_id!r} kept changing; try again."
    for attempt in attempts(reg.store, reg._listeners, conflict=conflict):
        with attempt as tx:
            seg = _locked_segment(tx, segment_id)
            verdict, new_state = decide_segment(seg.state, SegmentTrigger.UNARCHIVE)
            changed = verdict is Verdict.CHANGED
            restored: list[Campaign] = []
            if restore_campaigns:
                restored = [
                    c
                    for c in tx.campaigns_targeting(segment_id)
                    if c.state is State.ARCHIVED and c.archive_cause == segment_id
                ]
            written: list[Campaign] = []
            if changed or restored:
                first = tx.next_seq(len(restored) + int(changed))
                if changed:
                    seg = attrs.evolve(
                        seg, state=new_state, version=seg.version + 1, seq=first + len(restored)
                    )
                    tx.update_segment(seg)
                written = write_transitions(
                    reg.clock, tx, restored, Trigger.UNARCHIVE, dest=State.ACTIVE_STOPPED,
                    actor=actor, cause=f"segment:{segment_id}", archive_cause=None,
                    first_seq=first,
                )  # fmt: skip
    # Committed (the loop ends only after a try that committed): tell the local gates.
    if written or changed:
        reg._listeners.apply(written, (seg,) if changed else ())
    return SegmentChange(segment=seg, changed=changed, campaign_ids=tuple(c.id for c in written))
