"""The permits in flight: registered before they decide, waited for by drains and close."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._permit import Permit

__all__ = ["InFlight", "backoff"]


def backoff(end: float) -> Iterator[float]:
    """Pauses between polls, 0.2 ms doubling to 5 ms, until ``end`` (`time.monotonic`)."""
    pause = 0.0002
    while (left := end - time.monotonic()) > 0:
        yield min(pause, left)
        pause = min(pause * 2, 0.005)


class InFlight:
    """The permits registered now, and how many drains wait for them.

    A permit adds itself to `live` before it decides and leaves when it is denied or its
    block exits: one ``set.add``/``set.discard`` each, atomic under the GIL, no lock on the
    permit's path. Whoever waits (an archive's drain, the refresher's ack, ``close``) takes
    a consistent snapshot with ``set.copy()`` (one C call under the GIL) and then waits for
    exactly those permits, by identity (permits hash by identity), never for the set to be
    empty: under senders that keep asking it never is, although each of them is denied.

    Attributes:
        live: The registered permits; the gate's permits read it as ``gate._live``.
        draining: How many drains (archives, stops, close) are waiting; read without the
            lock by denied permits, as a hint to yield (see `Permit.__enter__`).
    """

    def __init__(self) -> None:
        self.live: set[Permit] = set()
        self.draining = 0
        self._lock = threading.Lock()

    def now(self) -> list[Permit]:
        """Every permit registered at this instant (a consistent snapshot)."""
        return list(self.live.copy())

    def on(self, campaign_ids: Collection[str]) -> list[Permit]:
        """The permits registered at this instant on these campaigns."""
        found: list[Permit] = []
        for p in self.live.copy():
            try:
                if p.campaign_id in campaign_ids:
                    found.append(p)
            except Exception:
                continue  # an unhashable id (or one whose __eq__ raises): never admitted
        return found

    def still_in(self, permits: list[Permit]) -> list[Permit]:
        """Those of ``permits`` still registered (this very permit, inside its block)."""
        live = self.live
        return [p for p in permits if p in live]

    @contextlib.contextmanager
    def draining_scope(self) -> Iterator[None]:
        """While a drain waits for permits: denied permits yield the GIL to those in flight."""
        # A lock, not `+=` under the GIL: two drains at once must not lose a count.
        with self._lock:
            self.draining += 1
        try:
            yield
        finally:
            with self._lock:
                self.draining -= 1

    def drain(self, campaign_ids: Collection[str], timeout: float) -> set[str]:
        """Wait until the permits on these campaigns in flight now have left; return those
        left.

        Called after the fence (and the apply): a permit registered later decides after the
        fence and is denied, so only the permits present at this moment can have been
        admitted on the old view. A permit in the snapshot that is still deciding will be
        denied (the fence is up) and leave at once; an admitted one leaves when its block
        exits.
        """
        left = self.wait_for(self.on(set(campaign_ids)), timeout)
        return {p.campaign_id for p in left}  # type: ignore[misc]

    def wait_for(self, permits: list[Permit], timeout: float) -> list[Permit]:
        """Wait until these permits have left (or ``timeout``); return those still in.

        Measured in real seconds, whatever the registry's clock: a fake clock does not move
        while another thread finishes its send. Polling (0.2 ms, backing off to 5 ms) keeps
        the permits' exit path free of locks and notifications. Denied permits yield to
        those in flight meanwhile (`draining_scope`).
        """
        with self.draining_scope():
            for pause in backoff(time.monotonic() + timeout):
                permits = self.still_in(permits)
                if not permits:
                    break
                time.sleep(pause)
            return self.still_in(permits)

    async def await_for(self, permits: list[Permit], timeout: float) -> list[Permit]:
        """`wait_for` on an event loop: sleeps with ``asyncio.sleep``, never blocking it.

        Tasks holding permits across an ``await`` run while this waits, on the same loop.
        """
        import asyncio  # only here: asyncio stays out of the gate's import path

        with self.draining_scope():
            for pause in backoff(time.monotonic() + timeout):
                permits = self.still_in(permits)
                if not permits:
                    break
                await asyncio.sleep(pause)
            return self.still_in(permits)

    def after_fork(self) -> None:
        """In a forked child: the parent's permits are the parent's; the lock may be held.

        Cleared in place, not replaced: the gate and its refresher hold this very set. The
        child runs one thread, which holds the GIL, so nothing mutates it meanwhile.
        """
        self.live.clear()
        self.draining = 0
        self._lock = threading.Lock()
