"""A gate's reader of an SQLite store: its own connection, ``PRAGMA data_version`` to
notice commits, then a delta read in one WAL snapshot."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import TypeVar

from campaign_states._records import Campaign, Segment
from campaign_states._rows import GateRow, campaign_from_row, segment_from_row
from campaign_states._store import ChangeBatch, GateRowBatch, LeaseSettings
from campaign_states.exceptions import ForeignStoreError, StoreNotFoundError, StoreReplacedError

from .errors import translate
from .schema import (
    APPLICATION_ID,
    CHANGED_CAMPAIGNS,
    CHANGED_GATE_ROWS,
    close_connection,
    connect,
    file_identity,
    read_lease,
)

__all__ = ["SQLiteReader"]

_T = TypeVar("_T")


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
                    lease = read_lease(c)
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
