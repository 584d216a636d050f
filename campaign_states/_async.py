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
import contextvars
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from ._clock import Clock
from ._gates import WaitReport
from ._listeners import ChangeListener
from ._open import open_registry
from ._registry import Registry
from .exceptions import InvalidSettingsError, StoreError

__all__ = ["AsyncRegistry", "open_async_registry"]

T = TypeVar("T")

_P = ParamSpec("_P")
_R = TypeVar("_R")
_NO_GATE_ADMITS = "returns once no gate anywhere admits the campaign"


def _awaited(
    method: Callable[Concatenate[Registry, _P], _R], note: str = ""
) -> Callable[Concatenate[AsyncRegistry, _P], Coroutine[Any, Any, _R]]:
    """The `AsyncRegistry` method that awaits ``method`` (a `Registry` method) on a worker.

    It looks the method up on the wrapped registry at each call (``instrument_registry``
    replaces the registry's methods with traced ones), and carries ``method``'s signature,
    so ``inspect.signature`` and the docs show its parameters.
    """
    name = method.__name__

    async def call(self: AsyncRegistry, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        fn: Callable[_P, _R] = getattr(self.registry, name)
        return await self._run(fn, *args, **kwargs)

    call.__name__ = name
    call.__qualname__ = f"AsyncRegistry.{name}"
    call.__doc__ = f"As `Registry.{name}`{': ' + note if note else ''}."
    call.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    return call


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

    # -- every other call: the `Registry` method, on a worker thread ----------------------
    # Generated from the `Registry` methods (`_awaited`): the same parameters, each typed
    # for mypy and IDEs through ParamSpec, with nothing restated by hand.

    gate_table = _awaited(Registry.gate_table, "opening it may touch the store")
    gates = _awaited(Registry.gates)
    lease_settings = _awaited(Registry.lease_settings)
    set_lease_settings = _awaited(Registry.set_lease_settings, "its wait runs on the worker thread")

    create_segment = _awaited(Registry.create_segment)
    get_segment = _awaited(Registry.get_segment)
    segments = _awaited(Registry.segments)
    archive_segment = _awaited(Registry.archive_segment, "returns once no gate admits the cascade")
    unarchive_segment = _awaited(Registry.unarchive_segment)

    create_campaign = _awaited(Registry.create_campaign)
    get = _awaited(Registry.get)
    campaigns = _awaited(Registry.campaigns, "pages with ``limit`` and ``after``")
    count = _awaited(Registry.count)
    find_campaigns = _awaited(Registry.find_campaigns)
    event_log = _awaited(Registry.event_log)
    results_many = _awaited(Registry.results_many)
    edit = _awaited(Registry.edit)
    history = _awaited(Registry.history)
    results = _awaited(Registry.results)
    record_results = _awaited(Registry.record_results)

    resume = _awaited(Registry.resume)
    stop = _awaited(Registry.stop, _NO_GATE_ADMITS)
    archive = _awaited(Registry.archive, _NO_GATE_ADMITS)
    unarchive = _awaited(Registry.unarchive)
    resume_many = _awaited(Registry.resume_many)
    stop_many = _awaited(Registry.stop_many)
    archive_many = _awaited(Registry.archive_many)
    unarchive_many = _awaited(Registry.unarchive_many)

    list = campaigns  # the deprecated old name, as `Registry.list`


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
