"""The guarantee's one home: fence -> durable commit -> apply -> drain -> wait.

Every silencing call (archive, stop, their bulk forms, a segment archive) goes through
`silence`: the registry supplies only the body of its write transaction. The orderings,
and why each is needed:

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

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import attrs

from ._gates import GateStore, WaitReport, wait_for_gates
from ._listeners import Listeners
from ._planning import gc_paused
from ._records import Campaign, Segment
from ._store import LeaseSettings, Store, WriteTx
from .exceptions import ConcurrentUpdateError, DrainTimeoutError, StoreError

__all__ = ["Silenced", "silence"]

log = logging.getLogger("campaign_states")

_T = TypeVar("_T")
_ATTEMPTS = 5


@attrs.frozen(kw_only=True)
class Silenced:
    """What a silencing write body decided, for `silence` to make true.

    Attributes:
        written: Campaigns this call changed (fenced before the commit).
        segments: Segments it changed.
        held_since: Campaigns already silenced before this call (a retry).
        lease: The store's lease settings, read in the transaction after the writes
            reserved their sequence numbers (a concurrent lease change is then ordered
            before this transaction, so the wait covers what any gate may hold).
        seq: The sequence gates must acknowledge: this call's last, or for a pure retry
            the store's current one (which includes the first call's).
    """

    written: Sequence[Campaign]
    segments: Sequence[Segment] = ()
    held_since: Mapping[str, float] = attrs.field(factory=dict)
    lease: LeaseSettings
    seq: int


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
    for _ in range(_ATTEMPTS):
        fenced: list[str] = []
        try:
            with gc_paused() if pause_gc else contextlib.nullcontext(), store.write() as tx:
                result, quiet = body(tx)
                if quiet is not None and quiet.written:
                    # (1) Before the commit.
                    fenced = [c.id for c in quiet.written]
                    listeners.fence(fenced)
        except ConcurrentUpdateError:
            if fenced:
                listeners.unfence(fenced)
            continue
        except BaseException:
            if fenced:
                listeners.unfence(fenced)
            raise
        # (2) committed, durably.
        if quiet is None:
            return result, None
        return result, settle(store, listeners, quiet, drain_timeout=drain_timeout, change=change)
    raise ConcurrentUpdateError(conflict)


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
    silenced.extend(quiet.held_since)
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
