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
        g = self._gate
        with g._draining_scope():
            try:
                return drain(g._live, campaign_ids, timeout)
            except Exception:
                return set(campaign_ids)


def drain(live: set[Permit], campaign_ids: Collection[str], timeout: float) -> set[str]:
    """Wait until the permits on these campaigns in flight now have left; return those left.

    Called after the fence (and the apply): a permit registered later decides after the
    fence and is denied, so only the permits present at this moment can have been admitted
    on the old view. We wait for exactly those, by identity, and never for the set to be
    empty: under a pool of senders still asking for permits on the silenced campaign the
    set is never empty at a poll (each permit registers before deciding), although every
    one of them is denied.

    Measured in real seconds, whatever the registry's clock: a fake clock does not move
    while another thread finishes its send. Polling (0.2 ms, backing off to 5 ms) keeps
    the permits' exit path free of locks and notifications.
    """
    wanted = set(campaign_ids)
    # set.copy() is one C call under the GIL: a consistent snapshot of the permits
    # registered now. A permit in it that is still deciding will be denied (the fence is
    # up) and leave at once; an admitted one leaves when its block exits.
    waiting: list[Permit] = []
    for p in live.copy():
        try:
            if p.campaign_id in wanted:
                waiting.append(p)
        except TypeError:
            continue  # an unhashable id: never admitted
    end = time.monotonic() + timeout
    pause = 0.0002
    while True:
        # Permits hash by identity: `p in live` is whether this very permit is still in.
        waiting = [p for p in waiting if p in live]
        left = end - time.monotonic()
        if not waiting or left <= 0:
            return {p.campaign_id for p in waiting}  # type: ignore[misc]
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.005)
