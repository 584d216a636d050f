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
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from ._clock import Clock, SystemClock
from ._lifecycle import SegmentState, State
from ._records import Campaign, Channel, Delivery, Emission, HistoryEntry, Results, Segment
from ._rows import SEP, campaign_from_row, join_ids, segment_from_row
from ._store import ChangeBatch, LeaseSettings
from .exceptions import (
    ConcurrentUpdateError,
    DuplicateIdError,
    ForeignStoreError,
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreReadOnlyError,
    StoreUnavailableError,
)

__all__ = ["SQLiteStore"]

APPLICATION_ID: Final = 0x43537431  # "CSt1": refuses foreign SQLite files clearly
SCHEMA_VERSION: Final = 1

_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE segments (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL,
    version INTEGER NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX segments_seq ON segments (seq);
CREATE TABLE campaigns (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, content TEXT NOT NULL,
    channels TEXT NOT NULL, segments TEXT NOT NULL, state TEXT NOT NULL,
    version INTEGER NOT NULL, seq INTEGER NOT NULL, archive_cause TEXT,
    state_changed_at REAL NOT NULL, created_at REAL NOT NULL);
CREATE INDEX campaigns_seq ON campaigns (seq);
CREATE INDEX campaigns_state ON campaigns (state);
-- The cascade's index: which campaigns target a segment. `campaigns.segments` holds the
-- same ids joined, so a gate loads a million campaigns without a join.
CREATE TABLE campaign_segments (
    segment_id TEXT NOT NULL, campaign_id TEXT NOT NULL,
    PRIMARY KEY (segment_id, campaign_id)) WITHOUT ROWID;
CREATE TABLE history (
    id INTEGER PRIMARY KEY, campaign_id TEXT NOT NULL, trigger TEXT NOT NULL,
    from_state TEXT, to_state TEXT NOT NULL, actor TEXT, cause TEXT,
    time REAL NOT NULL, seq INTEGER NOT NULL, version INTEGER NOT NULL);
CREATE INDEX history_campaign ON history (campaign_id, id);
CREATE TRIGGER history_no_update BEFORE UPDATE ON history
    BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;
CREATE TRIGGER history_no_delete BEFORE DELETE ON history
    BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;
CREATE TABLE results (
    campaign_id TEXT NOT NULL, channel TEXT NOT NULL, kind TEXT NOT NULL,
    count INTEGER NOT NULL, PRIMARY KEY (campaign_id, channel, kind)) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('seq', 0);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""

_CAMPAIGN_COLS = (
    "id, name, content, channels, segments, state, version, seq, archive_cause, "
    "state_changed_at, created_at"
)


def translate(err: sqlite3.Error, path: str) -> StoreError:
    """Map a sqlite3 error to the typed `StoreError` a caller can act on."""
    name = getattr(err, "sqlite_errorname", "") or ""
    text = str(err)
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED") or "locked" in text:
        return StoreBusyError(
            f"{path}: another writer held the database past the busy timeout; retry, or "
            "raise busy_timeout."
        )
    if name == "SQLITE_FULL" or "disk is full" in text:
        return StoreFullError(f"{path}: the disk or file size limit is full; free space and retry.")
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return StoreReadOnlyError(
            f"{path}: the store is read-only (file permissions, mount, or mode=ro); "
            "open it writable to change campaigns."
        )
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "not a database" in text or "malformed" in text:
        return StoreCorruptError(f"{path}: the file is damaged or not a database; restore a backup.")
    if name.startswith("SQLITE_IOERR"):
        # EFBIG (file size limit) and ENOSPC both surface as I/O errors on some writes.
        return StoreFullError(f"{path}: the disk refused a write ({text}); free space and retry.")
    if name.startswith("SQLITE_CANTOPEN"):
        return StoreUnavailableError(f"{path}: cannot open the database file ({text}).")
    return StoreError(f"{path}: {text}")


def _connect(path: str, *, readonly: bool, busy_timeout: float) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    # isolation_level=None: we issue BEGIN/COMMIT ourselves (sqlite3's implicit BEGIN is a
    # deferred one, the wrong kind for a read-then-write transaction).
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                           timeout=busy_timeout)
    return conn


