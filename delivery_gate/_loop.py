"""The refresher's background thread: renew every period, probe between, flush results."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ._results import FLUSH_AT, ResultsBuffer

if TYPE_CHECKING:
    from ._refresh import Refresher

__all__ = ["RefreshLoop"]

log = logging.getLogger("delivery_gate")

# Results are recorded at least this often (seconds), or at FLUSH_AT completed permits.
_FLUSH_EVERY: Final = 1.0
# How often a refresher waiting for a notification checks whether the gate is closing.
_STOP_CHECK: Final = 0.1


class RefreshLoop:
    """One daemon thread per gate, between its start and the gate's close.

    Args:
        refresher: Whose lease it renews and whose store it probes.
        results: Flushed about every second (or at ``FLUSH_AT`` completed permits).
        renew: Called to renew the lease (the gate's own ``refresh``; see
            `Refresher.start`).
        probe_every: Seconds between probes of a registered gate's store when the store
            sends no notifications (``_refresh.PROBE``).
    """

    def __init__(
        self,
        refresher: Refresher,
        results: ResultsBuffer,
        renew: Callable[[], object],
        probe_every: float,
    ) -> None:
        self._refresher = refresher
        self._results = results
        self.renew = renew
        self._probe_every = probe_every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="delivery-gate-refresh", daemon=True)
        self.thread.start()

    def join(self) -> None:
        """Wait for the thread to end (after ``stop`` is set), unless called on it."""
        if self.thread is not threading.current_thread():
            self.thread.join()

    def _run(self) -> None:
        r = self._refresher
        last_flush = time.monotonic()
        renew_at = time.monotonic()  # the constructor refreshed; renew one period later
        first = True
        while not self.stop.is_set():
            try:
                now = time.monotonic()
                if first:
                    renew_at = now + r.period()
                    first = False
                elif now >= renew_at or r.failing:
                    self.renew()
                    renew_at = time.monotonic() + r.period()
                else:
                    r.probe()
                if len(self._results) >= FLUSH_AT or time.monotonic() - last_flush >= _FLUSH_EVERY:
                    last_flush = time.monotonic()
                    self._flush_quietly()
                left = max(0.0, renew_at - time.monotonic())
                wait = r.notifications()
                if wait is not None and not r.failing:
                    # PostgreSQL's LISTEN/NOTIFY may wake us early (then we probe);
                    # correctness never depends on it (a lost notification just means
                    # waiting out the period). Waited in slices so that close() is not
                    # held up for a whole period.
                    self._wait_for_notice(wait, left)
                elif r.registration.gate_id is not None and not r.failing:
                    self.stop.wait(min(self._probe_every, left))
                else:
                    self.stop.wait(left)
            except Exception:
                log.exception("delivery gate: refresher error; retrying")
                self.stop.wait(0.05)

    def _wait_for_notice(self, wait: Callable[[float], object], period: float) -> None:
        end = time.monotonic() + period
        while not self.stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            step = min(left, _STOP_CHECK)
            started = time.monotonic()
            wait(step)
            if time.monotonic() - started < step * 0.9:
                return  # woken early: a notification arrived

    def _flush_quietly(self) -> None:
        try:
            self._results.flush()
        except Exception as e:
            log.warning("delivery gate: recording results failed (%s); will retry", e)
