r"""The PostgreSQL store's write transaction (`_Tx`) and the SQL it runs.

The SQL text of its moves and updates is in `statements`; psycopg errors become typed
`StoreError`\ s in `errors`.

Isolation: READ COMMITTED with explicit row locks, not SERIALIZABLE. Every write
transaction locks what it reads (campaigns ``FOR UPDATE``, segments ``FOR SHARE``), and
bumps one global counter row whose lock is held until commit, so commits happen in
sequence-number order and a gate that has read sequence ``n`` never later meets a commit
numbered ``n`` or below. How segment locks are ordered so that "a campaign targeting an
archived segment is never running" holds, without deadlocks, is written down at
`_Tx.segments`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import psycopg
from psycopg import errors as pg_errors

from campaign_states._lifecycle import State
from campaign_states._records import Campaign, HistoryEntry, Segment
from campaign_states._rows import (
    campaign_from_row,
    gate_row,
    join_ids,
    segment_from_row,
)
from campaign_states._store import LeaseSettings
from campaign_states.exceptions import (
    ConcurrentUpdateError,
    DuplicateIdError,
)

from .errors import translate
from .schema import CAMPAIGN_COLS, NOTIFY_CHANNEL, SEGMENT_COLS, read_lease
from .statements import (
    ALREADY,
    HISTORY_MOVE,
    MOVE_SET,
    SEGMENT_LOCK,
    STATE_TEXT,
    UPDATE_SET,
)

# From this many campaigns on, an update goes through COPY instead of array parameters.
_COPY_THRESHOLD: Final = 1000


def _by_seq(c: Campaign) -> int:
    return c.seq


class _Tx:
    """One write transaction on one pooled connection (READ COMMITTED, explicit locks)."""

    def __init__(self, conn: psycopg.Connection[Any], where: str) -> None:
        self._c = conn
        self._where = where
        self._seen: dict[str, Campaign] = {}
        self._campaigns_locked = False
        # Segments this transaction locked before any campaign (see `segments`).
        self._segment_first: set[str] = set()
        self._exclusive: set[str] = set()
        self._notified = False
        self._batch = 0

    @contextmanager
    def _guard(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            yield self._c
        except psycopg.Error as e:
            raise translate(e, self._where) from e

    def _remember(self, rows: Iterable[Sequence[Any]]) -> list[Campaign]:
        out = [campaign_from_row(r) for r in rows]
        self._seen.update((c.id, c) for c in out)
        return out

    def campaigns(self, ids: Collection[str]) -> dict[str, Campaign]:
        if not ids:
            return {}
        self._campaigns_locked = True
        with self._guard() as c:
            # ORDER BY id: rows are locked in the order they are returned, so two bulk calls
            # over overlapping ids lock in the same order and cannot deadlock.
            rows = c.execute(
                f"SELECT {CAMPAIGN_COLS} FROM cs_campaigns WHERE id = ANY(%s::text[]) "
                "ORDER BY id FOR UPDATE",
                (list(ids),),
            ).fetchall()
        return {x.id: x for x in self._remember(rows)}

    def campaigns_targeting(self, segment_id: str) -> list[Campaign]:
        rows = self._lock_targeting(segment_id, CAMPAIGN_COLS)
        # A campaign edited away from the segment while we waited for its lock comes back
        # in its new version: it no longer targets the segment.
        out = [x for x in self._remember(rows) if segment_id in x.segments]
        out.sort(key=lambda x: x.id)
        return out

    def _lock_targeting(self, segment_id: str, cols: str) -> list[tuple[Any, ...]]:
        """Lock the campaigns targeting a segment, then the segment itself; return their rows.

        Only segment writers call this, and they hold the segment's advisory lock (see
        `segments`), so no other segment writer interleaves.
        """
        self._campaigns_locked = True
        sql = (
            f"SELECT {cols} FROM cs_campaigns WHERE id IN "
            "(SELECT campaign_id FROM cs_campaign_segments WHERE segment_id = %s) "
        )
        with self._guard() as c:
            # 1. Lock every campaign that targets the segment, in id order.
            locked = c.execute(
                sql + "ORDER BY id FOR UPDATE OF cs_campaigns", (segment_id,)
            ).fetchall()
            # 2. Take the segment exclusively. This waits for every transaction that read
            #    it FOR SHARE (a resume, or an edit that adds this segment to a campaign) to
            #    commit, and makes later ones wait for us. Taking it only now, after step 1,
            #    is what keeps a resume (campaign lock, then segment) from deadlocking with
            #    us (segment lock, then campaigns).
            self._lock_exclusive([segment_id])
            # 3. A new statement, so a new READ COMMITTED snapshot: it sees campaigns that
            #    began targeting the segment while we waited in step 2. Lock them too, but
            #    without waiting: if one is locked by a writer that will next want our
            #    segment, waiting would deadlock, so start over instead.
            try:
                extra = c.execute(
                    sql + "AND NOT (id = ANY(%s::text[])) ORDER BY id "
                    "FOR UPDATE OF cs_campaigns NOWAIT",
                    (segment_id, [r[0] for r in locked]),
                ).fetchall()
            except pg_errors.LockNotAvailable as e:
                raise ConcurrentUpdateError(
                    f"Campaigns targeting segment {segment_id!r} changed during its archive."
                ) from e
        return locked + extra

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
        """Move many campaigns in set form (`campaign_states.SetWriteTx`): a few statements.

        The candidates are locked first, in id order (as `campaigns` and
        `campaigns_targeting` lock them); then the history, the update and the change feed
        are written server-side, so 100,000 campaigns never cross the wire but once.
        """
        if ids is None:
            assert segment is not None
            self._lock_targeting(segment, "id")
            with self._guard() as c:
                # Every campaign targeting the segment now is locked by us (no one can
                # start targeting it while we hold it exclusively); one edited away is not.
                ids = [
                    r[0]
                    for r in c.execute(
                        "SELECT campaign_id FROM cs_campaign_segments WHERE segment_id = %s "
                        "ORDER BY campaign_id",
                        (segment,),
                    )
                ]
        else:
            self._campaigns_locked = True
            with self._guard() as c:
                c.execute(
                    "SELECT 1 FROM cs_campaigns WHERE id = ANY(%s::text[]) ORDER BY id FOR UPDATE",
                    (list(ids),),
                )
        if not ids:
            return [], {}
        first = self.next_seq(len(ids))  # one per candidate: unmoved ids leave gaps
        args = {
            "ids": list(ids), "sources": [STATE_TEXT[x] for x in sources],
            "dest": STATE_TEXT[dest], "trigger": trigger, "actor": actor, "cause": cause,
            "wall": wall, "first": first, "archive_cause": archive_cause, "now": now,
        }  # fmt: skip
        with self._guard() as c:
            already = dict(c.execute(ALREADY, args).fetchall())
            c.execute(HISTORY_MOVE, args)
            moved = self._remember(c.execute(MOVE_SET, args).fetchall())
        moved.sort(key=_by_seq)
        return moved, already

    def segments(self, ids: Collection[str]) -> dict[str, Segment]:
        """Lock segments against concurrent change.

        Lock order, which makes "a campaign targeting an archived segment is never
        running" hold at READ COMMITTED:

        - Campaign-first transactions (resume, edit: campaigns already locked) take their
          segments FOR SHARE, and see the latest committed state of each. A segment
          archive holds the segment exclusively from before it reads its final set of
          targeting campaigns until it commits, so a resume either commits before that
          (and the archive then finds and archives its campaign) or waits and sees the
          segment archived (and refuses).
        - Segment-first transactions (segment archive and unarchive, create) first take a
          transaction-scoped advisory lock per segment, in key order: segment writers on one
          segment run one at a time, so two of them never both hold it FOR SHARE and then
          wait for each other to upgrade. Resumes and edits take no advisory lock, so the
          only waits between the two kinds are row-lock waits in the orders above.
        - Segment-first transactions upgrade to an exclusive lock before taking the global
          counter (`next_seq`): a resume holding a segment FOR SHARE needs the counter to
          finish, so upgrading after taking the counter would deadlock with it.
        """
        if not ids:
            return {}
        wanted = sorted(ids)
        with self._guard() as c:
            if not self._campaigns_locked:
                c.execute(
                    f"SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT {SEGMENT_LOCK} "
                    "AS k FROM unnest(%s::text[]) AS u(id)) AS keys ORDER BY k",
                    (wanted,),
                )
                self._segment_first.update(wanted)
            rows = c.execute(
                f"SELECT {SEGMENT_COLS} FROM cs_segments "
                "WHERE id = ANY(%s::text[]) ORDER BY id FOR SHARE",
                (wanted,),
            ).fetchall()
        return {s.id: s for s in map(segment_from_row, rows)}

    def _lock_exclusive(self, ids: Collection[str]) -> None:
        todo = sorted(set(ids) - self._exclusive)
        if todo:
            self._c.execute(
                "SELECT 1 FROM cs_segments WHERE id = ANY(%s::text[]) "
                "ORDER BY id FOR NO KEY UPDATE",
                (todo,),
            )
            self._exclusive.update(todo)

    def next_seq(self, count: int) -> int:
        with self._guard() as c:
            # Upgrade first: see `segments` for why this must precede the counter lock.
            self._lock_exclusive(self._segment_first)
            # The counter row stays locked until COMMIT: commits are serialized in sequence
            # order, so a reader that saw sequence n never meets a later commit <= n.
            row = c.execute(
                "UPDATE cs_counter SET seq = seq + %s RETURNING seq", (count,)
            ).fetchone()
            if not self._notified:
                # Delivered at commit, never on rollback; identical payloads in one
                # transaction fold into one. A hint only: readers poll the counter anyway.
                c.execute("SELECT pg_notify(%s, current_schema())", (NOTIFY_CHANNEL,))
                self._notified = True
        assert row is not None
        return int(row[0]) - count + 1

    def insert_campaign(self, campaign: Campaign, segments: Collection[str]) -> None:
        x = campaign
        with self._guard() as c:
            cur = c.execute(
                f"INSERT INTO cs_campaigns ({CAMPAIGN_COLS}) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO NOTHING",
                (
                    x.id, x.name, x.content, join_ids(ch.value for ch in x.channels),
                    join_ids(x.segments), x.state.value, x.version, x.seq, x.archive_cause,
                    x.state_changed_at, x.created_at,
                ),
            )  # fmt: skip
            if cur.rowcount != 1:
                raise DuplicateIdError(f"Campaign {x.id!r} already exists.")
            self._link([x.id] * len(segments), list(segments))
            c.execute("INSERT INTO cs_changes (seq, campaign_ids) VALUES (%s, %s)", (x.seq, [x.id]))
            self._seen[x.id] = x

    def _link(self, campaign_ids: list[str], segment_ids: list[str]) -> None:
        if campaign_ids:
            self._c.execute(
                "INSERT INTO cs_campaign_segments (segment_id, campaign_id) "
                "SELECT * FROM unnest(%s::text[], %s::text[])",
                (segment_ids, campaign_ids),
            )

    def insert_segment(self, segment: Segment) -> None:
        s = segment
        with self._guard() as c:
            cur = c.execute(
                f"INSERT INTO cs_segments ({SEGMENT_COLS}) VALUES (%s,%s,%s,%s,%s) "
                "ON CONFLICT (id) DO NOTHING",
                (s.id, s.name, s.state.value, s.version, s.seq),
            )
            if cur.rowcount != 1:
                raise DuplicateIdError(f"Segment {s.id!r} already exists.")

    def update_campaigns(self, campaigns: Sequence[Campaign]) -> None:
        if not campaigns:
            return
        # gate_row() holds the channel and segment texts the rows store (each distinct set
        # joined once: a 100,000-campaign update shares a few).
        rows = [
            (x.id, x.name, x.content, g[2], g[3], g[1], x.version, x.seq, x.archive_cause,
             x.state_changed_at)
            for x in campaigns
            for g in (gate_row(x),)
        ]  # fmt: skip
        with self._guard() as c:
            # Each row is a compare-and-set on version - 1, all in one UPDATE.
            if len(rows) < _COPY_THRESHOLD:
                cur = c.execute(
                    f"UPDATE cs_campaigns AS c SET {UPDATE_SET} FROM unnest(%s::text[], "
                    "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], "
                    "%s::bigint[], %s::text[], %s::float8[]) AS u(id, name, content, channels, "
                    "segments, state, version, seq, archive_cause, state_changed_at) "
                    "WHERE c.id = u.id AND c.version = u.version - 1",
                    [list(col) for col in zip(*rows, strict=True)],
                )
                c.execute(
                    "INSERT INTO cs_changes (seq, campaign_ids) VALUES (%s, %s::text[])",
                    (max(x.seq for x in campaigns), [x.id for x in campaigns]),
                )
            else:
                # Bulk: COPY into a session temp table, then one UPDATE joining it: about
                # twice as fast as ten 100,000-element array parameters. The batch number
                # keeps a second bulk update in this transaction apart from the first.
                self._batch += 1
                c.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS cs_campaign_updates (batch int, id text, "
                    "name text, content text, channels text, segments text, state text, "
                    "version bigint, seq bigint, archive_cause text, state_changed_at float8) "
                    "ON COMMIT DELETE ROWS"
                )
                with c.cursor().copy("COPY pg_temp.cs_campaign_updates FROM STDIN") as copy:
                    batch = (self._batch,)
                    for row in rows:
                        copy.write_row(batch + row)
                cur = c.execute(
                    f"UPDATE cs_campaigns AS c SET {UPDATE_SET} "
                    "FROM pg_temp.cs_campaign_updates AS u WHERE u.batch = %s "
                    "AND c.id = u.id AND c.version = u.version - 1",
                    (self._batch,),
                )
                c.execute(
                    "INSERT INTO cs_changes (seq, campaign_ids) SELECT max(seq), array_agg(id) "
                    "FROM pg_temp.cs_campaign_updates WHERE batch = %s",
                    (self._batch,),
                )
            if cur.rowcount != len(campaigns):
                raise ConcurrentUpdateError("A campaign changed under this write.")
            moved = [
                x
                for x in campaigns
                if (old := self._seen.get(x.id)) is None
                or (old.segments is not x.segments and old.segments != x.segments)
            ]
            if moved:
                c.execute(
                    "DELETE FROM cs_campaign_segments WHERE campaign_id = ANY(%s::text[])",
                    ([x.id for x in moved],),
                )
                pairs = [(sid, x.id) for x in moved for sid in sorted(x.segments)]
                self._link([p[1] for p in pairs], [p[0] for p in pairs])
        self._seen.update((x.id, x) for x in campaigns)

    def update_segment(self, segment: Segment) -> None:
        s = segment
        with self._guard() as c:
            cur = c.execute(
                "UPDATE cs_segments SET name = %s, state = %s, version = %s, seq = %s "
                "WHERE id = %s AND version = %s",
                (s.name, s.state.value, s.version, s.seq, s.id, s.version - 1),
            )
            if cur.rowcount != 1:
                raise ConcurrentUpdateError(f"Segment {s.id!r} changed under this write.")
            self._exclusive.add(s.id)

    def append_history(self, entries: Sequence[HistoryEntry]) -> None:
        if not entries:
            return
        with (
            self._guard() as c,
            c.cursor().copy(
                "COPY cs_history (campaign_id, trigger, from_state, to_state, actor, cause, "
                "time, seq, version) FROM STDIN"
            ) as copy,
        ):
            for e in entries:
                copy.write_row(
                    (e.campaign_id, e.trigger, e.from_state.value if e.from_state else None,
                     e.to_state.value, e.actor, e.cause, e.time, e.seq, e.version)
                )  # fmt: skip

    def lease_settings(self) -> LeaseSettings:
        with self._guard() as c:
            return read_lease(c)
