"""Lifecycle core: the cost of a trigger against its floor, and 100,000-campaign bulk work.

``python -m bench core``. Ratios are against baselines measured in the same run:

(a) a trigger on the memory store vs a bare ``transitions`` trigger on a bound model
    (target <= 1.5x);
(b) a durable trigger on SQLite vs one bare durable SQLite commit (WAL, synchronous=FULL,
    BEGIN IMMEDIATE, a one-row UPDATE, COMMIT) (target <= 1.5x);
(c) ``archive_many`` of 100,000 campaigns and ``archive_segment`` cascading to 100,000 on
    SQLite, history rows included (target <= 1 s each).

Archives and stops end with a commit wait (lease + grace, about 0.56 s on SQLite) so that
no gate in another process still admits: that wait is the guarantee's price, not work. The
registries here run on a `FakeClock`, whose sleep returns at once, so the figures are the
work alone; the wait is printed separately.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from transitions import Machine

from bench._shared import insert_campaigns, timed
from campaign_states import (
    CAMPAIGN_LIFECYCLE,
    Campaign,
    Channel,
    FakeClock,
    Registry,
    SystemClock,
)
from campaign_states.stores import MemoryStore, SQLiteStore

N_BULK = 100_000


def per_call(fn: Callable[[], object], n: int) -> float:
    """Seconds per call of ``fn``, over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def paired(a: Callable[[], object], b: Callable[[], object], n: int, rounds: int = 7):
    """Median seconds per call of ``a`` and of ``b``, measured in alternating rounds.

    Alternating keeps a noisy neighbour from landing on one side only.
    """
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(per_call(a, n))
        tb.append(per_call(b, n))
    return statistics.median(ta), statistics.median(tb)


def bare_machine() -> Callable[[], object]:
    """The floor for (a): the same table on a plain transitions machine with a bound model."""

    class Model:
        no_segment_archived = True

    def src(t: dict) -> list[str]:
        s = t["source"]
        return [x.value for x in (s if isinstance(s, list) else [s])]

    model = Model()
    Machine(
        model=model,
        states=[s.value for s in CAMPAIGN_LIFECYCLE.states],
        initial=CAMPAIGN_LIFECYCLE.initial.value,
        transitions=[
            dict(t, trigger=t["trigger"].value, source=src(t), dest=t["dest"].value)
            for t in CAMPAIGN_LIFECYCLE.transitions
        ],
        auto_transitions=False,
    )

    def pair() -> None:
        model.resume()  # type: ignore[attr-defined]
        model.stop()  # type: ignore[attr-defined]

    return pair


def registry_pair(reg: Registry, cid: str) -> Callable[[], object]:
    def pair() -> None:
        reg.resume(cid)
        reg.stop(cid)

    return pair


def bare_commit(path: Path) -> Callable[[], object]:
    """The floor for (b): one durable one-row UPDATE on an SQLite file set up like ours."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    conn.execute("INSERT INTO t VALUES ('c', 0)")

    def commit() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE t SET v = v + 1 WHERE id = 'c'")
        conn.execute("COMMIT")

    return commit


def populate(reg: Registry, n: int, segment: str) -> list[str]:
    """Insert ``n`` stopped campaigns targeting ``segment`` in one transaction."""
    reg.create_segment(segment)
    return insert_campaigns(
        reg,
        n,
        lambda i, seq: Campaign(
            id=f"c-{i:06d}",
            name=f"Campaign {i}",
            channels={Channel.EMAIL},
            segments={segment},
            seq=seq,
        ),
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-core-") as tmp:
        d = Path(tmp)

        # (a) memory trigger vs bare transitions trigger.
        mem = Registry(MemoryStore(clock=SystemClock()))
        cid = mem.create_campaign(name="x", channels=["email"]).id
        bare, ours = paired(bare_machine(), registry_pair(mem, cid), n=5000)
        print(f"(a) bare transitions trigger (bound model): {bare / 2 * 1e6:8.2f} us")
        print(f"    memory store trigger (resume/stop):     {ours / 2 * 1e6:8.2f} us")
        print(f"    ratio: {ours / bare:.2f}x (target <= 1.5x)")

        # (b) durable SQLite trigger vs bare durable commit.
        sq = Registry(SQLiteStore(d / "trigger.db", clock=FakeClock()))
        cid = sq.create_campaign(name="x", channels=["email"]).id
        commit = bare_commit(d / "bare.db")

        def two_commits() -> None:
            commit()
            commit()

        bare, ours = paired(two_commits, registry_pair(sq, cid), n=100)
        wait = sq.lease_settings().commit_wait()
        print(f"(b) bare durable SQLite commit:             {bare / 2 * 1e6:8.1f} us")
        print(f"    SQLite trigger (resume/stop), work:     {ours / 2 * 1e6:8.1f} us")
        print(f"    ratio: {ours / bare:.2f}x (target <= 1.5x)")
        print(f"    + stop's commit wait, not work (fake clock here): {wait:.3f} s")
        sq.close()

        # (c) 100,000-campaign bulk archive and segment cascade.
        big = Registry(SQLiteStore(d / "bulk.db", clock=FakeClock()), bulk_limit=N_BULK)
        ids = populate(big, N_BULK, "seg-all")
        t_many = timed(lambda: big.archive_many(ids, actor="bench"))
        t_un = timed(lambda: big.unarchive_many(ids, actor="bench"))
        t_seg = timed(lambda: big.archive_segment("seg-all", actor="bench"))
        history = len(big.history(ids[0]))
        print(f"(c) archive_many of {N_BULK:,} (history rows included): {t_many:.3f} s "
              f"(target <= 1 s)")  # fmt: skip
        print(f"    archive_segment cascading to {N_BULK:,}:            {t_seg:.3f} s "
              f"(target <= 1 s)")  # fmt: skip
        print(f"    unarchive_many of {N_BULK:,} (for reference):       {t_un:.3f} s")
        print(f"    each archive's commit wait, not work (fake clock here): {wait:.3f} s")
        print(f"    history entries per campaign: {history} (archive, unarchive, archive)")
        big.close()
