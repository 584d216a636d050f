"""Decisions, their reasons, and the precomputed per-campaign verdict rows the hot path reads.

A gate keeps one dict from campaign id to a *row*: a tuple holding one `Decision` per
channel (indexed by `CHANNEL_INDEX`) and, last, the frozenset of channel keys it admits
(for `filter`). Rows and decisions are interned: every campaign with the same state,
channels and version shares one row, so a million campaigns cost their dict entries and
ids, not a million rows.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from typing import Final, Protocol

import attrs

from campaign_states import CAMPAIGN_LIFECYCLE, Channel, Emission, State

__all__ = [
    "CHANNEL_INDEX",
    "N_CHANNELS",
    "CampaignFields",
    "Decision",
    "Reason",
    "Row",
    "channel_index",
    "decision",
    "deny_row",
    "row_for",
]

# The states that may deliver, from the lifecycle declaration (never restated here).
SENDING: Final = CAMPAIGN_LIFECYCLE.sending


class Reason(enum.Enum):
    """Why a gate admitted or denied."""

    RUNNING = "running"
    STOPPED = "stopped"
    ARCHIVED = "archived"
    SEGMENT_ARCHIVED = "segment_archived"
    CHANNEL_NOT_ENABLED = "channel_not_enabled"
    UNKNOWN_CAMPAIGN = "unknown_campaign"
    INVALID_REQUEST = "invalid_request"
    STALE = "stale"
    STORE_UNAVAILABLE = "store_unavailable"


@attrs.frozen(kw_only=True)
class Decision:
    """What a gate said about one emission.

    A decision is truthy exactly when it admits, so ``if gate.check(...)`` is safe.

    Attributes:
        admitted: Whether the emission may go out.
        reason: ``RUNNING`` when admitted, else why not.
        version: The campaign version the decision was based on (a fencing token a last
            hop can compare with the store's), or ``None`` when no campaign record was
            consulted (unknown, invalid, stale, store unavailable, change in progress).
    """

    admitted: bool
    reason: Reason
    version: int | None = None

    def __bool__(self) -> bool:
        return self.admitted


# Every key a caller may name a channel by: the enum member or its value.
CHANNEL_INDEX: Final[dict[object, int]] = {}
for _i, _ch in enumerate(Channel):
    CHANNEL_INDEX[_ch] = _i
    CHANNEL_INDEX[_ch.value] = _i
N_CHANNELS: Final = len(Channel)
IN_APP_KEYS: Final = frozenset({Channel.IN_APP, Channel.IN_APP.value})


class Row(dict[object, Decision]):
    """A campaign's verdicts: channel key (member and value) -> the admitting `Decision`,
    for the channels it admits only; ``deny`` is the denial for every other channel.

    ``row[channel]`` is the whole hot path; a miss (KeyError) means denied, and the slow
    path reads ``deny``. ``channel in row`` is the whole of ``filter``'s test. Rows are
    interned and shared between campaigns: never mutate one after `_row` built it.
    """

    __slots__ = ("deny",)

    def __init__(self, deny: Decision) -> None:
        super().__init__()
        self.deny = deny


_DECISIONS: dict[tuple[bool, Reason, int | None], Decision] = {}
_ROWS: dict[tuple[Reason, frozenset[Channel], int | None], Row] = {}
# Interned rows only save memory when shared; past this many distinct ones (versions keep
# growing over years) the cache restarts. Rows in use stay referenced by the gates' dicts.
_MAX_INTERNED: Final = 200_000


def decision(admitted: bool, reason: Reason, version: int | None = None) -> Decision:
    """The interned `Decision` for these fields."""
    key = (admitted, reason, version)
    d = _DECISIONS.get(key)
    if d is None:
        if len(_DECISIONS) >= _MAX_INTERNED:
            _DECISIONS.clear()
        d = _DECISIONS[key] = Decision(admitted=admitted, reason=reason, version=version)
    return d


def deny_row(reason: Reason, version: int | None = None) -> Row:
    """A row denying every channel with ``reason``."""
    return _row(reason, frozenset(), version)


class CampaignFields(Protocol):
    """**Protocol:** the fields of a campaign a verdict depends on (a `Campaign` has them;
    so does a row decoded from a `campaign_states.GateRow`)."""

    @property
    def state(self) -> State: ...
    @property
    def archive_cause(self) -> str | None: ...
    @property
    def channels(self) -> frozenset[Channel]: ...
    @property
    def segments(self) -> frozenset[str]: ...
    @property
    def version(self) -> int: ...


def row_for(campaign: CampaignFields, archived_segments: Collection[str]) -> Row:
    """The verdict row for one campaign (a record, or the fields decoded from a row).

    The campaign's own state decides first (archived by a segment's cascade reads
    SEGMENT_ARCHIVED); a running campaign that targets a segment this gate knows is
    archived is denied too, although the registry never lets that happen (defence in depth).
    """
    state = campaign.state
    if state in SENDING:
        if archived_segments and not campaign.segments.isdisjoint(archived_segments):
            reason = Reason.SEGMENT_ARCHIVED
        else:
            reason = Reason.RUNNING
    elif state is State.ARCHIVED:
        reason = Reason.SEGMENT_ARCHIVED if campaign.archive_cause else Reason.ARCHIVED
    else:
        reason = Reason.STOPPED
    return _row(reason, campaign.channels, campaign.version)


def _row(reason: Reason, channels: frozenset[Channel], version: int | None) -> Row:
    key = (reason, channels, version)
    row = _ROWS.get(key)
    if row is not None:
        return row
    if len(_ROWS) >= _MAX_INTERNED:
        _ROWS.clear()
    if reason is Reason.RUNNING:
        row = Row(decision(False, Reason.CHANNEL_NOT_ENABLED, version))
        admit = decision(True, Reason.RUNNING, version)
        for ch in channels:
            row[ch] = row[ch.value] = admit
    else:
        row = Row(decision(False, reason, version))
    _ROWS[key] = row
    return row


def channel_index(channel: object, kind: object) -> int | None:
    """The channel's index for a (channel, kind) pair, or ``None`` if it is malformed.

    An in-app impression is only meaningful on the ``in_app`` channel: naming another
    channel with ``IN_APP_IMPRESSION`` is an invalid request. A MESSAGE may go out on any
    channel the campaign enables, ``in_app`` included (an in-app inbox message).
    """
    try:
        i = CHANNEL_INDEX.get(channel)
    except TypeError:  # unhashable
        return None
    if i is None:
        return None
    try:
        k = _KINDS.get(kind)
    except TypeError:
        return None
    if k is Emission.MESSAGE:
        return i
    if k is Emission.IN_APP_IMPRESSION:
        return i if channel in IN_APP_KEYS else None
    return None


_KINDS: Final[dict[object, Emission]] = {
    **{e: e for e in Emission},
    **{e.value: e for e in Emission},
}
