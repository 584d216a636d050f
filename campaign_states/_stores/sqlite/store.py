"""The SQLite store: the embedded default; one file shared by processes on one host.

WAL mode, so a gate's reads never block writers. Every write starts with ``BEGIN
IMMEDIATE``: a deferred ``BEGIN`` that reads and then writes fails at once with
SQLITE_BUSY_SNAPSHOT when another process committed in between, ignoring busy_timeout.
Lifecycle changes commit with ``synchronous=FULL`` (durable across power loss); result
counters with ``NORMAL`` (durable across a crash of the process).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, TypeVar

from ..._clock import Clock, SystemClock
from ..._fork import abandon, reopen_after_fork
from ..._lifecycle import State
from ..._queries import CampaignQuery, HistoryQuery
from ..query_sql import campaign_where, history_page
from ..._records import Campaign, Delivery, HistoryEntry, Results, Segment
from ..._rows import (
    GateRow,
    campaign_from_row,
    history_from_rows,
    join_ids,
    results_from_rows,
    segment_from_row,
)
from .gates import SQLiteGateTable
from .schema import (
    ALREADY,
    APPLICATION_ID,
    BULK,
    CAMPAIGN_COLS,
    CHANGED_CAMPAIGNS,
    CHANGED_GATE_ROWS,
    HISTORY_MANY,
    HISTORY_MOVE,
    HISTORY_ONE,
    MOVE_MANY,
    MOVE_ONE,
    MOVE_SET,
    SCHEMA,
    SCHEMA_VERSION,
    UPDATE_ONE,
    close_connection,
    connect,
    file_identity,
    rollback,
    translate,
)
from ..._store import ChangeBatch, GateRowBatch, LeaseSettings
from ..._validation import check_positive_seconds
from ...exceptions import (
    ConcurrentUpdateError,
    DuplicateIdError,
    ForeignStoreError,
    InvalidSettingsError,
    StoreNotFoundError,
    StoreReplacedError,
)

__all__ = ["SQLiteStore"]

log = logging.getLogger("campaign_states")

_T = TypeVar("_T")


class _Tx:
    """One ``BEGIN IMMEDIATE`` transaction: reads here hold the database write lock."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn
        # The rows this transaction read or wrote: an update that changes only lifecycle
        # fields of a campaign read here (the common case) writes only those columns.
        self._seen: dict[str, Campaign] = {}

    def _remember(self, rows: Iterable[Sequence[Any]]) -> list[Campaign]:
        out = [campaign_from_row(r) for r in rows]
        self._seen.update((c.id, c) for c in out)
        return out

    def campaigns(self, ids: Collection[str]) -> dict[str, Campaign]:
        if not ids:
            return {}
        if len(ids) == 1:
            rows = self._c.execute(
                f"SELECT {CAMPAIGN_COLS} FROM campaigns WHERE id = ?", (next(iter(ids)),)
            )
        else:
            # One JSON array parameter instead of thousands of placeholders.
            rows = self._c.execute(
                f"SELECT {CAMPAIGN_COLS} FROM campaigns "
                "WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(ids)),),
            )
        return {c.id: c for c in self._remember(rows)}

    def campaigns_targeting(self, segment_id: str) -> list[Campaign]:
        rows = self._c.execute(
            f"SELECT {CAMPAIGN_COLS} FROM campaigns WHERE id IN "
            "(SELECT campaign_id FROM campaign_segments WHERE segment_id = ?) ORDER BY id",
            (segment_id,),
        )
        return self._remember(rows)

    def segments(self, ids: Collection[str]) -> dict[str, Segment]:
        if not ids:
            return {}
        rows = self._c.execute(
            "SELECT id, name, state, version, seq FROM segments "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),),
        )
        return {s.id: s for s in map(segment_from_row, rows)}

    def next_seq(self, count: int) -> int:
        (last,) = self._c.execute(
            "UPDATE meta SET value = value + ? WHERE key = 'seq' RETURNING value", (count,)
        ).fetchone()
        return int(last) - count + 1

    def insert_campaign(self, campaign: Campaign, segments: Collection[str]) -> None:
        c = campaign
        try:
            self._c.execute(
                f"INSERT INTO campaigns ({CAMPAIGN_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    c.id, c.name, c.content, join_ids(ch.value for ch in c.channels),
                    join_ids(c.segments), c.state.value, c.version, c.seq, c.archive_cause,
                    c.state_changed_at, c.created_at,
                ),
            )  # fmt: skip
        except sqlite3.IntegrityError as e:
            raise DuplicateIdError(f"Campaign {c.id!r} already exists.") from e
        self._c.executemany(
            "INSERT INTO campaign_segments (segment_id, campaign_id) VALUES (?, ?)",
            [(s, c.id) for s in segments],
        )
        self._seen[c.id] = c

    def insert_segment(self, segment: Segment) -> None:
        s = segment
        try:
            self._c.execute(
                "INSERT INTO segments (id, name, state, version, seq) VALUES (?,?,?,?,?)",
                (s.id, s.name, s.state.value, s.version, s.seq),
            )
        except sqlite3.IntegrityError as e:
            raise DuplicateIdError(f"Segment {s.id!r} already exists.") from e

    def update_campaigns(self, campaigns: Sequence[Campaign]) -> None:
        seen = self._seen
        moves: dict[tuple[State, str | None, float], list[Campaign]] = {}
        for c in campaigns:
            old = seen.get(c.id)
            if (
                old is not None
                and old.name is c.name
                and old.content is c.content
                and old.channels is c.channels
                and old.segments is c.segments
            ):
                moves.setdefault((c.state, c.archive_cause, c.state_changed_at), []).append(c)
            else:
                self._update_full(c, old)
            seen[c.id] = c
        for (state, cause, at), batch in moves.items():
            if len(batch) < BULK:
                done = self._c.executemany(
                    MOVE_ONE,
                    [
                        (state.value, cause, at, c.version, c.seq, c.id, c.version - 1)
                        for c in batch
                    ],
                ).rowcount
            else:
                payload = json.dumps([[c.id, c.version, c.seq] for c in batch])
                done = self._c.execute(MOVE_MANY, (state.value, cause, at, payload)).rowcount
            if done != len(batch):
                raise ConcurrentUpdateError("A campaign changed under this write.")

    def _update_full(self, c: Campaign, old: Campaign | None) -> None:
        cur = self._c.execute(
            UPDATE_ONE,
            (
                c.name, c.content, join_ids(ch.value for ch in c.channels), join_ids(c.segments),
                c.state.value, c.version, c.seq, c.archive_cause, c.state_changed_at, c.id,
                c.version - 1,
            ),
        )  # fmt: skip
        if cur.rowcount != 1:
            raise ConcurrentUpdateError(f"Campaign {c.id!r} changed under this write.")
        if old is None or old.segments != c.segments:
            self._c.execute("DELETE FROM campaign_segments WHERE campaign_id = ?", (c.id,))
            self._c.executemany(
                "INSERT INTO campaign_segments (segment_id, campaign_id) VALUES (?, ?)",
                [(s, c.id) for s in c.segments],
            )

    def update_segment(self, segment: Segment) -> None:
        s = segment
        cur = self._c.execute(
            "UPDATE segments SET name = ?, state = ?, version = ?, seq = ? "
            "WHERE id = ? AND version = ?",
            (s.name, s.state.value, s.version, s.seq, s.id, s.version - 1),
        )
        if cur.rowcount != 1:
            raise ConcurrentUpdateError(f"Segment {s.id!r} changed under this write.")

    def append_history(self, entries: Sequence[HistoryEntry]) -> None:
        groups: dict[tuple[str, State, str | None, str | None, float], list[HistoryEntry]] = {}
        for e in entries:
            groups.setdefault((e.trigger, e.to_state, e.actor, e.cause, e.time), []).append(e)
        for (trigger, to, actor, cause, at), batch in groups.items():
            if len(batch) < BULK:
                self._c.executemany(
                    HISTORY_ONE,
                    [
                        (e.campaign_id, trigger, e.from_state.value if e.from_state else None,
                         to.value, actor, cause, at, e.seq, e.version)
                        for e in batch
                    ],
                )  # fmt: skip
            else:
                payload = json.dumps(
                    [
                        [e.campaign_id, e.from_state.value if e.from_state else None, e.seq,
                         e.version]
                        for e in batch
                    ]
                )  # fmt: skip
                self._c.execute(HISTORY_MANY, (trigger, to.value, actor, cause, at, payload))

    def lease_settings(self) -> LeaseSettings:
        return _read_lease(self._c)

    def move_campaigns(
        self,
        ids: Sequence[str] | None,
        segment: str | None,
        sources: Collection[State],
        dest: State,
        *,
        trigger: str,
        actor: str | None,
        cause: str | None,
        archive_cause: str | None,
        now: float,
        wall: float,
    ) -> tuple[list[Campaign], dict[str, float]]:
        if ids is None:
            ids = [
                r[0]
                for r in self._c.execute(
                    "SELECT campaign_id FROM campaign_segments WHERE segment_id = ? "
                    "ORDER BY campaign_id",
                    (segment,),
                )
            ]
        if not ids:
            return [], {}
        first = self.next_seq(len(ids))
        args = {
            "trigger": trigger, "dest": dest._value_, "actor": actor, "cause": cause,
            "wall": wall, "first": first, "ids": json.dumps(list(ids)),
            "sources": json.dumps([s._value_ for s in sources]),
            "archive_cause": archive_cause, "now": now,
        }  # fmt: skip
        already = dict(self._c.execute(ALREADY, args).fetchall())
        self._c.execute(HISTORY_MOVE, args)
        moved = self._remember(self._c.execute(MOVE_SET, args).fetchall())
        moved.sort(key=_by_seq)
        return moved, already


