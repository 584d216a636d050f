"""The decision observer hook, and a ready-made counting observer."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Protocol

from ._decision import Decision, Reason

__all__ = ["DecisionCounter", "DecisionObserver"]


class DecisionObserver(Protocol):
    """**Protocol:** called with every decision a gate makes (checks, permits, filters).

    It runs on the deciding thread, so keep it quick; whatever it raises is swallowed (the
    gate never raises from a check). A gate built without one pays nothing for the hook.
    """

    def __call__(
        self, campaign_id: object, channel: object, kind: object, decision: Decision
    ) -> None:
        """Observe one decision."""


class DecisionCounter:
    """A `DecisionObserver` that counts decisions per reason (thread-safe).

    >>> from delivery_gate import DecisionCounter, Reason
    >>> counter = DecisionCounter()
    >>> counter.counts()[Reason.RUNNING]
    0
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[Reason] = Counter()

    def __call__(
        self, campaign_id: object, channel: object, kind: object, decision: Decision
    ) -> None:
        """Count one decision."""
        with self._lock:
            self._counts[decision.reason] += 1

    def counts(self) -> Counter[Reason]:
        """A copy of the counts so far, per reason (missing reasons read 0)."""
        with self._lock:
            return Counter(self._counts)

    @property
    def admitted(self) -> int:
        """How many decisions admitted."""
        return self.counts()[Reason.RUNNING]

    @property
    def denied(self) -> int:
        """How many decisions denied."""
        c = self.counts()
        return sum(c.values()) - c[Reason.RUNNING]
