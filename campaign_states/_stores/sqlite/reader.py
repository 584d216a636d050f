"""A gate's reader of an SQLite store: its own connection, ``PRAGMA data_version`` to
notice commits, then a delta read in one WAL snapshot."""

from __future__ import annotations

import sqlite3
import threading

from campaign_states._rows import GateRow, segment_from_row
from campaign_states._store import GateRowBatch
from campaign_states.exceptions import ForeignStoreError, StoreNotFoundError, StoreReplacedError

from .errors import translate
from .schema import (
    APPLICATION_ID,
    CHANGED_GATE_ROWS,
    close_connection,
    connect,
    file_identity,
    read_lease,
)

__all__ = ["SQLiteReader"]


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

    def gate_rows_since(self, seq: int) -> GateRowBatch:
        """Everything changed after ``seq`` as `GateRow` tuples, in one read transaction."""
        # One read transaction: the sequence, the rows, the segments and the lease all come
        # from one WAL snapshot, so the batch brings the reader exactly up to `now_seq`.
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN")
                try:
                    (now_seq,) = c.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
                    sql = CHANGED_GATE_ROWS[0] if seq <= 0 else CHANGED_GATE_ROWS[1]
                    # The rows as sqlite3 builds them, in C: exactly the `GateRow` columns
                    # and types.
                    rows: list[GateRow] = c.execute(sql, (seq,)).fetchall()
                    segments = [
                        segment_from_row(r)
                        for r in c.execute(
                            "SELECT id, name, state, version, seq FROM segments WHERE seq > ?",
                            (seq,),
                        )
                    ]
                    lease = read_lease(c)
                finally:
                    c.execute("COMMIT")
            except sqlite3.Error as e:
                raise translate(e, self.path) from e
        return GateRowBatch(seq=int(now_seq), rows=rows, segments=segments, lease=lease)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            close_connection(self._conn, self.path, self._identity)
