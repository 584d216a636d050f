"""How a trigger is applied to many campaigns: decide every id first, then write in one go.

`Machine.dispatch` would change models one by one and stop part-way on an error, so the
registry never fires triggers record by record inside a write: `plan` looks every id's
verdict up in `DECISIONS` (the machine's own answers, computed once), then writes the
changes together. A bulk trigger without a guard is one `WriteTx.move_campaigns` call (the
SQL stores do it in a few statements; its default, written on the other `WriteTx`
primitives, is what every other store gets).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import attrs

from ._clock import Clock
from ._lifecycle import (
    CAMPAIGN_LIFECYCLE,
    SegmentState,
    State,
    Trigger,
    Verdict,
    campaign_triggers_allowed,
    decide,
)
from ._outcomes import Outcome, OutcomeRow
from ._records import Campaign, HistoryEntry, campaign_after_transition
from .exceptions import CampaignArchivedError, InvalidTransitionError, SegmentArchivedError

if TYPE_CHECKING:
    # Types only: `_store` imports `persist_moves` from here for `WriteTx`'s default.
    from ._store import WriteTx

__all__ = [
    "DECISIONS",
    "DEST",
    "Plan",
    "gc_paused",
    "invalid",
    "persist_moves",
    "plan",
    "write_transitions",
]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a bulk call.

    A 100,000-campaign bulk action allocates about a million short-lived, acyclic objects
    (rows, records, history entries); the collector would rescan the growing heap again and
    again, which measured as 40% of the call. Nothing here creates cycles, so pausing it
    only delays collection of other threads' cycles by the length of the call. It is
    re-enabled only if it was enabled on entry (nesting and other threads' pauses are left
    as they were).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@attrs.frozen(kw_only=True)
class Plan:
    """What one write decided: outcomes per id, the records written, what to wait for."""

    # Per id, in the caller's order: (outcome, campaign after, refusal). Tuples, not
    # records: a 100,000-id bulk call builds one per id.
    outcomes: dict[str, OutcomeRow]
    # The changed campaigns as they were before (per-record path only: a single trigger
    # reports the state it left; a bulk one does not).
    before: list[Campaign]
    written: list[Campaign]  # and after
    # Campaigns already in the silencing target before this call, with their
    # state_changed_at: a retry must wait out what remains of the first call's wait.
    already_silenced_at: dict[str, float]


# The machine's verdict for every (trigger, segment archived?, state), computed once by
# firing the machine on each input: bulk actions look decisions up per campaign instead of
# firing it 100,000 times. `decide` stays the one source; this is its table.
DECISIONS: dict[tuple[Trigger, bool], dict[State, tuple[Verdict, State]]] = {
    (t, blocked): {s: decide(s, t, segment_archived=blocked) for s in State}
    for t in Trigger
    for blocked in (False, True)
}

_NO_IDS: frozenset[str] = frozenset()
_NOT_FOUND: OutcomeRow = (Outcome.NOT_FOUND, None, None)

# The state each trigger leads to (the declaration has one per trigger, so this is also
# where every CHANGED verdict in `DECISIONS` goes).
DEST: dict[Trigger, State] = {}
for _t in Trigger:
    _d = CAMPAIGN_LIFECYCLE.dest(_t)
    assert isinstance(_d, State)
    DEST[_t] = _d
    # `DECISIONS` agrees: every change a trigger makes goes to `DEST` (so no per-state table).
    assert all(to is _d for v, to in DECISIONS[_t, False].values() if v is Verdict.CHANGED)

# The states each trigger changes (when no guard refuses): a bulk move's sources.
_SOURCES: dict[Trigger, tuple[State, ...]] = {
    t: tuple(s for s, (v, _to) in DECISIONS[t, False].items() if v is Verdict.CHANGED)
    for t in Trigger
}


def invalid(c: Campaign, trigger: Trigger) -> InvalidTransitionError:
    """The error for a trigger with no transition from ``c``'s state."""
    allowed = [t.value for t in campaign_triggers_allowed(c.state)]
    if c.state is State.ARCHIVED:
        return CampaignArchivedError(c.id, trigger.value, allowed)
    return InvalidTransitionError(c.id, trigger.value, c.state.value, allowed)


