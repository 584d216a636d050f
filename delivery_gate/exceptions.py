"""Every error the delivery gate raises.

The tree::

    DeliveryGateError
    ├── DeliveryBlockedError          require() was denied; carries the Decision
    ├── GateClosedOnLoopError (RuntimeError) close() on an event loop: use aclose()
    ├── GateSettingsError (ValueError) a gate setting is out of range
    └── ResultsNotRecordedError       close() could not record some deliveries

``check()``, ``filter()`` and permits never raise for bad input: they deny with a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from campaign_states import Delivery

    from ._decision import Decision

__all__ = [
    "DeliveryBlockedError",
    "DeliveryGateError",
    "GateClosedOnLoopError",
    "GateSettingsError",
    "ResultsNotRecordedError",
]


class DeliveryGateError(Exception):
    """Base of every error this package raises."""


class DeliveryBlockedError(DeliveryGateError):
    """``require()`` was denied.

    Attributes:
        decision: The denial, with its reason and the campaign version it was based on.
        campaign_id: The campaign asked about.
        channel: The channel asked about.
    """

    def __init__(
        self, decision: Decision, campaign_id: object = None, channel: object = None
    ) -> None:
        self.decision = decision
        self.campaign_id = campaign_id
        self.channel = channel
        version = "" if decision.version is None else f" (version {decision.version})"
        super().__init__(
            f"Delivery blocked for campaign {campaign_id!r:.80} on {channel!r:.40}: "
            f"{decision.reason.value}{version}. Do not send."
        )


class GateSettingsError(DeliveryGateError, ValueError):
    """A gate setting is out of range (lease, refresh, timeouts), or longer than the store's."""


class ResultsNotRecordedError(DeliveryGateError):
    """``close()`` could not record every completed delivery.

    Attributes:
        deliveries: What was not recorded because the store failed; pass them to
            ``Registry.record_results`` later.
        in_flight: Permits admitted before the close still inside their block when it gave
            up waiting (not counted). Permits denied meanwhile are never counted here.
        refused: Deliveries the registry refused outright, each with its reason (a retry
            would be refused again, so they were set aside rather than block the others).
    """

    def __init__(
        self,
        deliveries: Sequence[Delivery],
        in_flight: int,
        cause: str,
        refused: Sequence[tuple[Delivery, str]] = (),
    ) -> None:
        self.deliveries = tuple(deliveries)
        self.in_flight = in_flight
        self.refused = tuple(refused)
        extra = (
            f", {sum(d.count for d, _ in self.refused)} refused by the registry "
            f"(e.g. {self.refused[0][1]})"
            if self.refused
            else ""
        )
        super().__init__(
            f"The gate closed with {sum(d.count for d in self.deliveries)} deliveries not "
            f"recorded{extra} and {in_flight} permit(s) still in flight ({cause}). Record "
            "`error.deliveries` with Registry.record_results() once the store is back."
        )


class GateClosedOnLoopError(DeliveryGateError, RuntimeError):
    """``close()`` was called on a thread running an asyncio event loop.

    It would block the loop while it waits for permits held across an ``await``, which
    then could never finish: use ``await gate.aclose()`` or ``async with gate:``. Nothing
    was closed.
    """