class _Tx:
    def __init__(self, conn: sqlite3.Connection, store: SQLiteStore) -> None:
        self._c = conn
        self._store = store
        self._seen: dict[str, Campaign] = {}

    def _remember(self, rows: Iterable[Sequence[Any]]) -> list[Campaign]:
        out = [campaign_from_row(r) for r in rows]
        self._seen.update((c.id, c) for c in out)
        return out

    def campaigns(self, ids: Collection[str]) -> dict[str, Campaign]:
        if len(ids) == 1:
            (one,) = ids
            rows = self._c.execute(f"SELECT {_CAMPAIGN_COLS} FROM campaigns WHERE id = ?", (one,))
        else:
            # One JSON array parameter instead of thousands of placeholders.
            rows = self._c.execute(
                f"SELECT {_CAMPAIGN_COLS} FROM campaigns "
                "WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),))
        return {c.id: c for c in self._remember(rows)}

    def campaigns_targeting(self, segment_id: str) -> list[Campaign]:
        rows = self._c.execute(
            f"SELECT {_CAMPAIGN_COLS} FROM campaigns WHERE id IN "
            "(SELECT campaign_id FROM campaign_segments WHERE segment_id = ?) ORDER BY id",
            (segment_id,))
        return self._remember(rows)

    def segments(self, ids: Collection[str]) -> dict[str, Segment]:
        if not ids:
            return {}
        rows = self._c.execute(
            "SELECT id, name, state, version, seq FROM segments "
            "WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),))
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
                f"INSERT INTO campaigns ({_CAMPAIGN_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (c.id, c.name, c.content, join_ids(ch.value for ch in c.channels),
                 join_ids(c.segments), c.state.value, c.version, c.seq, c.archive_cause,
                 c.state_changed_at, c.created_at))
        except sqlite3.IntegrityError as e:
            raise DuplicateIdError(f"Campaign {c.id!r} already exists.") from e
        self._c.executemany(
            "INSERT INTO campaign_segments (segment_id, campaign_id) VALUES (?, ?)",
            [(s, c.id) for s in segments])

    def insert_segment(self, segment: Segment) -> None:
        s = segment
        try:
            self._c.execute("INSERT INTO segments (id, name, state, version, seq) VALUES (?,?,?,?,?)",
                            (s.id, s.name, s.state.value, s.version, s.seq))
        except sqlite3.IntegrityError as e:
            raise DuplicateIdError(f"Segment {s.id!r} already exists.") from e

    def update_campaigns(self, campaigns: Sequence[Campaign]) -> None:
        cur = self._c.executemany(
            "UPDATE campaigns SET name = ?, content = ?, channels = ?, segments = ?, state = ?, "
            "version = ?, seq = ?, archive_cause = ?, state_changed_at = ? "
            "WHERE id = ? AND version = ?",
            [(c.name, c.content, join_ids(ch.value for ch in c.channels), join_ids(c.segments),
              c.state.value, c.version, c.seq, c.archive_cause, c.state_changed_at, c.id,
              c.version - 1) for c in campaigns])
        if cur.rowcount != len(campaigns):
            raise ConcurrentUpdateError("A campaign changed under this write.")
        for c in campaigns:
            old = self._seen.get(c.id)
            if old is None or old.segments != c.segments:
                self._c.execute("DELETE FROM campaign_segments WHERE campaign_id = ?", (c.id,))
                self._c.executemany(
                    "INSERT INTO campaign_segments (segment_id, campaign_id) VALUES (?, ?)",
                    [(s, c.id) for s in c.segments])
            self._seen[c.id] = c

    def update_segment(self, segment: Segment) -> None:
        s = segment
        cur = self._c.execute(
            "UPDATE segments SET name = ?, state = ?, version = ?, seq = ? WHERE id = ? AND version = ?",
            (s.name, s.state.value, s.version, s.seq, s.id, s.version - 1))
        if cur.rowcount != 1:
            raise ConcurrentUpdateError(f"Segment {s.id!r} changed under this write.")

    def append_history(self, entries: Sequence[HistoryEntry]) -> None:
        self._c.executemany(
            "INSERT INTO history (campaign_id, trigger, from_state, to_state, actor, cause, time, "
            "seq, version) VALUES (?,?,?,?,?,?,?,?,?)",
            [(e.campaign_id, e.trigger, e.from_state.value if e.from_state else None,
              e.to_state.value, e.actor, e.cause, e.time, e.seq, e.version) for e in entries])

    def lease_settings(self) -> LeaseSettings:
        return _read_lease(self._c)


