"""The lifecycle declaration and the engine that fires it."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import attrs
import pytest
import strategies
from hypothesis import given
from hypothesis import strategies as st
from support import ARCH, RUN, STOP

import campaign_states
from campaign_states import (
    CAMPAIGN_LIFECYCLE,
    SEGMENT_LIFECYCLE,
    Campaign,
    Lifecycle,
    State,
    Trigger,
)
from campaign_states._lifecycle import (
    _CAMPAIGN_MACHINE,
    Verdict,
    _validate,
    build_machine,
    decide,
    decide_segment,
)
from campaign_states._lifecycle import SegmentState as Seg
from campaign_states._lifecycle import SegmentTrigger as SegT
from campaign_states._planning import DECISIONS as _DECISIONS
from campaign_states._records import campaign_after_transition as moved
from campaign_states._rows import _CAMPAIGN_FIELDS, campaign_from_row, join_ids

# DESIGN.md section 1, written out independently of the declaration.
DESIGN = {
    Trigger.RESUME: ({STOP}, RUN),
    Trigger.STOP: ({RUN}, STOP),
    Trigger.ARCHIVE: ({RUN, STOP}, ARCH),
    Trigger.UNARCHIVE: ({ARCH}, STOP),
}


class TestDeclaration:
    """The declaration is the table DESIGN.md gives, and is what the engine runs."""

    def test_matches_design(self):
        declared = {}
        for t in CAMPAIGN_LIFECYCLE.transitions:
            src = t["source"] if isinstance(t["source"], list) else [t["source"]]
            declared[t["trigger"]] = (set(src), t["dest"])
        assert DESIGN == declared
        assert STOP is CAMPAIGN_LIFECYCLE.initial

    def test_allowed(self):
        assert (Trigger.UNARCHIVE,) == CAMPAIGN_LIFECYCLE.allowed(ARCH)
        assert (Trigger.STOP, Trigger.ARCHIVE) == CAMPAIGN_LIFECYCLE.allowed(RUN)

    def test_no_auto_transitions(self):
        # to_archived() would bypass every guard.
        assert set(DESIGN) == set(_CAMPAIGN_MACHINE.events)

    def test_no_model_is_ever_bound(self):
        for state in State:
            for trigger in Trigger:
                decide(state, trigger)
        assert [] == list(_CAMPAIGN_MACHINE.models)


class TestDecide:
    """decide() gives the verdict for every input and never lets MachineError out."""

    @pytest.mark.parametrize("state", list(State))
    @pytest.mark.parametrize("trigger", list(Trigger))
    @pytest.mark.parametrize("blocked", [False, True])
    def test_every_input(self, state, trigger, blocked):
        sources, dest = DESIGN[trigger]
        verdict, new = decide(state, trigger, segment_archived=blocked)
        if state is dest or (trigger is Trigger.UNARCHIVE and state is RUN):
            expected = (Verdict.UNCHANGED, state)
        elif state not in sources:
            expected = (Verdict.INVALID, state)
        elif trigger is Trigger.RESUME and blocked:
            expected = (Verdict.GUARD_FAILED, state)
        else:
            expected = (Verdict.CHANGED, dest)
        assert expected == (verdict, new)

    def test_registry_table_is_the_machine(self):
        # The registry's per-campaign lookup table is the machine's answers, not a copy.
        assert {
            (t, b): {s: decide(s, t, segment_archived=b) for s in State}
            for t in Trigger
            for b in (False, True)
        } == _DECISIONS

    def test_segments(self):
        assert (Verdict.CHANGED, Seg.ARCHIVED) == decide_segment(Seg.ACTIVE, SegT.ARCHIVE)
        assert (Verdict.UNCHANGED, Seg.ARCHIVED) == decide_segment(Seg.ARCHIVED, SegT.ARCHIVE)
        assert (Verdict.CHANGED, Seg.ACTIVE) == decide_segment(Seg.ARCHIVED, SegT.UNARCHIVE)
        assert Seg.ACTIVE is SEGMENT_LIFECYCLE.initial


def _lifecycle(transitions, *, states=(STOP, RUN, ARCH), labels=None) -> Lifecycle:
    return Lifecycle(
        name="test", states=states, initial=STOP, transitions=tuple(transitions),
        guard_labels=labels or {},
    )  # fmt: skip


BAD_DECLARATIONS = {
    "unreachable": [{"trigger": Trigger.STOP, "source": RUN, "dest": STOP}],
    "undeclared": [{"trigger": Trigger.RESUME, "source": STOP, "dest": "nowhere"}],
    "two destinations": [
        {"trigger": Trigger.ARCHIVE, "source": STOP, "dest": ARCH},
        {"trigger": Trigger.ARCHIVE, "source": RUN, "dest": STOP},
        {"trigger": Trigger.RESUME, "source": STOP, "dest": RUN},
    ],
    "unlabelled guard": [
        {"trigger": Trigger.RESUME, "source": STOP, "dest": RUN, "conditions": "g"},
        {"trigger": Trigger.ARCHIVE, "source": RUN, "dest": ARCH},
    ],
}


class TestValidation:
    """Declarations transitions would accept silently are refused when the module loads."""

    @pytest.mark.parametrize("case", sorted(BAD_DECLARATIONS))
    def test_refused(self, case):
        with pytest.raises(ValueError, match="test:"):
            _validate(_lifecycle(BAD_DECLARATIONS[case]))

    def test_transitions_alone_accepts_an_unreachable_state(self):
        # Why the validation exists: transitions builds this machine without a word.
        machine = build_machine(_lifecycle(BAD_DECLARATIONS["unreachable"]), model=None)
        assert ["ACTIVE_STOPPED", "ACTIVE_RUNNING", "ARCHIVED"] == list(machine.states)

    def test_the_real_declarations_pass(self):
        _validate(CAMPAIGN_LIFECYCLE)
        _validate(SEGMENT_LIFECYCLE)


class TestSending:
    """Which states may deliver is a property of the declaration; the rest derives from it."""

    def test_the_campaign_declaration(self):
        assert frozenset({State.ACTIVE_RUNNING}) == CAMPAIGN_LIFECYCLE.sending
        assert frozenset({Trigger.ARCHIVE, Trigger.STOP}) == (
            CAMPAIGN_LIFECYCLE.silencing_triggers()
        )

    def test_registry_and_gate_read_it(self):
        from campaign_states import _registry_triggers as _registry  # where triggers live
        from delivery_gate import _decision

        assert CAMPAIGN_LIFECYCLE.silencing_triggers() == _registry._SILENCING
        assert _decision.SENDING is CAMPAIGN_LIFECYCLE.sending

    def test_derived_from_the_declaration_not_restated(self):
        # Were stopped campaigns the sending ones, the same table would make resume and archive
        # the silencing triggers: the registry reads the declaration, not a list of its own.
        other = attrs.evolve(CAMPAIGN_LIFECYCLE, sending=frozenset({State.ACTIVE_STOPPED}))
        assert frozenset({Trigger.RESUME, Trigger.ARCHIVE}) == other.silencing_triggers()

    def test_an_undeclared_sending_state_is_refused(self):
        bad = attrs.evolve(CAMPAIGN_LIFECYCLE, name="test", sending=frozenset({Seg.ACTIVE}))
        with pytest.raises(ValueError, match="test: sending states"):
            _validate(bad)


class TestEnums:
    """States and triggers hash by identity (fast), and stay equal across pickling."""

    @pytest.mark.parametrize("member", [*State, *Trigger])
    def test_identity_hash(self, member):
        assert object.__hash__(member) == hash(member)
        assert member is pickle.loads(pickle.dumps(member))
        assert member is type(member)(member.value)


class TestOneImporter:
    """Only _lifecycle.py imports transitions (ruff's banned-api holds it; so does this)."""

    def test_imports(self):
        root = Path(campaign_states.__file__).parent
        importers = set()
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                if any(n.split(".")[0] == "transitions" for n in names):
                    importers.add(path.relative_to(root).as_posix())
        assert {"_lifecycle.py"} == importers


campaigns = st.builds(
    Campaign,
    id=strategies.valid_ids,
    name=st.text(max_size=5),
    channels=strategies.channel_sets,
    segments=st.frozensets(strategies.valid_ids, max_size=3),
    state=st.sampled_from(list(State)),
)


class TestRecords:
    """The trusted fast paths build exactly what the validating constructors build."""

    def test_row_fields_are_every_field(self):
        # campaign_from_row and moved() set each field by name: a new field must be added
        # there too, or records would silently lack it.
        assert [f.name for f in attrs.fields(Campaign)] == list(_CAMPAIGN_FIELDS)

    @given(c=campaigns, state=st.sampled_from(list(State)), cause=st.none() | st.text())
    def test_moved_is_evolve(self, c, state, cause):
        expected = attrs.evolve(
            c, state=state, version=c.version + 1, seq=c.seq + 7, archive_cause=cause,
            state_changed_at=2.5,
        )  # fmt: skip
        actual = moved(
            c, state=state, version=c.version + 1, seq=c.seq + 7, archive_cause=cause,
            state_changed_at=2.5,
        )  # fmt: skip
        assert expected == actual

    @given(c=campaigns)
    def test_from_row(self, c):
        row = (
            c.id, c.name, c.content, join_ids(ch.value for ch in c.channels),
            join_ids(c.segments), c.state.value, c.version, c.seq, c.archive_cause,
            c.state_changed_at, c.created_at,
        )  # fmt: skip
        assert c == campaign_from_row(row)
