"""The PostgreSQL store's tables: the DDL, creating or checking them on open (advisory lock,
version check), the lease settings they hold, and the URL helpers for messages."""

from __future__ import annotations

import re
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from campaign_states._secrets import mask_secrets
from campaign_states._store import LeaseSettings
from campaign_states._stores.query_sql import CAMPAIGN_COLS, SEGMENT_COLS
from campaign_states.exceptions import (
    ForeignStoreError,
    InvalidSettingsError,
)

__all__ = [
    "APPLICATION",
    "CAMPAIGN_COLS",
    "DEFAULT_LEASE",
    "GATE_COLS",
    "NOTIFY_CHANNEL",
    "SCHEMA_VERSION",
    "SEGMENT_COLS",
    "bad_url",
    "create_schema_on",
    "describe",
    "lease_json",
    "read_lease",
]

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

GATE_COLS: Final = "id, state, channels, segments, version, archive_cause"  # a `GateRow`
# Advisory lock keys: one namespace per schema, so stores in other schemas never wait.
_SCHEMA_LOCK: Final = "hashtextextended('campaign-states:schema:' || current_schema(), 0)"

# The registered gates (DESIGN 2.1). Created on open when absent (stores made before it).
# Heartbeats are the server's clock_timestamp(): every age is measured on that one clock.
_GATES_TABLE: Final = (
    "CREATE TABLE cs_gates (gate_id text PRIMARY KEY, host text NOT NULL, "
    "pid integer NOT NULL, started float8 NOT NULL, lease float8 NOT NULL, "
    "heartbeat_at timestamptz NOT NULL, acked_seq bigint NOT NULL DEFAULT 0, "
    "in_flight integer NOT NULL DEFAULT 0)"
)

_LOCK_SCHEMA: Final = f"SELECT pg_advisory_lock({_SCHEMA_LOCK})"
_UNLOCK_SCHEMA: Final = f"SELECT pg_advisory_unlock({_SCHEMA_LOCK})"


def _has_table(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def lease_json(s: LeaseSettings) -> Jsonb:
    return Jsonb(
        {
            "lease": s.lease,
            "grace": s.grace,
            "refresh": s.refresh,
            "clock_margin": s.clock_margin,
            "previous_wait": s.previous_wait,
        }
    )


def read_lease(conn: psycopg.Connection[Any]) -> LeaseSettings:
    row = conn.execute("SELECT value FROM cs_meta WHERE key = 'lease'").fetchone()
    return LeaseSettings.stored(**row[0]) if row else DEFAULT_LEASE


# libpq's connection keywords: the only words of a parse error shown as they are.
_KEYWORDS: Final = frozenset(o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults())


def bad_url(url: str, err: psycopg.Error) -> InvalidSettingsError:
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


def describe(url: str) -> str:
    """``postgresql://host:port/db`` without the password, for error messages."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    return f"postgresql://{host}:{port}/{parts.get('dbname') or ''}"


def create_schema_on(conn: psycopg.Connection[Any], where: str, lease: LeaseSettings) -> None:
    """Create the tables in a schema that has none (the gates table in one made before it),
    else check they are campaign-states' and of a version this release reads."""

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
                            f"{where}: tables named cs_campaigns exist without a "
                            "campaign-states schema version: use another schema "
                            "(options=-csearch_path%3D...)."
                        )
                    for stmt in _SCHEMA.split(";\n"):
                        conn.execute(stmt)
                    conn.execute(
                        "INSERT INTO cs_meta (key, value) VALUES ('lease', %s)",
                        (lease_json(lease),),
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
            f"{where}: the cs_schema table belongs to {sorted(versions)!r}, not "
            "campaign-states: use another schema (options=-csearch_path%3D...)."
        )
    if versions[APPLICATION] > SCHEMA_VERSION:
        raise ForeignStoreError(
            f"{where} has schema version {versions[APPLICATION]}, newer than this "
            f"release's {SCHEMA_VERSION}: upgrade campaign-states."
        )