def plan(clock: Clock, tx: WriteTx, ids: list[str], trigger: Trigger, actor: str | None) -> Plan:
    """Decide ``trigger`` for every id first, then write the changes in one go."""
    if len(ids) > 1 and trigger is not Trigger.RESUME:
        # Resume has a guard that depends on each campaign's segments, and a single
        # trigger reports the state it left: those decide per record (below).
        return _plan_bulk(clock, tx, ids, trigger, actor)
    found = tx.campaigns(ids)
    archived_segs: frozenset[str] = _NO_IDS
    if trigger is Trigger.RESUME and found:
        wanted = frozenset().union(*(c.segments for c in found.values()))
        if wanted:
            archived_segs = frozenset(
                s.id for s in tx.segments(wanted).values() if s.state is SegmentState.ARCHIVED
            )
    target = DEST[trigger]
    clear = DECISIONS[trigger, False]
    outcomes: dict[str, OutcomeRow] = {}
    moving: list[Campaign] = []
    held: dict[str, float] = {}
    not_found = _NOT_FOUND
    changed = Verdict.CHANGED
    for cid in ids:
        c = found.get(cid)
        if c is None:
            outcomes[cid] = not_found
            continue
        blocking = c.segments & archived_segs if archived_segs else None
        verdict = (DECISIONS[trigger, True] if blocking else clear)[c.state][0]
        if verdict is changed:
            moving.append(c)
            outcomes[cid] = not_found  # a placeholder: keeps the caller's order
        elif verdict is Verdict.UNCHANGED:
            outcomes[cid] = (Outcome.UNCHANGED, c, None)
            if c.state is target:
                held[cid] = c.state_changed_at
        elif verdict is Verdict.GUARD_FAILED:
            assert blocking
            err = SegmentArchivedError(cid, blocking, state=c.state.value)
            outcomes[cid] = (Outcome.REFUSED, c, err)
        else:
            outcomes[cid] = (Outcome.REFUSED, c, invalid(c, trigger))
    written = write_transitions(
        clock, tx, moving, trigger, dest=None, actor=actor, cause=None, archive_cause=None
    )
    for new in written:
        outcomes[new.id] = (Outcome.CHANGED, new, None)
    return Plan(outcomes=outcomes, before=moving, written=written, already_silenced_at=held)


def _plan_bulk(
    clock: Clock, tx: WriteTx, ids: list[str], trigger: Trigger, actor: str | None
) -> Plan:
    """`plan` for a bulk trigger without a guard: one `WriteTx.move_campaigns` call.

    The machine's decision for each state (from `DECISIONS`) says which states move;
    the store moves exactly those, and the rest are read back to report them.
    """
    clear = DECISIONS[trigger, False]
    written, _already = tx.move_campaigns(
        ids, None, _SOURCES[trigger], DEST[trigger], trigger=trigger.value, actor=actor,
        cause=None, archive_cause=None, now=clock.now(), wall=time.time(),
    )  # fmt: skip
    # Every id starts NOT_FOUND (in the caller's order, built in C), the moved ones become
    # CHANGED, and only the rest are read back: a bulk call that moves everything makes
    # no Python-level pass over its ids here.
    outcomes: dict[str, OutcomeRow] = dict.fromkeys(ids, _NOT_FOUND)
    changed = Outcome.CHANGED
    for c in written:
        outcomes[c.id] = (changed, c, None)
    held: dict[str, float] = {}
    if len(written) < len(ids):
        target = DEST[trigger]
        unmoved = [cid for cid in ids if outcomes[cid] is _NOT_FOUND]
        for cid, c in tx.campaigns(unmoved).items():
            if clear[c.state][0] is Verdict.UNCHANGED:
                outcomes[cid] = (Outcome.UNCHANGED, c, None)
                if c.state is target:
                    held[cid] = c.state_changed_at
            else:
                # Not moved, so not CHANGED: the only other verdict without a guard.
                outcomes[cid] = (Outcome.REFUSED, c, invalid(c, trigger))
    return Plan(outcomes=outcomes, before=[], written=written, already_silenced_at=held)


def write_transitions(
    clock: Clock,
    tx: WriteTx,
    campaigns: Sequence[Campaign],
    trigger: Trigger,
    *,
    dest: State | None,
    actor: str | None,
    cause: str | None,
    archive_cause: str | None,
    first_seq: int | None = None,
) -> list[Campaign]:
    """Persist ``trigger`` on each campaign (already decided CHANGED), with history.

    ``dest`` is the state they all go to, or None for the trigger's own (`DEST`).

    Each campaign gets its own sequence number (``first_seq`` onwards, reserved here
    unless given) and a compare-and-set on its version.
    """
    if not campaigns:
        return []
    seq = tx.next_seq(len(campaigns)) if first_seq is None else first_seq
    return persist_moves(
        tx, campaigns, range(seq, seq + len(campaigns)), trigger=trigger.value,
        dest=dest or DEST[trigger], actor=actor, cause=cause, archive_cause=archive_cause,
        now=clock.now(), wall=time.time(),
    )  # fmt: skip


def persist_moves(
    tx: WriteTx,
    campaigns: Sequence[Campaign],
    seqs: Iterable[int],
    *,
    trigger: str,
    dest: State,
    actor: str | None,
    cause: str | None,
    archive_cause: str | None,
    now: float,
    wall: float,
) -> list[Campaign]:
    """Write each of ``campaigns`` as moved to ``dest`` with its seq from ``seqs``, with history.

    The one loop that builds moved records and their history entries (a bulk call's hot
    loop); `write_transitions` and the default `WriteTx.move_campaigns` share it.
    """
    new: list[Campaign] = []
    entries: list[HistoryEntry] = []
    for c, seq in zip(campaigns, seqs, strict=True):
        version = c.version + 1
        new.append(
            campaign_after_transition(
                c, state=dest, version=version, seq=seq,
                archive_cause=archive_cause, state_changed_at=now,
            )
        )  # fmt: skip
        entries.append(
            HistoryEntry(
                campaign_id=c.id, trigger=trigger, from_state=c.state, to_state=dest,
                actor=actor, cause=cause, time=wall, seq=seq, version=version,
            )
        )  # fmt: skip
    if new:
        tx.update_campaigns(new)
        tx.append_history(entries)
    return new
