"""The gate's lease: refreshing its view from the store, and what happens when that fails.

A `Refresher` owns everything about the lease and the gate's registration (DESIGN 2.1):
the reader, the sequence the view is up to, the heartbeat and the acknowledgement, the
background thread. Of all that, the gate's hot path reads one number, the deadline, which
the refresher publishes on the gate itself (`LeaseHolder`): a check reads an attribute of
the gate, not of this object.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

import attrs

from campaign_states import LeaseSettings, Registry, State
from campaign_states.exceptions import StoreReplacedError, StoreUnavailableError
from campaign_states.stores import GateRowBatch, Reader

from ._loop import RefreshLoop
from ._registration import Registration
from ._results import ResultsBuffer
from ._snapshot import Snapshot

if TYPE_CHECKING:
    from ._inflight import InFlight

__all__ = ["GateStatus", "LeaseHolder", "Refresher"]

log = logging.getLogger("delivery_gate")

# After this many failed refreshes in a row, the reader is closed and reopened.
_REOPEN_AFTER: Final = 3
# Between lease-renewing refreshes, a registered gate on a store without notifications
# (SQLite) probes the store's change signal this often (seconds), so it sees an archive
# and acknowledges it within a few milliseconds. A probe is one `PRAGMA data_version`
# (bench/bench_ack.py measures what an idle gate spends on it). Accelerator only: the
# lease never depends on it.
PROBE: Final = 0.005
_RUNNING: Final = State.ACTIVE_RUNNING.value

# Readers a forked child dropped: never closed (closing could end the parent's session,
# see campaign_states' fork notes), kept referenced so that no finalizer closes them.
_abandoned: list[object] = []


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


class LeaseHolder(Protocol):
    """**Protocol:** where a refresher publishes its deadline (the gate).

    ``_deadline`` is the clock reading until which the view may be trusted: the one value
    of the lease the hot path reads, as a plain attribute of the object it is called on.
    Only the refresher writes it.
    """

    _deadline: float


class Refresher:
    """Keeps a gate's view leased: reads the store's changes into the snapshot, renews.

    Args:
        registry: The registry the gate follows (its store's reader and gate table).
        holder: Where the deadline is published (the gate).
        snapshot: The view the reads are installed into.
        in_flight: The gate's permits in flight (an ack waits for those on what it silenced).
        results: Flushed by the background loop.
        now: The gate's clock (the one its checks compare the deadline with).
        lease: The gate's own lease, or None for the store's.
        refresh: The gate's own refresh period, or None for the store's.
    """

    def __init__(
        self,
        registry: Registry,
        holder: LeaseHolder,
        snapshot: Snapshot,
        in_flight: InFlight,
        results: ResultsBuffer,
        *,
        now: Callable[[], float],
        lease: float | None,
        refresh: float | None,
    ) -> None:
        self.registry = registry
        self._holder = holder
        self._snapshot = snapshot
        self._in_flight = in_flight
        self._results = results
        self._now = now
        self._want_lease = lease
        self._want_refresh = refresh
        holder._deadline = -math.inf
        #: Set by `close`: refreshes refuse, the deadline stays fallen.
        self.closed = False
        #: Whether the last refresh failed (the gate then says STORE_UNAVAILABLE).
        self.failing = False
        self._failures = 0
        self.last_error: str | None = None
        self._settings: LeaseSettings | None = None
        #: The store sequence the view is up to.
        self.seq = 0
        self._token: object = object()
        self._reader: Reader | None = None
        # Held by every refresh, probe and close: reads are serial, and a close never
        # interleaves with an install or a renewal.
        self._lock = threading.Lock()
        # Set when the store's file was replaced (or its sequence went back): the next read
        # is a full load into an emptied view.
        self._reload = False
        # Registration (DESIGN 2.1): the first refresh registers before it reads.
        self.registration = Registration(registry, self._open_reader, in_flight)
        #: The background thread, once started.
        self.loop: RefreshLoop | None = None

    def refresh(self) -> bool:
        """Refresh the view now (the background thread does this every ``refresh`` s).

        Returns:
            Whether it succeeded (the lease was renewed). Never raises.
        """
        with self._lock:
            if self.closed:
                return False
            # The lease is measured from *before* the heartbeat, which commits before the
            # read starts: the snapshot the read returns is at least this recent, so an
            # archive committed after `started` is either in it or `started + lease`
            # bounds how long we trust the older view; and an archiver that sees our
            # heartbeat's age knows our lease ends within a lease of it (DESIGN 2.1).
            started = self._now()
            try:
                self._heartbeat()
                self._pull()
            except Exception as e:
                self._fail(e)
                return False
            self._renew(started)
            self._ack_if_drained()
            return True

    def probe(self) -> None:
        """Between refreshes: install changes if the store changed, and acknowledge them.

        Never extends the lease (only a refresh, through a heartbeat, does): a newer view
        installed under the old deadline is only more accurate. Never raises.
        """
        with self._lock:
            if self.closed or self._reader is None:
                return
            try:
                self._pull()
            except Exception:
                log.debug("delivery gate: probe failed; the next refresh retries", exc_info=True)
                return
            self._ack_if_drained()

    def _open_reader(self) -> Reader:
        if self._reader is None:
            self._reader = self.registry.open_reader()
            # A version token means something only to the connection that produced it
            # (SQLite's data_version is per connection): a new reader always reads.
            self._token = object()
        return self._reader

    def _heartbeat(self) -> None:
        """Register (first) or heartbeat, committed, before the read (`Registration`)."""
        self.registration.heartbeat(self.lease(), self._drop_view)

    def _drop_view(self) -> None:
        # Deny everything, and read the store whole next time.
        self._holder._deadline = -math.inf
        self._token = object()
        self.seq = 0

    def _ack_if_drained(self) -> None:
        """Acknowledge the view's sequence once no permit on what it silenced is in flight."""
        self.registration.ack_if_drained(self.seq)

    def _pull(self) -> None:
        """Probe the store's version; on change read what changed since our sequence."""
        reader = self._open_reader()
        # The token is read before the changes: a commit landing between the two is in the
        # read or changes the token again, so the next probe reads it. Never missed.
        # (SQLite's version_token first checks that the path still names the file it
        # opened, raising StoreReplacedError otherwise: see _fail.)
        token = reader.version_token()
        if token != self._token:
            self._install(self._read(reader), token)

    def _read(self, reader: Reader) -> GateRowBatch:
        """What changed since our sequence, as plain rows (no record per campaign)."""
        return reader.gate_rows_since(self.seq)

    def _install(self, batch: GateRowBatch, token: object) -> None:
        """Install a read into the view; permits on what it silenced must drain before
        the ack. Called with the lock held."""
        if batch.seq < self.seq:
            # This gate's reads are serial (under the refresh lock), and a live store's
            # sequence never goes back: this one was restored in place (the backup API).
            # Never install the older view; rows changed after the backup would be
            # missed by a delta from our sequence: deny, and load it whole next time.
            old = self.seq
            self._start_reload()
            raise StoreUnavailableError(
                f"the store's change sequence went back from {old} to {batch.seq} (a "
                "backup restored?); denying until the gate has reloaded it whole"
            )
        if self._reload:
            self._snapshot.reset()
            self._reload = False
        self._snapshot.apply(batch.rows, batch.segments)
        if self._in_flight.live:
            # After the apply, the permits that may have been admitted on the old view: in
            # flight now (a permit registers before it decides; `on` takes a consistent
            # snapshot). Later ones decide on the installed view: denied.
            silenced = {r[0] for r in batch.rows if r[1] != _RUNNING}
            if silenced:
                self.registration.waiting.extend(self._in_flight.on(silenced))
        self.seq = batch.seq
        self._settings = batch.lease
        self._token = token

    def _renew(self, started: float) -> None:
        self._holder._deadline = started + self.lease()
        if self.failing:
            log.warning("delivery gate: store reachable again; admitting")
        self.failing = False
        self._failures = 0
        self.last_error = None

    def _fail(self, error: BaseException) -> None:
        if isinstance(error, StoreReplacedError):
            log.warning(
                "delivery gate: the store's file %s was replaced or deleted; denying now, and "
                "reopening the path on the next refresh",
                error.path,
            )
        elif not self.failing:
            log.warning("delivery gate: refresh failed (%s); denying once the lease lapses", error)
        self.failing = True
        self._failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        if isinstance(error, StoreReplacedError):
            # The path names another file now, or none: what this view holds may be wrong
            # in either direction (a restored file can have a campaign running that the old
            # one archived, or be archived there by now). Deny at once rather than at the
            # end of the lease, and reopen the path on the next refresh.
            self._start_reload()
        elif self._failures % _REOPEN_AFTER == 0:
            # A connection can stay broken after the store came back: start afresh.
            self.shutdown_reader()

    def _start_reload(self) -> None:
        """Deny now; the next refresh opens a new reader and loads the store whole."""
        self._holder._deadline = -math.inf
        self.seq = 0
        self._token = object()
        self._reload = True
        self.shutdown_reader()
        # Our row's ack was of the other file's sequence: register anew (acked 0) before the
        # reload, so no archiver on the restored file counts it (see wait_for_gates' ceiling).
        self.registration.deregister()

    def invalidate(self, why: str) -> None:
        """Deny everything until a refresh re-reads the store from scratch."""
        log.error("delivery gate: %s; denying until the next refresh", why, exc_info=True)
        self._drop_view()

    def store_settings(self) -> LeaseSettings:
        """The store's lease settings as last read (the defaults before any read)."""
        return self._settings if self._settings is not None else LeaseSettings()

    def lease(self) -> float:
        """The lease in force: the smaller of the gate's and the store's."""
        store = self.store_settings().lease
        return store if self._want_lease is None else min(self._want_lease, store)

    def period(self) -> float:
        """Seconds between renewals: the gate's or the store's, or half the lease if that
        is not shorter than the lease."""
        period = self._want_refresh or self.store_settings().refresh
        lease = self.lease()
        return period if period < lease else lease / 2

    # -- the background thread ---------------------------------------------------------------

    def start(self, renew: Callable[[], object]) -> None:
        """Start the background thread; it renews the lease by calling ``renew``.

        The gate passes a call of its own ``refresh``, looked up at each call: an
        instrumented gate (`delivery_gate.otel`) shadows that method after this thread has
        started, and its background refreshes are timed too. `PROBE` is read now: tests
        and benchmarks that change it do so before they build their gates.
        """
        self.loop = RefreshLoop(self, self._results, renew, PROBE)

    def notifications(self) -> Callable[[float], object] | None:
        """The reader's wait for a change notification (PostgreSQL), or None."""
        wait = getattr(self._reader, "wait", None)
        return wait if callable(wait) else None

    def close(self) -> None:
        """Deny from now on and stop the background thread (`join` waits for it).

        Under the lock: a refresh in progress finishes first, and none renews after this
        (each checks `closed` under the same lock before reading).
        """
        with self._lock:
            self.closed = True
            self._holder._deadline = -math.inf
        if self.loop is not None:
            self.loop.stop.set()

    def deregister(self) -> None:
        """Drained and denying: archives need not wait for this gate any more."""
        with self._lock:
            self.registration.deregister()

    def join(self) -> None:
        """Wait for the background thread to end (after `close`), unless called on it."""
        if self.loop is not None:
            self.loop.join()

    def after_fork(self) -> None:
        """In a child forked from this gate's process: a refresher of its own, denying.

        The thread did not survive the fork, the reader's connection is the parent's, the
        lock may have been held by a parent thread, and the view was the parent's: deny
        until a read of the child's own. The parent's registration is the parent's: the
        child registers anew (on the store's reopened gate table) before its first read.
        """
        self._lock = threading.Lock()
        self._holder._deadline = -math.inf
        self._token = object()
        self.seq = 0
        self.registration.forget()
        # Abandoned, never closed: closing could end the parent's session.
        _abandoned.append(self._reader)
        self._reader = None
        if self.loop is not None:
            self.start(self.loop.renew)

    def status(self) -> GateStatus:
        """The gate's health now."""
        left = self._holder._deadline - self._now()
        return GateStatus(
            fresh=left > 0 and not self.closed,
            seconds_left=left,
            lease=self.lease(),
            refresh=self.period(),
            seq=self.seq,
            campaigns=len(self._snapshot.rows),
            last_error=self.last_error,
            closed=self.closed,
        )

    def shutdown_reader(self) -> None:
        """Close the reader (the next read opens a new one); never raises."""
        reader, self._reader = self._reader, None
        self.registration.reader_closed()
        if reader is not None:
            try:
                reader.close()
            except Exception:
                log.debug("closing the reader failed", exc_info=True)
