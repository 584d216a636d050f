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
from ._store import (
    ChangeBatch,
    GateReader,
    GateRow,
    GateRowBatch,
    LeaseSettings,
    Reader,
    SetWriteTx,
    Store,
    WriteTx,
)
from ._validation import well_formed_id

__all__ = [
    "AsyncRegistry",
    "BulkResult",
    "CAMPAIGN_LIFECYCLE",
    "Campaign",
    "CampaignQuery",
    "ChangeBatch",
    "ChangeListener",
    "Channel",
    "Clock",
    "Delivery",
    "Emission",
    "FakeClock",
    "GateReader",
    "GateRow",
    "GateRowBatch",
    "GateStore",
    "GateTable",
    "HistoryEntry",
    "HistoryQuery",
    "ItemOutcome",
    "LeaseSettings",
    "Lifecycle",
    "Outcome",
    "Reader",
    "RegisteredGate",
    "Registry",
    "Results",
    "SEGMENT_LIFECYCLE",
    "Segment",
    "SegmentChange",
    "SegmentState",
    "SegmentTrigger",
    "SetWriteTx",
    "State",
    "Store",
    "SystemClock",
    "TransitionResult",
    "Trigger",
    "WaitReport",
    "WaitedGate",
    "WriteTx",
    "open_async_registry",
    "open_registry",
    "open_store",
    "well_formed_id",
]
