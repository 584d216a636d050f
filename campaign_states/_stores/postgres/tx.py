"""The PostgreSQL store: when pipelines span hosts.

The only module that imports psycopg and psycopg_pool (a ruff banned-api rule holds that
line), so it also owns the seam where every psycopg error becomes a typed `StoreError`;
that rule, not convenience, is why the store and its reader share one long module.

Isolation: READ COMMITTED with explicit row locks, not SERIALIZABLE. Every write
transaction locks what it reads (campaigns ``FOR UPDATE``, segments ``FOR SHARE``), and
bumps one global counter row whose lock is held until commit, so commits happen in
sequence-number order and a gate that has read sequence ``n`` never later meets a commit
numbered ``n`` or below. How segment locks are ordered so that "a campaign targeting an
archived segment is never running" holds, without deadlocks, is written down at
`_Tx.segments`.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, Final

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from ..._clock import Clock, SystemClock
from ..._fork import abandon, reopen_after_fork
from ..._gates import RegisteredGate
from ..._lifecycle import State
from ..._queries import CampaignQuery, HistoryQuery
from ..query_sql import campaign_where, history_page
from ..._records import Campaign, Channel, Delivery, HistoryEntry, Results, Segment
from ..._rows import (
    campaign_from_row,
    history_from_rows,
    join_ids,
    results_from_rows,
    segment_from_row,
)
from ..._secrets import mask_secrets
from ..._store import ChangeBatch, GateRowBatch, LeaseSettings
from ...exceptions import (
    CampaignStateError,
    CommitUnknownError,
    ConcurrentUpdateError,
    DuplicateIdError,
    ForeignStoreError,
    InvalidSettingsError,
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreReadOnlyError,
    StoreUnavailableError,
)

__all__ = ["PostgresReader", "PostgresStore"]

APPLICATION: Final = "campaign-states"
SCHEMA_VERSION: Final = 1
NOTIFY_CHANNEL: Final = "campaign_states"

#: Defaults for a network store: a database outage of up to about ``lease - refresh``
#: (14 s: a 10 s failover or restart) goes unnoticed by gates. Archives wait for the
#: gates' acknowledgements; only a gate that does not answer costs up to
#: ``(lease + grace) * 1.01`` (about 15.25 s). The grace allows 100 ms between
#: ``still_valid()`` and the bytes leaving.
DEFAULT_LEASE: Final = LeaseSettings(lease=15.0, grace=0.1, refresh=1.0)

_SCHEMA: Final = """
CREATE TABLE cs_schema (application text PRIMARY KEY, version integer NOT NULL);
CREATE TABLE cs_counter (
    one boolean PRIMARY KEY DEFAULT true CHECK (one), seq bigint NOT NULL);
CREATE TABLE cs_meta (key text PRIMARY KEY, value jsonb NOT NULL);
CREATE TABLE cs_segments (
    id text PRIMARY KEY, name text NOT NULL, state text NOT NULL,
    version bigint NOT NULL, seq bigint NOT NULL);
CREATE INDEX cs_segments_seq ON cs_segments (seq);
-- No index on seq or state: a bulk archive then updates rows in place (HOT) without
-- touching an index; gates find changed campaigns through cs_changes instead.
CREATE TABLE cs_campaigns (
    id text PRIMARY KEY, name text NOT NULL, content text NOT NULL,
    channels text NOT NULL, segments text NOT NULL, state text NOT NULL,
    version bigint NOT NULL, seq bigint NOT NULL, archive_cause text,
    state_changed_at float8 NOT NULL, created_at float8 NOT NULL) WITH (fillfactor = 85);
-- The cascade's index: which campaigns target a segment. cs_campaigns.segments holds the
-- same ids joined, so a gate loads a million campaigns without a join.
CREATE TABLE cs_campaign_segments (
    segment_id text NOT NULL, campaign_id text NOT NULL,
    PRIMARY KEY (segment_id, campaign_id));
CREATE INDEX cs_campaign_segments_campaign ON cs_campaign_segments (campaign_id);
-- The feed gates refresh from, appended by the store itself: one row per write, holding
-- the campaigns it changed and the highest sequence number among them. A transaction's
-- numbers commit together, so a reader's sequence is never inside one row's range.
CREATE TABLE cs_changes (seq bigint NOT NULL, campaign_ids text[] NOT NULL);
CREATE INDEX cs_changes_seq ON cs_changes (seq);
CREATE TABLE cs_history (
    campaign_id text NOT NULL, trigger text NOT NULL, from_state text, to_state text NOT NULL,
    actor text, cause text, time float8 NOT NULL, seq bigint NOT NULL, version bigint NOT NULL);
CREATE INDEX cs_history_campaign ON cs_history (campaign_id, seq);
-- The event log pages every campaign's history by seq.
CREATE INDEX cs_history_seq ON cs_history (seq);
CREATE FUNCTION cs_history_append_only() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'campaign-states history is append-only'; END $$;
CREATE TRIGGER cs_history_no_change BEFORE UPDATE OR DELETE ON cs_history
    FOR EACH ROW EXECUTE FUNCTION cs_history_append_only();
CREATE TRIGGER cs_history_no_truncate BEFORE TRUNCATE ON cs_history
    FOR EACH STATEMENT EXECUTE FUNCTION cs_history_append_only();
CREATE TABLE cs_results (
    campaign_id text NOT NULL, channel text NOT NULL, kind text NOT NULL,
    count bigint NOT NULL, PRIMARY KEY (campaign_id, channel, kind));
