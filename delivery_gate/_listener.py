"""What the registry calls on a gate around its writes, and the drain of permits in flight."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from campaign_states import Campaign, Segment

if TYPE_CHECKING:
    from ._gate import DeliveryGate
    from ._permit import Permit

__all__ = ["Listener", "drain"]


class Listener:
    """What the registry calls around its writes (a `campaign_states.ChangeListener`).

    It must not raise into the registry: on an unexpected error the gate fails closed
    (denies everything until its next successful refresh re-reads the store).
    """

    def __init__(self, gate: DeliveryGate) -> None:
        self._gate = gate

    @property
    def gate_id(self) -> str | None:
        """The id the gate registered under: the registry's own archives fence, apply
        and drain this gate in-process, so they need not wait for its ack."""
        return self._gate._gate_id

    def fence(self, campaign_ids: Collection[str]) -> None:
        try:
            self._gate._snapshot.fence(campaign_ids)
        except Exception:
            self._gate._invalidate("fence failed")

    def unfence(self, campaign_ids: Collection[str]) -> None:
        try:
            self._gate._snapshot.unfence(campaign_ids)
        except Exception:
            self._gate._invalidate("unfence failed")

    def apply(self, campaigns: Sequence[Campaign], segments: Sequence[Segment]) -> None:
        try:
            self._gate._snapshot.apply(campaigns, segments)
        except Exception:
            self._gate._invalidate("apply failed")

    def drain(self, campaign_ids: Collection[str], timeout: float) -> Collection[str]:
        try:
            return drain(self._gate._live, campaign_ids, timeout)
        except Exception:
            return set(campaign_ids)


def drain(live: set[Permit], campaign_ids: Collection[str], timeout: float) -> set[str]:
    """Wait until no permit on these campaigns is in flight; return those still in it.

    Measured in real seconds, whatever the registry's clock: a fake clock does not move
    while another thread finishes its send. Polling (0.2 ms, backing off to 5 ms) keeps
    the permits' exit path free of locks and notifications.
    """
    wanted = set(campaign_ids)
    end = time.monotonic() + timeout
    pause = 0.0002
    while True:
        stuck: set[str] = set()
        # set.copy() is one C call under the GIL: a consistent snapshot of the permits
        # registered now. Permits registered later decide after our fence: denied.
        for p in live.copy():
            try:
                if p.campaign_id in wanted:
                    stuck.add(p.campaign_id)
            except TypeError:
                continue  # an unhashable id: never admitted
        left = end - time.monotonic()
        if not stuck or left <= 0:
            return stuck
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.005)
