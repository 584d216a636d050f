"""A server restart on a throwaway PostgreSQL cluster this test starts and owns.

The cluster runs as the ``postgres`` user (``runuser``) from the PostgreSQL 15 binaries, in
a temporary directory, on a port of its own: stopping it disturbs nobody else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import support
from test_postgres import JOIN

from campaign_states import FakeClock, LeaseSettings, Registry, SegmentState, State
from campaign_states.exceptions import StoreUnavailableError
from campaign_states.stores import PostgresStore
from delivery_gate import DeliveryGate, Reason

pytestmark = pytest.mark.postgres

PG_BIN = Path(os.environ.get("CAMPAIGN_STATES_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _missing() -> str | None:
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL binaries in {PG_BIN} (set CAMPAIGN_STATES_PG_BIN)"
    if shutil.which("runuser") is None or os.geteuid() != 0:
        return "starting a throwaway cluster needs root (runuser -u postgres)"
    return None


class Cluster:
    """A PostgreSQL cluster in a temporary directory, on its own port."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cs-pg-", dir="/tmp"))
        shutil.chown(self.dir, "postgres", "postgres")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._pg(
            "initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self._pg(
            "pg_ctl",
            "-D",
            str(self.dir / "data"),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    reason = _missing()
    if reason:
        if support.REQUIRE_PG:
            pytest.fail(f"CAMPAIGN_STATES_REQUIRE_PG=1 but {reason}")
        pytest.skip(reason)
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.destroy()


def eventually(probe: Callable[[], object]) -> object:
    """``probe()``'s first result that does not raise StoreUnavailableError (JOIN s at most)."""
    deadline = time.monotonic() + JOIN
    while True:
        try:
            return probe()
        except StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class TestServerRestart:
    """Committed archives survive a crash restart; stores, readers and gates recover alone."""

    def test_crash_restart(self, cluster: Cluster) -> None:
        """Stop the server hard, see typed errors while it is down, start it, carry on."""
        lease = LeaseSettings(lease=0.5, grace=0.05, refresh=0.1)
        store = PostgresStore(cluster.url, clock=FakeClock(), lease=lease, connect_timeout=2)
        reg = Registry(store)
        live = Registry(PostgresStore(cluster.url, connect_timeout=2))  # real clock, for a gate
        reader = store.open_reader()
        gate = DeliveryGate(live)
        try:
            reg.create_segment("s")
            for cid, segs in (("c1", []), ("c2", ["s"]), ("c3", [])):
                reg.create_campaign(campaign_id=cid, name=cid, channels=["email"], segments=segs)
            reg.resume_many(["c1", "c2", "c3"])
            reg.archive("c1")
            reg.archive_segment("s")
            token = reader.version_token()
            assert eventually(lambda: gate.check("c3", "email").admitted)

            cluster.stop("immediate")  # a crash: no shutdown checkpoint
            with pytest.raises(StoreUnavailableError):
                reg.get("c1")
            with pytest.raises(StoreUnavailableError):
                reader.version_token()
            deadline = time.monotonic() + JOIN
            while gate.check("c3", "email").admitted and time.monotonic() < deadline:
                time.sleep(0.05)
            assert gate.check("c3", "email").reason in (Reason.STALE, Reason.STORE_UNAVAILABLE)

            cluster.start()
            assert token == eventually(reader.version_token)
            assert (State.ARCHIVED, State.ARCHIVED, State.ACTIVE_RUNNING) == tuple(
                eventually(lambda c=c: reg.get(c).state) for c in ("c1", "c2", "c3")
            )
            assert SegmentState.ARCHIVED is reg.get_segment("s").state
            deadline = time.monotonic() + JOIN
            while not gate.check("c3", "email").admitted and time.monotonic() < deadline:
                time.sleep(0.05)
            assert gate.check("c3", "email").admitted
            assert Reason.ARCHIVED is gate.check("c1", "email").reason
            # Writes work again, and the recovered reader sees them.
            reg.stop("c3")
            assert token != reader.version_token()
        finally:
            gate.close()
            reader.close()
            live.close()
            reg.close()
