"""Clocks: what leases and commit waits are measured on.

Linux's ``CLOCK_BOOTTIME`` keeps counting while the machine is suspended (``CLOCK_MONOTONIC``
stops), so a lease cannot look fresh after a suspend; it is also shared by every process on
the host, so a commit time taken in one process compares with a lease taken in another.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import attrs

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """**Protocol:** a monotonic clock in seconds, and a way to wait on it."""

    def now(self) -> float:
        """Seconds since an arbitrary origin; never goes back."""

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` of this clock."""


_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


@attrs.frozen
class SystemClock:
    """``CLOCK_BOOTTIME`` where the platform has it, else ``time.monotonic``."""

    def now(self) -> float:
        """Read the clock."""
        if _BOOTTIME is not None:
            return time.clock_gettime(_BOOTTIME)
        return time.monotonic()  # pragma: no cover - non-Linux

    def sleep(self, seconds: float) -> None:
        """Sleep until at least ``seconds`` have passed on this clock (sleep can wake early)."""
        end = self.now() + seconds
        while (left := end - self.now()) > 0:
            time.sleep(left)


class FakeClock:
    """A clock that moves only when told (or when someone sleeps on it).

    ``sleep`` advances the time at once, so a test of commit waits runs instantly and can
    assert exactly how long the code waited.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def now(self) -> float:
        """The fake time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the time forward."""
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        """Record the wait and advance by it."""
        with self._lock:
            self.slept.append(seconds)
            if seconds > 0:
                self._now += seconds
