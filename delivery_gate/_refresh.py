"""The gate's lease: refreshing its view from the store, and what happens when that fails.

`Refreshing` is mixed into `DeliveryGate`, so the hot path reads the deadline as one
attribute of the gate itself.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Final

import attrs

from campaign_states import ChangeBatch, GateRowBatch, LeaseSettings, Reader, Registry
from campaign_states.exceptions import StoreReplacedError, StoreUnavailableError

from ._decision import Row
from ._results import FLUSH_AT, ResultsBuffer
from ._snapshot import Snapshot

__all__ = ["GateStatus", "Refreshing"]

log = logging.getLogger("delivery_gate")

# After this many failed refreshes in a row, the reader is closed and reopened.
_REOPEN_AFTER: Final = 3
# Results are recorded at least this often (seconds), or at FLUSH_AT completed permits.
_FLUSH_EVERY: Final = 1.0
# How often a refresher waiting for a notification checks whether the gate is closing.
_STOP_CHECK: Final = 0.1


@attrs.frozen(kw_only=True)
class GateStatus:
    """A gate's health, for probes and dashboards.

    Attributes:
        fresh: Whether the lease is valid now (the gate can admit).
        seconds_left: Until the lease lapses (negative once it has).
        lease: The lease in force (the smaller of the gate's and the store's).
        refresh: How often the gate polls the store.
        seq: The store change sequence the view is up to.
        campaigns: Campaigns in the view.
        last_error: The last refresh error, while refreshes are failing.
        closed: Whether `DeliveryGate.close` was called.
    """

    fresh: bool
    seconds_left: float
    lease: float
    refresh: float
    seq: int
    campaigns: int
    last_error: str | None
    closed: bool


class Refreshing:
    """The refresh half of a gate (state set up by `DeliveryGate.__init__`)."""

    registry: Registry
    _now: Callable[[], float]
    _deadline: float
    _snapshot: Snapshot
    _rows: dict[str, Row]
    _results: ResultsBuffer
    _want_lease: float | None
    _want_refresh: float | None
    _closed: bool
    _failing: bool
    _failures: int
    _last_error: str | None
    _settings: LeaseSettings | None
    _seq: int
    _token: object
    _reader: Reader | None
    _gate_rows: Callable[[int], GateRowBatch] | None
    _refresh_lock: threading.Lock
    _stop: threading.Event
    # Set when the store's file was replaced (or its sequence went back): the next read is
    # a full load into an emptied view. A class default: `DeliveryGate.__init__` need not
    # know about it.
    _reload: bool = False

    def refresh(self) -> bool:
        """Refresh the view now (the background thread does this every ``refresh`` s).

        Returns:
            Whether it succeeded (the lease was renewed). Never raises.
        """
        with self._refresh_lock:
            if self._closed:
                return False
            # The lease is measured from *before* the read starts: the snapshot the read
            # returns is at least this recent, so an archive committed after `started`
            # is either in it or `started + lease` bounds how long we trust the older view.
            started = self._now()
            try:
                self._pull()
            except Exception as e:
                self._fail(e)
                return False
            self._renew(started)
            return True

    def _pull(self) -> None:
        """Probe the store's version; on change read what changed since our sequence."""
        if self._reader is None:
            self._reader = self.registry.open_reader()
            # The rows path when the store offers it (`GateReader`): same changes, same
            # decisions, without building a record per campaign.
            self._gate_rows = getattr(self._reader, "gate_rows_since", None)
            # A version token means something only to the connection that produced it
            # (SQLite's data_version is per connection): a new reader always reads.
            self._token = object()
        # The token is read before the changes: a commit landing between the two is in the
        # read or changes the token again, so the next probe reads it. Never missed.
        # (SQLite's version_token first checks that the path still names the file it
        # opened, raising StoreReplacedError otherwise: see _fail.)
        token = self._reader.version_token()
        if token != self._token:
            batch: ChangeBatch | GateRowBatch
            if self._gate_rows is not None:
                batch = self._gate_rows(self._seq)
            else:
                batch = self._reader.changes_since(self._seq)
            if batch.seq < self._seq:
                # The sequence never goes back in a live store: this one was restored in
                # place (the backup API). Rows changed after the backup would be missed by
                # a delta from our sequence: deny, and load it whole on the next refresh.
                old = self._seq
                self._start_reload()
                raise StoreUnavailableError(
                    f"the store's change sequence went back from {old} to {batch.seq} (a "
                    "backup restored?); denying until the gate has reloaded it whole"
                )
            if self._reload:
                self._snapshot.reset()
                self._reload = False
            if isinstance(batch, GateRowBatch):
                self._snapshot.apply_rows(batch)
            else:
                self._snapshot.apply(batch.campaigns, batch.segments)
            self._seq = batch.seq
            self._settings = batch.lease
            self._token = token

    def _renew(self, started: float) -> None:
        self._deadline = started + self._lease()
        if self._failing:
            log.warning("delivery gate: store reachable again; admitting")
        self._failing = False
        self._failures = 0
        self._last_error = None

    def _fail(self, error: BaseException) -> None:
        if isinstance(error, StoreReplacedError):
            log.warning(
                "delivery gate: the store's file %s was replaced or deleted; denying now, and "
                "reopening the path on the next refresh",
                error.path,
            )
        elif not self._failing:
            log.warning("delivery gate: refresh failed (%s); denying once the lease lapses", error)
        self._failing = True
        self._failures += 1
        self._last_error = f"{type(error).__name__}: {error}"
        if isinstance(error, StoreReplacedError):
            # The path names another file now, or none: what this view holds may be wrong
            # in either direction (a restored file can have a campaign running that the old
            # one archived, or be archived there by now). Deny at once rather than at the
            # end of the lease, and reopen the path on the next refresh.
            self._start_reload()
        elif self._failures % _REOPEN_AFTER == 0:
            # A connection can stay broken after the store came back: start afresh.
            self._shutdown_reader()

    def _start_reload(self) -> None:
        """Deny now; the next refresh opens a new reader and loads the store whole."""
        self._deadline = -math.inf
        self._seq = 0
        self._token = object()
        self._reload = True
        self._shutdown_reader()

    def _invalidate(self, why: str) -> None:
        """Deny everything until a refresh re-reads the store from scratch."""
        log.error("delivery gate: %s; denying until the next refresh", why, exc_info=True)
        self._deadline = -math.inf
        self._token = object()
        self._seq = 0

    def _store_settings(self) -> LeaseSettings:
        return self._settings if self._settings is not None else LeaseSettings()

    def _lease(self) -> float:
        store = self._store_settings().lease
        return store if self._want_lease is None else min(self._want_lease, store)

    def _period(self) -> float:
        period = self._want_refresh or self._store_settings().refresh
        lease = self._lease()
        return period if period < lease else lease / 2

    def _run(self) -> None:
        last_flush = time.monotonic()
        while not self._stop.is_set():
            try:
                self.refresh()
                if len(self._results) >= FLUSH_AT or time.monotonic() - last_flush >= _FLUSH_EVERY:
                    last_flush = time.monotonic()
                    self._flush_quietly()
                period = self._period()
                wait = getattr(self._reader, "wait", None)
                if callable(wait) and not self._failing:
                    # PostgreSQL's LISTEN/NOTIFY may wake us early; correctness never depends
                    # on it (a lost notification just means waiting out the period). Waited
                    # in slices so that close() is not held up for a whole period.
                    self._wait_for_notice(wait, period)
                else:
                    self._stop.wait(period)
            except Exception:
                log.exception("delivery gate: refresher error; retrying")
                self._stop.wait(0.05)

    def _wait_for_notice(self, wait: Callable[[float], object], period: float) -> None:
        end = time.monotonic() + period
        while not self._stop.is_set():
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

    def status(self) -> GateStatus:
        """The gate's health now."""
        left = self._deadline - self._now()
        return GateStatus(
            fresh=left > 0 and not self._closed,
            seconds_left=left,
            lease=self._lease(),
            refresh=self._period(),
            seq=self._seq,
            campaigns=len(self._rows),
            last_error=self._last_error,
            closed=self._closed,
        )

    def _shutdown_reader(self) -> None:
        reader, self._reader = self._reader, None
        self._gate_rows = None
        if reader is not None:
            try:
                reader.close()
            except Exception:
                log.debug("closing the reader failed", exc_info=True)
