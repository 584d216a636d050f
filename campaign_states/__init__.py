"""campaign-states: the campaign lifecycle as an explicit state machine.

Archived or stopped campaigns can never deliver: pair this package with `delivery_gate`.
"""

from __future__ import annotations

from ._async import AsyncRegistry, open_async_registry
from ._clock import Clock, FakeClock, SystemClock
from ._gates import GateStore, GateTable, RegisteredGate, WaitedGate, WaitReport
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
from ._queries import CampaignQuery, HistoryQuery
from ._records import Campaign, Channel, Delivery, Emission, HistoryEntry, Results, Segment
from ._registry import Registry
from ._store import LeaseSettings
from ._store import __all__ as _store_names
from ._validation import well_formed_id

__all__ = [
    "AsyncRegistry",
    "BulkResult",
    "CAMPAIGN_LIFECYCLE",
    "Campaign",
    "CampaignQuery",
    "ChangeListener",
    "Channel",
    "Clock",
    "Delivery",
    "Emission",
    "FakeClock",
    "GateStore",
    "GateTable",
    "HistoryEntry",
    "HistoryQuery",
    "ItemOutcome",
    "LeaseSettings",
    "Lifecycle",
    "Outcome",
    "RegisteredGate",
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
    "WaitReport",
    "WaitedGate",
    "open_async_registry",
    "open_registry",
    "open_store",
    "well_formed_id",
]


# The store protocols and row types live in `campaign_states.stores` (for backend authors,
# not for every user). The old top-level names keep working, with a warning, for a while:
# every name `_store` exports (LeaseSettings, still top level, never reaches __getattr__).
_MOVED_TO_STORES = frozenset(_store_names)


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
