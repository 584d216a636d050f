"""How the registry tells in-process gates about changes (fence, apply, drain).

The arrow runs from the gate to the registry: a gate subscribes a `ChangeListener`; the
registry never imports the gate.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from typing import Protocol

from ._fork import reopen_after_fork
from ._records import Campaign, Segment

__all__ = ["ChangeListener", "Listeners"]


class ChangeListener(Protocol):
    """**Protocol:** what a registry calls on an in-process gate around a write.

    ``fence`` runs before the commit, ``apply`` (or ``unfence`` on failure) after it, then
    ``drain``. Implementations must not call back into the registry and must not raise.
    A listener may also have a ``gate_id`` attribute: the id its gate registered under
    (`GateTable`), or None. An archive through this registry does not wait for that
    gate's acknowledgement: it fenced, applied and drained it itself. And a
    ``waited(campaign_ids, outcome)`` method, called once a silencing call's wait is over
    with its `WaitReport.outcome` (``"acknowledged"``, ``"lease"`` or ``"local"``).
    """

    def fence(self, campaign_ids: Collection[str]) -> None:
        """Deny these campaigns at once, until ``apply`` or ``unfence``."""

    def unfence(self, campaign_ids: Collection[str]) -> None:
        """The write failed and changed nothing: lift the fence."""

    def apply(self, campaigns: Sequence[Campaign], segments: Sequence[Segment]) -> None:
        """These records were just committed: reflect them before the registry returns."""

    def drain(self, campaign_ids: Collection[str], timeout: float) -> Collection[str]:
        """Wait up to ``timeout`` s for permits in flight on these campaigns to finish.

        Returns:
            The campaigns that still have permits in flight (empty when drained).
        """


class Listeners:
    """A thread-safe set of listeners, called in subscription order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: tuple[ChangeListener, ...] = ()
        reopen_after_fork(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent thread may have held it at the fork

    def add(self, listener: ChangeListener) -> None:
        with self._lock:
            if listener not in self._items:
                self._items = (*self._items, listener)

    def remove(self, listener: ChangeListener) -> None:
        with self._lock:
            self._items = tuple(x for x in self._items if x is not listener)

    def fence(self, ids: Collection[str]) -> None:
        for x in self._items:
            x.fence(ids)

    def unfence(self, ids: Collection[str]) -> None:
        for x in self._items:
            x.unfence(ids)

    def apply(self, campaigns: Sequence[Campaign], segments: Sequence[Segment] = ()) -> None:
        for x in self._items:
            x.apply(campaigns, segments)

    def drain(self, ids: Collection[str], timeout: float) -> set[str]:
        stuck: set[str] = set()
        for x in self._items:
            stuck.update(x.drain(ids, timeout))
        return stuck

    def waited(self, ids: Collection[str], outcome: str) -> None:
        """Tell the listeners that have a ``waited`` method how a wait ended (metrics)."""
        for x in self._items:
            hook = getattr(x, "waited", None)
            if callable(hook):
                hook(ids, outcome)

    def gate_ids(self) -> set[str]:
        """The registered ids of the listeners' gates (see `ChangeListener`)."""
        ids = (getattr(x, "gate_id", None) for x in self._items)
        return {i for i in ids if isinstance(i, str)}

    def __bool__(self) -> bool:
        return bool(self._items)
