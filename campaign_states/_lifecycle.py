"""The lifecycle, declared once as data, and the engine that decides every transition.

This is the only module that imports `transitions`. Everything else (the registry, the
gate, the diagrams, the property tests) reads the declaration below or asks `decide()`.

Campaigns are not transitions models: `Machine.add_model` is O(models) and a bound model
costs about 5 KB. One module-level machine with ``model=None`` is fired per record on a
tiny throwaway carrier (the transitions FAQ pattern), and the outcome is handed back to
the registry, which persists it.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
from transitions import Machine, MachineError

__all__ = [
    "CAMPAIGN_LIFECYCLE",
    "SEGMENT_LIFECYCLE",
    "Lifecycle",
    "SegmentState",
    "SegmentTrigger",
    "State",
    "Trigger",
    "Verdict",
    "decide",
    "decide_segment",
]


# Enum's own __hash__ is Python code (hash of the name); members are singletons compared
# by identity, so identity hashing is equivalent and several times faster. Bulk actions
# over 100,000 campaigns look states up in dicts a few times per campaign.
_identity_hash = object.__hash__


class State(enum.Enum):
    """The states of a campaign."""

    __hash__ = _identity_hash

    ACTIVE_RUNNING = "active_running"
    ACTIVE_STOPPED = "active_stopped"
    ARCHIVED = "archived"


class Trigger(enum.Enum):
    """What an operator (or a cascade) can do to a campaign."""

    __hash__ = _identity_hash

    RESUME = "resume"
    STOP = "stop"
    ARCHIVE = "archive"
    UNARCHIVE = "unarchive"


class SegmentState(enum.Enum):
    """The states of a segment."""

    __hash__ = _identity_hash

    ACTIVE = "active"
    ARCHIVED = "archived"


class SegmentTrigger(enum.Enum):
    """What an operator can do to a segment."""

    __hash__ = _identity_hash

    ARCHIVE = "archive"
    UNARCHIVE = "unarchive"


# The guard's name on the carrier: resume is refused while a targeted segment is archived.
# Diagrams label the edge with `GUARD_LABELS`.
NO_SEGMENT_ARCHIVED: Final = "no_segment_archived"


# eq=False: identity hashing, so the derived lookups below can be cached per declaration.
@attrs.frozen(kw_only=True, eq=False)
class Lifecycle:
    """A lifecycle declaration: the one table every consumer reads.

    Attributes:
        name: Used in diagram titles.
        states: Every state, in display order.
        initial: The state a new record starts in.
        transitions: transitions-style dicts (``trigger``, ``source``, ``dest``, optional
            ``conditions``), exactly what the engine is built from.
        also_holds: For a trigger, the states other than its ``dest`` in which its target
            already holds, so the trigger is an unchanged no-op there (unarchiving a running
            campaign: it is already not archived).
        guard_labels: Human-readable text for each condition name, for diagrams and errors.
        sending: The states in which a record may deliver. The gate admits only these, and
            a trigger that leads from one of them to a state outside them is *silencing*:
            the registry fences, drains and waits for it (`silencing_triggers`).
    """

    name: str
    states: tuple[enum.Enum, ...]
    initial: enum.Enum
    transitions: tuple[Mapping[str, Any], ...]
    also_holds: Mapping[enum.Enum, frozenset[enum.Enum]] = attrs.field(factory=dict)
    guard_labels: Mapping[str, str] = attrs.field(factory=dict)
    sending: frozenset[enum.Enum] = frozenset()

    def silencing_triggers(self) -> frozenset[enum.Enum]:
        """The triggers after which nothing may be admitted: from a sending state, to not."""
        return frozenset(
            t["trigger"]
            for t in self.transitions
            if t["dest"] not in self.sending and any(s in self.sending for s in _sources(t))
        )

    def triggers(self) -> tuple[enum.Enum, ...]:
        """Every trigger, in declaration order, once."""
        return tuple(dict.fromkeys(t["trigger"] for t in self.transitions))

    def dest(self, trigger: enum.Enum) -> enum.Enum:
        """The single state a trigger leads to (validated at import)."""
        return _dests(self)[trigger]

    def allowed(self, state: enum.Enum) -> tuple[enum.Enum, ...]:
        """The triggers that change a record in ``state`` (declaration order)."""
        return tuple(
            trig
            for trig in self.triggers()
            if any(state in _sources(t) for t in self.transitions if t["trigger"] is trig)
        )

    def holds(self, trigger: enum.Enum, state: enum.Enum) -> bool:
        """Whether ``trigger``'s target already holds in ``state`` (an unchanged no-op)."""
        return state is self.dest(trigger) or state in self.also_holds.get(trigger, ())


