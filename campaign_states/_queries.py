"""Paged, filtered reads for operator screens: campaigns and history across campaigns.

Both page by a cursor (keyset paging), never an offset, so page 2,000 of 100,000 campaigns
costs what page 1 does: campaigns by id (``after`` the last id shown), history by the
store's global sequence number (``after`` the last seq shown).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ._lifecycle import State, Trigger
from ._records import Campaign, HistoryEntry
from ._validation import MAX_ID_LENGTH, check_id
from .exceptions import InvalidFieldError, InvalidValueError

__all__ = [
    "HISTORY_TRIGGERS",
    "MAX_PAGE",
    "CampaignQuery",
    "HistoryQuery",
    "ascii_lower",
    "matches_campaign",
    "matches_history",
]

#: The most rows one page may ask for.
MAX_PAGE = 1000

#: Every value `HistoryEntry.trigger` can take: ``create``, ``edit`` and each trigger.
HISTORY_TRIGGERS = ("create", "edit", *(t.value for t in Trigger))

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """``text`` with A-Z lowered and nothing else changed (what every store can index on)."""
    return text.translate(_ASCII_LOWER)


def _limit(_inst: object, _attr: object, value: Any) -> None:
    if type(value) is not int or not 1 <= value <= MAX_PAGE:
        raise InvalidValueError(f"limit must be an int from 1 to {MAX_PAGE}, not {value!r:.40}.")


def _optional_id(kind: str) -> Callable[[object, object, Any], None]:
    def check(_inst: object, _attr: object, value: Any) -> None:
        if value is not None:
            check_id(value, kind)

    return check


def _states(value: object) -> frozenset[State] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidValueError(f"states must be a collection of states, not {value!r:.40}.")
    out: set[State] = set()
    for v in value:
        if isinstance(v, State):
            out.add(v)
        elif type(v) is str and v in State._value2member_map_:
            out.add(State(v))
        else:
            raise InvalidValueError(
                f"Unknown state {v!r:.40}: use one of {', '.join(s.value for s in State)}."
            )
    if not out:
        raise InvalidValueError("states is empty: pass None for every state.")
    return frozenset(out)


def _text(_inst: object, _attr: object, value: Any) -> None:
    if value is None:
        return
    if type(value) is not str:
        raise InvalidFieldError(f"text must be a str, not {type(value).__name__}.")
    if not 0 < len(value) <= MAX_ID_LENGTH:
        raise InvalidValueError(f"text must be 1 to {MAX_ID_LENGTH} characters.")


@attrs.frozen(kw_only=True)
class CampaignQuery:
    """Which campaigns one page shows, ordered by id.

    Attributes:
        states: Only campaigns in one of these states (None: every state).
        segment: Only campaigns targeting this segment id.
        text: Only campaigns whose id or name contains this, ignoring the case of A-Z.
        after: Only ids after this one (the last id of the previous page).
        limit: At most this many (1 to `MAX_PAGE`).
    """

    states: frozenset[State] | None = attrs.field(default=None, converter=_states)
    segment: str | None = attrs.field(default=None, validator=_optional_id("segment"))
    text: str | None = attrs.field(default=None, validator=_text)
    after: str | None = attrs.field(default=None, validator=_optional_id("campaign"))
    limit: int = attrs.field(default=50, validator=_limit)


def matches_campaign(q: CampaignQuery, c: Campaign) -> bool:
    """Whether ``c`` belongs in ``q``'s results, cursor included (the reference semantics)."""
    if q.after is not None and not c.id > q.after:
        return False
    if q.states is not None and c.state not in q.states:
        return False
    if q.segment is not None and q.segment not in c.segments:
        return False
    if q.text is not None:
        needle = ascii_lower(q.text)
        return needle in ascii_lower(c.id) or needle in ascii_lower(c.name)
    return True


def _trigger(_inst: object, _attr: object, value: Any) -> None:
    if value is not None and (type(value) is not str or value not in HISTORY_TRIGGERS):
        raise InvalidValueError(
            f"Unknown trigger {value!r:.40}: use one of {', '.join(HISTORY_TRIGGERS)}."
        )


def _actor(_inst: object, _attr: object, value: Any) -> None:
    if value is not None and type(value) is not str:
        raise InvalidFieldError(f"actor must be a str or None, not {type(value).__name__}.")


def _time(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidValueError(f"{attr.name} must be a finite number (UNIX seconds).")


def _seq(_inst: object, _attr: object, value: Any) -> None:
    if value is not None and (type(value) is not int or value < 0):
        raise InvalidValueError(f"after must be a non-negative int (a seq), not {value!r:.40}.")


@attrs.frozen(kw_only=True)
class HistoryQuery:
    """Which history entries, across every campaign, one page shows.

    Attributes:
        actor: Only entries recorded for this actor (exact).
        trigger: Only this trigger (one of `HISTORY_TRIGGERS`).
        campaign: Only this campaign id.
        since: Only entries at or after this wall time (UNIX seconds).
        until: Only entries before this wall time.
        after: The cursor: the seq of the last entry of the previous page; the page holds
            entries after it in the page's order (higher seqs oldest-first, lower newest-first).
        limit: At most this many (1 to `MAX_PAGE`).
        newest_first: Order by seq descending instead of ascending.
    """

    actor: str | None = attrs.field(default=None, validator=_actor)
    trigger: str | None = attrs.field(default=None, validator=_trigger)
    campaign: str | None = attrs.field(default=None, validator=_optional_id("campaign"))
    since: float | None = attrs.field(default=None, validator=_time)
    until: float | None = attrs.field(default=None, validator=_time)
    after: int | None = attrs.field(default=None, validator=_seq)
    limit: int = attrs.field(default=100, validator=_limit)
    newest_first: bool = attrs.field(default=False)

    def __attrs_post_init__(self) -> None:
        if type(self.newest_first) is not bool:
            raise InvalidFieldError("newest_first must be a bool.")


def matches_history(q: HistoryQuery, e: HistoryEntry) -> bool:
    """Whether ``e`` belongs in ``q``'s results, cursor included (the reference semantics)."""
    if q.after is not None and not (e.seq < q.after if q.newest_first else e.seq > q.after):
        return False
    return (
        (q.actor is None or e.actor == q.actor)
        and (q.trigger is None or e.trigger == q.trigger)
        and (q.campaign is None or e.campaign_id == q.campaign)
        and (q.since is None or e.time >= q.since)
        and (q.until is None or e.time < q.until)
    )
