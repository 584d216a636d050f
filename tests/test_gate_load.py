"""The gate's rows (`gate_rows_since`) decide exactly as the store's records would.

A gate reads plain rows; the registry's listener hands it `Campaign` records, which it
converts to the same rows (`gate_row`). Both describe the same changes, so every decision
must be the same: a gate on the store's rows against one on rows built from its records,
checked after random lifecycle operations (segments, cascade causes, channel edits
included) on the memory and the SQLite store, for a first load and for deltas. Also: the
memory store's change index returns what a scan of every campaign would, and each checker
is shown to catch a deliberately broken variant.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from race.faults import make_registry

from campaign_states import (
    Campaign,
    Channel,
    Emission,
    FakeClock,
    LeaseSettings,
    Registry,
    Segment,
    SegmentState,
    State,
)
from campaign_states._rows import gate_row
from campaign_states.exceptions import CampaignStateError
from campaign_states.stores import GateRowBatch, MemoryStore, Reader, Store
from delivery_gate import DeliveryGate
from delivery_gate._snapshot import Snapshot

KINDS = ["memory", "sqlite"]
CHANNELS = [c.value for c in Channel]


class RecordsOnly:
    """A reader whose rows are built from the store's records (`gate_row`, the registry
    listener's conversion), not read as rows: the record path.

    The store reads rows only; the records are fetched by id for the rows it returns
    (single-threaded tests: nothing commits between the two reads)."""

    def __init__(self, inner: Reader, store: Store) -> None:
        self._inner = inner
        self._store = store
        self.record_reads = 0

    def version_token(self) -> object:
        return self._inner.version_token()

    def gate_rows_since(self, seq: int) -> GateRowBatch:
        self.record_reads += 1
        batch = self._inner.gate_rows_since(seq)
        records = [self._store.get_campaign(r[0]) for r in batch.rows]
        rows = [gate_row(c) for c in records if c is not None]
        return GateRowBatch(seq=batch.seq, rows=rows, segments=batch.segments, lease=batch.lease)

    def close(self) -> None:
        self._inner.close()


class CountingRows(RecordsOnly):
    """A reader of the store's own rows, counting which path the gate's reads took."""

    def __init__(self, inner: Reader, store: Store) -> None:
        super().__init__(inner, store)
        self.row_reads = 0

    def gate_rows_since(self, seq: int) -> GateRowBatch:
        self.row_reads += 1
        return self._inner.gate_rows_since(seq)


class CauseDropping(CountingRows):
    """BROKEN: loses each row's archive cause (a cascade reads ARCHIVED, not SEGMENT_...)."""

    def gate_rows_since(self, seq: int) -> GateRowBatch:
        batch = super().gate_rows_since(seq)
        rows = [(*r[:5], None) for r in batch.rows]
        return GateRowBatch(seq=batch.seq, rows=rows, segments=batch.segments, lease=batch.lease)


def other_registry(kind: str, reg: Registry, tmp: Path, clock: FakeClock) -> Registry:
    """A second registry on the same store: its gates learn changes made through ``reg``
    only by refreshing (as a gate in another process does)."""
    if kind == "memory":
        return Registry(reg.store)
    return make_registry(kind, tmp, clock)


def gate_on(reg: Registry, wrap: type[RecordsOnly]) -> tuple[DeliveryGate, RecordsOnly]:
    readers: list[RecordsOnly] = []

    def open_reader() -> Reader:
        readers.append(wrap(Registry.open_reader(reg), reg.store))
        return readers[-1]

    reg.open_reader = open_reader
    gate = DeliveryGate(reg, background_refresh=False)
    return gate, readers[0]


def decisions(gate: DeliveryGate, ids: list[str]) -> dict[tuple[str, str, Emission], object]:
    out: dict[tuple[str, str, Emission], object] = {}
    for cid in [*ids, "c-unknown"]:
        for ch in CHANNELS:
            out[cid, ch, Emission.MESSAGE] = gate.check(cid, ch)
        out[cid, "in_app", Emission.IN_APP_IMPRESSION] = gate.check(
            cid, "in_app", Emission.IN_APP_IMPRESSION
        )
    return out


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sets(st.sampled_from(CHANNELS), min_size=1),
                  st.sets(st.integers(0, 2), max_size=2)),
        st.tuples(st.just("segment"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("trigger"), st.integers(0, 99),
                  st.sampled_from(["resume", "stop", "archive", "unarchive"])),
        st.tuples(st.just("bulk"), st.lists(st.integers(0, 99), min_size=1, max_size=4),
                  st.sampled_from(["resume_many", "stop_many", "archive_many"])),
        st.tuples(st.just("edit"), st.integers(0, 99),
                  st.sets(st.sampled_from(CHANNELS), min_size=1)),
        st.tuples(st.just("refresh"), st.none(), st.none()),
    ),
    max_size=30,
)  # fmt: skip


