"""A gate's reader of a PostgreSQL store: its own connection, one counter row to notice commits,
LISTEN to wake on them, then a delta read in one snapshot."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from campaign_states._rows import (
    segment_from_row,
)
from campaign_states._store import GateRowBatch
from campaign_states.exceptions import (
    StoreError,
    StoreUnavailableError,
)

from .errors import close_quietly, translate
from .gates import PostgresGateTable
from .schema import GATE_COLS, NOTIFY_CHANNEL, SEGMENT_COLS, read_lease

__all__ = ["PostgresReader"]


class PostgresReader:
    """A gate's reader: a read of one counter row to notice commits, then a delta read.

    It holds its own connection (never a pooled one, so a busy pool cannot starve a gate),
    reconnects by itself after the connection drops, and offers `wait`, which LISTENs on a
    second connection so a refresher wakes as soon as anything commits.
    """

    def __init__(self, url: str, connect_kwargs: dict[str, Any], where: str) -> None:
        self._url = url
        self._kwargs = connect_kwargs
        self._where = where
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._schema = ""
        # A connection made since the last wait: notifications before its LISTEN are lost.
        self._fresh = True

        self._closed = False
        self._connection()

    def _named(self, role: str) -> dict[str, Any]:
        name = self._kwargs.get("application_name", "campaign-states")
        return {**self._kwargs, "application_name": f"{name} {role}"}

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreUnavailableError(f"{self._where}: this reader is closed.")
        if self._conn is None or self._conn.closed or self._conn.broken:
            close_quietly(self._conn)
            self._conn = None
            try:
                # One connection per gate for everything: its reads, its LISTEN, its
                # heartbeats and acks (a fleet of gate processes fits max_connections).
                conn = psycopg.connect(self._url, **self._named("gate"))
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                row = conn.execute("SELECT current_schema()").fetchone()
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                # Heartbeats must be durable (an archiver trusts their age); a server
                # default of synchronous_commit=off is overridden, as for the pool.
                conn.execute(
                    "SELECT set_config('synchronous_commit', 'on', false) "
                    "WHERE current_setting('synchronous_commit') = 'off'"
                )
            except psycopg.Error as e:
                raise translate(e, self._where) from e
            self._schema = str(row[0]) if row else ""
            self._fresh = True
            self._conn = conn
        return self._conn

    @contextmanager
    def _guard(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except psycopg.Error as e:
                if conn.broken or conn.closed:
                    self._conn = None  # reconnect on the next call
                raise translate(e, self._where) from e

    def gate_table(self) -> PostgresGateTable:
        """The registered gates, through this reader's connection (a gate's own)."""
        return PostgresGateTable(self._guard, self._where)

    def version_token(self) -> object:
        """The store's change sequence: one read of one row, changed by every commit."""
        with self._guard() as c:
            row = c.execute("SELECT seq FROM cs_counter").fetchone()
        assert row is not None
        return int(row[0])

    def gate_rows_since(self, seq: int) -> GateRowBatch:
        """Everything changed after ``seq`` as `GateRow` tuples, in one REPEATABLE READ READ
        ONLY snapshot."""
        # One snapshot: the sequence, the rows, the segments and the lease agree, so the
        # batch brings the reader exactly up to the sequence it reports.
        with self._guard() as c, c.transaction():
            row = c.execute("SELECT seq FROM cs_counter").fetchone()
            if seq <= 0:
                cur = c.execute(f"SELECT {GATE_COLS} FROM cs_campaigns")
            else:
                # Changed campaigns, found through the change feed's seq index (campaigns
                # carry none, so bulk updates stay in place).
                cur = c.execute(
                    f"SELECT {GATE_COLS} FROM cs_campaigns WHERE seq > %s AND id IN "
                    "(SELECT unnest(campaign_ids) FROM cs_changes WHERE seq > %s)",
                    (seq, seq),
                )
            rows = cur.fetchall()
            segments = [
                segment_from_row(r)
                for r in c.execute(f"SELECT {SEGMENT_COLS} FROM cs_segments WHERE seq > %s", (seq,))
            ]
            lease = read_lease(c)
        assert row is not None
        return GateRowBatch(seq=int(row[0]), rows=rows, segments=segments, lease=lease)

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` s, returning early when something commits.

        A hint, never a promise: notifications are lost while the connection is being
        remade, so after a reconnect this returns at once and the caller polls. It never
        raises: when the server cannot be reached it just sleeps.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._closed:
            # Short slices, each under the lock, so a read or close() never waits long.
            with self._lock:
                try:
                    conn: psycopg.Connection[Any] | None = self._connection()
                except StoreError:
                    conn = None
                if conn is not None and self._fresh:
                    self._fresh = False
                    return  # anything sent before our LISTEN is lost: poll now
                if (left := deadline - time.monotonic()) <= 0:
                    return
                if conn is not None:
                    try:
                        for n in conn.notifies(timeout=min(left, 0.25), stop_after=1):
                            # Including those that arrived during a read or a heartbeat
                            # on this connection (psycopg keeps them for notifies()).
                            if n.payload == self._schema:
                                return
                    except psycopg.Error:
                        close_quietly(conn)
                        self._conn = None  # reconnect on the next call
                        continue
            if conn is None:
                # Unreachable: sleep out the period; the caller's poll reports why.
                time.sleep(max(0.0, min(left, 0.25)))

    def close(self) -> None:
        """Close the connection."""
        self._closed = True
        with self._lock:
            close_quietly(self._conn)
            self._conn = None
