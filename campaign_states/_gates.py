"""Registered gates and acknowledged invalidation (DESIGN.md 2.1): the records and the wait.

Every gate that reads a store from another process registers a row in the store's gate
table before its first read, heartbeats it before every read that extends its lease, and
acknowledges (cumulatively) the sequence its view includes once its permits on the
campaigns that sequence silenced have left their blocks. An archive, after its durable
commit, reads that table and returns as soon as every live gate has acknowledged its
sequence; a gate that has not costs the archive what may remain of its lease, no more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Protocol, runtime_checkable

import attrs

from ._clock import Clock

__all__ = [
    "GateStore",
    "GateTable",
    "RegisteredGate",
    "WaitReport",
    "WaitedGate",
    "wait_for_gates",
]

log = logging.getLogger("campaign_states")

# How often an archive re-reads the gate table while it waits (seconds): the acks' latency
# floor, and the only cost of a pending wait (one small read of a local file or table).
POLL: float = 0.001
# Live gates acknowledge within a few milliseconds (their probe period), so the first
# FAST_FOR seconds poll every POLL; after that only a stalled or dead gate is left, whose
# lease (up to many seconds) is waited out: the period doubles up to POLL_MAX, so such a
# wait reads the table about 40 times a second instead of 1,000.
FAST_FOR: float = 0.02
POLL_MAX: float = 0.025


@attrs.frozen(kw_only=True)
class RegisteredGate:
    """A gate registered in the store (`Registry.gates`).

    Attributes:
        gate_id: A new random id per gate instance (a restarted process is a new gate).
        host: The host name the gate runs on.
        pid: Its process id there.
        started: When it registered (wall clock, seconds since the epoch; for people).
        lease: The lease in force at that gate (seconds).
        heartbeat_age: Seconds since its last committed heartbeat, measured on the store's
            one clock (the host's CLOCK_BOOTTIME for SQLite, the server's for PostgreSQL).
        acked_seq: The store sequence the gate has acknowledged: its view includes every
            change up to it, and its permits on the campaigns they silenced have drained.
        in_flight: Permits in flight at its last heartbeat.
    """

    gate_id: str
    host: str
    pid: int
    started: float
    lease: float
    heartbeat_age: float
    acked_seq: int
    in_flight: int


@attrs.frozen(kw_only=True)
class WaitedGate:
    """A gate an archive did not hear from, and so waited out (or stopped waiting for).

    Attributes:
        gate_id: The gate's id.
        host: Its host.
        pid: Its process id.
        seconds: How long the archive waited for it after reading the gate table.
        acked_seq: What it had acknowledged when the archive stopped waiting.
    """

    gate_id: str
    host: str
    pid: int
    seconds: float
    acked_seq: int


@attrs.frozen(kw_only=True)
class WaitReport:
    """How an archive or stop reached its promise (``result.wait``, `Registry.last_wait`).

    Attributes:
        outcome: ``"acknowledged"``: every live gate acknowledged the change (remote permits
            on those campaigns drained too); ``"lease"``: at least one gate did not, and the
            archive waited until its lease was certainly over (``waited_out`` names them);
            ``"local"``: no other process can read the store (memory), nothing to wait for.
        seq: The store sequence the gates had to acknowledge.
        seconds: How long the call waited after its commit (drain and gates), on the
            store's clock.
        acknowledged: How many registered gates acknowledged (or closed) in time.
        waited_out: The gates waited out, with how long each cost.
        reason: Why the archive fell back to the whole lease without reading the gates
            (the gate table could not be read), else None.
    """

    outcome: str
    seq: int
    seconds: float
    acknowledged: int = 0
    waited_out: tuple[WaitedGate, ...] = ()
    reason: str | None = None


@runtime_checkable
class GateTable(Protocol):
    """**Protocol:** a store's table of registered gates.

    Writes commit before they return and need not be durable (an ack lost in a crash only
    makes an archive wait longer; a heartbeat lost with its host dies with its gate).
    """

    def register(self, *, lease: float, in_flight: int) -> str:
        """Insert a row for a new gate (heartbeat now); commit; return its new id."""

    def heartbeat(self, gate_id: str, *, lease: float, in_flight: int) -> bool:
        """Commit a heartbeat; False if the row is gone (the gate was declared dead)."""

    def ack(self, gate_id: str, seq: int) -> bool:
        """Commit ``acked_seq = max(acked_seq, seq)``; False if the row is gone."""

    def deregister(self, gate_id: str) -> None:
        """Delete the gate's row (it closed: drained, and denies from now on)."""

    def rows(self, gate_ids: Sequence[str] | None = None) -> list[RegisteredGate]:
        """The live gates' rows (or only these), read in one new transaction."""

    def close(self) -> None:
        """Release the connection."""


