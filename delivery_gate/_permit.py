"""Permits: an emission in flight, which a local archive waits for."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

from campaign_states import Emission

from ._decision import CHANNEL_INDEX, Decision, Reason, decision
from ._results import slot_of

if TYPE_CHECKING:
    from ._gate import DeliveryGate

__all__ = ["Permit"]

_UNDECIDED = decision(False, Reason.STALE)
_MESSAGE = Emission.MESSAGE


class Permit:
    """One emission, from the decision to the bytes leaving. Use it as a context manager.

    Entering decides (as `DeliveryGate.check` would) and, when admitted, marks the emission
    in flight: an archive or stop made through this process's registry waits for it to
    leave the block (see the guarantee). ``still_valid()`` is the last check before the
    send. Leaving the block cleanly counts one delivery in the campaign's results, unless
    the permit was denied, ``still_valid()`` said no, ``cancel()`` was called, or the block
    raised. A permit is single-use.

    Attributes:
        campaign_id: As passed to `DeliveryGate.permit`.
        channel: As passed.
        kind: As passed.
        decision: The `Decision` made on entering (a STALE denial before that).
    """

    __slots__ = ("_gate", "_slot", "_spent", "campaign_id", "channel", "decision", "kind")

    def __init__(
        self, gate: DeliveryGate, campaign_id: object, channel: object, kind: object = _MESSAGE
    ) -> None:
        self._gate = gate
        self.campaign_id = campaign_id
        self.channel = channel
        self.kind = kind
        self.decision: Decision = _UNDECIDED
        self._spent = False

    def __enter__(self) -> Permit:
        g = self._gate
        # Registered *before* deciding. A local archive fences, commits, applies, then
        # drains the permits registered at that moment: a permit that decided before the
        # fence is already registered, so the drain waits for it; one that decides after
        # the fence is denied. (Registering after deciding would let an admit made just
        # before the fence escape the drain.)
        g._live.add(self)
        try:
            # The hot path, as in DeliveryGate.check, inlined to save a call.
            # `_fast_kind` is MESSAGE, or a sentinel no kind matches when a decision
            # observer is installed (the observed path is DeliveryGate.check).
            if self.kind is g._fast_kind and g._now() < g._deadline:
                d = g._rows[self.campaign_id][self.channel]  # type: ignore[index]
                slot = CHANNEL_INDEX[self.channel]
            else:
                slot = -1
                d = g.check(self.campaign_id, self.channel, self.kind)
        except Exception:
            slot = -1
            d = g.check(self.campaign_id, self.channel, self.kind)
        self.decision = d
        if d.admitted:
            # Admitted, so the channel and kind are valid: where its count will queue.
            self._slot = slot if slot >= 0 else slot_of(self.channel, self.kind)
        else:
            g._live.discard(self)
            if g._in_flight.draining:
                # An archive, stop or close is waiting for the permits admitted before it.
                # Senders that keep asking (and being denied) would hold the GIL and starve
                # the threads that must finish those sends; yielding here, on the denial
                # path only while a drain waits, lets them run (measured: a drain under 16
                # spinning senders took 0.14-1.3 s without it).
                time.sleep(0)
        return self

    # The three parameters written out (not `*exc`): no tuple packed per permit exit.
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.decision.admitted:
            g = self._gate
            if exc_type is None and not self._spent:
                # Queued before leaving the in-flight set: close() waits for that set to
                # empty and then records the queues, so a delivery is never in neither.
                # The id, not the permit, is queued: permits die here, untracked by GC.
                g._slots[self._slot].append(self.campaign_id)  # type: ignore[arg-type]
            g._live.discard(self)
            self._spent = True

    @property
    def admitted(self) -> bool:
        """Whether the gate admitted this emission on entering."""
        return self.decision.admitted

    @property
    def reason(self) -> Reason:
        """The decision's reason."""
        return self.decision.reason

    @property
    def version(self) -> int | None:
        """The campaign version the admission was based on (a fencing token)."""
        return self.decision.version

    def still_valid(self) -> bool:
        """The last check before the bytes leave: call it, then send at once.

        True only if the permit was admitted, is still inside its block, and the gate
        still admits the same campaign version now (lease valid, not fenced, not stopped,
        archived or edited since). Once it returns False it stays False, and the permit
        is not counted.
        """
        d = self.decision
        if not d.admitted or self._spent:
            return False
        now = self._gate.check(self.campaign_id, self.channel, self.kind)
        if now.admitted and now.version == d.version:
            return True
        self._spent = True
        return False

    def cancel(self) -> None:
        """Nothing was sent: do not count this permit when the block exits."""
        self._spent = True

    def __repr__(self) -> str:
        return (
            f"Permit({self.campaign_id!r:.60}, {self.channel!r:.30}, "
            f"admitted={self.decision.admitted}, reason={self.decision.reason.value})"
        )
