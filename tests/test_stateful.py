"""Random operation sequences on every store agree with a plain reference model.

A Hypothesis `RuleBasedStateMachine` drives create / edit / resume / stop / archive /
unarchive / bulk (duplicates and unknown ids included) / segment archive (and dry run) /
segment unarchive (with and without restore) / record results / reopen-the-store, with ids
of every kind (valid, malformed, wrong types), against a dict-based model written here from
DESIGN.md, independently of the declaration the code runs. After every step it compares
every campaign's state, version, segments, history and results, and checks the invariant
"a campaign that targets an archived segment is never running".

`TestCatchesBrokenRegistry` runs the same machine on a registry whose resume skips the
segment guard, and shows the checker finds the bug.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import uuid
from collections import Counter
from pathlib import Path

import pytest
import strategies
import support
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from campaign_states import Channel, Emission, FakeClock, Registry, State, Trigger
from campaign_states.exceptions import (
    CampaignArchivedError,
    CampaignNotFoundError,
    DuplicateIdError,
    InvalidChannelError,
    InvalidIdError,
    InvalidIdTypeError,
    SegmentArchivedError,
    SegmentNotFoundError,
)
from campaign_states.stores import MemoryStore, SQLiteStore

RUN, STOP, ARCH = "active_running", "active_stopped", "archived"

# The ids the machine uses: a few valid ones (non-ASCII and inner spaces included), plus
# one that is never created.
CAMPAIGN_IDS = ["c1", "c2", "c3", "ç-é", "a b", "🙂"]
SEGMENT_IDS = ["s1", "s2", "s3"]
UNKNOWN = "never-created"
actors = st.sampled_from([None, "ops@example.com", "bot"])


class Model:
    """DESIGN.md section 1 as plain dicts."""

    def __init__(self) -> None:
        self.campaigns: dict[str, dict] = {}
        self.segments: dict[str, str] = {}
        self.history: dict[str, list[tuple]] = {}
        self.results: dict[str, Counter] = {}

    def blocking(self, cid: str) -> list[str]:
        return sorted(s for s in self.campaigns[cid]["segments"] if self.segments[s] == ARCH)

    def fire(self, cid: str, trigger: str, actor: str | None) -> tuple[str, type | None]:
        """Apply one trigger; return (outcome, error type) as a bulk call reports it."""
        if cid not in self.campaigns:
            return "not_found", CampaignNotFoundError
        c = self.campaigns[cid]
        state = c["state"]
        if state == ARCH and trigger in ("resume", "stop"):
            return "refused", CampaignArchivedError
        target = {"resume": RUN, "stop": STOP, "archive": ARCH, "unarchive": STOP}[trigger]
        if state == target or (trigger == "unarchive" and state == RUN):
            return "unchanged", None
        if trigger == "resume" and self.blocking(cid):
            return "refused", SegmentArchivedError
        self.move(cid, trigger, target, actor, cause=None, archive_cause=None)
        return "changed", None

    def move(self, cid, trigger, to, actor, *, cause, archive_cause) -> None:
        c = self.campaigns[cid]
        self.history[cid].append((trigger, c["state"], to, actor, cause, c["version"] + 1))
        c.update(state=to, version=c["version"] + 1, archive_cause=archive_cause)


@contextlib.contextmanager
def raises(*errors: type[BaseException]):
    """Like ``pytest.raises``, but a missing error is an AssertionError.

    Every disagreement with the model is then an AssertionError, which is what
    `TestCatchesBrokenRegistry` expects the checker to raise.
    """
    try:
        yield
    except errors:
        return
    raise AssertionError(f"expected {' or '.join(e.__name__ for e in errors)}, got no error")


def open_store(kind: str, where: str, clock: FakeClock):
    if kind == "memory":
        return MemoryStore(clock=clock)
    if kind == "sqlite":
        return SQLiteStore(Path(where) / "campaigns.db", clock=clock)
    from campaign_states.stores import PostgresStore

    return PostgresStore(where, clock=clock)


@contextlib.contextmanager
def fresh_place(kind: str):
    """A place for one example's store: a temporary directory, or a PostgreSQL schema."""
    if kind == "memory":
        yield ""
    elif kind == "sqlite":
        d = tempfile.mkdtemp(prefix="cs-stateful-")
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)
    else:
        import psycopg

        schema = f"cs_sm_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(support.PG_DSN, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in support.PG_DSN else "?"
        try:
            yield f"{support.PG_DSN}{sep}options=-csearch_path%3D{schema}"
        finally:
            with psycopg.connect(support.PG_DSN, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


def machine(
    kind: str,
    registry_class: type[Registry] = Registry,
    campaign_ids: list[str] = CAMPAIGN_IDS,
    segment_ids: list[str] = SEGMENT_IDS,
) -> type[RuleBasedStateMachine]:
    """The state machine class for one store kind (and registry class, and id pools)."""
    any_campaign = st.sampled_from([*campaign_ids, UNKNOWN])
    any_segment = st.sampled_from([*segment_ids, UNKNOWN])

    class Lifecycle(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model = Model()
            self.clock = FakeClock()
            self._place = fresh_place(kind)
            self.where = self._place.__enter__()
            self.stores = [open_store(kind, self.where, self.clock)]
            self.reg = registry_class(self.stores[-1])

        def teardown(self) -> None:
            for s in self.stores:
                s.close()
            self._place.__exit__(None, None, None)

        # -- rules --------------------------------------------------------------------

        @initialize(
            segs=st.lists(st.frozensets(st.sampled_from(segment_ids), max_size=2), max_size=4)
        )
        def populate(self, segs):
            # A populated start (every segment, a few campaigns targeting some), so that
            # short random sequences reach cascades and guarded resumes.
            for sid in segment_ids:
                self.create_segment(sid)
            for cid, targets in zip(campaign_ids, segs, strict=False):
                self.create_campaign(cid, targets, frozenset({Channel.EMAIL}), None)

        @rule(sid=st.sampled_from(segment_ids))
        def create_segment(self, sid):
            if sid in self.model.segments:
                with raises(DuplicateIdError):
                    self.reg.create_segment(sid)
                return
            self.reg.create_segment(sid)
            self.model.segments[sid] = "active"

        @rule(
            cid=st.sampled_from(campaign_ids),
            segs=st.frozensets(any_segment, max_size=2),
            channels=strategies.channel_sets,
            actor=actors,
        )
        def create_campaign(self, cid, segs, channels, actor):
            m = self.model
            # Both errors may apply; which is reported first is not part of the contract.
            expected = tuple(
                error
                for error, applies in (
                    (DuplicateIdError, cid in m.campaigns),
                    (SegmentNotFoundError, any(s not in m.segments for s in segs)),
                )
                if applies
            )
            if expected:
                with raises(*expected):
                    self.reg.create_campaign(
                        name=cid, channels=channels, segments=segs, campaign_id=cid, actor=actor
                    )
                return
            self.reg.create_campaign(
                name=cid, channels=channels, segments=segs, campaign_id=cid, actor=actor
            )
            m.campaigns[cid] = {"state": STOP, "version": 1, "segments": set(segs),
                                "archive_cause": None, "name": cid,
                                "channels": {Channel(ch) for ch in channels}}  # fmt: skip
            m.history[cid] = [("create", None, STOP, actor, None, 1)]
            m.results[cid] = Counter()

        @rule(
            cid=any_campaign,
            name=st.sampled_from([None, "x", "y"]),
            segs=st.none() | st.frozensets(any_segment, max_size=2),
            actor=actors,
        )
        def edit(self, cid, name, segs, actor):
            m = self.model
            expected = None
            if cid not in m.campaigns:
                expected = CampaignNotFoundError
            else:
                c = m.campaigns[cid]
                if c["state"] == ARCH:
                    expected = CampaignArchivedError
                elif segs is not None and set(segs) != c["segments"]:
                    if any(s not in m.segments for s in segs):
                        expected = SegmentNotFoundError
                    elif c["state"] == RUN and any(m.segments[s] == ARCH for s in segs):
                        expected = SegmentArchivedError
            if expected:
                with raises(expected):
                    self.reg.edit(cid, name=name, segments=segs, actor=actor)
                return
            self.reg.edit(cid, name=name, segments=segs, actor=actor)
            c = m.campaigns[cid]
            new_name = c["name"] if name is None else name
            new_segs = c["segments"] if segs is None else set(segs)
            if (new_name, new_segs) != (c["name"], c["segments"]):
                c.update(name=new_name, segments=new_segs, version=c["version"] + 1)
                m.history[cid].append(("edit", c["state"], c["state"], actor, None, c["version"]))

        @rule(
            cid=any_campaign,
            trigger=st.sampled_from(["resume", "stop", "archive", "unarchive"]),
            actor=actors,
        )
        def trigger(self, cid, trigger, actor):
            outcome, error = self.model.fire(cid, trigger, actor)
            call = getattr(self.reg, trigger)
            if error is not None:
                with raises(error):
                    call(cid, actor=actor)
                return
            result = call(cid, actor=actor)
            assert (outcome == "changed") == result.changed
            assert self.model.campaigns[cid]["state"] == result.campaign.state.value

        @rule(
            ids=st.lists(any_campaign, max_size=8),
            trigger=st.sampled_from(["resume", "stop", "archive", "unarchive"]),
            actor=actors,
        )
        def bulk(self, ids, trigger, actor):
            out = getattr(self.reg, f"{trigger}_many")(ids, actor=actor)
            expected = {}
            for cid in dict.fromkeys(ids):
                outcome, error = self.model.fire(cid, trigger, actor)
                expected[cid] = (outcome, None if outcome == "not_found" else error)
            assert list(dict.fromkeys(ids)) == list(out)
            actual = {
                k: (v.outcome.value, None if v.error is None else type(v.error))
                for k, v in out.items()
            }
            assert expected == actual

        def refused_unknown_segment(self, sid, call):
            """Whether the model has no segment ``sid`` (then ``call()`` must refuse it)."""
            if sid in self.model.segments:
                return False
            with raises(SegmentNotFoundError):
                call()
            return True

        @rule(sid=any_segment, dry_run=st.booleans(), actor=actors)
        def archive_segment(self, sid, dry_run, actor):
            archive = functools.partial(self.reg.archive_segment, sid, dry_run=dry_run, actor=actor)
            if self.refused_unknown_segment(sid, archive):
                return
            m = self.model
            victims = []
            if m.segments[sid] == "active":
                victims = sorted(
                    cid for cid, c in m.campaigns.items()
                    if sid in c["segments"] and c["state"] != ARCH
                )  # fmt: skip
            change = archive()
            assert sorted(victims) == sorted(change.campaign_ids)
            if dry_run:
                return
            assert (m.segments[sid] == "active") == change.changed
            m.segments[sid] = ARCH
            for cid in victims:
                m.move(cid, "archive", ARCH, actor, cause=f"segment:{sid}", archive_cause=sid)

        @rule(sid=any_segment, restore=st.booleans(), actor=actors)
        def unarchive_segment(self, sid, restore, actor):
            unarchive = functools.partial(
                self.reg.unarchive_segment, sid, restore_campaigns=restore, actor=actor
            )
            if self.refused_unknown_segment(sid, unarchive):
                return
            m = self.model
            restored = []
            if restore:
                restored = [
                    cid for cid, c in m.campaigns.items()
                    if sid in c["segments"] and c["state"] == ARCH and c["archive_cause"] == sid
                ]  # fmt: skip
            change = unarchive()
            assert sorted(restored) == sorted(change.campaign_ids)
            assert (m.segments[sid] == ARCH) == change.changed
            m.segments[sid] = "active"
            for cid in restored:
                m.move(cid, "unarchive", STOP, actor, cause=f"segment:{sid}", archive_cause=None)

        @rule(data=st.data())
        def record_results(self, data):
            rows = data.draw(st.lists(strategies.deliveries(any_campaign), max_size=4))
            unknown = [d.campaign_id for d in rows if d.campaign_id not in self.model.campaigns]
            if unknown:
                with raises(CampaignNotFoundError):
                    self.reg.record_results(rows)
                return
            if any(d.channel not in self.model.campaigns[d.campaign_id]["channels"] for d in rows):
                with raises(InvalidChannelError):
                    self.reg.record_results(rows)
                return
            self.reg.record_results(rows)
            for d in rows:
                self.model.results[d.campaign_id][d.channel, d.kind] += d.count

        @rule()
        def reopen(self):
            # A new store object on the same data (for memory, the same store: it lives in
            # this process), and a new registry on it.
            if kind != "memory":
                self.stores.append(open_store(kind, self.where, self.clock))
            self.reg = registry_class(self.stores[-1])

        @rule(
            bad=strategies.bad_ids,
            call=st.sampled_from(["get", "archive", "resume", "edit", "bulk", "segment"]),
        )
        def bad_id(self, bad, call):
            r = self.reg
            calls = {
                "get": lambda: r.get(bad),
                "archive": lambda: r.archive(bad),
                "resume": lambda: r.resume(bad),
                "edit": lambda: r.edit(bad, name="x"),
                "bulk": lambda: r.archive_many([*campaign_ids, bad]),
                "segment": lambda: r.archive_segment(bad),
            }
            with raises(InvalidIdError, InvalidIdTypeError):
                calls[call]()

        # -- checks after every step ---------------------------------------------------

        @invariant()
        def agrees_with_model(self):
            m = self.model
            campaigns = {c.id: c for c in self.reg.list()}
            assert sorted(m.campaigns) == sorted(campaigns)
            assert m.segments == {s.id: s.state.value for s in self.reg.segments()}
            seqs = []
            for cid, mc in m.campaigns.items():
                c = campaigns[cid]
                assert (mc["state"], mc["version"], mc["segments"], mc["archive_cause"]) == (
                    c.state.value, c.version, set(c.segments), c.archive_cause
                )  # fmt: skip
                history = self.reg.history(cid)
                assert m.history[cid] == [
                    (e.trigger, None if e.from_state is None else e.from_state.value,
                     e.to_state.value, e.actor, e.cause, e.version)
                    for e in history
                ]  # fmt: skip
                assert [e.seq for e in history] == sorted({e.seq for e in history})
                assert c.seq == history[-1].seq
                seqs.extend(e.seq for e in history)
                r = self.reg.results(cid)
                expected = m.results[cid]
                assert {
                    ch: n for (ch, kind), n in expected.items() if kind is Emission.MESSAGE
                } == dict(r.delivered)
                assert (
                    sum(
                        n for (_, kind), n in expected.items() if kind is Emission.IN_APP_IMPRESSION
                    )
                    == r.impressions
                )
            assert len(seqs) == len(set(seqs))  # one global sequence

        @invariant()
        def archived_segment_never_running(self):
            archived = {s.id for s in self.reg.segments() if s.state.value == ARCH}
            for c in self.reg.list(state=State.ACTIVE_RUNNING):
                assert not (c.segments & archived), c

    Lifecycle.__name__ = f"Lifecycle_{kind}_{registry_class.__name__}"
    return Lifecycle


def _settings(**overrides):
    # The loaded profile (dev or ci), with the health check that flags slow data generation
    # off: the slow part is the store, not generation.
    return settings(
        settings.default,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        **overrides,
    )


class TestAgreement:
    """Every store agrees with the reference model after every step of random sequences."""

    def test_agrees(self, store_kind):
        if store_kind == "postgres":
            support.require_postgres()
        run_state_machine_as_test(
            machine(store_kind),
            settings=_settings(stateful_step_count=30),
        )


class _BlindSegments(support.Delegating):
    """A transaction whose segment reads see nothing: the guard's input goes missing."""

    def segments(self, ids):
        return {}


class SkipsSegmentGuard(Registry):
    """A deliberately broken registry: resume forgets to look at the segments."""

    def _plan(self, tx, ids, trigger, actor):
        if trigger is Trigger.RESUME:
            tx = _BlindSegments(tx)
        return super()._plan(tx, ids, trigger, actor)


class TestCatchesBrokenRegistry:
    """The stateful checker fails on a registry whose resume skips the segment guard."""

    def search(self, registry_class, *, derandomize=True):
        checker = machine("memory", registry_class, ["c1"], ["s1"])

        class Focused(checker):
            # One campaign, one segment, and only the lifecycle rules (a plain attribute
            # shadows a rule): the bug needs a segment archive, an unarchive and a resume,
            # in that order, and the search should spend its steps on those.
            edit = record_results = reopen = bad_id = None

        run_state_machine_as_test(
            Focused,
            # Finding the bug is the point here, not a minimal example: no shrinking.
            settings=_settings(
                max_examples=300,
                stateful_step_count=30,
                database=None,
                phases=[Phase.generate],
                report_multiple_bugs=False,
                # Derandomized, the examples are fixed for one build of the code, but not
                # across builds: which rule Hypothesis draws depends on hashes that
                # include object addresses, so adding an unrelated module changed it.
                derandomize=derandomize,
            ),
        )

    def test_broken_resume_is_caught(self):
        # One search of 300 examples finds the bug about 3 times in 4 (measured over 12
        # random searches), so up to 6 independent searches: all six miss about 1 time in
        # 4,000. A miss of all of them fails the test (the checker would be too weak).
        for _ in range(6):
            try:
                self.search(SkipsSegmentGuard, derandomize=False)
            except AssertionError as error:
                # The failing sequence Hypothesis reports ends in the resume the guard
                # should refuse.
                steps = "\n".join(getattr(error, "__notes__", []))
                assert "trigger='resume'" in steps
                return
        pytest.fail("six searches of the stateful checker missed the broken resume")

    def test_the_same_search_passes_the_real_registry(self):
        self.search(Registry)

    def test_the_bug_it_catches(self):
        # What the checker finds, shown directly: the broken registry resumes a campaign
        # into an archived segment, the real one refuses.
        store = MemoryStore(clock=FakeClock())
        broken = SkipsSegmentGuard(store)
        broken.create_segment("s")
        broken.create_campaign(name="x", channels=[Channel.EMAIL], segments=["s"], campaign_id="c")
        broken.archive_segment("s")
        broken.unarchive("c")
        with pytest.raises(SegmentArchivedError):
            Registry(store).resume("c")
        assert State.ACTIVE_RUNNING == broken.resume("c").campaign.state
