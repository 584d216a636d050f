"""What the registry calls on a gate around its writes."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from campaign_states import Campaign, Segment
from campaign_states._rows import gate_row

if TYPE_CHECKING:
    from ._inflight import InFlight
    from ._refresh import Refresher
    from ._snapshot import Snapshot

__all__ = ["Listener"]


class Listener:
    """What the registry calls around its writes (a `campaign_states.ChangeListener`).

    It fences and applies on the gate's view, drains the gate's permits in flight, and
    answers with the refresher's registration. It must not raise into the registry: on an
    unexpected error the gate fails closed (the refresher denies everything until its next
    successful refresh re-reads the store).
    """

    def __init__(self, snapshot: Snapshot, refresher: Refresher, in_flight: InFlight) -> None:
        self._snapshot = snapshot
        self._refresher = refresher
        self._in_flight = in_flight

    @property
    def gate_id(self) -> str | None:
        """The id the gate registered under: the registry's own archives fence, apply
        and drain this gate in-process, so they need not wait for its ack."""
        return self._refresher.registration.gate_id

    def fence(self, campaign_ids: Collection[str]) -> None:
        try:
            self._snapshot.fence(campaign_ids)
        except Exception:
            self._refresher.invalidate("fence failed")

    def unfence(self, campaign_ids: Collection[str]) -> None:
        try:
            self._snapshot.unfence(campaign_ids)
        except Exception:
            self._refresher.invalidate("unfence failed")

    def apply(self, campaigns: Sequence[Campaign], segments: Sequence[Segment]) -> None:
        try:
            # As rows, the refresher's form: one loop decides both paths' verdicts.
            self._snapshot.apply([gate_row(c) for c in campaigns], segments)
        except Exception:
            self._refresher.invalidate("apply failed")

    def drain(self, campaign_ids: Collection[str], timeout: float) -> Collection[str]:
        try:
            return self._in_flight.drain(campaign_ids, timeout)
        except Exception:
            return set(campaign_ids)
