"""The SQLite store: the embedded default; one file shared by processes on one host.

WAL mode, so a gate's reads never block writers. Every write starts with ``BEGIN
IMMEDIATE``: a deferred ``BEGIN`` that reads and then writes fails at once with
SQLITE_BUSY_SNAPSHOT when another process committed in between, ignoring busy_timeout.
Lifecycle changes commit with ``synchronous=FULL`` (durable across power loss); result
counters with ``NORMAL`` (durable across a crash of the process).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from campaign_states._clock import Clock, SystemClock
from campaign_states._fork import abandon, reopen_after_fork
from campaign_states._records import Delivery, Results
from campaign_states._rows import (
    results_from_rows,
)
from campaign_states._store import LeaseSettings
from campaign_states._stores.query_sql import Dialect, SQLReads
from campaign_states._validation import check_positive_seconds
from campaign_states.exceptions import InvalidSettingsError, StoreNotFoundError, StoreReplacedError

from .errors import rollback, translate
from .gates import SQLiteGateTable
from .reader import SQLiteReader
from .schema import (
    close_connection,
    connect,
    create_or_check,
    file_identity,
    lease_dict,
    read_lease,
)
from .tx import Write

__all__ = ["SQLiteReader", "SQLiteStore"]


class SQLiteStore(SQLReads):
    """A store in one SQLite file (``sqlite:///relative.db`` or ``sqlite:////abs/path.db``).

    Args:
        path: The database file; created with the schema if absent or empty.
        readonly: Open with ``mode=ro``: reads work, every write raises `StoreReadOnlyError`.
        busy_timeout: Seconds a write waits for another writer before `StoreBusyError`.
        clock: The clock commit times are measured on (must be host-wide: the default
            ``CLOCK_BOOTTIME`` is).
        lease: Lease settings written into a new store (an existing store keeps its own).
        create: Create the file and the schema when the path holds no store (the
            default); with False, a missing or empty file raises `StoreNotFoundError`.

    Every write first checks that the path still names the file this store opened: after
    a backup is moved over it, or it is deleted, writes raise `StoreReplacedError`.
    """

    # SQLite's lower() lowers A-Z only (without ICU), as `ascii_lower` does.
    _dialect = Dialect(ph="?", prefix="", contains=lambda col: f"instr(lower({col}), ?) > 0",
                       history_order="id")  # fmt: skip
    needs_commit_wait = True
    # One file, one host: every process reads the host's CLOCK_BOOTTIME.
    clock_is_shared = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        busy_timeout: float = 5.0,
        clock: Clock | None = None,
        lease: LeaseSettings | None = None,
        create: bool = True,
    ) -> None:
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise InvalidSettingsError(f"An SQLite store needs a file path, not {path!r:.60}.")
        if type(readonly) is not bool:
            raise InvalidSettingsError(f"readonly must be a bool, not {readonly!r:.40}.")
        if type(create) is not bool:
            raise InvalidSettingsError(f"create must be a bool, not {create!r:.40}.")
        if lease is not None and not isinstance(lease, LeaseSettings):
            raise InvalidSettingsError("lease must be a LeaseSettings.")
        self.path = str(os.fspath(path))
        self.readonly = readonly
        self.busy_timeout = check_positive_seconds("busy_timeout", busy_timeout, allow_zero=True)
        self.clock: Clock = clock or SystemClock()
        self.url = "sqlite:///" + urllib.parse.quote(self.path) + ("?mode=ro" if readonly else "")
        self._lock = threading.RLock()
        self._create = create
        self._closed = False
        # None in a forked child until its first use reopens it (see _after_fork_in_child).
        self._connection: sqlite3.Connection | None = None
        self._gates: SQLiteGateTable | None = None
        try:
            self._conn = connect(
                self.path, readonly=readonly, busy_timeout=self.busy_timeout, create=create
            )
        except sqlite3.Error as e:
            if not create and file_identity(self.path) is None:
                raise StoreNotFoundError(self.path) from e
            raise translate(e, self.path) from e
        try:
            create_or_check(self._conn, self.path, readonly=readonly, create=create, lease=lease)
            # The file the connection opened (SQLite opens it in connect and has read its
            # header by now). A rename in the microseconds between would make the first
            # write refuse, never write to the wrong file.
            self._identity = file_identity(self.path)
        except BaseException as e:
            self._conn.close()
            if isinstance(e, sqlite3.Error):
                raise translate(e, self.path) from e
            raise
        reopen_after_fork(self)

    @property
    def _conn(self) -> sqlite3.Connection:
        c = self._connection
        return c if c is not None else self._reopen()

    @_conn.setter
    def _conn(self, conn: sqlite3.Connection) -> None:
        self._connection = conn

    def _after_fork_in_child(self) -> None:
        # SQLite forbids using a connection across fork(): the child gets its own, opened
        # at its first use rather than here (no I/O in an at-fork hook: a child of a process
        # with many stores open pays only for those it uses). The lock may have been held by
        # a parent thread that does not exist here.
        if self._closed:
            return
        abandon(self._connection)
        self._connection = None
        if self._gates is not None:
            abandon(self._gates)  # reopened on first use: the child's gates register anew
            self._gates = None
        self._lock = threading.RLock()

    def _reopen(self) -> sqlite3.Connection:
        with self._lock:
            if self._connection is not None:
                return self._connection
            try:
                # create=False: a file deleted since the parent opened it is not recreated
                # empty; the identity stays the parent's, so a replaced file refuses writes.
                self._connection = connect(
                    self.path, readonly=self.readonly, busy_timeout=self.busy_timeout, create=False
                )
            except sqlite3.Error as e:
                raise translate(e, self.path) from e
            return self._connection

    @contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as e:
                raise translate(e, self.path) from e

    def _fetch(self, sql: str, args: Sequence[object]) -> list[Any]:
        with self._guard() as c:
            return c.execute(sql, args).fetchall()

    def check_file(self) -> None:
        """Raise `StoreReplacedError` unless the path still names the file opened."""
        now = file_identity(self.path)
        if now != self._identity:
            raise StoreReplacedError(self.path, deleted=now is None)

    def write(self) -> Write:
        """A durable write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``)."""
        return Write(self)

    def add_results(self, deliveries: Iterable[Delivery]) -> None:
        """Add delivery counts in one transaction (synchronous=NORMAL: counters, not state)."""
        rows = [(d.campaign_id, d.channel.value, d.kind.value, d.count) for d in deliveries]
        with self._guard() as c:
            c.execute("PRAGMA synchronous = NORMAL")
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    self.check_file()
                    c.executemany(
                        "INSERT INTO results (campaign_id, channel, kind, count) VALUES (?,?,?,?) "
                        "ON CONFLICT (campaign_id, channel, kind) "
                        "DO UPDATE SET count = count + excluded.count",
                        rows,
                    )
                    c.execute("COMMIT")
                except BaseException:
                    rollback(c)
                    raise
            finally:
                # Lifecycle changes on this connection must stay durable.
                c.execute("PRAGMA synchronous = FULL")

    def lease_settings(self) -> LeaseSettings:
        """The store's persisted lease settings."""
        with self._guard() as c:
            return read_lease(c)

    def set_lease_settings(self, settings: LeaseSettings) -> None:
        """Persist new lease settings (bumps the change sequence, so gates re-read them)."""
        with self.write() as tx:
            tx.next_seq(1)
            self._conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'lease'",
                (json.dumps(lease_dict(settings)),),
            )

    def open_reader(self) -> SQLiteReader:
        """A dedicated read connection for a gate."""
        return SQLiteReader(self.path, busy_timeout=self.busy_timeout)

    def current_seq(self) -> int:
        """The store's change sequence now (an archiver's ceiling for gates' acks)."""
        with self._guard() as c:
            (value,) = c.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        return int(value)

    def gate_table(self) -> SQLiteGateTable:
        """The registered gates, in ``<path>-gates`` (see `SQLiteGateTable`: a file of its
        own, so heartbeats and acks never change this file's ``data_version``).

        Opened on first use, also on a read-only store: gates on it register too.
        """
        with self._lock:
            if self._gates is None:
                self._gates = SQLiteGateTable(
                    self.path, clock=self.clock, busy_timeout=self.busy_timeout
                )
            return self._gates

    def close(self) -> None:
        """Close the connections."""
        with self._lock:
            self._closed = True
            if self._connection is not None:
                close_connection(self._connection, self.path, self._identity)
            if self._gates is not None:
                self._gates.close()

    def results_many(self, campaign_ids: Collection[str]) -> dict[str, Results]:
        """Results of each of ``campaign_ids``, in one query."""
        ids = list(campaign_ids)
        rows: dict[str, list[Any]] = {cid: [] for cid in ids}
        with self._guard() as c:
            for start in range(0, len(ids), 500):  # under SQLite's variable limit
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                for cid, *rest in c.execute(
                    "SELECT campaign_id, channel, kind, count FROM results "
                    f"WHERE campaign_id IN ({marks})",
                    chunk,
                ):
                    rows[cid].append(tuple(rest))
        return {cid: results_from_rows(cid, r) for cid, r in rows.items()}
