"""Every error the delivery gate raises.

The tree::

    DeliveryGateError
    ├── DeliveryBlockedError          require() was denied; carries the Decision
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
        deliveries: What was not recorded; pass them to ``Registry.record_results`` later.
        in_flight: Permits still inside their block when the gate closed (not counted).
    """

    def __init__(self, deliveries: Sequence[Delivery], in_flight: int, cause: str) -> None:
        self.deliveries = tuple(deliveries)
        self.in_flight = in_flight
        super().__init__(
            f"The gate closed with {sum(d.count for d in self.deliveries)} deliveries not "
            f"recorded and {in_flight} permit(s) still in flight ({cause}). Record "
            "`error.deliveries` with Registry.record_results() once the store is back."
        )
