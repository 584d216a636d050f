"""campaign-states: the campaign lifecycle as an explicit state machine.

Archived or stopped campaigns can never deliver: pair this package with `delivery_gate`.
"""

from __future__ import annotations

from ._clock import Clock, FakeClock, SystemClock
from ._lifecycle import (
    CAMPAIGN_LIFECYCLE,
    SEGMENT_LIFECYCLE,
    Lifecycle,
    SegmentState,
    SegmentTrigger,
    State,
    Trigger,
)
from ._listeners import ChangeListener
from ._open import open_registry, open_store
from ._outcomes import BulkResult, ItemOutcome, Outcome, SegmentChange, TransitionResult
from ._records import Campaign, Channel, Delivery, Emission, HistoryEntry, Results, Segment
from ._registry import Registry
from ._store import LeaseSettings

__all__ = [
    "BulkResult",
    "CAMPAIGN_LIFECYCLE",
    "Campaign",
    "ChangeListener",
    "Channel",
    "Clock",
    "Delivery",
    "Emission",
    "FakeClock",
    "HistoryEntry",
    "ItemOutcome",
    "LeaseSettings",
    "Lifecycle",
    "Outcome",
    "Registry",
    "Results",
    "SEGMENT_LIFECYCLE",
    "Segment",
    "SegmentChange",
    "SegmentState",
    "SegmentTrigger",
    "State",
    "SystemClock",
    "TransitionResult",
    "Trigger",
    "open_registry",
    "open_store",
]


# The store protocols and row types live in `campaign_states.stores` (for backend authors,
# not for every user). The old top-level names keep working, with a warning, for a while.
_MOVED_TO_STORES = frozenset(
    {
        "ChangeBatch",
        "GateReader",
        "GateRow",
        "GateRowBatch",
        "Reader",
        "SetWriteTx",
        "Store",
        "WriteTx",
    }
)


def __getattr__(name: str) -> object:
    if name in _MOVED_TO_STORES:
        import warnings

        from . import stores

        warnings.warn(
            f"campaign_states.{name} moved to campaign_states.stores.{name}; import it from "
            "there (the old name will be removed in a later release).",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(stores, name)
    raise AttributeError(f"module 'campaign_states' has no attribute {name!r}")