def _by_seq(c: Campaign) -> int:
    return c.seq


def _list_filter(
    state: State | None, segment: str | None, after: str | None
) -> tuple[str, list[object]]:
    where: list[str] = ["1"]
    args: list[object] = []
    if state is not None:
        where.append("state = ?")
        args.append(state.value)
    if segment is not None:
        where.append("id IN (SELECT campaign_id FROM campaign_segments WHERE segment_id = ?)")
        args.append(segment)
    if after is not None:
        where.append("id > ?")
        args.append(after)
    return " AND ".join(where), args


@functools.lru_cache(maxsize=8)
def _lease_from_text(text: str) -> LeaseSettings:
    return LeaseSettings.stored(**json.loads(text))


def _read_lease(conn: sqlite3.Connection) -> LeaseSettings:
    row = conn.execute("SELECT value FROM meta WHERE key = 'lease'").fetchone()
    return _lease_from_text(row[0]) if row else LeaseSettings()


class _Write(AbstractContextManager[_Tx]):
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any error, translated."""

    __slots__ = ("_store",)

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def __enter__(self) -> _Tx:
        store = self._store
        # The store's lock first: one connection, one transaction at a time per process;
        # then BEGIN IMMEDIATE takes the database write lock (waiting up to busy_timeout)
        # so that what this transaction reads cannot change before it writes.
        store._lock.acquire()
        try:
            store._conn.execute("BEGIN IMMEDIATE")
            # After BEGIN: a file replaced while this waited for the write lock is caught
            # too. (A replacement between here and COMMIT is not: a rename is not locked.)
            store.check_file()
        except sqlite3.Error as e:
            rollback(store._conn)
            store._lock.release()
            raise translate(e, store.path) from e
        except BaseException:
            rollback(store._conn)
            store._lock.release()
            raise
        return _Tx(store._conn)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        store = self._store
        conn = store._conn
        try:
            if exc_type is None:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as e:
                    rollback(conn)
                    raise translate(e, store.path) from e
            else:
                rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    raise translate(exc, store.path) from exc
        finally:
            store._lock.release()


class SQLiteStore:
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
            self._open(lease)
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

    def _open(self, lease: LeaseSettings | None) -> None:
        c = self._conn
        (app_id,) = c.execute("PRAGMA application_id").fetchone()
        if app_id == 0 and not self._create:
            (tables,) = c.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if tables == 0:
                raise StoreNotFoundError(self.path, " (the file is empty)")
        if app_id == 0 and not self.readonly:
            c.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the write lock: several processes may open a new file at once.
                (app_id,) = c.execute("PRAGMA application_id").fetchone()
                (tables,) = c.execute("SELECT count(*) FROM sqlite_master").fetchone()
                if app_id == 0 and tables == 0:
                    # application_id and user_version live in the file header, written in
                    # this same transaction: a store is either complete or absent.
                    for stmt in SCHEMA.split(";\n"):
                        if stmt.strip():
                            c.execute(stmt)
                    c.execute(
                        "INSERT INTO meta (key, value) VALUES ('lease', ?)",
                        (json.dumps(_lease_dict(lease or LeaseSettings())),),
                    )
                    app_id = APPLICATION_ID
                c.execute("COMMIT")
            except BaseException:
                rollback(c)
                raise
        if app_id != APPLICATION_ID:
            raise ForeignStoreError(
                f"{self.path} is an SQLite database, but not a campaign-states store "
                f"(application_id {app_id:#x}); nothing was changed in it. Point the URL at "
                "another file."
            )
        (version,) = c.execute("PRAGMA user_version").fetchone()
        if version != SCHEMA_VERSION:
            raise ForeignStoreError(
                f"{self.path} has schema version {version}, but this release reads version "
                f"{SCHEMA_VERSION}: "
                + ("upgrade campaign-states." if version > SCHEMA_VERSION else "migrate it.")
            )
        if not self.readonly:
            c.execute("PRAGMA journal_mode = WAL")
        c.execute("PRAGMA synchronous = FULL")

    @contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as e:
                raise translate(e, self.path) from e

    def check_file(self) -> None:
        """Raise `StoreReplacedError` unless the path still names the file opened."""
        now = file_identity(self.path)
        if now != self._identity:
            raise StoreReplacedError(self.path, deleted=now is None)

    def write(self) -> _Write:
        """A durable write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``)."""
        return _Write(self)

    def get_campaign(self, campaign_id: str) -> Campaign | None:
        """One campaign, or None."""
        with self._guard() as c:
            row = c.execute(
                f"SELECT {CAMPAIGN_COLS} FROM campaigns WHERE id = ?", (campaign_id,)
            ).fetchone()
        return campaign_from_row(row) if row else None

    def get_segment(self, segment_id: str) -> Segment | None:
        """One segment, or None."""
        with self._guard() as c:
            row = c.execute(
                "SELECT id, name, state, version, seq FROM segments WHERE id = ?", (segment_id,)
            ).fetchone()
        return segment_from_row(row) if row else None

    def list_campaigns(
        self,
        state: State | None,
        segment: str | None,
        *,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[Campaign]:
        """Campaigns, optionally filtered, ordered by id: at most ``limit``, ids > ``after``."""
        where, args = _list_filter(state, segment, after)
        # The primary key's index gives id order and the start at `after`: a page reads
        # `limit` rows (more only when a filter skips some), wherever it starts.
        sql = f"SELECT {CAMPAIGN_COLS} FROM campaigns WHERE {where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._guard() as c:
            return [campaign_from_row(r) for r in c.execute(sql, args)]

    def count_campaigns(
        self, state: State | None, segment: str | None, *, after: str | None = None
    ) -> int:
        """How many campaigns `list_campaigns` would return with no limit."""
        where, args = _list_filter(state, segment, after)
        with self._guard() as c:
            (n,) = c.execute(f"SELECT count(*) FROM campaigns WHERE {where}", args).fetchone()
        return int(n)

    def list_segments(self) -> list[Segment]:
        """Every segment, ordered by id."""
        with self._guard() as c:
            rows = c.execute("SELECT id, name, state, version, seq FROM segments ORDER BY id")
            return [segment_from_row(r) for r in rows]

    def history(self, campaign_id: str) -> list[HistoryEntry]:
        """A campaign's history, oldest first."""
        with self._guard() as c:
            rows = c.execute(
                "SELECT campaign_id, trigger, from_state, to_state, actor, cause, time, seq, "
                "version FROM history WHERE campaign_id = ? ORDER BY id",
                (campaign_id,),
            ).fetchall()
        return history_from_rows(rows)

    def results(self, campaign_id: str) -> Results:
        """A campaign's results."""
        with self._guard() as c:
            rows = c.execute(
                "SELECT channel, kind, count FROM results WHERE campaign_id = ?", (campaign_id,)
            ).fetchall()
        return results_from_rows(campaign_id, rows)

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
            return _read_lease(c)

    def set_lease_settings(self, settings: LeaseSettings) -> None:
        """Persist new lease settings (bumps the change sequence, so gates re-read them)."""
        with self.write() as tx:
            tx.next_seq(1)
            self._conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'lease'",
                (json.dumps(_lease_dict(settings)),),
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

    # -- paged reads for operator screens (see `_queries`) -----------------------------

    def find_campaigns(self, query: CampaignQuery) -> list[Campaign]:
        """One page of the campaigns ``query`` selects, ordered by id (the primary key)."""
        # SQLite's lower() lowers A-Z only (without ICU), as `ascii_lower` does.
        where, args = campaign_where(
            query, "?", lambda col: f"instr(lower({col}), ?) > 0", "campaign_segments"
        )
        sql = f"SELECT {CAMPAIGN_COLS} FROM campaigns WHERE {where} ORDER BY id LIMIT ?"
        with self._guard() as c:
            return [campaign_from_row(r) for r in c.execute(sql, [*args, query.limit])]

    def query_history(self, query: HistoryQuery) -> list[HistoryEntry]:
        """One page of history entries across campaigns, ordered by seq as asked."""
        sql, args = history_page(query, "history", "?")
        with self._guard() as c:
            rows = c.execute(sql, args).fetchall()
        return history_from_rows(rows)

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


