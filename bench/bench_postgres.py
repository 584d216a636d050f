"""PostgreSQL store on loopback: bulk work, propagation to gates, archive latency, idle refresh.

``python -m bench postgres`` (``CAMPAIGN_STATES_PG_DSN``, default the local test server; the
run uses a schema of its own, dropped at the end). Ratios are against baselines measured in
the same run:

(a) ``archive_many`` of 100,000 campaigns, history included, on a `FakeClock` (the work
    alone; the commit wait is the guarantee's price, printed separately) vs the same call on
    SQLite (target: <= 2 s of work);
(b) propagation: from ``archive()`` returning its commit (no wait, fake clock) to every one
    of several gates (each on its own connection, as on other hosts) denying, p50 and max,
    with LISTEN/NOTIFY vs polling alone (refresh 1 s);
(c) archive latency: one ``archive()`` with the real commit wait (default lease 5 s), and
    the work part alone vs SQLite's;
(d) idle refresh cost: one ``version_token()`` (a read of one counter row) vs SQLite's
    ``PRAGMA data_version``.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from bench._shared import insert_campaigns, timed
from campaign_states import Campaign, FakeClock, LeaseSettings, Registry, State, SystemClock
from campaign_states._stores.postgres import PostgresReader
from campaign_states.stores import PostgresStore, SQLiteStore
from delivery_gate import DeliveryGate

DSN = os.environ.get("CAMPAIGN_STATES_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
N_BULK = 100_000
N_GATES = 4
N_PROPAGATION = 20


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A DSN whose search_path is a new schema, dropped afterwards."""
    schema = f"cs_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")  # type: ignore[arg-type]
    parts = urllib.parse.urlsplit(DSN)
    query = dict(urllib.parse.parse_qsl(parts.query), options=f"-csearch_path={schema}")
    try:
        yield urllib.parse.urlunsplit(
            parts._replace(query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote))
        )
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")  # type: ignore[arg-type]


def _fill(reg: Registry, n: int, segment: str | None = None) -> list[str]:
    """n running campaigns (targeting ``segment``), created in one store transaction."""
    return insert_campaigns(
        reg,
        n,
        lambda i, seq: Campaign(
            id=f"{segment or 'c'}-{i:06d}",
            name=f"{segment or 'c'}-{i:06d}",
            channels=["email"],
            state=State.ACTIVE_RUNNING,
            seq=seq,
            segments=[segment] if segment else [],
        ),
        history=True,
    )


def bench_bulk() -> None:
    with fresh_schema() as url:
        reg = Registry(PostgresStore(url, clock=FakeClock()))
        ids = _fill(reg, N_BULK)
        pg = timed(lambda: reg.archive_many(ids))
        wait = reg.store.lease_settings().commit_wait()
        reg.create_segment("big")
        _fill(reg, N_BULK, "big")
        cascade = timed(lambda: reg.archive_segment("big"))
        reg.close()
    with tempfile.TemporaryDirectory() as d:
        sreg = Registry(SQLiteStore(Path(d) / "b.db", clock=FakeClock()))
        sids = _fill(sreg, N_BULK)
        lite = timed(lambda: sreg.archive_many(sids))
        sreg.close()
    print(
        f"(a) archive_many {N_BULK:,}: PostgreSQL {pg:.2f} s of work (target <= 2 s), "
        f"SQLite {lite:.2f} s, ratio {pg / lite:.2f}x; then a commit wait of {wait:.2f} s"
    )
    print(f"(a) archive_segment cascading to {N_BULK:,}: PostgreSQL {cascade:.2f} s of work")