def _sources(transition: Mapping[str, Any]) -> tuple[enum.Enum, ...]:
    src = transition["source"]
    return tuple(src) if isinstance(src, list | tuple) else (src,)


@functools.cache
def _dests(lifecycle: Lifecycle) -> dict[enum.Enum, enum.Enum]:
    return {t["trigger"]: t["dest"] for t in lifecycle.transitions}


CAMPAIGN_LIFECYCLE: Final = Lifecycle(
    name="campaign",
    states=(State.ACTIVE_STOPPED, State.ACTIVE_RUNNING, State.ARCHIVED),
    initial=State.ACTIVE_STOPPED,
    transitions=(
        {
            "trigger": Trigger.RESUME,
            "source": State.ACTIVE_STOPPED,
            "dest": State.ACTIVE_RUNNING,
            "conditions": NO_SEGMENT_ARCHIVED,
        },
        {"trigger": Trigger.STOP, "source": State.ACTIVE_RUNNING, "dest": State.ACTIVE_STOPPED},
        {
            "trigger": Trigger.ARCHIVE,
            "source": [State.ACTIVE_RUNNING, State.ACTIVE_STOPPED],
            "dest": State.ARCHIVED,
        },
        # Never straight to running: unarchiving does not make a campaign live.
        {"trigger": Trigger.UNARCHIVE, "source": State.ARCHIVED, "dest": State.ACTIVE_STOPPED},
    ),
    also_holds={Trigger.UNARCHIVE: frozenset({State.ACTIVE_RUNNING})},
    guard_labels={NO_SEGMENT_ARCHIVED: "no targeted segment archived"},
    # Only a running campaign delivers: the gate's RUNNING, the registry's silencing
    # triggers (stop, archive) and the diagrams' notes all derive from this.
    sending=frozenset({State.ACTIVE_RUNNING}),
)

SEGMENT_LIFECYCLE: Final = Lifecycle(
    name="segment",
    states=(SegmentState.ACTIVE, SegmentState.ARCHIVED),
    initial=SegmentState.ACTIVE,
    transitions=(
        {
            "trigger": SegmentTrigger.ARCHIVE,
            "source": SegmentState.ACTIVE,
            "dest": SegmentState.ARCHIVED,
        },
        {
            "trigger": SegmentTrigger.UNARCHIVE,
            "source": SegmentState.ARCHIVED,
            "dest": SegmentState.ACTIVE,
        },
    ),
)


class Verdict(enum.Enum):
    """What the engine says about one trigger on one record."""

    __hash__ = _identity_hash

    CHANGED = "changed"
    UNCHANGED = "unchanged"  # the trigger's target already holds: a safe retry
    INVALID = "invalid"  # no transition from this state
    GUARD_FAILED = "guard_failed"  # resume while a targeted segment is archived


