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
from typing import Any, Final

import attrs

from campaign_states import GateTable, LeaseSettings, Registry, State
from campaign_states.exceptions import StoreReplacedError, StoreUnavailableError
from campaign_states.stores import ChangeBatch, GateRowBatch, Reader

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
# Between lease-renewing refreshes, a registered gate on a store without notifications
# (SQLite) probes the store's change signal this often (seconds), so it sees an archive
# and acknowledges it within a few milliseconds. A probe is one `PRAGMA data_version`
# (bench/bench_ack.py measures what an idle gate spends on it). Accelerator only: the
# lease never depends on it.
PROBE: Final = 0.005
_RUNNING: Final = State.ACTIVE_RUNNING.value


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


def _on(permit: Any, campaigns: set[str]) -> bool:
    try:
        return permit.campaign_id in campaigns
    except Exception:
        return False  # an unhashable id: never admitted


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
    _live: set[Any]
    _table: GateTable | None
    _table_known: bool
    _gate_id: str | None
    _acked: int
    _ack_waiting: list[Any]
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
        with self._refresh_lock:
            if self._closed or self._reader is None:
                return
            try:
                self._pull()
            except Exception:
                log.debug("delivery gate: probe failed; the next refresh retries", exc_info=True)
                return
            self._ack_if_drained()

    def _gate_table(self) -> GateTable | None:
        if not self._table_known:
            table = self.registry.gate_table()
            if table is not None:
                # Through the gate's own reader connection when it offers one (PostgreSQL:
                # one connection per gate process at rest), else the store's.
                own = getattr(self._open_reader(), "gate_table", None)
                if callable(own):
                    table = own()
            self._table = table
            self._table_known = True
        return self._table

    def _open_reader(self) -> Reader:
        if self._reader is None:
            self._reader = self.registry.open_reader()
            # The rows path when the store offers it (`GateReader`): same changes, same
            # decisions, without building a record per campaign.
            self._gate_rows = getattr(self._reader, "gate_rows_since", None)
            # A version token means something only to the connection that produced it
            # (SQLite's data_version is per connection): a new reader always reads.
            self._token = object()
        return self._reader

    def _heartbeat(self) -> None:
        """Register (first) or heartbeat, committed, before the read that follows.

        Registration before the first read: an archiver reads the gate table after its
        commit, so it either sees this gate (and waits for its ack or lease) or this gate
        registered after that commit, and the read below sees the change.
        """
        table = self._gate_table()
        if table is None:
            return  # no other process reads this store (memory): nobody waits for us
        lease, in_flight = self._lease(), len(self._live)
        if self._gate_id is not None and table.heartbeat(
            self._gate_id, lease=lease, in_flight=in_flight
        ):
            return
        if self._gate_id is not None:
            # Our row is gone: we were declared dead, so archives stopped waiting for us.
            # Drop the view (deny everything) and register anew before reading again.
            log.warning("delivery gate: registration lost (declared dead); re-registering")
            self._invalidate_quietly()
        self._gate_id = table.register(lease=lease, in_flight=in_flight)
        self._acked = 0

    def _invalidate_quietly(self) -> None:
        self._deadline = -math.inf
        self._token = object()
        self._seq = 0
        self._acked = 0
        self._gate_id = None

    def _ack_if_drained(self) -> None:
        """Acknowledge the view's sequence once no permit on what it silenced is in flight.

        Cumulative: one number covers every change up to it. Not durable (a lost ack only
        makes an archive wait longer), so a failure is logged and retried next time.
        """
        gate_id, seq = self._gate_id, self._seq
        if gate_id is None or seq <= self._acked or self._table is None:
            return
        if self._ack_waiting:
            # Permits hash by identity: whether these very permits are still in their block.
            live = self._live
            self._ack_waiting = [p for p in self._ack_waiting if p in live]
            if self._ack_waiting:
                return  # not drained yet: the next probe looks again
        try:
            if not self._table.ack(gate_id, seq):
                return  # declared dead: the next refresh re-registers
        except Exception as e:
            log.debug("delivery gate: ack failed (%s); retrying", e)
            return
        self._acked = seq

    def _deregister(self) -> None:
        gate_id, self._gate_id = self._gate_id, None
        if gate_id is None or self._table is None:
            return
        try:
            self._table.deregister(gate_id)
        except Exception as e:
            log.warning("delivery gate: deregistering failed (%s); its lease will lapse", e)

    def _pull(self) -> None:
        """Probe the store's version; on change read what changed since our sequence."""
        reader = self._open_reader()
        # The token is read before the changes: a commit landing between the two is in the
        # read or changes the token again, so the next probe reads it. Never missed.
        # (SQLite's version_token first checks that the path still names the file it
        # opened, raising StoreReplacedError otherwise: see _fail.)
        token = reader.version_token()
        if token != self._token:
            batch: ChangeBatch | GateRowBatch
            silenced: set[str]
            if self._gate_rows is not None:
                batch = self._gate_rows(self._seq)
            else:
                batch = reader.changes_since(self._seq)  # type: ignore[attr-defined]
            if batch.seq < self._seq:
                # This gate's reads are serial (under the refresh lock), and a live store's
                # sequence never goes back: this one was restored in place (the backup API).
                # Never install the older view; rows changed after the backup would be
                # missed by a delta from our sequence: deny, and load it whole next time.
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
                # What this view silenced: permits on these must drain before the ack.
                silenced = {r[0] for r in batch.rows if r[1] != _RUNNING} if self._live else set()
            else:
                self._snapshot.apply(batch.campaigns, batch.segments)
                silenced = {c.id for c in batch.campaigns if c.state is not State.ACTIVE_RUNNING}
            if silenced and self._live:
                # The permits that may have been admitted on the old view: in flight now
                # (a permit registers before it decides; set.copy() is one C call, a
                # consistent snapshot). Later ones decide on the installed view: denied.
                self._ack_waiting.extend(p for p in self._live.copy() if _on(p, silenced))
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
        # Our row's ack was of the other file's sequence: register anew (acked 0) before the
        # reload, so no archiver on the restored file counts it (see wait_for_gates' ceiling).
        self._deregister()
        self._acked = 0

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
        renew_at = time.monotonic()  # the constructor refreshed; renew one period later
        first = True
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                if first:
                    renew_at = now + self._period()
                    first = False
                elif now >= renew_at or self._failing:
                    self.refresh()
                    renew_at = time.monotonic() + self._period()
                else:
                    self.probe()
                if len(self._results) >= FLUSH_AT or time.monotonic() - last_flush >= _FLUSH_EVERY:
                    last_flush = time.monotonic()
                    self._flush_quietly()
                left = max(0.0, renew_at - time.monotonic())
                wait = getattr(self._reader, "wait", None)
                if callable(wait) and not self._failing:
                    # PostgreSQL's LISTEN/NOTIFY may wake us early (then we probe);
                    # correctness never depends on it (a lost notification just means
                    # waiting out the period). Waited in slices so that close() is not
                    # held up for a whole period.
                    self._wait_for_notice(wait, left)
                elif self._gate_id is not None and not self._failing:
                    self._stop.wait(min(PROBE, left))
                else:
                    self._stop.wait(left)
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
        if self._table is not None and self._table is not self.registry.gate_table():
            # A table on the reader's connection goes with it (the row stays ours).
            self._table = None
            self._table_known = False
        if reader is not None:
            try:
                reader.close()
            except Exception:
                log.debug("closing the reader failed", exc_info=True)