def bench_propagation() -> None:
    rnd = random.Random(7)
    for listen in (True, False):
        with fresh_schema() as url:
            archiver = Registry(PostgresStore(url, clock=FakeClock()))
            ids = [
                archiver.create_campaign(name=f"p{i}", channels=["email"], campaign_id=f"p{i}").id
                for i in range(N_PROPAGATION)
            ]
            archiver.resume_many(ids)
            saved = PostgresReader.wait
            if not listen:
                PostgresReader.wait = None  # type: ignore[assignment, method-assign]
            try:
                gates = [DeliveryGate(Registry(PostgresStore(url))) for _ in range(N_GATES)]
                delays = _propagation(archiver, gates, ids, rnd, period=0.0 if listen else 1.0)
                for g in gates:
                    g.close()
                    g.registry.close()
            finally:
                PostgresReader.wait = saved  # type: ignore[method-assign]
            archiver.close()
        how = "LISTEN/NOTIFY" if listen else "polling only (refresh 1 s)"
        print(
            f"(b) commit -> all {N_GATES} gates deny, {how}: "
            f"p50 {statistics.median(delays) * 1e3:.1f} ms, max {max(delays) * 1e3:.1f} ms"
        )


def _propagation(
    archiver: Registry,
    gates: list[DeliveryGate],
    ids: list[str],
    rnd: random.Random,
    *,
    period: float,
) -> list[float]:
    """Seconds from each archive's commit until no gate admits the campaign."""

    def admitted_anywhere(cid: str) -> bool:
        return any(g.check(cid, "email").admitted for g in gates)

    _until(lambda: all(g.check(ids[0], "email").admitted for g in gates))
    delays: list[float] = []
    for cid in ids:
        # A random phase against the gates' polling, or every sample lands at the same
        # point of their refresh period.
        time.sleep(0.02 + rnd.uniform(0, period))
        archiver.archive(cid)  # fake clock: returns right after the commit
        committed = time.perf_counter()
        _until(lambda cid=cid: not admitted_anywhere(cid))
        delays.append(time.perf_counter() - committed)
    return delays


def _until(done: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.perf_counter() + timeout
    while not done():
        if time.perf_counter() > end:
            raise TimeoutError("gates never converged")
        time.sleep(0.0002)


def bench_latency() -> None:
    with fresh_schema() as url:
        real = Registry(PostgresStore(url, clock=SystemClock()))
        fake = Registry(PostgresStore(url, clock=FakeClock()))
        ids = [
            real.create_campaign(name=f"l{i}", channels=["email"], campaign_id=f"l{i}").id
            for i in range(51)
        ]
        full = timed(lambda: real.archive(ids[0]))
        work = [timed(lambda cid=cid: fake.archive(cid)) for cid in ids[1:]]
        real.close()
        fake.close()
    with tempfile.TemporaryDirectory() as d:
        sreg = Registry(SQLiteStore(Path(d) / "l.db", clock=FakeClock()))
        sids = [sreg.create_campaign(name=f"l{i}", channels=["email"]).id for i in range(50)]
        lite = [timed(lambda cid=cid: sreg.archive(cid)) for cid in sids]
        sreg.close()
    pw, sw = statistics.median(work), statistics.median(lite)
    print(
        f"(c) archive(): {full:.2f} s with the commit wait (lease 5 s + grace 0.1 s, +1%); "
        f"work alone p50 {pw * 1e3:.2f} ms vs SQLite {sw * 1e3:.2f} ms, ratio {pw / sw:.2f}x"
    )


def bench_idle_refresh() -> None:
    n = 2000
    with fresh_schema() as url:
        store = PostgresStore(url, lease=LeaseSettings(lease=5.0, grace=0.1, refresh=1.0))
        reader = store.open_reader()
        reader.version_token()
        pg = timed(lambda: [reader.version_token() for _ in range(n)]) / n
        reader.close()
        store.close()
    with tempfile.TemporaryDirectory() as d:
        lite_store = SQLiteStore(Path(d) / "r.db")
        lite_reader = lite_store.open_reader()
        lite = timed(lambda: [lite_reader.version_token() for _ in range(n)]) / n
        lite_reader.close()
        lite_store.close()
    print(
        f"(d) idle refresh (one version_token): PostgreSQL {pg * 1e6:.0f} us, "
        f"SQLite {lite * 1e6:.1f} us, ratio {pg / lite:.0f}x; at refresh 1 s that is "
        f"{pg * 100:.3f}% of one core per gate"
    )


def main() -> None:
    threading.current_thread().name = "bench-postgres"
    bench_idle_refresh()
    bench_latency()
    bench_propagation()
    bench_bulk()


if __name__ == "__main__":
    main()
