"""Fault-injecting readers and registry helpers for the gate's tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from campaign_states import FakeClock, LeaseSettings, Registry
from campaign_states.exceptions import StoreUnavailableError
from campaign_states.stores import GateRowBatch, MemoryStore, Reader, SQLiteStore


def make_registry(
    kind: str, tmp_path: Path | None, clock: FakeClock, *, dsn: str | None = None, **lease: float
) -> Registry:
    """A registry on a fresh memory, SQLite or PostgreSQL (``dsn``) store on ``clock``."""
    settings = LeaseSettings(**lease) if lease else None
    if kind == "memory":
        return Registry(MemoryStore(clock=clock, lease=settings), drain_timeout=0.2)
    if kind == "postgres":
        from campaign_states.stores import PostgresStore

        return Registry(PostgresStore(dsn, clock=clock, lease=settings), drain_timeout=0.2)
    assert tmp_path is not None
    return Registry(
        SQLiteStore(tmp_path / "gate.db", clock=clock, lease=settings), drain_timeout=0.2
    )


class FaultyReader:
    """Wraps a reader: raises StoreUnavailableError while ``down`` is set; counts calls;
    can advance a fake clock inside ``gate_rows_since`` (a slow read)."""

    def __init__(self, inner: Reader, controls: ReaderControls) -> None:
        self._inner = inner
        self._c = controls

    def version_token(self) -> object:
        self._c.tokens += 1
        if self._c.down.is_set():
            raise StoreUnavailableError("injected: store down")
        return self._inner.version_token()

    def gate_rows_since(self, seq: int) -> GateRowBatch:
        self._c.reads += 1
        if self._c.down.is_set():
            raise StoreUnavailableError("injected: store down")
        batch = self._inner.gate_rows_since(seq)  # type: ignore[attr-defined]
        # The data is as of the read's start; the time passing now is the read's duration.
        self._c.during_read()
        return batch

    def close(self) -> None:
        self._c.closed += 1
        self._inner.close()


class ReaderControls:
    """Switches and counters shared by the FaultyReaders a registry hands out."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.tokens = 0
        self.reads = 0
        self.opened = 0
        self.closed = 0
        self.open_fails = False
        self.during_read: Callable[[], None] = lambda: None


def install_faulty_reader(reg: Registry) -> ReaderControls:
    """Make ``reg.open_reader()`` hand out FaultyReaders (instance attribute: tests only)."""
    controls = ReaderControls()
    original = reg.open_reader

    def open_reader() -> Reader:
        controls.opened += 1
        if controls.open_fails:
            raise StoreUnavailableError("injected: cannot connect")
        return FaultyReader(original(), controls)

    reg.open_reader = open_reader  # type: ignore[method-assign]
    return controls


class StillClock(FakeClock):
    """A fake clock whose ``sleep`` records the wait but does not advance time.

    As if the gate's refresher kept refreshing while an archive waited out its commit wait:
    tests of decisions after an archive then see the gate fresh, and must still see the
    archive (through the registry's apply, not through a refresh).
    """

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