class SQLiteReader:
    """A gate's own connection: ``PRAGMA data_version`` to notice commits, then a delta read.

    ``data_version`` changes when another connection commits, and this one never writes.
    It opens an existing store only (a reader must never create an empty one where a
    deleted file was), and `version_token` first checks that the path still names the file
    it opened: a gate must not renew its lease from a file replaced by a backup.
    """

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        try:
            self._conn = connect(path, readonly=False, busy_timeout=busy_timeout, create=False)
        except sqlite3.Error as e:
            if file_identity(path) is None:
                raise StoreNotFoundError(path) from e
            raise translate(e, path) from e
        try:
            (app_id,) = self._conn.execute("PRAGMA application_id").fetchone()
            self._identity = file_identity(path)
        except sqlite3.Error as e:
            self._conn.close()
            raise translate(e, path) from e
        if app_id != APPLICATION_ID:
            self._conn.close()
            raise ForeignStoreError(
                f"{path} is not a campaign-states store (application_id {app_id:#x}): a gate "
                "cannot read it. Restore the store's file at that path."
            )
        self._lock = threading.Lock()

    def check_file(self) -> None:
        """Raise `StoreReplacedError` unless the path still names the file opened."""
        now = file_identity(self.path)
        if now != self._identity:
            raise StoreReplacedError(self.path, deleted=now is None)

    def version_token(self) -> object:
        """Changes whenever any other connection commits.

        Raises:
            StoreReplacedError: The path names another file now, or none.
        """
        self.check_file()
        with self._lock:
            try:
                return self._conn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as e:
                raise translate(e, self.path) from e

    def changes_since(self, seq: int) -> ChangeBatch:
        """Everything changed after ``seq``, in one read transaction (one WAL snapshot)."""
        now_seq, campaigns, segments, lease = self._read(seq, CHANGED_CAMPAIGNS, _campaigns)
        return ChangeBatch(seq=now_seq, campaigns=campaigns, segments=segments, lease=lease)

    def gate_rows_since(self, seq: int) -> GateRowBatch:
        """Everything changed after ``seq`` as `GateRow` tuples, in one read transaction."""
        now_seq, rows, segments, lease = self._read(seq, CHANGED_GATE_ROWS, _gate_rows)
        return GateRowBatch(seq=now_seq, rows=rows, segments=segments, lease=lease)

    def _read(
        self, seq: int, sql: tuple[str, str], convert: Callable[[sqlite3.Cursor], list[_T]]
    ) -> tuple[int, list[_T], list[Segment], LeaseSettings]:
        # One read transaction: the sequence, the rows, the segments and the lease all come
        # from one WAL snapshot, so the batch brings the reader exactly up to `now_seq`.
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN")
                try:
                    (now_seq,) = c.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
                    rows = convert(c.execute(sql[0] if seq <= 0 else sql[1], (seq,)))
                    segments = [
                        segment_from_row(r)
                        for r in c.execute(
                            "SELECT id, name, state, version, seq FROM segments WHERE seq > ?",
                            (seq,),
                        )
                    ]
                    lease = _read_lease(c)
                finally:
                    c.execute("COMMIT")
            except sqlite3.Error as e:
                raise translate(e, self.path) from e
        return int(now_seq), rows, segments, lease

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            close_connection(self._conn, self.path, self._identity)


def _campaigns(rows: sqlite3.Cursor) -> list[Campaign]:
    return [campaign_from_row(r) for r in rows]


def _gate_rows(rows: sqlite3.Cursor) -> list[GateRow]:
    # The rows as sqlite3 builds them, in C: exactly the `GateRow` columns and types.
    return rows.fetchall()


def _lease_dict(s: LeaseSettings) -> dict[str, float]:
    return {
        "lease": s.lease,
        "grace": s.grace,
        "refresh": s.refresh,
        "clock_margin": s.clock_margin,
        "previous_wait": s.previous_wait,
    }
