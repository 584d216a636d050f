"""psycopg and pool errors, translated at the seam into the typed errors a caller can act on."""

from __future__ import annotations

from contextlib import suppress
from typing import Any, Final

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from campaign_states import exceptions as exc

__all__ = ["close_quietly", "rollback", "translate"]

# SQLSTATEs of a server that is going away or cannot be reached.
_UNAVAILABLE_STATES: Final = frozenset({"57P01", "57P02", "57P03", "53300"})


def translate(err: Exception, where: str) -> exc.CampaignStateError:
    """Map a psycopg (or pool) error to the typed error a caller can act on."""
    state = getattr(err, "sqlstate", None) or ""
    text = str(err).strip()
    if isinstance(err, pg_errors.DeadlockDetected):
        # The transaction was rolled back; the registry's compare-and-set loop retries.
        return exc.ConcurrentUpdateError(f"{where}: a concurrent writer deadlocked with this one.")
    if isinstance(
        err, pg_errors.SerializationFailure | pg_errors.LockNotAvailable | pg_errors.QueryCanceled
    ):
        return exc.StoreBusyError(
            f"{where}: another writer held the rows past the lock timeout ({text}); retry, "
            "or raise busy_timeout."
        )
    if isinstance(err, pg_errors.ReadOnlySqlTransaction):
        return exc.StoreReadOnlyError(
            f"{where}: the server or session is read-only (a standby, or "
            "default_transaction_read_only): connect to the primary to change campaigns."
        )
    if isinstance(err, pg_errors.InsufficientPrivilege):
        return exc.StoreReadOnlyError(
            f"{where}: permission denied ({text}); grant the role write "
            "access to the store's tables to change campaigns."
        )
    if isinstance(err, pg_errors.DiskFull | pg_errors.OutOfMemory):
        return exc.StoreFullError(
            f"{where}: the server is out of space ({text}); free space and retry."
        )
    if isinstance(err, pg_errors.DataCorrupted | pg_errors.IndexCorrupted):
        return exc.StoreCorruptError(f"{where}: the server reports corrupt data ({text}).")
    if isinstance(err, psycopg_pool.PoolClosed):
        return exc.StoreUnavailableError(f"{where}: this store is closed; open it again.")
    if isinstance(err, psycopg_pool.PoolTimeout):
        return exc.StoreUnavailableError(
            f"{where}: no database connection became available ({text}): the server is "
            "down or unreachable, or every pooled connection is busy (raise pool_size)."
        )
    if isinstance(err, psycopg.OperationalError | psycopg_pool.PoolClosed) and (
        not state or state.startswith("08") or state in _UNAVAILABLE_STATES
    ):
        return exc.StoreUnavailableError(f"{where}: the server cannot be reached ({text}).")
    return exc.StoreError(f"{where}: {text}")


def rollback(conn: psycopg.Connection[Any]) -> None:
    if conn.broken or conn.closed:
        return  # the server rolled back when the link dropped; the pool discards it
    try:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
    except psycopg.Error:
        pass  # the original error is the one worth raising


def close_quietly(conn: psycopg.Connection[Any] | None) -> None:
    if conn is not None:
        with suppress(psycopg.Error):
            conn.close()
