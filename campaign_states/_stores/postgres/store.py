"""The PostgreSQL store: when pipelines span hosts (the connection pool, reads, results)."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from campaign_states._clock import Clock, SystemClock
from campaign_states._fork import abandon, reopen_after_fork
from campaign_states._records import Delivery, Results
from campaign_states._rows import (
    results_from_rows,
)
from campaign_states._secrets import mask_secrets
from campaign_states._store import LeaseSettings
from campaign_states._stores.query_sql import Dialect, SQLReads
from campaign_states.exceptions import (
    CommitUnknownError,
    InvalidSettingsError,
)

from .errors import rollback, translate
from .gates import PostgresGateTable
from .reader import PostgresReader
from .schema import (
    DEFAULT_LEASE,
    bad_url,
    create_schema_on,
    describe,
    lease_json,
    read_lease,
)
from .tx import _Tx

__all__ = ["PostgresStore"]

_POOL_IDLE: Final = 10.0
# Rows silent for longer than this are deleted when a gate registers (see _sqlite_gates).
_UPPER: Final = "'ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
_LOWER: Final = "'abcdefghijklmnopqrstuvwxyz'"


class PostgresStore(SQLReads):
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

    # translate() lowers A-Z only, as `ascii_lower` does (lower() folds all of Unicode).
    _dialect = Dialect(
        ph="%s", prefix="cs_", history_order="seq",
        contains=lambda col: f"strpos(translate({col}, {_UPPER}, {_LOWER}), %s) > 0",
    )  # fmt: skip
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
        self._where = describe(url)
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            # libpq rounds connect_timeout to whole seconds and treats 1 as 2.
            "connect_timeout": max(2, round(self.connect_timeout)),
        }
        try:
            app: object = conninfo_to_dict(url).get("application_name")
        except psycopg.Error as e:
            raise bad_url(url, e) from e
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
            raise bad_url(self._url, e) from e
        except psycopg.Error as e:
            raise translate(e, self._where) from e

    def _create_schema(self, lease: LeaseSettings) -> None:
        with self._connect() as conn:
            try:
                create_schema_on(conn, self._where, lease)
            except psycopg.Error as e:
                raise translate(e, self._where) from e

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
                rollback(conn)
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
            rollback(conn)
            raise translate(e, self._where) from e

    def _fetch(self, sql: str, args: Sequence[object]) -> list[Any]:
        with self._conn() as c:
            return c.execute(sql, args).fetchall()

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
                rollback(c)
                raise
            self._commit(c)

    def lease_settings(self) -> LeaseSettings:
        """The store's persisted lease settings."""
        with self._conn() as c:
            return read_lease(c)

    def set_lease_settings(self, settings: LeaseSettings) -> None:
        """Persist new lease settings (bumps the change sequence, so gates re-read them)."""
        with self.write() as tx:
            tx.next_seq(1)
            with tx._guard() as c:
                c.execute(
                    "UPDATE cs_meta SET value = %s WHERE key = 'lease'", (lease_json(settings),)
                )

    def gate_table(self) -> PostgresGateTable:
        """The registered gates (``cs_gates``), through this store's pool (archivers)."""
        # Ages on the server's clock are comparable with this store's clock only if it
        # runs in real time (see PostgresGateTable).
        return PostgresGateTable(
            self._conn, self._where, server_ages=isinstance(self.clock, SystemClock)
        )

    def open_reader(self) -> PostgresReader:
        """A dedicated reader with its own connections, for a gate's refresher."""
        return PostgresReader(self._url, self._connect_kwargs, self._where)

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
