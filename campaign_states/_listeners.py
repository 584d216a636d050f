"""How the registry tells in-process gates about changes, and how archives wait.

The arrow runs from the gate to the registry: a gate subscribes a `ChangeListener`; the
registry never imports the gate.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from ._fork import reopen_after_fork
from ._records import Campaign, Segment
from ._store import LeaseSettings, Store
from .exceptions import DrainTimeoutError

__all__ = ["ChangeListener", "Listeners", "settle"]


class ChangeListener(Protocol):
    """**Protocol:** what a registry calls on an in-process gate around a write.

    ``fence`` runs before the commit, ``apply`` (or ``unfence`` on failure) after it, then
    ``drain``. Implementations must not call back into the registry and must not raise.
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

    def __bool__(self) -> bool:
        return bool(self._items)


# The registry (core) passes these positionally; keyword-only would break its call.
def settle(  # noqa: PLR0917
    listeners: Listeners,
    store: Store,
    written: Sequence[Campaign],
    segments: Sequence[Segment],
    silenced: Collection[str],
    held_since: Mapping[str, float],
    lease: LeaseSettings,
    *,
    drain_timeout: float,
    change: str = "change",
) -> None:
    """After a commit: update local gates, then, for archives and stops, make the promise true.

    Order matters: (1) ``apply`` first, so local gates reflect the committed state before
    anything else (they were fenced before the commit, so nothing was admitted meanwhile);
    (2) drain local permits admitted before the fence; (3) wait until every gate elsewhere
    either refreshed after the commit or let its lease lapse. Only then may the caller
    learn that the archive returned.

    Args:
        listeners: The in-process gates.
        store: Gives the clock and whether other processes can read (commit wait needed).
        written: Campaigns this call committed.
        segments: Segments this call committed.
        silenced: Campaigns that must not be admitted once this returns.
        held_since: Campaigns already silenced before this call (a retry), with the
            store-clock time their state changed.
        lease: The store's lease settings read in the committing transaction.
        drain_timeout: How long to wait for local permits in flight.
        change: What was committed, for the error (``"archive"``, ``"stop"``...).

    Raises:
        DrainTimeoutError: The change is committed and no gate admits, but local permits
            admitted before it were still in flight.
    """
    # The commit time is read after the commit returned, so it is no earlier than the
    # moment the change became visible to any reader.
    committed = store.clock.now()
    if written or segments:
        listeners.apply(written, segments)
    if not silenced:
        return
    stuck = listeners.drain(silenced, drain_timeout) if listeners else set()
    if store.needs_commit_wait:
        wait = lease.commit_wait()
        deadline = committed + wait if written else committed
        # Recorded times compare only on a clock every writer shares (one host's
        # CLOCK_BOOTTIME); across hosts, a retry waits the whole wait from its own commit.
        shared = getattr(store, "clock_is_shared", False)
        for since in held_since.values() if shared else ():
            # A retry of a recent archive waits what remains of it. The first caller
            # recorded `since` inside its transaction, before its commit; allowing that
            # commit up to `wait` to complete gives `since + 2 * wait`. Never beyond our
            # own commit + wait: the first commit happened before our read. (Assumption,
            # documented: a commit completes within `wait` of its transaction deciding
            # the change; a slower one could let a retry return before remote leases
            # taken just before that commit have lapsed.)
            deadline = max(deadline, min(since + 2 * wait, committed + wait))
        if held_since and not shared:
            deadline = committed + wait
        left = deadline - store.clock.now()
        if left > 0:
            store.clock.sleep(left)
    if stuck:
        raise DrainTimeoutError(stuck, drain_timeout, change)