INSERT INTO cs_counter (seq) VALUES (0)
"""

_CAMPAIGN_COLS: Final = (
    "id, name, content, channels, segments, state, version, seq, archive_cause, "
    "state_changed_at, created_at"
)
_SEGMENT_COLS: Final = "id, name, state, version, seq"
_GATE_COLS: Final = "id, state, channels, segments, version, archive_cause"  # a `GateRow`
_UPDATE_SET: Final = (
    "name = u.name, content = u.content, channels = u.channels, segments = u.segments, "
    "state = u.state, version = u.version, seq = u.seq, archive_cause = u.archive_cause, "
    "state_changed_at = u.state_changed_at"
)
_STATE_TEXT: Final = {s: s.value for s in State}
_UPPER: Final = "'ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
_LOWER: Final = "'abcdefghijklmnopqrstuvwxyz'"
# Set-form moves (`_Tx.move_campaigns`): %(ids)s are the candidates, in order; each gets
# the sequence number first + its position, moved or not.
_CANDIDATES: Final = (
    "unnest(%(ids)s::text[]) WITH ORDINALITY AS j(id, k) JOIN cs_campaigns AS c ON c.id = j.id"
)
# `id = ANY(...)`, not a join with the unnest: the planner estimates the filtered side at
# one row and, joining, loops over every archived campaign per candidate (3.5 s for 1,000
# candidates among 100,000 campaigns); this one is a primary-key lookup per candidate.
_ALREADY: Final = (
    "SELECT c.id, c.state_changed_at FROM cs_campaigns AS c WHERE c.id = ANY(%(ids)s::text[]) "
    "AND c.state = %(dest)s AND c.archive_cause IS NOT DISTINCT FROM %(archive_cause)s"
)
_HISTORY_MOVE: Final = (
    "INSERT INTO cs_history (campaign_id, trigger, from_state, to_state, actor, cause, time, "
    "seq, version) SELECT c.id, %(trigger)s, c.state, %(dest)s, %(actor)s, %(cause)s, "
    f"%(wall)s, %(first)s + j.k - 1, c.version + 1 FROM {_CANDIDATES} "
    "WHERE c.state = ANY(%(sources)s::text[]) ORDER BY j.k"
)
_MOVE_SET: Final = (
    "WITH moved AS (UPDATE cs_campaigns AS c SET state = %(dest)s, version = c.version + 1, "
    "seq = %(first)s + j.k - 1, archive_cause = %(archive_cause)s, "
    "state_changed_at = %(now)s FROM unnest(%(ids)s::text[]) WITH ORDINALITY AS j(id, k) "
    "WHERE c.id = j.id AND c.state = ANY(%(sources)s::text[]) "
    f"RETURNING {', '.join('c.' + x for x in _CAMPAIGN_COLS.split(', '))}), "
    "feed AS (INSERT INTO cs_changes (seq, campaign_ids) "
    "SELECT max(seq), array_agg(id) FROM moved HAVING count(*) > 0) "
    "SELECT * FROM moved"
)
# From this many campaigns on, an update goes through COPY instead of array parameters.
_COPY_THRESHOLD: Final = 1000
# Advisory lock keys: one namespace per schema, so stores in other schemas never wait.
_SCHEMA_LOCK: Final = "hashtextextended('campaign-states:schema:' || current_schema(), 0)"
_SEGMENT_LOCK: Final = (
    "hashtextextended('campaign-states:segment:' || current_schema() || ':' || u.id, 0)"
)

# The registered gates (DESIGN 2.1). Created on open when absent (stores made before it).
# Heartbeats are the server's clock_timestamp(): every age is measured on that one clock.
_GATES_TABLE: Final = (
    "CREATE TABLE cs_gates (gate_id text PRIMARY KEY, host text NOT NULL, "
    "pid integer NOT NULL, started float8 NOT NULL, lease float8 NOT NULL, "
    "heartbeat_at timestamptz NOT NULL, acked_seq bigint NOT NULL DEFAULT 0, "
    "in_flight integer NOT NULL DEFAULT 0)"
)
# Seconds an unused pooled connection stays open (above min_size, which is 0).
_POOL_IDLE: Final = 10.0
# Rows silent for longer than this are deleted when a gate registers (see _sqlite_gates).
_PRUNE_AFTER: Final = 2 * LeaseSettings.MAX_LEASE

_LOCK_SCHEMA: Final = f"SELECT pg_advisory_lock({_SCHEMA_LOCK})"
_UNLOCK_SCHEMA: Final = f"SELECT pg_advisory_unlock({_SCHEMA_LOCK})"

# SQLSTATEs of a server that is going away or cannot be reached.
_UNAVAILABLE_STATES: Final = frozenset({"57P01", "57P02", "57P03", "53300"})


def translate(err: Exception, where: str) -> CampaignStateError:
    """Map a psycopg (or pool) error to the typed error a caller can act on."""
    state = getattr(err, "sqlstate", None) or ""
    text = str(err).strip()
    if isinstance(err, pg_errors.DeadlockDetected):
        # The transaction was rolled back; the registry's compare-and-set loop retries.
        return ConcurrentUpdateError(f"{where}: a concurrent writer deadlocked with this one.")
    if isinstance(
        err, pg_errors.SerializationFailure | pg_errors.LockNotAvailable | pg_errors.QueryCanceled
    ):
        return StoreBusyError(
            f"{where}: another writer held the rows past the lock timeout ({text}); retry, "
            "or raise busy_timeout."
        )
    if isinstance(err, pg_errors.ReadOnlySqlTransaction):
        return StoreReadOnlyError(
            f"{where}: the server or session is read-only (a standby, or "
            "default_transaction_read_only): connect to the primary to change campaigns."
        )
    if isinstance(err, pg_errors.InsufficientPrivilege):
        return StoreReadOnlyError(
            f"{where}: permission denied ({text}); grant the role write "
            "access to the store's tables to change campaigns."
        )
    if isinstance(err, pg_errors.DiskFull | pg_errors.OutOfMemory):
        return StoreFullError(
            f"{where}: the server is out of space ({text}); free space and retry."
        )
    if isinstance(err, pg_errors.DataCorrupted | pg_errors.IndexCorrupted):
        return StoreCorruptError(f"{where}: the server reports corrupt data ({text}).")
    if isinstance(err, psycopg_pool.PoolClosed):
        return StoreUnavailableError(f"{where}: this store is closed; open it again.")
    if isinstance(err, psycopg_pool.PoolTimeout):
        return StoreUnavailableError(
            f"{where}: no database connection became available ({text}): the server is "
            "down or unreachable, or every pooled connection is busy (raise pool_size)."
        )
    if isinstance(err, psycopg.OperationalError | psycopg_pool.PoolClosed) and (
        not state or state.startswith("08") or state in _UNAVAILABLE_STATES
    ):
        return StoreUnavailableError(f"{where}: the server cannot be reached ({text}).")
    return StoreError(f"{where}: {text}")


def _has_table(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def _lease_json(s: LeaseSettings) -> Jsonb:
    return Jsonb(
        {
            "lease": s.lease,
            "grace": s.grace,
            "refresh": s.refresh,
            "clock_margin": s.clock_margin,
            "previous_wait": s.previous_wait,
        }
    )


def _read_lease(conn: psycopg.Connection[Any]) -> LeaseSettings:
    row = conn.execute("SELECT value FROM cs_meta WHERE key = 'lease'").fetchone()
    return LeaseSettings.stored(**row[0]) if row else DEFAULT_LEASE


# libpq's connection keywords: the only words of a parse error shown as they are.
_KEYWORDS: Final = frozenset(o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults())


def _bad_url(url: str, err: psycopg.Error) -> InvalidSettingsError:
    """A libpq parse error, without echoing the password (libpq quotes the whole URL, or
    the word it stumbled on, which may be part of a password)."""

    def shown(m: re.Match[str]) -> str:
        word = m[1]
        if "://" in word or ("=" in word and len(word) > 1):
            return f'"{mask_secrets(word)}"'
        return f'"{word}"' if word in _KEYWORDS or word in ("=", "]") else '"***"'

    reason = re.sub(r'"([^"]*)"', shown, " ".join(str(err).split()))
    return InvalidSettingsError(
        f"Bad PostgreSQL URL {mask_secrets(url)!r}: {reason}. Use postgresql://user@host/db "
        "or a libpq key=value string (host=... dbname=...)."
    )


def _describe(url: str) -> str:
    """``postgresql://host:port/db`` without the password, for error messages."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    return f"postgresql://{host}:{port}/{parts.get('dbname') or ''}"


