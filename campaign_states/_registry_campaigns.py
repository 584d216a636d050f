"""Campaign creation, editing and results behind `Registry`, each input checked first.

Every check runs before any store work (see `_validation`); the writes that may lose a
compare-and-set retry through `_invalidation.attempts`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from ._invalidation import attempts
from ._lifecycle import SegmentState, State
from ._records import Campaign, Channel, Delivery, Emission, HistoryEntry, Segment
from ._store import WriteTx
from ._validation import check_actor, check_channels, check_field_text, check_id, check_ids
from .exceptions import (
    CampaignArchivedError,
    CampaignNotFoundError,
    InvalidChannelError,
    InvalidFieldError,
    InvalidValueError,
    SegmentArchivedError,
    SegmentNotFoundError,
)

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["create_campaign", "edit", "record_results"]


def create_campaign(
    reg: Registry,
    *,
    name: str,
    channels: Iterable[Channel | str],
    segments: Iterable[str],
    content: str,
    campaign_id: str | None,
    actor: str | None,
) -> Campaign:
    cid = (
        check_id(campaign_id, "campaign")
        if campaign_id is not None
        else f"c-{uuid.uuid4().hex[:12]}"
    )
    chans = _nonempty_channels(channels)
    segs = frozenset(check_ids(segments, "segment"))
    check_field_text(reg, "name", name)
    check_field_text(reg, "content", content)
    check_actor(reg, actor)
    campaign = Campaign(
        id=cid,
        name=name,
        content=content,
        channels=chans,
        segments=segs,
        created_at=time.time(),
        state_changed_at=reg.clock.now(),
    )
    with reg.store.write() as tx:
        _require_segments(tx, segs)
        seq = tx.next_seq(1)
        campaign = attrs.evolve(campaign, seq=seq)
        tx.insert_campaign(campaign, segs)
        tx.append_history([_entry(campaign, "create", None, actor)])
    reg._listeners.apply((campaign,))
    return campaign


def edit(reg: Registry, campaign_id: str, *, actor: str | None, **fields: Any) -> Campaign:
    """`Registry.edit`; ``fields`` are its name, content, channels, segments (None: kept)."""
    campaign_id = check_id(campaign_id)
    check_actor(reg, actor)
    changes = _checked_changes(reg, **fields)
    conflict = f"Campaign {campaign_id!r} kept changing; try again."
    for attempt in attempts(reg.store, reg._listeners, conflict=conflict):
        with attempt as tx:
            old = tx.campaigns([campaign_id]).get(campaign_id)
            if old is None:
                raise CampaignNotFoundError(campaign_id)
            if old.state is State.ARCHIVED:
                raise CampaignArchivedError(campaign_id, "edit")
            new = attrs.evolve(old, **changes)
            if new != old:
                if "segments" in changes:
                    segs = _require_segments(tx, new.segments)
                    archived = [s.id for s in segs.values() if s.state is SegmentState.ARCHIVED]
                    # The invariant: a running campaign never targets an archived
                    # segment, so it cannot start to.
                    if archived and old.state is State.ACTIVE_RUNNING:
                        raise SegmentArchivedError(
                            campaign_id, archived, action="retarget", state=old.state.value
                        )
                new = attrs.evolve(new, version=old.version + 1, seq=tx.next_seq(1))
                tx.update_campaigns([new])
                tx.append_history([_entry(new, "edit", old.state, actor)])
    if new == old:
        return old  # nothing to change: nothing written, nothing to tell the gates
    reg._listeners.apply((new,))
    return new


def _checked_changes(
    reg: Registry,
    *,
    name: str | None,
    content: str | None,
    channels: Iterable[Channel | str] | None,
    segments: Iterable[str] | None,
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = check_field_text(reg, "name", name)
    if content is not None:
        changes["content"] = check_field_text(reg, "content", content)
    if channels is not None:
        changes["channels"] = _nonempty_channels(channels)
    if segments is not None:
        changes["segments"] = frozenset(check_ids(segments, "segment"))
    return changes


def record_results(reg: Registry, deliveries: Iterable[Delivery]) -> None:
    if isinstance(deliveries, Delivery) or not isinstance(deliveries, Iterable):
        raise InvalidFieldError("record_results takes an iterable of Delivery records.")
    rows = list(deliveries)
    for d in rows:
        if type(d) is not Delivery:
            raise InvalidFieldError(
                f"record_results takes Delivery records, not {type(d).__name__}."
            )
    # Campaigns are never deleted, so checking existence before the write is enough.
    campaigns: dict[str, Campaign] = {}
    for cid in sorted({d.campaign_id for d in rows}):
        c = reg.store.get_campaign(cid)
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
        reg.store.add_results(rows)


def _require_segments(tx: WriteTx, ids: Collection[str]) -> dict[str, Segment]:
    found = tx.segments(ids)
    for sid in sorted(ids):
        if sid not in found:
            raise SegmentNotFoundError(sid)
    return found


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
