"""The SQLite store's schema, SQL and error translation (see `_sqlite` for the store)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from typing import Final

from ...exceptions import (
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreReadOnlyError,
    StoreUnavailableError,
)

__all__ = [
    "ALREADY",
    "APPLICATION_ID",
    "BULK",
    "CAMPAIGN_COLS",
    "CHANGED_CAMPAIGNS",
    "CHANGED_GATE_ROWS",
    "HISTORY_MANY",
    "HISTORY_MOVE",
    "HISTORY_ONE",
    "MOVE_MANY",
    "MOVE_ONE",
    "MOVE_SET",
    "SCHEMA",
    "SCHEMA_VERSION",
    "UPDATE_ONE",
    "close_connection",
    "connect",
    "file_identity",
    "rollback",
    "translate",
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

CAMPAIGN_COLS = (
    "id, name, content, channels, segments, state, version, seq, archive_cause, "
    "state_changed_at, created_at"
)

GATE_COLS: Final = "id, state, channels, segments, version, archive_cause"


def _changed(cols: str) -> tuple[str, str]:
    # (all rows, rows changed after ?). A full load reads every row: scanning the table
    # beats walking the seq index and looking each row up (about 25% on a million); `+seq`
    # keeps the planner off the index. A delta is a few rows: the index finds them.
    return (
        f"SELECT {cols} FROM campaigns WHERE +seq > ?",
        f"SELECT {cols} FROM campaigns WHERE seq > ?",
    )


CHANGED_CAMPAIGNS: Final = _changed(CAMPAIGN_COLS)
CHANGED_GATE_ROWS: Final = _changed(GATE_COLS)


def translate(err: sqlite3.Error, path: str) -> StoreError:
    """Map a sqlite3 error to the typed `StoreError` a caller can act on."""
    name = getattr(err, "sqlite_errorname", "") or ""
    text = str(err)
    if isinstance(err, sqlite3.ProgrammingError) and "closed" in text:
        return StoreUnavailableError(f"{path}: this store was closed; open it again.")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return StoreBusyError(
            f"{path}: another writer held the database past the busy timeout; nothing was "
            "changed. Retry, or open the store with a longer busy_timeout."
        )
    if name == "SQLITE_FULL" or "disk is full" in text:
        return StoreFullError(
            f"{path}: the disk (or the process's file size limit) is full; nothing was "
            "changed. Free space and retry."
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return StoreReadOnlyError(
            f"{path}: the store is read-only (opened with mode=ro, or the file, its directory "
            "or the mount is not writable); open it writable to change campaigns."
        )
    if (
        name in ("SQLITE_CORRUPT", "SQLITE_NOTADB")
        or "not a database" in text
        or ("malformed" in text)
    ):
        return StoreCorruptError(
            f"{path}: the file is damaged or not a database ({text}); restore it from a backup."
        )
    if name in ("SQLITE_IOERR_WRITE", "SQLITE_IOERR_FSYNC", "SQLITE_IOERR_TRUNCATE"):
        # SQLite reports a write refused with EFBIG (file size limit) as IOERR_WRITE, and
        # only a short write as SQLITE_FULL: both mean the data could not be stored.
        return StoreFullError(
            f"{path}: the disk refused a write ({text}): it is probably full or over a file "
            "size limit; nothing was changed. Free space and retry."
        )
    if name.startswith("SQLITE_CANTOPEN"):
        return StoreUnavailableError(
            f"{path}: cannot open the database file ({text}); check the path and permissions."
        )
    return StoreError(f"{path}: {text} ({name or type(err).__name__}); nothing was changed.")


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


# Bulk writes above this size go as one JSON array parameter (one statement) instead of
# executemany (one statement per row).
BULK: Final = 32


UPDATE_ONE: Final = (
    "UPDATE campaigns SET name = ?, content = ?, channels = ?, segments = ?, state = ?, "
    "version = ?, seq = ?, archive_cause = ?, state_changed_at = ? WHERE id = ? AND version = ?"
)
MOVE_ONE: Final = (
    "UPDATE campaigns SET state = ?, archive_cause = ?, state_changed_at = ?, version = ?, "
    "seq = ? WHERE id = ? AND version = ?"
)
# One statement for a whole batch of transitions sharing state, cause and time; the JSON
# array carries [id, new version, seq]. The version test is the compare-and-set.
MOVE_MANY: Final = (
    "UPDATE campaigns SET state = ?, archive_cause = ?, state_changed_at = ?, "
    "version = j.value ->> 1, seq = j.value ->> 2 FROM json_each(?) AS j "
    "WHERE campaigns.id = j.value ->> 0 AND campaigns.version = (j.value ->> 1) - 1"
)
HISTORY_COLS: Final = "campaign_id, trigger, from_state, to_state, actor, cause, time, seq, version"
HISTORY_ONE: Final = f"INSERT INTO history ({HISTORY_COLS}) VALUES (?,?,?,?,?,?,?,?,?)"
# The JSON array carries [campaign id, from state, seq, version]; the rest is shared.
HISTORY_MANY: Final = (
    f"INSERT INTO history ({HISTORY_COLS}) SELECT j.value ->> 0, ?, j.value ->> 1, ?, ?, ?, ?, "
    "j.value ->> 2, j.value ->> 3 FROM json_each(?) AS j"
)


# Set-form moves (`SetWriteTx.move_campaigns`): ?ids is a JSON array of candidate ids,
# ?sources a JSON array of source states. History first, while the old states are there.
HISTORY_MOVE: Final = (
    f"INSERT INTO history ({HISTORY_COLS}) "
    "SELECT c.id, :trigger, c.state, :dest, :actor, :cause, :wall, :first + j.key, "
    "c.version + 1 FROM json_each(:ids) AS j JOIN campaigns AS c ON c.id = j.value "
    "WHERE c.state IN (SELECT value FROM json_each(:sources)) ORDER BY j.key"
)
ALREADY: Final = (
    "SELECT c.id, c.state_changed_at FROM json_each(:ids) AS j JOIN campaigns AS c "
    "ON c.id = j.value WHERE c.state = :dest AND c.archive_cause IS :archive_cause"
)
MOVE_SET: Final = (
    "UPDATE campaigns SET state = :dest, version = version + 1, seq = :first + j.key, "
    "archive_cause = :archive_cause, state_changed_at = :now FROM json_each(:ids) AS j "
    "WHERE campaigns.id = j.value AND campaigns.state IN (SELECT value FROM json_each(:sources)) "
    f"RETURNING {', '.join('campaigns.' + c.strip() for c in CAMPAIGN_COLS.split(','))}"
)


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


def rollback(conn: sqlite3.Connection) -> None:
    # SQLite may have rolled back already (disk full, I/O error); a failing ROLLBACK must
    # not hide the error that caused it.
    with contextlib.suppress(sqlite3.Error):  # a closed connection raises here too
        if conn.in_transaction:
            conn.execute("ROLLBACK")