@functools.lru_cache(maxsize=4096)
def _joined_channels(channels: frozenset[Channel]) -> str:
    # Campaigns share a few distinct channel sets (rows build them through a cache too),
    # so a 100,000-campaign update joins each set once.
    return join_ids(ch.value for ch in channels)


@functools.lru_cache(maxsize=65536)
def _joined_ids(ids: frozenset[str]) -> str:
    return join_ids(ids)


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
                f"SELECT {_CAMPAIGN_COLS} FROM cs_campaigns WHERE id = ANY(%s::text[]) "
                "ORDER BY id FOR UPDATE",
                (list(ids),),
            ).fetchall()
        return {x.id: x for x in self._remember(rows)}

    def campaigns_targeting(self, segment_id: str) -> list[Campaign]:
        rows = self._lock_targeting(segment_id, _CAMPAIGN_COLS)
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
            "ids": list(ids),
            "sources": [_STATE_TEXT[x] for x in sources],
            "dest": _STATE_TEXT[dest],
            "trigger": trigger,
            "actor": actor,
            "cause": cause,
            "wall": wall,
            "first": first,
            "archive_cause": archive_cause,
            "now": now,
        }
        with self._guard() as c:
            already = dict(c.execute(_ALREADY, args).fetchall())
            c.execute(_HISTORY_MOVE, args)
            moved = self._remember(c.execute(_MOVE_SET, args).fetchall())
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
                    f"SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT {_SEGMENT_LOCK} "
                    "AS k FROM unnest(%s::text[]) AS u(id)) AS keys ORDER BY k",
                    (wanted,),
                )
                self._segment_first.update(wanted)
            rows = c.execute(
                f"SELECT {_SEGMENT_COLS} FROM cs_segments "
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
                f"INSERT INTO cs_campaigns ({_CAMPAIGN_COLS}) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO NOTHING",
                (
                    x.id,
                    x.name,
                    x.content,
                    join_ids(ch.value for ch in x.channels),
                    join_ids(x.segments),
                    x.state.value,
                    x.version,
                    x.seq,
                    x.archive_cause,
                    x.state_changed_at,
                    x.created_at,
                ),
            )
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
                f"INSERT INTO cs_segments ({_SEGMENT_COLS}) VALUES (%s,%s,%s,%s,%s) "
                "ON CONFLICT (id) DO NOTHING",
                (s.id, s.name, s.state.value, s.version, s.seq),
            )
            if cur.rowcount != 1:
                raise DuplicateIdError(f"Segment {s.id!r} already exists.")

    def update_campaigns(self, campaigns: Sequence[Campaign]) -> None:
        if not campaigns:
            return
        rows = [
            (
                x.id,
                x.name,
                x.content,
                _joined_channels(x.channels),
                _joined_ids(x.segments),
                _STATE_TEXT[x.state],
                x.version,
                x.seq,
                x.archive_cause,
                x.state_changed_at,
            )
            for x in campaigns
        ]
        with self._guard() as c:
            # Each row is a compare-and-set on version - 1, all in one UPDATE.
            if len(rows) < _COPY_THRESHOLD:
                cur = c.execute(
                    f"UPDATE cs_campaigns AS c SET {_UPDATE_SET} FROM unnest(%s::text[], "
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
                    f"UPDATE cs_campaigns AS c SET {_UPDATE_SET} "
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
                    (
                        e.campaign_id,
                        e.trigger,
                        e.from_state.value if e.from_state else None,
                        e.to_state.value,
                        e.actor,
                        e.cause,
                        e.time,
                        e.seq,
                        e.version,
                    )
                )

    def lease_settings(self) -> LeaseSettings:
        with self._guard() as c:
            return _read_lease(c)