@runtime_checkable
class GateStore(Protocol):
    """**Protocol (optional):** a store whose gates register (SQLite, PostgreSQL)."""

    def gate_table(self) -> GateTable:
        """The store's gate table (opened once, shared by the registry's users)."""


def _acks(gate: RegisteredGate, seq: int, top: int | None) -> bool:
    return gate.acked_seq >= seq and (top is None or gate.acked_seq <= top)


def wait_for_gates(
    table: GateTable,
    clock: Clock,
    *,
    seq: int,
    wait: float,
    committed: float,
    local: Collection[str] = (),
    ceiling: Callable[[], int] | None = None,
) -> WaitReport:
    """Return once every live gate acknowledged ``seq`` or its lease is certainly over.

    Call after the durable commit of ``seq``. The table is read in a new transaction after
    that commit, so a gate missing from it registered after the commit, and each of its
    reads (which follow its registration) sees ``seq``. A gate's lease is over at the
    latest ``wait`` after its last heartbeat (every view it holds came from a read started
    after a heartbeat, its lease measured from before that heartbeat) and at the latest
    ``committed + wait`` (a view from before the commit was read before it). Heartbeat
    ages are measured by the table on one clock; here only elapsed time on ``clock``
    is added to them, never another host's reading.

    Args:
        table: The store's gate table.
        clock: The archiver's clock (elapsed time only).
        seq: The sequence the gates must acknowledge.
        wait: The store's commit wait (lease + grace, with the clock margin).
        committed: ``clock.now()`` read after the commit returned.
        local: Ids of this process's gates on the archiving registry: they were fenced
            before the commit, applied and drained after it, so they count as acknowledged.
        ceiling: Reads the store's sequence now (SQLite). A gate only ever acknowledges a
            sequence it read from the store, so an ack above the store's sequence read
            *after* the rows is from another incarnation of the file (a backup restored
            over it, in place or by rename) and proves nothing about this one: such a gate
            is waited for like one that has not acknowledged.
    """
    deadline = committed + wait
    rows = table.rows()
    # Read after the rows: an age measured before this instant only makes the bound later.
    read_at = clock.now()
    top = ceiling() if ceiling is not None else None  # after the rows: see `ceiling`
    acknowledged = 0
    pending: dict[str, tuple[RegisteredGate, float]] = {}
    for g in rows:
        if _acks(g, seq, top) or g.gate_id in local:
            acknowledged += 1
        else:
            pending[g.gate_id] = (g, min(deadline, read_at + wait - g.heartbeat_age))
    waited: list[WaitedGate] = []
    period = POLL
    while pending:
        now = clock.now()
        for gid, (g, ends) in list(pending.items()):
            if ends <= now:
                # Its lease is over: whatever view it holds has lapsed (dead or stalled).
                del pending[gid]
                waited.append(
                    WaitedGate(
                        gate_id=g.gate_id,
                        host=g.host,
                        pid=g.pid,
                        seconds=max(0.0, now - read_at),
                        acked_seq=g.acked_seq,
                    )
                )
        if not pending:
            break
        soonest = min(ends for _, ends in pending.values())
        if now - read_at >= FAST_FOR:
            period = min(POLL_MAX, period * 2)
        clock.sleep(max(0.0, min(period, soonest - now)))
        fresh = {g.gate_id: g for g in table.rows(list(pending))}
        seen_at = clock.now()
        top = ceiling() if ceiling is not None else None
        for gid, (_, ends) in list(pending.items()):
            row = fresh.get(gid)
            if row is None or _acks(row, seq, top):
                # Acknowledged, or closed (a closing gate drains, then deregisters).
                del pending[gid]
                acknowledged += 1
            else:
                # A newer heartbeat never extends the bound: reads after it see `seq`.
                pending[gid] = (row, min(ends, seen_at + wait - row.heartbeat_age))
    return WaitReport(
        outcome="lease" if waited else "acknowledged",
        seq=seq,
        seconds=max(0.0, clock.now() - committed),
        acknowledged=acknowledged,
        waited_out=tuple(waited),
    )
