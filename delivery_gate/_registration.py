"""A gate's row in the store's gate table (DESIGN 2.1): register, heartbeat, acknowledge."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from campaign_states import GateTable, Registry
from campaign_states.stores import Reader

if TYPE_CHECKING:
    from ._inflight import InFlight
    from ._permit import Permit

__all__ = ["Registration"]

log = logging.getLogger("delivery_gate")


class Registration:
    """What archivers in other processes know of this gate, and what it has acknowledged.

    An archiver reads the gate table after its commit and waits for each live gate's ack
    of its sequence, or else for the gate's lease to be certainly over. Driven by the
    `Refresher`, under its lock.

    Args:
        registry: The registry whose store holds the table.
        reader: Opens (or returns) the refresher's reader, whose connection may carry the
            table.
        in_flight: The gate's permits (their count goes into each heartbeat).

    Attributes:
        gate_id: The id this gate registered under (None until then, or once deregistered).
        waiting: Permits that may have been admitted on a view since silenced: the ack
            waits until they have left their blocks.
    """

    def __init__(
        self, registry: Registry, reader: Callable[[], Reader], in_flight: InFlight
    ) -> None:
        self._registry = registry
        self._reader = reader
        self._in_flight = in_flight
        self._table: GateTable | None = None
        self._table_known = False
        self.gate_id: str | None = None
        self._acked = 0
        self.waiting: list[Permit] = []

    def table(self) -> GateTable | None:
        """The gate table (None on a store no other process reads: memory)."""
        if not self._table_known:
            table = self._registry.gate_table()
            if table is not None:
                # Through the gate's own reader connection when it offers one (PostgreSQL:
                # one connection per gate process at rest), else the store's.
                own = getattr(self._reader(), "gate_table", None)
                if callable(own):
                    table = own()
            self._table = table
            self._table_known = True
        return self._table

    def heartbeat(self, lease: float, on_lost: Callable[[], None]) -> None:
        """Register (first) or heartbeat, committed, before the read that follows.

        Registration before the first read: an archiver reads the gate table after its
        commit, so it either sees this gate (and waits for its ack or lease) or this gate
        registered after that commit, and the read sees the change.

        Args:
            lease: The lease in force, for archivers that find no ack.
            on_lost: Called when our row is gone: we were declared dead, so archives
                stopped waiting for us. It drops the view (deny everything) *before* we
                register anew: should registering fail, the gate already denies.
        """
        table = self.table()
        if table is None:
            return  # no other process reads this store (memory): nobody waits for us
        in_flight = len(self._in_flight.live)
        if self.gate_id is not None and table.heartbeat(
            self.gate_id, lease=lease, in_flight=in_flight
        ):
            return
        if self.gate_id is not None:
            log.warning("delivery gate: registration lost (declared dead); re-registering")
            self.gate_id, self._acked = None, 0
            on_lost()
        self.gate_id = table.register(lease=lease, in_flight=in_flight)
        self._acked = 0

    def ack_if_drained(self, seq: int) -> None:
        """Acknowledge ``seq`` once no permit on what it silenced is in flight.

        Cumulative: one number covers every change up to it. Not durable (a lost ack only
        makes an archive wait longer), so a failure is logged and retried next time.
        """
        gate_id = self.gate_id
        if gate_id is None or seq <= self._acked or self._table is None:
            return
        if self.waiting:
            self.waiting = self._in_flight.still_in(self.waiting)
            if self.waiting:
                return  # not drained yet: the next probe looks again
        try:
            if not self._table.ack(gate_id, seq):
                return  # declared dead: the next refresh re-registers
        except Exception as e:
            log.debug("delivery gate: ack failed (%s); retrying", e)
            return
        self._acked = seq

    def deregister(self) -> None:
        """Remove our row: archives stop waiting for us. Never raises."""
        gate_id, self.gate_id = self.gate_id, None
        self._acked = 0
        if gate_id is None or self._table is None:
            return
        try:
            self._table.deregister(gate_id)
        except Exception as e:
            log.warning("delivery gate: deregistering failed (%s); its lease will lapse", e)

    def reader_closed(self) -> None:
        """The reader was closed: a table on its connection goes with it (the row stays
        ours, under the same id)."""
        if self._table is not None and self._table is not self._registry.gate_table():
            self._table = None
            self._table_known = False

    def forget(self) -> None:
        """In a forked child: the parent's row is the parent's. The child registers anew
        (on the store's reopened gate table) before its first read."""
        self._table = None
        self._table_known = False
        self.gate_id = None
        self._acked = 0
        self.waiting = []
