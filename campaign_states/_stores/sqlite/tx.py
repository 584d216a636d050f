"""The SQLite store's write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT`` (`Write`), and
what a transaction reads and writes (`_Tx`), with the SQL it runs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from campaign_states._lifecycle import State
from campaign_states._records import Campaign, HistoryEntry, Segment
from campaign_states._rows import campaign_from_row, join_ids, segment_from_row
from campaign_states._store import LeaseSettings
from campaign_states._stores.query_sql import CAMPAIGN_COLS, HISTORY_COLS
from campaign_states.exceptions import ConcurrentUpdateError, DuplicateIdError

from .errors import rollback, translate
from .schema import read_lease

if TYPE_CHECKING:
    from .store import SQLiteStore

__all__ = ["Write"]


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
        return read_lease(self._c)

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


class Write(AbstractContextManager[_Tx]):
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
