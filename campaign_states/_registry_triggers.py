"""Campaign triggers behind `Registry`: one campaign or many, decided then written together.

`transition` is the one path: `Registry._plan` decides and writes (see `_planning`) inside
`silence` (see `_invalidation`), which fences, commits, drains and waits when the trigger
silences campaigns.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING

from ._gates import WaitReport
from ._invalidation import Silenced, silence
from ._lifecycle import CAMPAIGN_LIFECYCLE, Trigger
from ._outcomes import BulkResult, Outcome, TransitionResult
from ._planning import Plan, gc_paused
from ._records import Campaign, Segment
from ._store import WriteTx
from ._validation import check_actor, check_distinct_ids, check_id
from .exceptions import CampaignNotFoundError

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["many", "one", "silenced_seq", "transition"]

# Triggers after which nothing may be admitted: they fence, drain and wait.
_SILENCING = CAMPAIGN_LIFECYCLE.silencing_triggers()


def one(reg: Registry, campaign_id: str, trigger: Trigger, actor: str | None) -> TransitionResult:
    campaign_id = check_id(campaign_id)
    check_actor(reg, actor)
    plan, report = transition(reg, [campaign_id], trigger, actor)
    outcome, campaign, error = plan.outcomes[campaign_id]
    if outcome is Outcome.NOT_FOUND:
        raise CampaignNotFoundError(campaign_id)
    if error is not None:
        raise error
    assert campaign is not None
    # A single trigger decides per record, so `before` holds the state it left.
    previous = plan.before[0].state if outcome is Outcome.CHANGED else campaign.state
    return TransitionResult(
        campaign=campaign, changed=outcome is Outcome.CHANGED, previous=previous, wait=report
    )


def many(
    reg: Registry, campaign_ids: Iterable[str], trigger: Trigger, actor: str | None
) -> BulkResult:
    # Ids are checked, folded (first occurrence order) and counted against the cap
    # while they are read: an oversized request is refused before any store work.
    check_actor(reg, actor)
    with gc_paused():
        ids = check_distinct_ids(campaign_ids, reg.bulk_limit)
    if not ids:
        return BulkResult({})
    plan, report = transition(reg, ids, trigger, actor)
    return BulkResult(plan.outcomes, wait=report)


def transition(
    reg: Registry, ids: list[str], trigger: Trigger, actor: str | None
) -> tuple[Plan, WaitReport | None]:
    silencing = trigger in _SILENCING

    def body(tx: WriteTx) -> tuple[Plan, Silenced | None]:
        plan = reg._plan(tx, ids, trigger, actor)  # the hook a test's broken registry overrides
        if not silencing:
            return plan, None
        return plan, Silenced(
            written=plan.written,
            already_silenced_at=plan.already_silenced_at,
            lease=tx.lease_settings(),
            seq=silenced_seq(tx, plan.written, (), plan.already_silenced_at),
        )

    # Bulk writes pause the collector (see `gc_paused`) for the write only, never for
    # the wait; a single trigger must not pay for it.
    plan, report = silence(
        reg.store,
        reg._listeners,
        body,
        drain_timeout=reg.drain_timeout,
        conflict="Campaigns kept changing under this call; try again.",
        change=trigger.value,
        pause_gc=len(ids) > 1,
    )
    if report is not None:
        reg._last_wait = report
    elif plan.written:
        reg._listeners.apply(plan.written)
    return plan, report


def silenced_seq(
    tx: WriteTx,
    written: Sequence[Campaign],
    segments: Sequence[Segment],
    already: Collection[str] = (),
) -> int:
    """The sequence gates must acknowledge: the last this call wrote, and for campaigns a
    previous call already silenced (a retry), their last change, read here (a read only:
    a retry works on a read-only store)."""
    seqs = [c.seq for c in written] + [s.seq for s in segments]
    if already:
        seqs.extend(c.seq for c in tx.campaigns(already).values())
    return max(seqs, default=0)
