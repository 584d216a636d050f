"""sqlite3 errors, translated at the seam into the typed `StoreError` a caller can act on."""

from __future__ import annotations

import contextlib
import sqlite3

from campaign_states import exceptions as exc

__all__ = ["rollback", "translate"]


def translate(err: sqlite3.Error, path: str) -> exc.StoreError:
    """Map a sqlite3 error to the typed `StoreError` a caller can act on."""
    name = getattr(err, "sqlite_errorname", "") or ""
    text = str(err)
    if isinstance(err, sqlite3.ProgrammingError) and "closed" in text:
        return exc.StoreUnavailableError(f"{path}: this store was closed; open it again.")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return exc.StoreBusyError(
            f"{path}: another writer held the database past the busy timeout; nothing was "
            "changed. Retry, or open the store with a longer busy_timeout."
        )
    if name == "SQLITE_FULL" or "disk is full" in text:
        return exc.StoreFullError(
            f"{path}: the disk (or the process's file size limit) is full; nothing was "
            "changed. Free space and retry."
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return exc.StoreReadOnlyError(
            f"{path}: the store is read-only (opened with mode=ro, or the file, its directory "
            "or the mount is not writable); open it writable to change campaigns."
        )
    if (
        name in ("SQLITE_CORRUPT", "SQLITE_NOTADB")
        or "not a database" in text
        or ("malformed" in text)
    ):
        return exc.StoreCorruptError(
            f"{path}: the file is damaged or not a database ({text}); restore it from a backup."
        )
    if name in ("SQLITE_IOERR_WRITE", "SQLITE_IOERR_FSYNC", "SQLITE_IOERR_TRUNCATE"):
        # SQLite reports a write refused with EFBIG (file size limit) as IOERR_WRITE, and
        # only a short write as SQLITE_FULL: both mean the data could not be stored.
        return exc.StoreFullError(
            f"{path}: the disk refused a write ({text}): it is probably full or over a file "
            "size limit; nothing was changed. Free space and retry."
        )
    if name.startswith("SQLITE_CANTOPEN"):
        return exc.StoreUnavailableError(
            f"{path}: cannot open the database file ({text}); check the path and permissions."
        )
    return exc.StoreError(f"{path}: {text} ({name or type(err).__name__}); nothing was changed.")


def rollback(conn: sqlite3.Connection) -> None:
    # SQLite may have rolled back already (disk full, I/O error); a failing ROLLBACK must
    # not hide the error that caused it.
    with contextlib.suppress(sqlite3.Error):  # a closed connection raises here too
        if conn.in_transaction:
            conn.execute("ROLLBACK")
