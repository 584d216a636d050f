"""The SQLite store's file: its schema, opening it (creating or checking the schema) and the
lease settings it holds. Error translation is in `errors`, the write SQL in `tx`."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import urllib.parse
from typing import Final

from campaign_states._store import LeaseSettings
from campaign_states._stores.query_sql import CAMPAIGN_COLS
from campaign_states.exceptions import ForeignStoreError, StoreNotFoundError

from .errors import rollback

__all__ = [
    "APPLICATION_ID",
    "CAMPAIGN_COLS",
    "CHANGED_GATE_ROWS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "close_connection",
    "connect",
    "create_or_check",
    "file_identity",
    "lease_dict",
    "read_lease",
]


APPLICATION_ID: Final = 0x43537431  # "CSt1": refuses foreign SQLite files clearly
SCHEMA_VERSION: Final = 1

SCHEMA = f"""
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
-- The event log pages every campaign's history by seq.
CREATE INDEX history_seq ON history (seq);
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

GATE_COLS: Final = "id, state, channels, segments, version, archive_cause"


# (all rows, rows changed after ?). A full load reads every row: scanning the table beats
# walking the seq index and looking each row up (about 25% on a million); `+seq` keeps the
# planner off the index. A delta is a few rows: the index finds them.
CHANGED_GATE_ROWS: Final = (
    f"SELECT {GATE_COLS} FROM campaigns WHERE +seq > ?",
    f"SELECT {GATE_COLS} FROM campaigns WHERE seq > ?",
)


def connect(
    path: str, *, readonly: bool, busy_timeout: float, create: bool = True
) -> sqlite3.Connection:
    """Open ``path``: ``readonly`` (``mode=ro``), or read-write creating it when ``create``
    (else ``mode=rw``: a missing file is SQLITE_CANTOPEN, never a new empty one)."""
    # A file: URI, quoted: a path holding '?', '#' or '%' would otherwise be cut short.
    mode = "?mode=ro" if readonly else ("" if create else "?mode=rw")
    uri = "file:" + urllib.parse.quote(path) + mode
    # isolation_level=None: we issue BEGIN/COMMIT ourselves (sqlite3's implicit BEGIN is a
    # deferred one, the wrong kind for a read-then-write transaction).
    conn = sqlite3.connect(
        uri, uri=True, isolation_level=None, check_same_thread=False, timeout=busy_timeout
    )
    try:
        # 32 MiB page cache: a 100,000-campaign bulk change touches about 20 MiB of pages.
        conn.execute("PRAGMA cache_size = -32768")
    except BaseException:
        conn.close()
        raise
    return conn


def file_identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) the path names now, or None when it names no file.

    A connection keeps reading the inode it opened: after a backup is moved over the path
    (or the file is deleted) only this comparison tells the two apart.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def close_connection(conn: sqlite3.Connection, path: str, identity: tuple[int, int] | None) -> None:
    """Close a connection; if its file was replaced, without the checkpoint on close.

    The last connection to close a WAL file checkpoints it and then deletes ``PATH-wal``
    *by name*: after a restore that name may be the new file's WAL, in use by other
    processes. Python 3.12 can turn that off (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE); on 3.11
    the README's restore procedure (stop the processes first, or restore in place) is
    what keeps the new file whole.
    """
    setconfig = getattr(conn, "setconfig", None)
    flag = getattr(sqlite3, "SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE", None)
    if setconfig is not None and flag is not None and file_identity(path) != identity:
        with contextlib.suppress(sqlite3.Error):
            setconfig(flag, True)
    conn.close()


def create_or_check(
    c: sqlite3.Connection,
    path: str,
    *,
    readonly: bool,
    create: bool,
    lease: LeaseSettings | None,
) -> None:
    """Create the schema in a new (empty) file, else check the file is a store this release
    reads; then set the connection's journal mode and durability."""
    (app_id,) = c.execute("PRAGMA application_id").fetchone()
    if app_id == 0 and not create:
        (tables,) = c.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if tables == 0:
            raise StoreNotFoundError(path, " (the file is empty)")
    if app_id == 0 and not readonly:
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
                    (json.dumps(lease_dict(lease or LeaseSettings())),),
                )
                app_id = APPLICATION_ID
            c.execute("COMMIT")
        except BaseException:
            rollback(c)
            raise
    if app_id != APPLICATION_ID:
        raise ForeignStoreError(
            f"{path} is an SQLite database, but not a campaign-states store "
            f"(application_id {app_id:#x}); nothing was changed in it. Point the URL at "
            "another file."
        )
    (version,) = c.execute("PRAGMA user_version").fetchone()
    if version != SCHEMA_VERSION:
        raise ForeignStoreError(
            f"{path} has schema version {version}, but this release reads version "
            f"{SCHEMA_VERSION}: "
            + ("upgrade campaign-states." if version > SCHEMA_VERSION else "migrate it.")
        )
    if not readonly:
        c.execute("PRAGMA journal_mode = WAL")
    c.execute("PRAGMA synchronous = FULL")


@functools.lru_cache(maxsize=8)
def _lease_from_text(text: str) -> LeaseSettings:
    return LeaseSettings.stored(**json.loads(text))


def read_lease(conn: sqlite3.Connection) -> LeaseSettings:
    """The lease settings the store holds (the defaults if none are stored)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'lease'").fetchone()
    return _lease_from_text(row[0]) if row else LeaseSettings()


def lease_dict(s: LeaseSettings) -> dict[str, float]:
    """The settings as stored (JSON in ``meta``)."""
    return {
        "lease": s.lease,
        "grace": s.grace,
        "refresh": s.refresh,
        "clock_margin": s.clock_margin,
        "previous_wait": s.previous_wait,
    }
