"""The PostgreSQL store's gate table, ``cs_gates``: heartbeats on the server's clock."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final

import psycopg

from campaign_states._gates import RegisteredGate
from campaign_states._store import LeaseSettings

from .errors import rollback

__all__ = ["PostgresGateTable"]

_PRUNE_AFTER: Final = 2 * LeaseSettings.MAX_LEASE


class PostgresGateTable:
    """Gate rows in ``cs_gates``; every heartbeat age is measured on the server's clock.

    Heartbeats commit durably (an archiver trusts their age: a heartbeat lost in a server
    crash could make a gate look older than the view it holds); acks commit with
    ``synchronous_commit = off`` (a lost ack only makes an archive wait longer). No
    NOTIFY is ever sent here: acks are polled by the archiver, never broadcast.

    Args:
        use: Gives a connection in autocommit mode for one call (a pool's, or a reader's).
        where: The store's description, for errors.
        server_ages: Whether the ages this table reports may be subtracted from the
            archiver's clock. True when that clock runs in real time (`SystemClock`): the
            server's clock then advances at the same rate. An injected clock (a test's
            `FakeClock`) moves only when told, so an age measured in real seconds would cut
            a wait that the injected clock has not yet run: with False every age reads 0,
            which only makes an archive wait its whole lease.
    """

    def __init__(
        self,
        use: Callable[[], AbstractContextManager[psycopg.Connection[Any]]],
        where: str,
        *,
        server_ages: bool = True,
    ) -> None:
        self._use = use
        self._where = where
        self._server_ages = server_ages

    def register(self, *, lease: float, in_flight: int = 0) -> str:
        """Prune long-silent rows, insert a new gate's row (heartbeat now); committed."""
        gate_id = uuid.uuid4().hex
        with self._use() as c:
            c.execute(
                "DELETE FROM cs_gates WHERE heartbeat_at < "
                "clock_timestamp() - make_interval(secs => %s)",
                (_PRUNE_AFTER,),
            )
            c.execute(
                "INSERT INTO cs_gates (gate_id, host, pid, started, lease, heartbeat_at, "
                "in_flight) VALUES (%s, %s, %s, %s, %s, clock_timestamp(), %s)",
                (gate_id, socket.gethostname(), os.getpid(), time.time(), lease, in_flight),
            )
        return gate_id

    def heartbeat(self, gate_id: str, *, lease: float, in_flight: int = 0) -> bool:
        """Commit a heartbeat (the server's now), durably; False if the row is gone."""
        with self._use() as c:
            cur = c.execute(
                "UPDATE cs_gates SET heartbeat_at = clock_timestamp(), lease = %s, "
                "in_flight = %s WHERE gate_id = %s",
                (lease, in_flight, gate_id),
            )
            return cur.rowcount == 1

    def ack(self, gate_id: str, seq: int) -> bool:
        """Commit ``acked_seq = greatest(acked_seq, seq)``, not durably; False if gone."""
        with self._use() as c:
            # Explicit, so the connection's read-only REPEATABLE READ default (a reader's)
            # does not apply, and SET LOCAL has a transaction to apply to.
            c.execute("BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE")
            try:
                c.execute("SET LOCAL synchronous_commit = off")
                cur = c.execute(
                    "UPDATE cs_gates SET acked_seq = greatest(acked_seq, %s) WHERE gate_id = %s",
                    (seq, gate_id),
                )
                c.execute("COMMIT")
            except BaseException:
                rollback(c)
                raise
            return cur.rowcount == 1

    def deregister(self, gate_id: str) -> None:
        """Delete the gate's row."""
        with self._use() as c:
            c.execute("DELETE FROM cs_gates WHERE gate_id = %s", (gate_id,))

    def rows(self, gate_ids: Sequence[str] | None = None) -> list[RegisteredGate]:
        """The gate rows (or only ``gate_ids``), ages computed by the server, one statement."""
        sql = (
            "SELECT gate_id, host, pid, started, lease, "
            "greatest(0, extract(epoch FROM clock_timestamp() - heartbeat_at))::float8, "
            "acked_seq, in_flight FROM cs_gates"
        )
        args: tuple[object, ...] = ()
        if gate_ids is not None:
            sql += " WHERE gate_id = ANY(%s)"
            args = (list(gate_ids),)
        with self._use() as c:
            found = c.execute(sql + " ORDER BY started", args).fetchall()
        return [
            RegisteredGate(
                gate_id=gid, host=host, pid=pid, started=started, lease=lease,
                heartbeat_age=age if self._server_ages else 0.0, acked_seq=acked,
                in_flight=in_flight,
            )
            for gid, host, pid, started, lease, age, acked, in_flight in found
        ]  # fmt: skip
