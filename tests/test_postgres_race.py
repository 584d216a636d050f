"""The delivery guarantee with every gate on PostgreSQL, and gates riding out lost connections.

Same harness and checker as ``test_race`` (worker processes emitting through their own gates
while an archiver process archives), with the store on PostgreSQL and the gates' reader and
listener sessions terminated by the server (``pg_terminate_backend``) during the run.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import test_postgres_procs as procs
from race.harness import Report, check
from test_postgres import JOIN, CommitCutter, with_options

from campaign_states import LeaseSettings, Registry
from campaign_states.stores import PostgresStore
from delivery_gate import DeliveryGate, Reason

pytestmark = pytest.mark.postgres

RACE_LEASE = LeaseSettings(lease=0.3, grace=0.05, refresh=0.05)


def terminate(dsn: str, *application_names: str) -> int:
    """pg_terminate_backend every session with one of these names; how many there were."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = ANY(%s) AND pid <> pg_backend_pid()",
            (list(application_names),),
        ).fetchall()
    return len(rows)


class Killer(threading.Thread):
    """Terminates the gates' sessions every ``every`` s until stopped."""

    def __init__(self, dsn: str, app: str, every: float) -> None:
        super().__init__(daemon=True)
        self.dsn, self.app, self.every = dsn, app, every
        self.stop = threading.Event()
        self.kills = 0
        self.start()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.kills += terminate(self.dsn, f"{self.app} gate")


def run_race(
    pg_dsn: str,
    workdir: Path,
    *,
    seed: int,
    groups: int,
    broken: bool = False,
    listen: bool = True,
    kill_every: float | None = None,
) -> tuple[Report, int]:
    """One harness run on PostgreSQL; returns the checker's report and the kills made."""
    app = f"race-{uuid.uuid4().hex[:8]}"
    url = with_options(pg_dsn, application_name=app)
    procs.setup(url, seed, groups, RACE_LEASE)
    run = {
        "seed": seed,
        "groups": groups,
        "threads": 2,
        "broken": broken,
        "listen": listen,
        "workdir": str(workdir),
    }
    ctx = multiprocessing.get_context("spawn")
    stop, go = ctx.Event(), ctx.Event()
    workers, readies = [], []
    for i in range(2):
        ready = ctx.Event()
        p = ctx.Process(target=procs.worker_main, args=(url, run, i, ready, stop))
        p.start()
        workers.append(p)
        readies.append(ready)
    archiver = ctx.Process(target=procs.archiver_main, args=(url, run, go))
    archiver.start()
    killer = Killer(pg_dsn, app, kill_every) if kill_every else None
    try:
        for r, p in zip(readies, workers, strict=True):
            while not r.wait(0.1):
                assert p.is_alive(), "a worker failed to start"
        go.set()
        archiver.join(180)
        assert 0 == archiver.exitcode, "the archiver failed"
    finally:
        if killer:
            killer.stop.set()
            killer.join()
        stop.set()
        for p in [*workers, archiver]:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join()
    assert [0, 0] == [p.exitcode for p in workers]
    archived = json.loads((workdir / "a.json").read_text())
    remote = [json.loads((workdir / f"w{i}.json").read_text()) for i in range(2)]
    return check(archived["calls"], remote, archived["local"]), killer.kills if killer else 0


class TestGuaranteeOnPostgres:
    """No gate in any process admits an emission after archive() returned."""

    def test_archives_while_gate_sessions_are_killed(self, pg_dsn: str, tmp_path: Path) -> None:
        """Processes' gates on PostgreSQL, their sessions terminated mid-run: 0 violations."""
        report, kills = run_race(pg_dsn, tmp_path, seed=41, groups=20, kill_every=0.4)
        assert [] == report.violations
        # Not vacuous: archives made, emissions racing them, sessions really killed.
        assert (20, True, True, True) == (
            report.calls,
            report.archives >= 40,
            report.sends > 0,
            kills > 0,
        )

    def test_checker_catches_an_archive_without_commit_wait(
        self, pg_dsn: str, tmp_path: Path
    ) -> None:
        """Broken variant: returning right after the commit lets remote gates still send."""
        # Without notifications (which may be lost), remote gates learn on their next poll.
        report, _ = run_race(pg_dsn, tmp_path, seed=42, groups=20, broken=True, listen=False)
        assert any("after its archive returned" in v for v in report.violations)


# -- one gate losing its connections ------------------------------------------------------


@pytest.fixture
def refusing_dsn(pg_dsn: str) -> Iterator[tuple[CommitCutter, str]]:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(pg_dsn)
    proxy = CommitCutter(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    app = f"gate-{uuid.uuid4().hex[:8]}"
    yield (
        proxy,
        make_conninfo(
            pg_dsn,
            host="127.0.0.1",
            port=str(proxy.port),
            sslmode="disable",
            gssencmode="disable",
            application_name=app,
        ),
    )
    proxy.close()


def eventually(predicate: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + JOIN
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


class TestGateLosesItsSessions:
    """Killed reader and listener sessions: the gate denies STALE, then recovers by itself."""

    def test_stale_while_unreachable_then_recovers(
        self, pg_dsn: str, refusing_dsn: tuple[CommitCutter, str]
    ) -> None:
        """Kill its sessions while reconnects are refused; let them through again."""
        proxy, dsn = refusing_dsn
        app = str(psycopg.conninfo.conninfo_to_dict(dsn)["application_name"])
        reg = Registry(PostgresStore(dsn, lease=LeaseSettings(lease=0.5, grace=0.05, refresh=0.1)))
        reg.create_campaign(campaign_id="c", name="c", channels=["email"])
        reg.resume("c")
        gate = DeliveryGate(reg)
        try:
            assert eventually(lambda: gate.check("c", "email").admitted)
            proxy.refusing = True
            assert 0 < terminate(pg_dsn, f"{app} gate")
            assert eventually(
                lambda: gate.check("c", "email").reason in (Reason.STALE, Reason.STORE_UNAVAILABLE)
            )
            assert not gate.status().fresh
            proxy.refusing = False
            assert eventually(lambda: gate.check("c", "email").admitted)
            # And the recovered gate follows changes again.
            other = Registry(PostgresStore(pg_dsn))
            try:
                other.archive("c")
            finally:
                other.close()
            assert eventually(lambda: gate.check("c", "email").reason is Reason.ARCHIVED)
        finally:
            gate.close()
            reg.close()
