"""How a gate ends: closing (after its permits), refusing to block an event loop, and fork.

`DeliveryGate.close` and `aclose` share the steps here; only the wait for the permits in
flight differs (blocking, or on the event loop: `InFlight.wait_for` / `await_for`).
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .exceptions import GateClosedOnLoopError, ResultsNotRecordedError

if TYPE_CHECKING:
    from ._permit import Permit
    from ._refresh import Refresher
    from ._results import ResultsBuffer

__all__ = ["finish_close", "refuse_on_loop", "track"]

log = logging.getLogger("delivery_gate")


class _Forkable(Protocol):
    def _after_fork_in_child(self) -> None: ...


# Every open gate, for the fork hook below.
_gates: weakref.WeakSet[_Forkable] = weakref.WeakSet()


def track(gate: _Forkable) -> None:
    """Have ``gate`` start over in a child forked from this process (see the hook)."""
    _gates.add(gate)


def _after_fork_in_child() -> None:
    for gate in list(_gates):
        try:
            gate._after_fork_in_child()
        except Exception:
            log.exception("delivery gate: restarting after fork failed; it denies (STALE)")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def refuse_on_loop() -> None:
    """Raise `GateClosedOnLoopError` on a thread running an asyncio event loop."""
    # No event loop can run where asyncio was never imported; looking it up in sys.modules
    # keeps asyncio out of the gate's import path.
    aio = sys.modules.get("asyncio")
    if aio is None:
        return
    try:
        aio.get_running_loop()
    except RuntimeError:
        return  # no loop runs on this thread: waiting blocks nobody else
    raise GateClosedOnLoopError(
        "DeliveryGate.close() was called on a thread running an asyncio event loop: waiting "
        "there for permits held across an await would block the tasks holding them. Use "
        "`await gate.aclose()` or `async with gate:`. The gate is still open."
    )


def finish_close(
    waiting: list[Permit],
    *,
    live: set[Permit],
    refresher: Refresher,
    unsubscribe: Callable[[], None],
    results: ResultsBuffer,
    close_registry: Callable[[], None] | None,
    close_timeout: float,
) -> None:
    """After the wait for the permits in flight: release everything, record, report.

    Args:
        waiting: The permits of the close's snapshot still in flight after the wait.
        live: The gate's permits in flight (the very set).
        refresher: The gate's refresher (already closed: the gate denies).
        unsubscribe: Takes the gate's listener off its registry.
        results: The gate's deliveries buffer, flushed last.
        close_registry: Closes the registry if the gate opened it, else None.
        close_timeout: The wait's length, for the error.

    Raises:
        ResultsNotRecordedError: Deliveries not recorded (see `DeliveryGate.close`).
    """
    # Permits of the snapshot still deciding are denied and leave by themselves; only
    # the admitted ones still inside their block are in flight.
    in_flight = sum(1 for p in waiting if p.decision.admitted and p in live)
    refresher.join()
    if not in_flight:
        # Drained and denying: archives need not wait for us any more. With permits
        # still in flight the row stays, and archives wait out our lease instead.
        refresher.deregister()
    unsubscribe()
    refresher.shutdown_reader()
    error: Exception | None = None
    try:
        results.flush()
    except Exception as e:
        # A store error keeps the counts pending (listed below); anything else is a bug
        # of ours, reported the same way rather than losing the counts.
        error = e
    finally:
        if close_registry is not None:
            close_registry()
    refused = results.refused
    if error is not None or in_flight or refused:
        cause = (
            str(error)
            if error
            else f"permits still open after {close_timeout:g}s"
            if in_flight
            else "refused by the registry"
        )
        raise ResultsNotRecordedError(results.unrecorded(), in_flight, cause, refused)