def _validate(lifecycle: Lifecycle) -> None:
    """Refuse a declaration transitions would accept silently (unknown or unreachable states)."""
    states = set(lifecycle.states)
    if lifecycle.initial not in states:
        raise ValueError(f"{lifecycle.name}: initial state {lifecycle.initial} is not declared")
    if not lifecycle.sending <= states:
        raise ValueError(f"{lifecycle.name}: sending states {lifecycle.sending} are not declared")
    dests: dict[enum.Enum, enum.Enum] = {}
    reachable = {lifecycle.initial}
    for t in lifecycle.transitions:
        for s in (*_sources(t), t["dest"]):
            if s not in states:
                raise ValueError(f"{lifecycle.name}: {t['trigger']} names undeclared state {s}")
        # One destination per trigger: `dest()` and the unchanged-no-op rule rely on it.
        if dests.setdefault(t["trigger"], t["dest"]) is not t["dest"]:
            raise ValueError(f"{lifecycle.name}: {t['trigger']} has two destinations")
        conditions = t.get("conditions") or ()
        for cond in [conditions] if isinstance(conditions, str) else conditions:
            if cond not in lifecycle.guard_labels:
                raise ValueError(f"{lifecycle.name}: guard {cond!r} has no label")
    changed = True
    while changed:
        changed = False
        for t in lifecycle.transitions:
            if reachable & set(_sources(t)) and t["dest"] not in reachable:
                reachable.add(t["dest"])
                changed = True
    if unreachable := states - reachable:
        raise ValueError(
            f"{lifecycle.name}: unreachable states {sorted(s.value for s in unreachable)}"
        )


def build_machine(lifecycle: Lifecycle, *, graph: bool = False, **kwargs: Any) -> Machine:
    """A transitions machine built from the declaration.

    ``auto_transitions`` stays off: ``to_archived()`` would bypass every guard.
    With ``graph=True`` it is a ``GraphMachine`` (for diagrams), keyword arguments passed on.
    """
    cls: type[Machine] = Machine
    if graph:
        from transitions.extensions import GraphMachine

        cls = GraphMachine
    return cls(
        states=list(lifecycle.states),
        initial=lifecycle.initial,
        transitions=[dict(t) for t in lifecycle.transitions],
        auto_transitions=False,
        send_event=False,
        **kwargs,
    )


class _Carrier:
    """The throwaway model a trigger is fired on: a state and the guard's input."""

    __slots__ = ("no_segment_archived", "state")

    def __init__(self, state: enum.Enum, no_segment_archived: bool) -> None:
        self.state = state
        self.no_segment_archived = no_segment_archived


for _lc in (CAMPAIGN_LIFECYCLE, SEGMENT_LIFECYCLE):
    _validate(_lc)

# model=None: no model is bound, so nothing is attached to records and nothing is O(models).
_CAMPAIGN_MACHINE: Final = build_machine(CAMPAIGN_LIFECYCLE, model=None)
_SEGMENT_MACHINE: Final = build_machine(SEGMENT_LIFECYCLE, model=None)


def _fire(
    machine: Machine, lifecycle: Lifecycle, state: enum.Enum, trigger: enum.Enum, clear: bool
) -> tuple[Verdict, enum.Enum]:
    if lifecycle.holds(trigger, state):
        return Verdict.UNCHANGED, state
    carrier = _Carrier(state, clear)
    try:
        # transitions keys events by the trigger object it was given (our enum members).
        fired = machine.events[trigger].trigger(carrier)  # type: ignore[index]
    except MachineError:
        return Verdict.INVALID, state
    if not fired:
        return Verdict.GUARD_FAILED, state
    return Verdict.CHANGED, carrier.state


def decide(
    state: State, trigger: Trigger, *, segment_archived: bool = False
) -> tuple[Verdict, State]:
    """Fire ``trigger`` on a campaign in ``state``; return the verdict and the new state.

    Args:
        state: The campaign's current state.
        trigger: What is asked.
        segment_archived: Whether any segment the campaign targets is archived (resume's guard).
    """
    verdict, new = _fire(
        _CAMPAIGN_MACHINE, CAMPAIGN_LIFECYCLE, state, trigger, not segment_archived
    )
    assert isinstance(new, State)
    return verdict, new


def decide_segment(state: SegmentState, trigger: SegmentTrigger) -> tuple[Verdict, SegmentState]:
    """Fire ``trigger`` on a segment in ``state``."""
    verdict, new = _fire(_SEGMENT_MACHINE, SEGMENT_LIFECYCLE, state, trigger, True)
    assert isinstance(new, SegmentState)
    return verdict, new


def campaign_triggers_allowed(state: State) -> Sequence[Trigger]:
    """The triggers that change a campaign in ``state``, for error messages."""
    return tuple(t for t in CAMPAIGN_LIFECYCLE.allowed(state) if isinstance(t, Trigger))