def _read_lease(conn: sqlite3.Connection) -> LeaseSettings:
    row = conn.execute("SELECT value FROM meta WHERE key = 'lease'").fetchone()
    return LeaseSettings(**json.loads(row[0])) if row else LeaseSettings()


class SQLiteStore:
    """A store in one SQLite file (``sqlite:///relative.db`` or ``sqlite:////abs/path.db``).

    Args:
        path: The database file; created with the schema if absent or empty.
        readonly: Open with ``mode=ro``: reads work, every write raises `StoreReadOnlyError`.
        busy_timeout: Seconds a write waits for another writer before `StoreBusyError`.
        clock: The clock commit times are measured on (must be host-wide: the default
            ``CLOCK_BOOTTIME`` is).
        lease: Lease settings written into a new store (an existing store keeps its own).
    """

    needs_commit_wait = True

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False,
                 busy_timeout: float = 5.0, clock: Clock | None = None,
                 lease: LeaseSettings | None = None) -> None:
        self.path = os.fspath(path)
        self.readonly = readonly
        self.busy_timeout = busy_timeout
        self.clock: Clock = clock or SystemClock()
        self.url = f"sqlite:///{self.path}"
        self._lock = threading.RLock()
        try:
            self._conn = _connect(self.path, readonly=readonly, busy_timeout=busy_timeout)
            self._open(lease)
        except sqlite3.Error as e:
            raise translate(e, self.path) from e

    def _open(self, lease: LeaseSettings | None) -> None:
        c = self._conn
        (app_id,) = c.execute("PRAGMA application_id").fetchone()
        if app_id == 0 and not self.readonly:
            c.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the write lock: several processes may open a new file at once.
                (app_id,) = c.execute("PRAGMA application_id").fetchone()
                (tables,) = c.execute("SELECT count(*) FROM sqlite_master").fetchone()
                if app_id == 0 and tables == 0:
                    for stmt in _SCHEMA.split(";\n"):
                        if stmt.strip():
                            c.execute(stmt)
                    c.execute("INSERT INTO meta (key, value) VALUES ('lease', ?)",
                              (json.dumps(_lease_dict(lease or LeaseSettings())),))
                    app_id = APPLICATION_ID
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        if app_id != APPLICATION_ID:
            raise ForeignStoreError(
                f"{self.path} is an SQLite database, but not a campaign-states store "
                f"(application_id {app_id:#x}); point the URL at another file."
            )
        (version,) = c.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise ForeignStoreError(
                f"{self.path} has schema version {version}, newer than this release's "
                f"{SCHEMA_VERSION}: upgrade campaign-states."
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

    @contextmanager
    def write(self) -> Iterator[_Tx]:
        """A durable write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``)."""
        with self._guard() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield _Tx(c, self)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

    def get_campaign(self, campaign_id: str) -> Campaign | None:
        """One campaign, or None."""
        with self._guard() as c:
            row = c.execute(f"SELECT {_CAMPAIGN_COLS} FROM campaigns WHERE id = ?",
                            (campaign_id,)).fetchone()
        return campaign_from_row(row) if row else None

    def get_segment(self, segment_id: str) -> Segment | None:
        """One segment, or None."""
        with self._guard() as c:
            row = c.execute("SELECT id, name, state, version, seq FROM segments WHERE id = ?",
                            (segment_id,)).fetchone()
        return segment_from_row(row) if row else None

    def list_campaigns(self, state: State | None, segment: str | None) -> list[Campaign]:
        """Campaigns, optionally filtered, ordered by id."""
        sql = f"SELECT {_CAMPAIGN_COLS} FROM campaigns WHERE 1"
        args: list[object] = []
        if state is not None:
            sql += " AND state = ?"
            args.append(state.value)
        if segment is not None:
            sql += " AND id IN (SELECT campaign_id FROM campaign_segments WHERE segment_id = ?)"
            args.append(segment)
        with self._guard() as c:
            return [campaign_from_row(r) for r in c.execute(sql + " ORDER BY id", args)]

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
                "version FROM history WHERE campaign_id = ? ORDER BY id", (campaign_id,)).fetchall()
        return [
            HistoryEntry(campaign_id=r[0], trigger=r[1],
                         from_state=State(r[2]) if r[2] else None, to_state=State(r[3]),
                         actor=r[4], cause=r[5], time=r[6], seq=r[7], version=r[8])
            for r in rows
        ]

    def results(self, campaign_id: str) -> Results:
        """A campaign's results."""
        with self._guard() as c:
            rows = c.execute("SELECT channel, kind, count FROM results WHERE campaign_id = ?",
                             (campaign_id,)).fetchall()
        delivered = {Channel(ch): n for ch, kind, n in rows if kind == Emission.MESSAGE.value}
        shown = sum(n for _, kind, n in rows if kind == Emission.IN_APP_IMPRESSION.value)
        return Results(campaign_id=campaign_id, delivered=delivered, impressions=shown)

    def add_results(self, deliveries: Iterable[Delivery]) -> None:
        """Add delivery counts in one transaction (synchronous=NORMAL: counters, not state)."""
        rows = [(d.campaign_id, d.channel.value, d.kind.value, d.count) for d in deliveries]
        with self._guard() as c:
            c.execute("PRAGMA synchronous = NORMAL")
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    c.executemany(
                        "INSERT INTO results (campaign_id, channel, kind, count) VALUES (?,?,?,?) "
                        "ON CONFLICT (campaign_id, channel, kind) "
                        "DO UPDATE SET count = count + excluded.count", rows)
                    c.execute("COMMIT")
                except BaseException:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise
            finally:
                c.execute("PRAGMA synchronous = FULL")

    def lease_settings(self) -> LeaseSettings:
        """The store's persisted lease settings."""
        with self._guard() as c:
            return _read_lease(c)

    def set_lease_settings(self, settings: LeaseSettings) -> None:
        """Persist new lease settings (bumps the change sequence, so gates re-read them)."""
        with self.write() as tx:
            tx.next_seq(1)
            self._conn.execute("UPDATE meta SET value = ? WHERE key = 'lease'",
                               (json.dumps(_lease_dict(settings)),))

    def open_reader(self) -> SQLiteReader:
        """A dedicated read connection for a gate."""
        return SQLiteReader(self.path, busy_timeout=self.busy_timeout)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


