"""Acknowledged invalidation on PostgreSQL: acks, the server's clock, one connection per gate."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from campaign_states import FakeClock, LeaseSettings, Registry
from campaign_states.stores import PostgresStore
from delivery_gate import DeliveryGate

pytestmark = pytest.mark.postgres

LEASE = LeaseSettings(lease=20.0, grace=0.1, refresh=1.0)
TESTS = Path(__file__).resolve().parent


def _with_app(dsn: str, app: str) -> str:
    return f"{dsn}&application_name={app}"


class TestAcknowledged:
    """With every gate live, archives and stops return on acknowledgements."""

    def test_gates_elsewhere_acknowledge(self, pg_dsn):
        archiver = Registry(PostgresStore(pg_dsn, lease=LEASE))
        archiver.create_campaign(name="c", channels=["email"], campaign_id="c-1")
        archiver.create_campaign(name="d", channels=["email"], campaign_id="c-2")
        archiver.resume_many(["c-1", "c-2"])
        gates = [DeliveryGate.open(pg_dsn) for _ in range(3)]
        try:
            for g in gates:
                assert g.check("c-1", "email").admitted
            assert 3 == len(archiver.gates())
            one = archiver.archive("c-1")
            two = archiver.stop_many(["c-2"])
            for report in (one.wait, two.wait):
                assert ("acknowledged", 3, ()) == (
                    report.outcome,
                    report.acknowledged,
                    report.waited_out,
                )
            for g in gates:
                assert not g.check("c-1", "email").admitted
                assert not g.check("c-2", "email").admitted
        finally:
            for g in gates:
                g.close()
            archiver.close()
        # Closed gates deregistered.
        check = Registry(PostgresStore(pg_dsn))
        try:
            assert [] == check.gates()
        finally:
            check.close()

    def test_heartbeat_ages_are_on_the_servers_clock(self, pg_dsn):
        # The gate's own clock is a fake one far from the server's: ages are unaffected.
        clock = FakeClock(start=10**9)
        gate = DeliveryGate.open(pg_dsn, clock=clock, background_refresh=False)
        try:
            (row,) = gate.registry.gates()
            assert 0 <= row.heartbeat_age < 5
            clock.advance(3600)
            (row,) = gate.registry.gates()
            assert row.heartbeat_age < 5
        finally:
            gate.close()

    def test_a_silent_gate_is_waited_out(self, pg_dsn):
        clock = FakeClock()
        archiver = Registry(PostgresStore(pg_dsn, lease=LEASE, clock=clock))
        archiver.create_campaign(name="c", channels=["email"], campaign_id="c-1")
        archiver.resume("c-1")
        silent = DeliveryGate.open(pg_dsn, background_refresh=False)  # never probes
        try:
            result = archiver.archive("c-1")
            assert "lease" == result.wait.outcome
            assert [silent._gate_id] == [w.gate_id for w in result.wait.waited_out]
        finally:
            silent.close()
            archiver.close()

    def test_an_injected_clock_is_never_cut_by_the_servers_ages(self, pg_dsn):
        """With a FakeClock an archive waits the whole lease: real seconds never count.

        The server measures a heartbeat's age in real time; a FakeClock has not run that
        time, so subtracting it would end the wait before the gate's lease (on the fake
        clock) ends. Found by test_gate_stateful's PostgreSQL machine under load.
        """
        clock = FakeClock()
        # A short lease: the archiver polls the gate rows while the fake clock runs it out.
        lease = LeaseSettings(lease=2.0, grace=0.1, refresh=1.0)
        archiver = Registry(PostgresStore(pg_dsn, lease=lease, clock=clock))
        archiver.create_campaign(name="c", channels=["email"], campaign_id="c-1")
        archiver.resume("c-1")
        silent = DeliveryGate(
            Registry(PostgresStore(pg_dsn, clock=clock)), background_refresh=False
        )
        try:
            assert silent.check("c-1", "email").admitted
            # Real time passes, the fake clock stands still: the server's age of the
            # heartbeat grows past the grace, the gate's lease has not moved.
            time.sleep(3 * lease.grace)
            result = archiver.archive("c-1")
            assert "lease" == result.wait.outcome
            assert result.wait.seconds >= lease.lease
            assert not silent.check("c-1", "email").admitted
        finally:
            silent.close()
            silent.registry.close()
            archiver.close()


class TestConnections:
    """A gate process holds one server connection at rest (reads, LISTEN, heartbeats)."""

    def test_one_connection_per_idle_gate_process(self, pg_dsn):
        app = f"gate-{uuid.uuid4().hex[:8]}"
        url = _with_app(pg_dsn, app)
        Registry(PostgresStore(pg_dsn)).close()  # the schema exists
        code = (
            "import sys, time\n"
            "from delivery_gate import DeliveryGate\n"
            f"g = DeliveryGate.open({url!r})\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n"
            "g.close()\n"
        )
        p = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(TESTS)},
        )
        try:
            assert "ready" == p.stdout.readline().strip()
            time.sleep(1.5)  # a heartbeat or two: it must not open more
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                names = [
                    r[0]
                    for r in conn.execute(
                        "SELECT application_name FROM pg_stat_activity "
                        "WHERE application_name LIKE %s",
                        (f"{app}%",),
                    )
                ]
            assert [f"{app} gate"] == names
        finally:
            p.stdin.close()
            p.wait(30)
            p.stdout.close()
