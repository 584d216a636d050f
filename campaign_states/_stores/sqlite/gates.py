"""The SQLite store's gate table, in a file of its own: ``<store file>-gates``.

Why a second file: SQLite's ``PRAGMA data_version`` changes for every other connection on
*any* commit to a file, and it is the gates' change signal. If heartbeats and acks were
written to the store's file, every heartbeat of every gate would make every other gate
re-read the store (and every ack would wake the others' fast probe): the change signal
would turn into noise. In their own file they never touch it.

Every write here uses ``synchronous = OFF``: nothing in this file is durable state. A
lost ack only makes an archive wait longer; a heartbeat lost in a power cut dies with the
gate that wrote it. The commit is still atomic and visible to every other connection when
it returns, which is all the protocol needs (heartbeat committed *before* the read).

Heartbeats are times on the host's ``CLOCK_BOOTTIME`` (the store's clock): one host, one
clock, so a heartbeat written by one process compares with another's now. Rows from an
earlier boot (that clock restarts at 0) name processes that no longer exist; they are
ignored and pruned.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Final

from campaign_states._clock import Clock
from campaign_states._gates import RegisteredGate
from campaign_states._store import LeaseSettings

from .errors import rollback, translate
from .schema import connect

__all__ = ["SQLiteGateTable", "boot_id"]

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS gates ("
    " gate_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,"
    " boot TEXT NOT NULL, started REAL NOT NULL, lease REAL NOT NULL,"
    " heartbeat REAL NOT NULL, acked_seq INTEGER NOT NULL DEFAULT 0,"
    " in_flight INTEGER NOT NULL DEFAULT 0)"
)
_COLS: Final = "gate_id, host, pid, started, lease, heartbeat, acked_seq, in_flight"
# Rows silent for longer than this are deleted when a gate registers: twice the longest
# lease a store allows (`LeaseSettings.MAX_LEASE`), so whatever lease the gate held is over
# (a row's own lease column may be a default recorded before the gate's first read). Until
# then a dead gate's row costs archives nothing: its heartbeat is too old. A gate stalled
# that long finds its row gone, drops its view and registers anew.
PRUNE_AFTER: Final = 2 * LeaseSettings.MAX_LEASE


def boot_id() -> str:
    """This boot of this host (Linux), so heartbeats from before a reboot are recognised."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:  # pragma: no cover - non-Linux: assume one boot
        return "unknown"


class SQLiteGateTable:
    """Gate rows in ``<store>-gates`` (WAL, ``synchronous = OFF``), one connection.

    Args:
        path: The store's file; the table lives in ``path + "-gates"``.
        clock: The store's clock (host-wide: heartbeats from several processes compare).
        busy_timeout: Seconds a write waits for another writer of this file.
    """

    def __init__(self, path: str, *, clock: Clock, busy_timeout: float = 5.0) -> None:
        self.path = path + "-gates"
        self._clock = clock
        self._boot = boot_id()
        self._host = socket.gethostname()
        self._lock = threading.Lock()
        try:
            self._conn = connect(self.path, readonly=False, busy_timeout=busy_timeout)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = OFF")
            self._conn.execute(_SCHEMA)
        except sqlite3.Error as e:
            raise translate(e, self.path) from e

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE, as the store's writes: a deferred transaction that reads and then
        # writes fails at once with SQLITE_BUSY_SNAPSHOT if another gate committed between.
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    yield c
                    c.execute("COMMIT")
                except BaseException:
                    rollback(c)
                    raise
            except sqlite3.Error as e:
                raise translate(e, self.path) from e

    def _write(self, sql: str, args: Sequence[object]) -> int:
        with self._transaction() as c:
            return int(c.execute(sql, args).rowcount)

    def register(self, *, lease: float, in_flight: int = 0) -> str:
        """Insert a new gate's row (heartbeat now) and prune long-dead rows; commit."""
        gate_id = uuid.uuid4().hex
        now = self._clock.now()
        with self._transaction() as c:
            c.execute(
                "DELETE FROM gates WHERE boot != ? OR heartbeat < ?",
                (self._boot, now - PRUNE_AFTER),
            )
            c.execute(
                f"INSERT INTO gates ({_COLS}, boot) VALUES (?,?,?,?,?,?,?,?,?)",
                (gate_id, self._host, os.getpid(), time.time(), lease, now, 0, in_flight,
                 self._boot),
            )  # fmt: skip
        return gate_id

    def heartbeat(self, gate_id: str, *, lease: float, in_flight: int = 0) -> bool:
        """Commit a heartbeat (now, on the store's clock); False if the row is gone."""
        return (
            self._write(
                "UPDATE gates SET heartbeat = ?, lease = ?, in_flight = ? WHERE gate_id = ?",
                (self._clock.now(), lease, in_flight, gate_id),
            )
            == 1
        )

    def ack(self, gate_id: str, seq: int) -> bool:
        """Commit ``acked_seq = max(acked_seq, seq)`` (cumulative); False if the row is gone."""
        return (
            self._write(
                "UPDATE gates SET acked_seq = max(acked_seq, ?) WHERE gate_id = ?", (seq, gate_id)
            )
            == 1
        )

    def deregister(self, gate_id: str) -> None:
        """Delete the gate's row."""
        self._write("DELETE FROM gates WHERE gate_id = ?", (gate_id,))

    def rows(self, gate_ids: Sequence[str] | None = None) -> list[RegisteredGate]:
        """This boot's gate rows (or only ``gate_ids``), in one read transaction."""
        sql = f"SELECT {_COLS} FROM gates WHERE boot = ?"
        args: list[object] = [self._boot]
        if gate_ids is not None:
            sql += " AND gate_id IN (SELECT value FROM json_each(?))"
            args.append(json.dumps(list(gate_ids)))
        with self._lock:
            try:
                found = self._conn.execute(sql + " ORDER BY started", args).fetchall()
            except sqlite3.Error as e:
                raise translate(e, self.path) from e
            # The clock after the read: ages are then never understated.
            now = self._clock.now()
        return [
            RegisteredGate(
                gate_id=gid, host=host, pid=pid, started=started, lease=lease,
                heartbeat_age=max(0.0, now - beat), acked_seq=acked, in_flight=in_flight,
            )
            for gid, host, pid, started, lease, beat, acked, in_flight in found
        ]  # fmt: skip

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
