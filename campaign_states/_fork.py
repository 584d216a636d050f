"""After ``os.fork()``: what a child inherits from its parent it must not use.

A registry opened before a fork (Celery's prefork pool with the registry opened at import,
gunicorn ``--preload``, ``multiprocessing`` with the fork start method) reaches the child as
a copy: its SQLite connection, which SQLite forbids using across a fork; its PostgreSQL
sockets, shared with the parent's sessions; its locks, possibly held by a parent thread that
does not exist in the child. Objects that hold such things register here, and in the child
``_after_fork_in_child`` gives each its own connections and locks before any user code runs.

The inherited connections are *abandoned*, never closed: closing them in the child could
end the parent's sessions (a PostgreSQL Terminate message on the shared socket) or run
SQLite's last-connection cleanup on a file the parent still has open. They are kept
referenced for the life of the child, so no finalizer closes them either.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Protocol

__all__ = ["ForkAware", "abandon", "reopen_after_fork"]

log = logging.getLogger("campaign_states")


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None:
        """Replace inherited connections and locks; must not raise."""


_objects: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_abandoned: list[object] = []


def reopen_after_fork(obj: ForkAware) -> None:
    """Have ``obj._after_fork_in_child()`` called in every child forked from now on."""
    _objects.add(obj)


def abandon(resource: object) -> None:
    """Keep an inherited resource referenced, unused and unclosed, in this child."""
    _abandoned.append(resource)


def _after_fork_in_child() -> None:
    for obj in list(_objects):
        try:
            obj._after_fork_in_child()
        except Exception:
            # A hook must not break the child's start; the object's own next use reports
            # its error (a store that could not reconnect raises a StoreError there).
            log.exception("campaign_states: reopening %r after fork failed", type(obj).__name__)


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
