"""`gated`: a consumer loop's records, decided one by one, each admitted one under a permit."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Final, TypeVar, overload

from campaign_states import Emission
from delivery_gate._decision import Decision, Reason, decision
from delivery_gate._gate import DeliveryGate
from delivery_gate._permit import Permit

__all__ = ["gated"]

R = TypeVar("R")
_INVALID: Final = decision(False, Reason.INVALID_REQUEST)

# Called with a denied record and the denial; may be a coroutine function for async loops.
OnDenied = Callable[[Any, Decision], Any]


@overload
def gated(
    gate: DeliveryGate,
    records: AsyncIterable[R],
    *,
    key: Callable[[R], tuple[object, object]] | None = None,
    on_denied: OnDenied | None = None,
    kind: object = Emission.MESSAGE,
) -> AsyncIterator[tuple[R, Permit]]: ...


@overload
def gated(
    gate: DeliveryGate,
    records: Iterable[R],
    *,
    key: Callable[[R], tuple[object, object]] | None = None,
    on_denied: OnDenied | None = None,
    kind: object = Emission.MESSAGE,
) -> Iterator[tuple[R, Permit]]: ...


def gated(
    gate: DeliveryGate,
    records: Iterable[R] | AsyncIterable[R],
    *,
    key: Callable[[R], tuple[object, object]] | None = None,
    on_denied: OnDenied | None = None,
    kind: object = Emission.MESSAGE,
) -> Iterator[tuple[R, Permit]] | AsyncIterator[tuple[R, Permit]]:
    """Yield ``(record, permit)`` for each admitted record; report the denied ones.

    Each admitted record's permit is entered before it is yielded and left when the loop
    asks for the next record (or the loop ends): the body runs *inside* the permit, so an
    archive in this process waits for the send in progress, and ``permit.still_valid()``
    is the last check before the bytes leave. The permit counts a delivery when it is
    left, unless the body called ``permit.cancel()`` or ``still_valid()`` said no. A body
    that raises leaves the permit uncounted once the iterator is closed (a ``for`` loop
    closes a generator as the exception unwinds; an ``async for`` needs
    ``contextlib.aclosing`` for that to be prompt).

    Args:
        gate: The gate deciding.
        records: Any iterable, or an async iterable (an aiokafka consumer, say): the
            result is then an async iterator.
        key: Gives a record's ``(campaign_id, channel)``; default: the record is that pair.
            A key that raises denies the record as INVALID_REQUEST.
        on_denied: Called with ``(record, decision)`` for each denied record, before the
            next one is read (commit its offset there); in an async loop it may be a
            coroutine function. Its exceptions propagate.
        kind: The emission kind of every record.
    """
    if not isinstance(gate, DeliveryGate):
        raise TypeError(f"gated needs a DeliveryGate, not {type(gate).__name__}.")
    if key is not None and not callable(key):
        raise TypeError(f"key must be callable, not {key!r}.")
    if on_denied is not None and not callable(on_denied):
        raise TypeError(f"on_denied must be callable, not {on_denied!r}.")
    if isinstance(records, AsyncIterable):
        return _agated(gate, records, key, on_denied, kind)
    if isinstance(records, Iterable):
        return _gated(gate, records, key, on_denied, kind)
    raise TypeError(f"records must be iterable, not {type(records).__name__}.")


def _pair(record: Any, key: Callable[[Any], tuple[object, object]] | None) -> tuple[object, object]:
    cid, channel = record if key is None else key(record)
    return cid, channel


def _gated(
    gate: DeliveryGate,
    records: Iterable[R],
    key: Callable[[R], tuple[object, object]] | None,
    on_denied: OnDenied | None,
    kind: object,
) -> Iterator[tuple[R, Permit]]:
    for record in records:
        try:
            cid, channel = _pair(record, key)
        except Exception:
            denial = _INVALID
        else:
            with gate.permit(cid, channel, kind) as permit:
                if permit.admitted:
                    # Held while the caller's body runs: the generator resumes (and leaves
                    # the block) only when the caller asks for the next record.
                    yield record, permit
                    continue
            denial = permit.decision
        if on_denied is not None:
            on_denied(record, denial)


async def _agated(
    gate: DeliveryGate,
    records: AsyncIterable[R],
    key: Callable[[R], tuple[object, object]] | None,
    on_denied: OnDenied | None,
    kind: object,
) -> AsyncIterator[tuple[R, Permit]]:
    async for record in records:
        try:
            cid, channel = _pair(record, key)
        except Exception:
            denial = _INVALID
        else:
            # Entering and leaving a permit never block: fine on the event loop.
            with gate.permit(cid, channel, kind) as permit:
                if permit.admitted:
                    yield record, permit
                    continue
            denial = permit.decision
        if on_denied is not None:
            result = on_denied(record, denial)
            if inspect.isawaitable(result):
                await result
