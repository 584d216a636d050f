"""The guarantee's one home: fence -> durable commit -> apply -> drain -> wait.

Every silencing call (archive, stop, their bulk forms, a segment archive) goes through
`silence`: the registry supplies only the body of its write transaction. Every write that
may lose a compare-and-set (those, an edit, a segment unarchive) retries through one
construct, `attempts` (``for attempt in attempts(...): with attempt as tx:``), which also
lifts a failed try's fences. The orderings, and why each is needed:

1. **Fence before the commit** (inside the write transaction, after the body decided):
   from then on this process's gates deny those campaigns, so no local admit slips in
   between the commit becoming visible and step 3.
2. **Durable commit** (the store's write; SQLite ``synchronous=FULL``, PostgreSQL's
   default synchronous commit). A failed write lifts the fence: nothing changed.
3. **Apply** the committed records to the local gates before anything else.
4. **Drain** local permits admitted before the fence (they are registered before they
   decide, so the drain sees every one that could have been admitted).
5. **Wait** for the other processes' gates: read the gate table in a new transaction,
   *after* the commit, then return once each live gate acknowledged the change or its
   lease is certainly over (`wait_for_gates`). A store without a gate table (or whose
   table cannot be read) waits out the whole lease from the commit, as before 2.1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TypeVar

import attrs

from ._gates import GateStore, WaitReport, wait_for_gates
from ._listeners import Listeners
from ._planning import gc_paused
from ._records import Campaign, Segment
from ._store import LeaseSettings, Store, WriteTx
from .exceptions import ConcurrentUpdateError, DrainTimeoutError, StoreError

__all__ = ["Attempt", "Silenced", "attempts", "silence"]

log = logging.getLogger("campaign_states")

_T = TypeVar("_T")
_ATTEMPTS = 5


@attrs.frozen(kw_only=True)
class Silenced:
    """What a silencing write body decided, for `silence` to make true.

    Attributes:
        written: Campaigns this call changed (fenced before the commit).
        segments: Segments it changed.
        already_silenced_at: Campaigns already silenced before this call (a retry), with
            when their state changed.
        lease: The store's lease settings, read in the transaction after the writes
            reserved their sequence numbers (a concurrent lease change is then ordered
            before this transaction, so the wait covers what any gate may hold).
        seq: The sequence gates must acknowledge: this call's last, or for a pure retry
            the store's current one (which includes the first call's).
    """

    written: Sequence[Campaign]
    segments: Sequence[Segment] = ()
    already_silenced_at: Mapping[str, float] = attrs.field(factory=dict)
    lease: LeaseSettings
    seq: int


class Attempt:
    """One try of a write transaction, from `attempts`: ``with attempt as tx:``.

    Entering opens ``store.write()`` (pausing the collector first for a bulk call, see
    `gc_paused`); leaving cleanly commits it. A lost compare-and-set
    (`ConcurrentUpdateError`, from the block or from the commit) is swallowed so that
    `attempts` tries again; any other error propagates. Either way a failed attempt lifts
    the fences it raised: nothing was written, so nothing may stay denied because of it.
    """

    __slots__ = ("_fenced", "_gc", "_listeners", "_pause_gc", "_store", "_write", "committed")

    def __init__(self, store: Store, listeners: Listeners, *, pause_gc: bool) -> None:
        self._store = store
        self._listeners = listeners
        self._pause_gc = pause_gc
        self._fenced: list[str] = []
        self._gc: AbstractContextManager[None] | None = None
        self._write: AbstractContextManager[WriteTx] | None = None
        self.committed = False

    def fence(self, campaign_ids: Iterable[str]) -> None:
        """Fence these campaigns now, before the commit (step 1); lifted if this try fails."""
        self._fenced = list(campaign_ids)
        if self._fenced:
            self._listeners.fence(self._fenced)

    def __enter__(self) -> WriteTx:
        # Two context managers entered by hand, not an ExitStack: a single trigger runs
        # this once per call, and the stack's bookkeeping showed in its cost.
        self._gc = gc_paused() if self._pause_gc else None
        if self._gc is not None:
            self._gc.__enter__()
        try:
            self._write = write = self._store.write()
            return write.__enter__()
        except BaseException:
            if self._gc is not None:
                self._gc.__exit__(None, None, None)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            # On a clean exit the store's write commits here (step 2), durably; on an
            # error it rolls back. The collector resumes after the commit, as it paused
            # before the transaction began.
            try:
                assert self._write is not None
                if self._write.__exit__(exc_type, exc, tb):
                    exc_type = None  # the store swallowed the error: treat it as written
            finally:
                if self._gc is not None:
                    self._gc.__exit__(None, None, None)
        except ConcurrentUpdateError:
            self._lift()
            return True  # the commit lost a compare-and-set: try again
        except BaseException:
            self._lift()
            raise
        if exc_type is None:
            self.committed = True
            return False
        self._lift()
        return issubclass(exc_type, ConcurrentUpdateError)  # lost: try again; else raise

    def _lift(self) -> None:
        if self._fenced:
            self._listeners.unfence(self._fenced)
            self._fenced = []


def attempts(
    store: Store, listeners: Listeners, *, conflict: str, pause_gc: bool = False
) -> Iterator[Attempt]:
    """Up to five tries of a write transaction, stamina-style.

    ``for attempt in attempts(...): with attempt as tx: ...``: the loop ends after the
    first try that committed; code after the loop runs only then. After the fifth lost
    compare-and-set it raises `ConcurrentUpdateError` (``conflict`` says which records
    kept changing).
    """
    for _ in range(_ATTEMPTS):
        attempt = Attempt(store, listeners, pause_gc=pause_gc)
        yield attempt
        if attempt.committed:
            return
    raise ConcurrentUpdateError(conflict)


def silence(
    store: Store,
    listeners: Listeners,
    body: Callable[[WriteTx], tuple[_T, Silenced | None]],
    *,
    drain_timeout: float,
    conflict: str,
    change: str,
    pause_gc: bool = False,
) -> tuple[_T, WaitReport | None]:
    """Run ``body`` in a write transaction, then make the guarantee true.

    ``body`` returns its result and, when it silenced or re-silenced campaigns, a
    `Silenced` (None: nothing to wait for; its writes are only applied to local gates).
    Retried on `ConcurrentUpdateError` (a compare-and-set lost: nothing was written).
    ``pause_gc`` pauses the cyclic collector for the write only (see `gc_paused`);
    ``change`` names the call for errors (``"archive"``, ``"segment archive"``...).

    Returns:
        The body's result and the wait's `WaitReport` (None when nothing was silenced).

    Raises:
        DrainTimeoutError: Committed, no gate admits, but local permits admitted before
            the change were still in flight after ``drain_timeout``.
        ConcurrentUpdateError: The compare-and-set kept losing (``conflict`` says which).
    """
    for attempt in attempts(store, listeners, conflict=conflict, pause_gc=pause_gc):
        with attempt as tx:
            result, quiet = body(tx)
            if quiet is not None and quiet.written:
                # (1) Before the commit: from here this process's gates deny them, so
                # no local admit slips in between the commit and the apply (3).
                attempt.fence([c.id for c in quiet.written])
    # (2) committed, durably (the loop ends only after a try that committed).
    if quiet is None:
        return result, None
    return result, settle(store, listeners, quiet, drain_timeout=drain_timeout, change=change)


def settle(
    store: Store, listeners: Listeners, quiet: Silenced, *, drain_timeout: float, change: str
) -> WaitReport:
    """Steps 3 to 5 after the commit: apply, drain, wait (see the module docstring)."""
    clock = store.clock
    # Read after the commit returned: no earlier than the change became visible.
    committed = clock.now()
    if quiet.written or quiet.segments:
        listeners.apply(quiet.written, quiet.segments)  # (3)
    silenced = [c.id for c in quiet.written]
    silenced.extend(quiet.already_silenced_at)
    stuck = listeners.drain(silenced, drain_timeout) if listeners and silenced else set()  # (4)
    report = _wait(store, quiet, committed, listeners.gate_ids())  # (5)
    if listeners:
        listeners.waited(silenced, report.outcome)  # metrics (campaign_states.otel)
    if stuck:
        raise DrainTimeoutError(stuck, drain_timeout, change)
    return report


def _wait(store: Store, quiet: Silenced, committed: float, local: set[str]) -> WaitReport:
    clock = store.clock
    if not store.needs_commit_wait:
        return WaitReport(outcome="local", seq=quiet.seq, seconds=0.0)
    wait = quiet.lease.commit_wait()
    reason: str | None
    if isinstance(store, GateStore):
        try:
            return wait_for_gates(
                store.gate_table(),
                clock,
                seq=quiet.seq,
                wait=wait,
                committed=committed,
                local=local,
                ceiling=getattr(store, "current_seq", None),
            )
        except StoreError as e:
            # Not knowing who holds a view, assume everyone does: the whole lease.
            log.warning("campaign_states: gate table unreadable (%s); waiting the lease", e)
            reason = f"gate table unreadable: {e}"
    else:
        reason = "this store has no gate table"
    left = committed + wait - clock.now()
    if left > 0:
        clock.sleep(left)
    return WaitReport(
        outcome="lease", seq=quiet.seq, seconds=max(0.0, clock.now() - committed), reason=reason
    )