def _list_filter(
    state: State | None, segment: str | None, after: str | None
) -> tuple[str, list[object]]:
    where: list[str] = ["true"]
    args: list[object] = []
    if state is not None:
        where.append("state = %s")
        args.append(state.value)
    if segment is not None:
        where.append("id IN (SELECT campaign_id FROM cs_campaign_segments WHERE segment_id = %s)")
        args.append(segment)
    if after is not None:
        where.append("id > %s")
        args.append(after)
    return " AND ".join(where), args


class PostgresStore:
    """A store in a PostgreSQL database (``postgresql://user@host:port/db``).

    The tables (prefixed ``cs_``) live in the first schema of the connection's
    ``search_path``; they are created on first use. Pass libpq options in the URL, e.g.
    ``?options=-csearch_path%3Dcampaigns`` for a schema of its own.

    Args:
        url: A libpq connection URL (or ``key=value`` string).
        clock: The clock commit times are measured on (default ``CLOCK_BOOTTIME``).
        lease: Lease settings written into a new store (an existing store keeps its own);
            default `DEFAULT_LEASE` (lease 5 s, refresh 1 s, grace 0.1 s).
        busy_timeout: Seconds a write waits for a row lock before `StoreBusyError`.
        connect_timeout: Seconds to wait for a connection before `StoreUnavailableError`.
        pool_size: Most connections this store's pool opens (one per concurrent writer).

    Attributes:
        clock: The clock commit times are measured on.
        needs_commit_wait: Always True: gates on other hosts read this store.
        url: The URL, password masked (``***``): safe to log, not to reconnect with.
    """

    needs_commit_wait = True
    # Writers on several hosts: their clocks are not comparable (see settle()).
    clock_is_shared = False

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        lease: LeaseSettings | None = None,
        busy_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        pool_size: int = 5,
    ) -> None:
        for name, value in (("busy_timeout", busy_timeout), ("connect_timeout", connect_timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidSettingsError(f"{name} must be a positive number, not {value!r}.")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise InvalidSettingsError(f"pool_size must be a positive int, not {pool_size!r}.")
        if not isinstance(url, str):
            raise InvalidSettingsError(f"A PostgreSQL URL is a str, not {type(url).__name__}.")
        # The real URL stays private: `url` (and so Registry.url and a gate's repr) masks
        # the password, as SQLAlchemy's URL does.
        self._url = url
        self.clock: Clock = clock or SystemClock()
        self.busy_timeout = float(busy_timeout)
        self.connect_timeout = float(connect_timeout)
        self._where = _describe(url)
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            # libpq rounds connect_timeout to whole seconds and treats 1 as 2.
            "connect_timeout": max(2, round(self.connect_timeout)),
        }
        try:
            app: object = conninfo_to_dict(url).get("application_name")
        except psycopg.Error as e:
            raise _bad_url(url, e) from e
        # Lets a DBA tell the sessions apart: "<name>" for the store's pool, "<name>
        # reader" and "<name> listener" for gates' (see PostgresReader).
        self._connect_kwargs["application_name"] = str(app or "campaign-states")
        self._create_schema(lease or DEFAULT_LEASE)
        self._pool_size = pool_size
        self._closed = False
        self._pool_lock = threading.Lock()
        # None in a forked child until its first use (see _after_fork_in_child).
        self._pool_or_none: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] | None = (
            self._new_pool()
        )
        reopen_after_fork(self)

    @property
    def _pool(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
        pool = self._pool_or_none
        if pool is None:
            with self._pool_lock:
                if self._pool_or_none is None:
                    self._pool_or_none = self._new_pool()
                pool = self._pool_or_none
        return pool

    def _new_pool(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
        return psycopg_pool.ConnectionPool(
            self._url,  # the real URL: `url` masks the password
            kwargs=self._connect_kwargs,
            # None at rest: a gate process's one connection is its reader's (archives and
            # result flushes open pooled ones on demand; idle ones close after max_idle).
            min_size=0,
            max_idle=_POOL_IDLE,
            max_size=self._pool_size,
            open=True,
            timeout=self.connect_timeout,
            configure=self._configure,
            # One empty round trip per checkout: a connection the server dropped (a
            # restart) is replaced instead of failing the caller's first call.
            check=psycopg_pool.ConnectionPool.check_connection,
            name=f"campaign-states {self._where}",
        )

    @property
    def url(self) -> str:
        """The store's URL with its password masked (``postgresql://app:***@db/app``)."""
        return mask_secrets(self._url)

    def _after_fork_in_child(self) -> None:
        # The inherited pool's sockets are the parent's sessions and its worker threads did
        # not survive the fork: a pool of the child's own. The old one is abandoned, never
        # closed (closing would end the parent's sessions; psycopg's finalizer already
        # skips connections made in another process).
        # A new pool is made at the child's first use, not here (no I/O in an at-fork hook).
        if self._closed:
            return
        abandon(self._pool_or_none)
        self._pool_or_none = None
        self._pool_lock = threading.Lock()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._url, **self._connect_kwargs)
        except psycopg.ProgrammingError as e:
            raise _bad_url(self._url, e) from e
        except psycopg.Error as e:
            raise translate(e, self._where) from e

    def _create_schema(self, lease: LeaseSettings) -> None:
        with self._connect() as conn:
            try:
                self._create_schema_on(conn, lease)
            except psycopg.Error as e:
                raise translate(e, self._where) from e

    def _create_schema_on(self, conn: psycopg.Connection[Any], lease: LeaseSettings) -> None:
        def exists(table: str) -> bool:
            return _has_table(conn, table)

        if not exists("cs_schema"):
            # Several processes may open a new store at once: CREATE TABLE IF NOT EXISTS
            # still races (a unique violation in pg_type), so creators queue on an advisory
            # lock and re-check under it. A session lock, taken before the transaction
            # begins: a transaction's start is where a backend drops catalog entries cached
            # before another creator committed (re-checking inside the transaction that
            # waited for the lock can still see "no cs_schema" from its cache).
            conn.execute(_LOCK_SCHEMA)
            try:
                with conn.transaction():
                    if not exists("cs_schema"):
                        if exists("cs_campaigns"):
                            raise ForeignStoreError(
                                f"{self._where}: tables named cs_campaigns exist without a "
                                "campaign-states schema version: use another schema "
                                "(options=-csearch_path%3D...)."
                            )
                        for stmt in _SCHEMA.split(";\n"):
                            conn.execute(stmt)
                        conn.execute(
                            "INSERT INTO cs_meta (key, value) VALUES ('lease', %s)",
                            (_lease_json(lease),),
                        )
                        conn.execute(
                            "INSERT INTO cs_schema (application, version) VALUES (%s, %s)",
                            (APPLICATION, SCHEMA_VERSION),
                        )
            finally:
                if not conn.broken:
                    conn.execute(_UNLOCK_SCHEMA)
        if not exists("cs_gates"):
            conn.execute(_LOCK_SCHEMA)
            try:
                with conn.transaction():
                    if not exists("cs_gates"):
                        conn.execute(_GATES_TABLE)
            finally:
                if not conn.broken:
                    conn.execute(_UNLOCK_SCHEMA)
        rows = conn.execute("SELECT application, version FROM cs_schema").fetchall()
        versions = dict(rows)
        if APPLICATION not in versions:
            raise ForeignStoreError(
                f"{self._where}: the cs_schema table belongs to {sorted(versions)!r}, not "
                "campaign-states: use another schema (options=-csearch_path%3D...)."
            )
        if versions[APPLICATION] > SCHEMA_VERSION:
            raise ForeignStoreError(
                f"{self._where} has schema version {versions[APPLICATION]}, newer than this "
                f"release's {SCHEMA_VERSION}: upgrade campaign-states."
            )

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        # lock_timeout bounds every row-lock wait (StoreBusyError past it). A lifecycle
        # change must be durable before archive() starts its commit wait, so a server
        # configured with synchronous_commit=off is overridden for our sessions.
        conn.execute(
            "SELECT set_config('lock_timeout', %s, false)",
            (f"{round(self.busy_timeout * 1000)}ms",),
        )
        conn.execute(
            "SELECT set_config('synchronous_commit', 'on', false) "
            "WHERE current_setting('synchronous_commit') = 'off'"
        )

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as e:
            raise translate(e, self._where) from e

    @contextmanager
    def write(self) -> Iterator[_Tx]:
        """A durable write transaction, committed when the block exits cleanly.

        Raises:
            CommitUnknownError: The connection was lost during COMMIT.
        """
        with self._conn() as conn:
            conn.execute("BEGIN")
            tx = _Tx(conn, self._where)
            try:
                yield tx
            except BaseException:
                _rollback(conn)
                raise
            self._commit(conn)

    def _commit(self, conn: psycopg.Connection[Any]) -> None:
        try:
            conn.execute("COMMIT")
        except psycopg.Error as e:
            if conn.broken or conn.closed:
                # The server may have made the commit durable before the link failed.
                raise CommitUnknownError(
                    f"{self._where}: the connection was lost during COMMIT ({e}); the change "
                    "may or may not be saved. Retrying the same call is safe: every trigger "
                    "is idempotent, and a retried archive waits as long as it must."
                ) from e
            _rollback(conn)
            raise translate(e, self._where) from e

    def get_campaign(self, campaign_id: str) -> Campaign | None:
        """One campaign, or None."""
        with self._conn() as c:
            row = c.execute(
                f"SELECT {_CAMPAIGN_COLS} FROM cs_campaigns WHERE id = %s", (campaign_id,)
            ).fetchone()
        return campaign_from_row(row) if row else None

    def get_segment(self, segment_id: str) -> Segment | None:
        """One segment, or None."""
        with self._conn() as c:
            row = c.execute(
                f"SELECT {_SEGMENT_COLS} FROM cs_segments WHERE id = %s", (segment_id,)
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
        """Campaigns, optionally filtered, ordered by id: at most ``limit``, ids > ``after``.

        The order is the database's collation of ``id`` (byte order under C or C.UTF-8).
        """
        where, args = _list_filter(state, segment, after)
        # The primary key's index gives id order and the start at `after` (keyset paging).
        sql = f"SELECT {_CAMPAIGN_COLS} FROM cs_campaigns WHERE {where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT %s"
            args.append(limit)
        with self._conn() as c:
            return [campaign_from_row(r) for r in c.execute(sql, args)]

    def count_campaigns(
        self, state: State | None, segment: str | None, *, after: str | None = None
    ) -> int:
        """How many campaigns `list_campaigns` would return with no limit."""
        where, args = _list_filter(state, segment, after)
        with self._conn() as c:
            row = c.execute(f"SELECT count(*) FROM cs_campaigns WHERE {where}", args).fetchone()
        return int(row[0]) if row else 0

    def list_segments(self) -> list[Segment]:
        """Every segment, ordered by id."""
        with self._conn() as c:
            rows = c.execute(f"SELECT {_SEGMENT_COLS} FROM cs_segments ORDER BY id").fetchall()
        return [segment_from_row(r) for r in rows]

    def history(self, campaign_id: str) -> list[HistoryEntry]:
        """A campaign's history, oldest first."""
        with self._conn() as c:
            rows = c.execute(
                "SELECT campaign_id, trigger, from_state, to_state, actor, cause, time, seq, "
                "version FROM cs_history WHERE campaign_id = %s ORDER BY seq",
                (campaign_id,),
            ).fetchall()
        return history_from_rows(rows)

    def results(self, campaign_id: str) -> Results:
        """A campaign's results."""
        with self._conn() as c:
            rows = c.execute(
                "SELECT channel, kind, count FROM cs_results WHERE campaign_id = %s", (campaign_id,)
            ).fetchall()
        return results_from_rows(campaign_id, rows)

    def add_results(self, deliveries: Iterable[Delivery]) -> None:
        """Add delivery counts in one transaction (counters: no synchronous commit needed)."""
        totals: dict[tuple[str, str, str], int] = {}
        for d in deliveries:
            key = (d.campaign_id, d.channel.value, d.kind.value)
            totals[key] = totals.get(key, 0) + d.count
        if not totals:
            return
        # Folded per key (ON CONFLICT cannot touch one row twice in a statement) and sorted,
        # so concurrent calls lock result rows in the same order.
        keys = sorted(totals)
        with self._conn() as c:
            c.execute("BEGIN")
            try:
                c.execute("SET LOCAL synchronous_commit = off")
                c.execute(
                    "INSERT INTO cs_results (campaign_id, channel, kind, count) "
                    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[]) "
                    "ON CONFLICT (campaign_id, channel, kind) "
                    "DO UPDATE SET count = cs_results.count + excluded.count",
                    (
                        [k[0] for k in keys],
                        [k[1] for k in keys],
                        [k[2] for k in keys],
                        [totals[k] for k in keys],
                    ),
                )
            except BaseException:
                _rollback(c)
                raise
            self._commit(c)

    def lease_settings(self) -> LeaseSettings:
        """The store's persisted lease settings."""
        with self._conn() as c:
            return _read_lease(c)

    def set_lease_settings(self, settings: LeaseSettings) -> None:
        """Persist new lease settings (bumps the change sequence, so gates re-read them)."""
        with self.write() as tx:
            tx.next_seq(1)
            with tx._guard() as c:
                c.execute(
                    "UPDATE cs_meta SET value = %s WHERE key = 'lease'", (_lease_json(settings),)
                )

    def gate_table(self) -> PostgresGateTable:
        """The registered gates (``cs_gates``), through this store's pool (archivers)."""
        return PostgresGateTable(self._conn, self._where)

    def open_reader(self) -> PostgresReader:
        """A dedicated reader with its own connections, for a gate's refresher."""
        return PostgresReader(self._url, self._connect_kwargs, self._where)

    # -- paged reads for operator screens (see `_queries`) -----------------------------

    def find_campaigns(self, query: CampaignQuery) -> list[Campaign]:
        """One page of the campaigns ``query`` selects, ordered by id (the primary key)."""
        # translate() lowers A-Z only, as `ascii_lower` does (lower() folds all of Unicode).
        where, args = campaign_where(
            query,
            "%s",
            lambda col: f"strpos(translate({col}, {_UPPER}, {_LOWER}), %s) > 0",
            "cs_campaign_segments",
        )
        sql = f"SELECT {_CAMPAIGN_COLS} FROM cs_campaigns WHERE {where} ORDER BY id LIMIT %s"
        with self._conn() as c:
            return [campaign_from_row(r) for r in c.execute(sql, [*args, query.limit])]

    def query_history(self, query: HistoryQuery) -> list[HistoryEntry]:
        """One page of history entries across campaigns, ordered by seq as asked."""
        sql, args = history_page(query, "cs_history", "%s")
        with self._conn() as c:
            rows = c.execute(sql, args).fetchall()
        return history_from_rows(rows)

    def results_many(self, campaign_ids: Collection[str]) -> dict[str, Results]:
        """Results of each of ``campaign_ids``, in one query."""
        ids = list(campaign_ids)
        rows: dict[str, list[Any]] = {cid: [] for cid in ids}
        with self._conn() as c:
            for cid, *rest in c.execute(
                "SELECT campaign_id, channel, kind, count FROM cs_results "
                "WHERE campaign_id = ANY(%s)",
                (ids,),
            ):
                rows[cid].append(tuple(rest))
        return {cid: results_from_rows(cid, r) for cid, r in rows.items()}

    def close(self) -> None:
        """Close the pool."""
        self._closed = True
        pool = self._pool_or_none
        if pool is not None:
            pool.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"


def _rollback(conn: psycopg.Connection[Any]) -> None:
    if conn.broken or conn.closed:
        return  # the server rolled back when the link dropped; the pool discards it
    try:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
    except psycopg.Error:
        pass  # the original error is the one worth raising


class PostgresReader:
    """A gate's reader: a read of one counter row to notice commits, then a delta read.

    It holds its own connection (never a pooled one, so a busy pool cannot starve a gate),
    reconnects by itself after the connection drops, and offers `wait`, which LISTENs on a
    second connection so a refresher wakes as soon as anything commits.
    """

    def __init__(self, url: str, connect_kwargs: dict[str, Any], where: str) -> None:
        self._url = url
        self._kwargs = connect_kwargs
        self._where = where
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._schema = ""
        # A connection made since the last wait: notifications before its LISTEN are lost.
        self._fresh = True

        self._closed = False
        self._connection()

    def _named(self, role: str) -> dict[str, Any]:
        name = self._kwargs.get("application_name", "campaign-states")
        return {**self._kwargs, "application_name": f"{name} {role}"}

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreUnavailableError(f"{self._where}: this reader is closed.")
        if self._conn is None or self._conn.closed or self._conn.broken:
            _close_quietly(self._conn)
            self._conn = None
            try:
                # One connection per gate for everything: its reads, its LISTEN, its
                # heartbeats and acks (a fleet of gate processes fits max_connections).
                conn = psycopg.connect(self._url, **self._named("gate"))
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                row = conn.execute("SELECT current_schema()").fetchone()
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                # Heartbeats must be durable (an archiver trusts their age); a server
                # default of synchronous_commit=off is overridden, as for the pool.
                conn.execute(
                    "SELECT set_config('synchronous_commit', 'on', false) "
                    "WHERE current_setting('synchronous_commit') = 'off'"
                )
            except psycopg.Error as e:
                raise translate(e, self._where) from e
            self._schema = str(row[0]) if row else ""
            self._fresh = True
            self._conn = conn
        return self._conn

    @contextmanager
    def _guard(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except psycopg.Error as e:
                if conn.broken or conn.closed:
                    self._conn = None  # reconnect on the next call
                raise translate(e, self._where) from e

    def gate_table(self) -> PostgresGateTable:
        """The registered gates, through this reader's connection (a gate's own)."""
        return PostgresGateTable(self._guard, self._where)

    def version_token(self) -> object:
        """The store's change sequence: one read of one row, changed by every commit."""
        with self._guard() as c:
            row = c.execute("SELECT seq FROM cs_counter").fetchone()
        assert row is not None
        return int(row[0])

    def changes_since(self, seq: int) -> ChangeBatch:
        """Everything changed after ``seq``, in one REPEATABLE READ READ ONLY snapshot."""
        now_seq, rows, segments, lease = self._read(seq, _CAMPAIGN_COLS)
        campaigns = [campaign_from_row(r) for r in rows]
        return ChangeBatch(seq=now_seq, campaigns=campaigns, segments=segments, lease=lease)

    def gate_rows_since(self, seq: int) -> GateRowBatch:
        """The same changes as plain `GateRow` tuples (`campaign_states.GateReader`): no records."""
        now_seq, rows, segments, lease = self._read(seq, _GATE_COLS)
        return GateRowBatch(seq=now_seq, rows=rows, segments=segments, lease=lease)

    def _read(self, seq: int, cols: str) -> tuple[int, list[Any], list[Segment], LeaseSettings]:
        # One snapshot: the sequence, the rows, the segments and the lease agree, so the
        # batch brings the reader exactly up to the sequence it reports.
        with self._guard() as c, c.transaction():
            row = c.execute("SELECT seq FROM cs_counter").fetchone()
            if seq <= 0:
                cur = c.execute(f"SELECT {cols} FROM cs_campaigns")
            else:
                # Changed campaigns, found through the change feed's seq index (campaigns
                # carry none, so bulk updates stay in place).
                cur = c.execute(
                    f"SELECT {cols} FROM cs_campaigns WHERE seq > %s AND id IN "
                    "(SELECT unnest(campaign_ids) FROM cs_changes WHERE seq > %s)",
                    (seq, seq),
                )
            rows = cur.fetchall()
            segments = [
                segment_from_row(r)
                for r in c.execute(
                    f"SELECT {_SEGMENT_COLS} FROM cs_segments WHERE seq > %s", (seq,)
                )
            ]
            lease = _read_lease(c)
        assert row is not None
        return int(row[0]), rows, segments, lease

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` s, returning early when something commits.

        A hint, never a promise: notifications are lost while the connection is being
        remade, so after a reconnect this returns at once and the caller polls. It never
        raises: when the server cannot be reached it just sleeps.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._closed:
            # Short slices, each under the lock, so a read or close() never waits long.
            with self._lock:
                try:
                    conn: psycopg.Connection[Any] | None = self._connection()
                except StoreError:
                    conn = None
                if conn is not None and self._fresh:
                    self._fresh = False
                    return  # anything sent before our LISTEN is lost: poll now
                if (left := deadline - time.monotonic()) <= 0:
                    return
                if conn is not None:
                    try:
                        for n in conn.notifies(timeout=min(left, 0.25), stop_after=1):
                            # Including those that arrived during a read or a heartbeat
                            # on this connection (psycopg keeps them for notifies()).
                            if n.payload == self._schema:
                                return
                    except psycopg.Error:
                        _close_quietly(conn)
                        self._conn = None  # reconnect on the next call
                        continue
            if conn is None:
                # Unreachable: sleep out the period; the caller's poll reports why.
                time.sleep(max(0.0, min(left, 0.25)))

    def close(self) -> None:
        """Close the connection."""
        self._closed = True
        with self._lock:
            _close_quietly(self._conn)
            self._conn = None


class PostgresGateTable:
    """Gate rows in ``cs_gates``; every heartbeat age is measured on the server's clock.

    Heartbeats commit durably (an archiver trusts their age: a heartbeat lost in a server
    crash could make a gate look older than the view it holds); acks commit with
    ``synchronous_commit = off`` (a lost ack only makes an archive wait longer). No
    NOTIFY is ever sent here: acks are polled by the archiver, never broadcast.

    Args:
        use: Gives a connection in autocommit mode for one call (a pool's, or a reader's).
        where: The store's description, for errors.
    """

    def __init__(
        self, use: Callable[[], AbstractContextManager[psycopg.Connection[Any]]], where: str
    ) -> None:
        self._use = use
        self._where = where

    def register(self, *, lease: float, in_flight: int = 0) -> str:
        """Prune long-silent rows, insert a new gate's row (heartbeat now); committed."""
        gate_id = uuid.uuid4().hex
        with self._use() as c:
            c.execute(
                "DELETE FROM cs_gates WHERE heartbeat_at < "
                "clock_timestamp() - make_interval(secs => %s)",
                (_PRUNE_AFTER,),
            )
            c.execute(
                "INSERT INTO cs_gates (gate_id, host, pid, started, lease, heartbeat_at, "
                "in_flight) VALUES (%s, %s, %s, %s, %s, clock_timestamp(), %s)",
                (gate_id, socket.gethostname(), os.getpid(), time.time(), lease, in_flight),
            )
        return gate_id

    def heartbeat(self, gate_id: str, *, lease: float, in_flight: int = 0) -> bool:
        """Commit a heartbeat (the server's now), durably; False if the row is gone."""
        with self._use() as c:
            cur = c.execute(
                "UPDATE cs_gates SET heartbeat_at = clock_timestamp(), lease = %s, "
                "in_flight = %s WHERE gate_id = %s",
                (lease, in_flight, gate_id),
            )
            return cur.rowcount == 1

    def ack(self, gate_id: str, seq: int) -> bool:
        """Commit ``acked_seq = greatest(acked_seq, seq)``, not durably; False if gone."""
        with self._use() as c:
            # Explicit, so the connection's read-only REPEATABLE READ default (a reader's)
            # does not apply, and SET LOCAL has a transaction to apply to.
            c.execute("BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE")
            try:
                c.execute("SET LOCAL synchronous_commit = off")
                cur = c.execute(
                    "UPDATE cs_gates SET acked_seq = greatest(acked_seq, %s) WHERE gate_id = %s",
                    (seq, gate_id),
                )
                c.execute("COMMIT")
            except BaseException:
                _rollback(c)
                raise
            return cur.rowcount == 1

    def deregister(self, gate_id: str) -> None:
        """Delete the gate's row."""
        with self._use() as c:
            c.execute("DELETE FROM cs_gates WHERE gate_id = %s", (gate_id,))

    def rows(self, gate_ids: Sequence[str] | None = None) -> list[RegisteredGate]:
        """The gate rows (or only ``gate_ids``), ages computed by the server, one statement."""
        sql = (
            "SELECT gate_id, host, pid, started, lease, "
            "greatest(0, extract(epoch FROM clock_timestamp() - heartbeat_at))::float8, "
            "acked_seq, in_flight FROM cs_gates"
        )
        args: tuple[object, ...] = ()
        if gate_ids is not None:
            sql += " WHERE gate_id = ANY(%s)"
            args = (list(gate_ids),)
        with self._use() as c:
            found = c.execute(sql + " ORDER BY started", args).fetchall()
        return [
            RegisteredGate(
                gate_id=gid, host=host, pid=pid, started=started, lease=lease,
                heartbeat_age=age, acked_seq=acked, in_flight=in_flight,
            )
            for gid, host, pid, started, lease, age, acked, in_flight in found
        ]  # fmt: skip


def _close_quietly(conn: psycopg.Connection[Any] | None) -> None:
    if conn is not None:
        with suppress(psycopg.Error):
            conn.close()
