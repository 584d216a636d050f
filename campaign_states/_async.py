"""`AsyncRegistry`: the registry's calls, awaited, for asyncio callers.

Every call runs the thread-safe `Registry` it wraps on a worker thread of the
`AsyncRegistry`'s own pool, so an archive's commit wait (and a SQL store's I/O) never
blocks the event loop. This holds for every store: memory and SQLite as designed, and
PostgreSQL too, where the call runs the synchronous psycopg store on the worker thread
rather than on psycopg's async pool (a native async PostgreSQL store is not written yet;
the guarantee and the errors are the same either way, since it is the same code).
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import functools
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

from ._clock import Clock
from ._gates import GateTable, RegisteredGate, WaitReport
from ._lifecycle import State
from ._listeners import ChangeListener
from ._open import open_registry
from ._outcomes import BulkResult, SegmentChange, TransitionResult
from ._records import Campaign, Channel, Delivery, HistoryEntry, Results, Segment
from ._registry import Registry
from ._store import LeaseSettings
from .exceptions import InvalidSettingsError, StoreError

__all__ = ["AsyncRegistry", "open_async_registry"]

T = TypeVar("T")


class AsyncRegistry:
    """A `Registry` for asyncio: the same methods, awaited; the same errors and guarantee.

    Open one with `open_async_registry`, or wrap a registry (``AsyncRegistry(registry)``)
    to share it with threaded code and gates. ``async with`` closes it (`aclose`).

    Cancelling an awaited call does not undo it: the call runs to its end on its worker
    thread (an archive still commits and waits; its guarantee holds once it returns).
    Build gates on it as on a `Registry` (``DeliveryGate(async_registry)``): an archive
    awaited here fences them before its commit.

    Args:
        registry: The registry whose calls run on the worker threads.
        max_workers: How many calls may run at once (each waiting archive holds one).

    Attributes:
        registry: The wrapped `Registry` (synchronous; for gates, threads, `instrument_registry`).
    """

    def __init__(self, registry: Registry, *, max_workers: int = 8) -> None:
        if not isinstance(registry, Registry):
            raise TypeError(f"AsyncRegistry wraps a Registry, not {type(registry).__name__}.")
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise InvalidSettingsError(f"max_workers must be a positive int, not {max_workers!r}.")
        self.registry = registry
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="campaign-states-async")
        self._closed = False
        self._close_lock = threading.Lock()

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise StoreError("This AsyncRegistry is closed.")
        loop = asyncio.get_running_loop()
        # The caller's context (an OpenTelemetry span, say) goes with the call.
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(
            self._pool, functools.partial(ctx.run, fn, *args, **kwargs)
        )

    # -- plumbing (no I/O: plain attributes and calls) -----------------------------------

    @property
    def clock(self) -> Clock:
        """The clock commit waits are measured on (the store's)."""
        return self.registry.clock

    @property
    def url(self) -> str:
        """The URL that reopens this registry's store."""
        return self.registry.url

    def subscribe(self, listener: ChangeListener) -> None:
        """As `Registry.subscribe`."""
        self.registry.subscribe(listener)

    def unsubscribe(self, listener: ChangeListener) -> None:
        """As `Registry.unsubscribe`."""
        self.registry.unsubscribe(listener)

    @property
    def last_wait(self) -> WaitReport | None:
        """As `Registry.last_wait`."""
        return self.registry.last_wait

    async def gate_table(self) -> GateTable | None:
        """As `Registry.gate_table` (opening it may touch the store)."""
        return await self._run(self.registry.gate_table)

    async def gates(self) -> builtins.list[RegisteredGate]:
        """As `Registry.gates`."""
        return await self._run(self.registry.gates)

    async def lease_settings(self) -> LeaseSettings:
        """As `Registry.lease_settings`."""
        return await self._run(self.registry.lease_settings)

    async def set_lease_settings(
        self, *, lease: float, grace: float, refresh: float, clock_margin: float = 0.01
    ) -> LeaseSettings:
        """As `Registry.set_lease_settings` (its wait runs on the worker thread)."""
        return await self._run(
            self.registry.set_lease_settings,
            lease=lease,
            grace=grace,
            refresh=refresh,
            clock_margin=clock_margin,
        )

    async def aclose(self) -> None:
        """Wait for calls in progress, then close the store. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        # Both wait (for running calls, for the store's connections): off the loop.
        await asyncio.to_thread(self._pool.shutdown, True)
        await asyncio.to_thread(self.registry.close)

    async def __aenter__(self) -> AsyncRegistry:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncRegistry {self.registry.url}>"

    # -- segments --------------------------------------------------------------------------

    async def create_segment(self, segment_id: str, *, name: str | None = None) -> Segment:
        """As `Registry.create_segment`."""
        return await self._run(self.registry.create_segment, segment_id, name=name)

    async def get_segment(self, segment_id: str) -> Segment:
        """As `Registry.get_segment`."""
        return await self._run(self.registry.get_segment, segment_id)

    async def segments(self) -> builtins.list[Segment]:
        """As `Registry.segments`."""
        return await self._run(self.registry.segments)

    async def archive_segment(
        self, segment_id: str, *, actor: str | None = None, dry_run: bool = False
    ) -> SegmentChange:
        """As `Registry.archive_segment`: returns once no gate admits the cascade."""
        return await self._run(
            self.registry.archive_segment, segment_id, actor=actor, dry_run=dry_run
        )

    async def unarchive_segment(
        self, segment_id: str, *, actor: str | None = None, restore_campaigns: bool = False
    ) -> SegmentChange:
        """As `Registry.unarchive_segment`."""
        return await self._run(
            self.registry.unarchive_segment,
            segment_id,
            actor=actor,
            restore_campaigns=restore_campaigns,
        )

    # -- campaigns ---------------------------------------------------------------------------

    async def create_campaign(
        self,
        *,
        name: str,
        channels: Iterable[Channel | str],
        segments: Iterable[str] = (),
        content: str = "",
        campaign_id: str | None = None,
        actor: str | None = None,
    ) -> Campaign:
        """As `Registry.create_campaign`."""
        return await self._run(
            self.registry.create_campaign,
            name=name,
            channels=channels,
            segments=segments,
            content=content,
            campaign_id=campaign_id,
            actor=actor,
        )

    async def get(self, campaign_id: str) -> Campaign:
        """As `Registry.get`."""
        return await self._run(self.registry.get, campaign_id)

    async def list(
        self,
        *,
        state: State | str | None = None,
        segment: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> builtins.list[Campaign]:
        """As `Registry.list` (pages with ``limit`` and ``after``)."""
        return await self._run(
            self.registry.list, state=state, segment=segment, limit=limit, after=after
        )

    async def count(
        self,
        *,
        state: State | str | None = None,
        segment: str | None = None,
        after: str | None = None,
    ) -> int:
        """As `Registry.count`."""
        return await self._run(self.registry.count, state=state, segment=segment, after=after)

    async def find_campaigns(
        self,
        *,
        states: Iterable[State | str] | None = None,
        segment: str | None = None,
        text: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> builtins.list[Campaign]:
        """As `Registry.find_campaigns`."""
        return await self._run(
            self.registry.find_campaigns,
            states=states,
            segment=segment,
            text=text,
            after=after,
            limit=limit,
        )

    async def event_log(
        self,
        *,
        actor: str | None = None,
        trigger: str | None = None,
        campaign: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> builtins.list[HistoryEntry]:
        """As `Registry.event_log`."""
        return await self._run(
            self.registry.event_log,
            actor=actor,
            trigger=trigger,
            campaign=campaign,
            since=since,
            until=until,
            after=after,
            limit=limit,
            newest_first=newest_first,
        )

    async def results_many(self, campaign_ids: Iterable[str]) -> dict[str, Results]:
        """As `Registry.results_many`."""
        return await self._run(self.registry.results_many, campaign_ids)

    async def edit(
        self,
        campaign_id: str,
        *,
        name: str | None = None,
        content: str | None = None,
        channels: Iterable[Channel | str] | None = None,
        segments: Iterable[str] | None = None,
        actor: str | None = None,
    ) -> Campaign:
        """As `Registry.edit`."""
        return await self._run(
            self.registry.edit,
            campaign_id,
            name=name,
            content=content,
            channels=channels,
            segments=segments,
            actor=actor,
        )

    async def history(self, campaign_id: str) -> builtins.list[HistoryEntry]:
        """As `Registry.history`."""
        return await self._run(self.registry.history, campaign_id)

    async def results(self, campaign_id: str) -> Results:
        """As `Registry.results`."""
        return await self._run(self.registry.results, campaign_id)

    async def record_results(self, deliveries: Iterable[Delivery]) -> None:
        """As `Registry.record_results`."""
        await self._run(self.registry.record_results, deliveries)

    async def resume(self, campaign_id: str, *, actor: str | None = None) -> TransitionResult:
        """As `Registry.resume`."""
        return await self._run(self.registry.resume, campaign_id, actor=actor)

    async def stop(self, campaign_id: str, *, actor: str | None = None) -> TransitionResult:
        """As `Registry.stop`: returns once no gate anywhere admits the campaign."""
        return await self._run(self.registry.stop, campaign_id, actor=actor)

    async def archive(self, campaign_id: str, *, actor: str | None = None) -> TransitionResult:
        """As `Registry.archive`: returns once no gate anywhere admits the campaign."""
        return await self._run(self.registry.archive, campaign_id, actor=actor)

    async def unarchive(self, campaign_id: str, *, actor: str | None = None) -> TransitionResult:
        """As `Registry.unarchive`."""
        return await self._run(self.registry.unarchive, campaign_id, actor=actor)

    async def resume_many(
        self, campaign_ids: Iterable[str], *, actor: str | None = None
    ) -> BulkResult:
        """As `Registry.resume_many`."""
        return await self._run(self.registry.resume_many, campaign_ids, actor=actor)

    async def stop_many(
        self, campaign_ids: Iterable[str], *, actor: str | None = None
    ) -> BulkResult:
        """As `Registry.stop_many`."""
        return await self._run(self.registry.stop_many, campaign_ids, actor=actor)

    async def archive_many(
        self, campaign_ids: Iterable[str], *, actor: str | None = None
    ) -> BulkResult:
        """As `Registry.archive_many`."""
        return await self._run(self.registry.archive_many, campaign_ids, actor=actor)

    async def unarchive_many(
        self, campaign_ids: Iterable[str], *, actor: str | None = None
    ) -> BulkResult:
        """As `Registry.unarchive_many`."""
        return await self._run(self.registry.unarchive_many, campaign_ids, actor=actor)


def open_async_registry(
    url: str = "memory://",
    *,
    bulk_limit: int = 100_000,
    drain_timeout: float = 30.0,
    max_workers: int = 8,
    **options: Any,
) -> AsyncRegistry:
    """Open an `AsyncRegistry` on the store a URL names (see `open_store`).

    Opening connects to the store (SQLite: opens the file; PostgreSQL: connects): do it at
    start-up, or ``await asyncio.to_thread(open_async_registry, url)`` from a running loop.

    Raises:
        InvalidSettingsError: The URL or an option is not valid (nothing is opened).
    """
    reg = open_registry(url, bulk_limit=bulk_limit, drain_timeout=drain_timeout, **options)
    try:
        return AsyncRegistry(reg, max_workers=max_workers)
    except BaseException:
        reg.close()
        raise