class SQLiteReader:
    """A gate's own connection: ``PRAGMA data_version`` to notice commits, then a delta read.

    ``data_version`` changes when another connection commits, and this one never writes.
    """

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        try:
            self._conn = _connect(path, readonly=False, busy_timeout=busy_timeout)
        except sqlite3.Error as e:
            raise translate(e, path) from e
        self._lock = threading.Lock()

    def version_token(self) -> object:
        """Changes whenever any other connection commits."""
        with self._lock:
            try:
                return self._conn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as e:
                raise translate(e, self.path) from e

    def changes_since(self, seq: int) -> ChangeBatch:
        """Everything changed after ``seq``, in one read transaction (one WAL snapshot)."""
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN")
                try:
                    (now_seq,) = c.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
                    campaigns = [campaign_from_row(r) for r in c.execute(
                        f"SELECT {_CAMPAIGN_COLS} FROM campaigns WHERE seq > ?", (seq,))]
                    segments = [segment_from_row(r) for r in c.execute(
                        "SELECT id, name, state, version, seq FROM segments WHERE seq > ?", (seq,))]
                    lease = _read_lease(c)
                finally:
                    c.execute("COMMIT")
            except sqlite3.Error as e:
                raise translate(e, self.path) from e
        return ChangeBatch(seq=int(now_seq), campaigns=campaigns, segments=segments, lease=lease)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


def _lease_dict(s: LeaseSettings) -> dict[str, float]:
    return {"lease": s.lease, "grace": s.grace, "refresh": s.refresh,
            "clock_margin": s.clock_margin, "previous_wait": s.previous_wait,
            "previous_until": s.previous_until}