class Scenario:
    """A registry with three segments, driven by `OPS`."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind, self.tmp, self.clock = kind, tmp, FakeClock()
        self.reg = make_registry(kind, tmp, self.clock)
        self.segments = [self.reg.create_segment(f"s-{i}").id for i in range(3)]
        self.ids: list[str] = []

    def run(self, op: tuple[Any, Any, Any], refresh: Callable[[], None]) -> None:
        name, a, b = op
        with contextlib.suppress(CampaignStateError):
            if name == "create":
                segs = {self.segments[i] for i in b}
                self.ids.append(self.reg.create_campaign(name="c", channels=a, segments=segs).id)
                self.reg.resume(self.ids[-1])
            elif name == "segment":
                sid = self.segments[a]
                if b:
                    self.reg.archive_segment(sid)
                else:
                    self.reg.unarchive_segment(sid, restore_campaigns=True)
            elif name == "refresh":
                refresh()
            elif self.ids and name == "trigger":
                getattr(self.reg, b)(self.ids[a % len(self.ids)])
            elif self.ids and name == "bulk":
                getattr(self.reg, b)([self.ids[i % len(self.ids)] for i in a])
            elif self.ids and name == "edit":
                self.reg.edit(self.ids[a % len(self.ids)], channels=b)

    def close(self) -> None:
        self.reg.close()


def compare(kind: str, ops: list[tuple[object, object, object]], broken: type[CountingRows]):
    """Run ``ops``; return the (rows-path, record-path) decisions that differ after each
    refresh of both gates, and how many times each path was taken."""
    with tempfile.TemporaryDirectory(prefix="gate-load-") as d:
        sc = Scenario(kind, Path(d))
        fast_reg = other_registry(kind, sc.reg, Path(d), sc.clock)
        slow_reg = other_registry(kind, sc.reg, Path(d), sc.clock)
        gates: list[tuple[DeliveryGate, RecordsOnly]] = []
        diffs: list[object] = []

        def refresh() -> None:
            # The gates open at the first refresh: their first read is a full load of
            # what the operations so far made, later ones are deltas.
            if not gates:
                gates.extend([gate_on(fast_reg, broken), gate_on(slow_reg, RecordsOnly)])
            (fast, _), (slow, _) = gates
            assert fast.refresh()
            assert slow.refresh()
            got, want = decisions(fast, sc.ids), decisions(slow, sc.ids)
            diffs.extend((k, got[k], want[k]) for k in want if got[k] != want[k])
            if fast._snapshot.archived_segments() != slow._snapshot.archived_segments():
                diffs.append("archived segments")

        try:
            for op in ops:
                sc.run(op, refresh)
            refresh()
            (_, fast_reader), (_, slow_reader) = gates
            assert isinstance(fast_reader, CountingRows)
            paths = (fast_reader.row_reads, fast_reader.record_reads, slow_reader.record_reads)
        finally:
            for gate, _ in gates:
                gate.close()
            if kind != "memory":
                fast_reg.close()
                slow_reg.close()
            sc.close()
    return diffs, paths


# A scenario that needs every field: channel sets, a stopped and a plain archived campaign,
# a cascade (archive_cause) and its restore, an edit, refreshes in between (deltas).
FIXED: list[tuple[object, object, object]] = [
    ("create", {"email", "push"}, {0}),
    ("create", {"sms"}, {0, 1}),
    ("create", {"in_app", "webhook"}, set()),
    ("create", {"email"}, {2}),
    ("refresh", None, None),
    ("trigger", 2, "stop"),
    ("trigger", 3, "archive"),
    ("segment", 0, True),
    ("refresh", None, None),
    ("edit", 2, {"push", "in_app"}),
    ("trigger", 2, "resume"),
    ("refresh", None, None),
    ("segment", 0, False),
]


class TestRowsPathDecidesAsRecords:
    """A gate on the rows path makes the same decisions as one on the record path."""

    @pytest.mark.parametrize("kind", KINDS)
    def test_fixed_scenario(self, kind):
        diffs, (row_reads, fast_record_reads, slow_record_reads) = compare(
            kind, FIXED, CountingRows
        )
        assert [] == diffs
        # Each gate took its own path on every read: first load, then the deltas.
        assert (0, 4) == (fast_record_reads, row_reads)
        assert 4 == slow_record_reads

    @pytest.mark.parametrize("kind", KINDS)
    @given(ops=OPS)
    def test_random_operations(self, kind, ops):
        diffs, _ = compare(kind, ops, CountingRows)
        assert [] == diffs

    @pytest.mark.parametrize("kind", KINDS)
    def test_checker_catches_a_lost_archive_cause(self, kind):
        diffs, _ = compare(kind, FIXED, CauseDropping)
        assert diffs, "a rows path reading a cascade as a plain archive went unnoticed"

    @pytest.mark.parametrize("kind", KINDS)
    def test_gate_without_the_method_reads_records(self, kind, tmp_path):
        reg = make_registry(kind, tmp_path, FakeClock())
        cid = reg.create_campaign(name="c", channels={"email"}).id
        reg.resume(cid)
        gate, reader = gate_on(other_registry(kind, reg, tmp_path, reg.clock), RecordsOnly)
        try:
            assert gate.check(cid, "email").admitted
            assert 1 == reader.record_reads
        finally:
            gate.close()
            gate.registry.close()
            reg.close()


def as_rows(campaigns: list[Campaign], segments: list[Segment]) -> GateRowBatch:
    """The rows a store would return for these records (texts joined sorted by SEP)."""
    rows = [
        (c.id, c.state.value, "\x1f".join(sorted(ch.value for ch in c.channels)),
         "\x1f".join(sorted(c.segments)), c.version, c.archive_cause)
        for c in campaigns
    ]  # fmt: skip
    return GateRowBatch(seq=0, rows=rows, segments=segments, lease=LeaseSettings())


def views(snapshot: Snapshot) -> dict[str, tuple[object, dict[object, object]]]:
    return {cid: (row.deny, dict(row)) for cid, row in snapshot.rows.items()}


class TestSnapshotRows:
    """Rows converted from records (`gate_row`, the listener's path) and rows as a store
    holds them apply alike: fences, versions, archived segments."""

    def both(self, steps):
        """Run ``steps`` (callables taking a snapshot and an apply function) on a snapshot
        fed records and one fed rows; return both views."""
        by_records, by_rows = Snapshot(), Snapshot()
        for step in steps:
            step(by_records, lambda snap, cs, ss: snap.apply([gate_row(c) for c in cs], ss))
            step(by_rows, lambda snap, cs, ss: snap.apply(as_rows(cs, ss).rows, ss))
        return views(by_records), views(by_rows)

    def test_running_campaign_in_an_archived_segment_is_denied(self):
        c = Campaign(id="c-1", name="c", channels={"email"}, segments={"s-1"},
                     state=State.ACTIVE_RUNNING, version=2)  # fmt: skip
        archived = Segment(id="s-1", name="s", state=SegmentState.ARCHIVED)
        want, got = self.both([lambda snap, apply: apply(snap, [c], [archived])])
        assert want == got
        assert "segment_archived" == got["c-1"][0].reason.value

    def test_fences_and_versions(self):
        def c(version: int, state: State) -> Campaign:
            return Campaign(id="c-1", name="c", channels={"email", "sms"}, state=state,
                            version=version)  # fmt: skip

        steps = [
            lambda snap, apply: apply(snap, [c(2, State.ACTIVE_RUNNING)], []),
            lambda snap, apply: snap.fence(["c-1"]),
            lambda snap, apply: apply(snap, [c(2, State.ACTIVE_RUNNING)], []),  # no newer
            lambda snap, apply: apply(snap, [c(1, State.ARCHIVED)], []),  # older: ignored
        ]
        want, got = self.both(steps)
        assert want == got
        assert "stale" == got["c-1"][0].reason.value  # still fenced
        want, got = self.both([*steps, lambda snap, apply: apply(snap, [c(3, State.ARCHIVED)], [])])
        assert want == got
        assert "archived" == got["c-1"][0].reason.value  # the commit lifted the fence

    def test_checker_catches_a_wrong_row(self):
        c = Campaign(id="c-1", name="c", channels={"email"}, state=State.ACTIVE_RUNNING)
        by_records, by_rows = Snapshot(), Snapshot()
        by_records.apply([gate_row(c)], [])
        by_rows.apply(as_rows([attrs.evolve(c, channels={"sms"})], []).rows, [])
        assert views(by_records) != views(by_rows)


class TestGateRows:
    """`gate_rows_since` describes exactly the stored records changed after a sequence."""

    @pytest.mark.parametrize("kind", KINDS)
    def test_rows_decode_to_the_records(self, kind, tmp_path):
        sc = Scenario(kind, tmp_path)
        for op in FIXED:
            sc.run(op, lambda: None)
        reader = sc.reg.open_reader()
        try:
            seqs = [0, *sorted({c.seq for c in sc.reg.list()})]
            for seq in seqs:
                rows = reader.gate_rows_since(seq)
                records = [c for c in sc.reg.list() if c.seq > seq]
                assert sc.reg.lease_settings() == rows.lease
                changed = [g for g in sc.reg.segments() if g.seq > seq]
                assert sorted(changed, key=_sid) == sorted(rows.segments, key=_sid)
                assert sorted(map(_fields, records)) == sorted(_decode(rows, r) for r in rows.rows)
        finally:
            reader.close()
            sc.close()


def _sid(s: Segment) -> str:
    return s.id


def _fields(c: Campaign) -> tuple[object, ...]:
    return (c.id, c.state, c.channels, c.segments, c.version, c.archive_cause)


def _decode(batch: GateRowBatch, row: tuple[str, str, str, str, int, str | None]):
    cid, state, channels, segments, version, cause = row
    return (
        cid, batch.state(state), batch.channels(channels), batch.segment_ids(segments),
        version, cause,
    )  # fmt: skip


def scan(store: MemoryStore, seq: int) -> list[Campaign]:
    """The reference: every campaign whose last change is after ``seq``."""
    return sorted((c for c in store._campaigns.values() if c.seq > seq), key=lambda c: c.id)


def index_errors(store: MemoryStore) -> list[int]:
    """The sequence numbers for which the change index disagrees with a scan."""
    return [
        seq
        for seq in range(-1, store._seq + 2)
        if scan(store, seq) != sorted(store._changed(seq), key=lambda c: c.id)
    ]


class TestMemoryChangeIndex:
    """The memory store's change index returns exactly what a scan of every campaign would."""

    def test_after_lifecycle_operations(self, tmp_path):
        sc = Scenario("memory", tmp_path)
        for op in FIXED:
            sc.run(op, lambda: None)
        assert [] == index_errors(sc.reg.store)

    def test_after_compaction(self):
        reg = Registry(MemoryStore(clock=FakeClock()))
        ids = [reg.create_campaign(name="c", channels={"email"}).id for i in range(5)]
        store: MemoryStore = reg.store
        for _ in range(300):  # 1,500 writes to 5 campaigns: past 2n + 1024, so compacted
            reg.resume_many(ids)
            reg.stop_many(ids[:3])
        assert len(store._log_ids) < 1500
        assert [] == index_errors(store)

    def test_a_write_out_of_sequence_reindexes(self):
        store = MemoryStore(clock=FakeClock())
        with store.write() as tx:
            tx.insert_campaign(Campaign(id="c-a", name="a", channels={"email"}, seq=5), ())
            tx.insert_campaign(Campaign(id="c-b", name="b", channels={"email"}, seq=7), ())
        with store.write() as tx:  # a write that reuses an older seq
            tx.insert_campaign(Campaign(id="c-c", name="c", channels={"email"}, seq=6), ())
        assert [] == index_errors(store)

    def test_checker_catches_an_index_that_skips_entries(self, monkeypatch):
        store = MemoryStore(clock=FakeClock())
        reg = Registry(store)
        for _ in range(3):
            reg.create_campaign(name="c", channels={"email"})
        changed = MemoryStore._changed
        monkeypatch.setattr(MemoryStore, "_changed", lambda s, seq: changed(s, seq + 1))
        assert [] != index_errors(store)


class TestStateValues:
    """Every state a row can hold decodes to its `State`."""

    @pytest.mark.parametrize("state", list(State))
    def test_round_trip(self, state):
        assert state is GateRowBatch.state(state.value)
