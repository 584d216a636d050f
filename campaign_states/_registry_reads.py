"""Reads and queries behind `Registry`: listing, counting, paging (arguments checked here)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._lifecycle import State
from ._queries import CampaignQuery
from ._records import Campaign
from .exceptions import InvalidIdError, InvalidIdTypeError, InvalidValueError

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["campaigns", "count", "find_campaigns"]


def campaigns(
    reg: Registry,
    state: State | str | None,
    segment: str | None,
    limit: int | None,
    after: str | None,
) -> list[Campaign]:
    wanted, after = _list_args(reg, state, segment, after)
    if limit is not None and (type(limit) is not int or limit < 1):
        raise InvalidValueError(f"limit must be an int >= 1 (or None for all), not {limit!r}.")
    return reg.store.list_campaigns(wanted, segment, limit=limit, after=after)


def count(reg: Registry, state: State | str | None, segment: str | None, after: str | None) -> int:
    wanted, after = _list_args(reg, state, segment, after)
    return reg.store.count_campaigns(wanted, segment, after=after)


def find_campaigns(
    reg: Registry,
    *,
    states: Iterable[State | str] | None,
    segment: str | None,
    text: str | None,
    after: str | None,
    limit: int,
) -> list[Campaign]:
    query = CampaignQuery(states=states, segment=segment, text=text, after=after, limit=limit)
    if segment is not None:
        reg.get_segment(segment)
    return reg.store.find_campaigns(query)


def _list_args(
    reg: Registry, state: State | str | None, segment: str | None, after: object
) -> tuple[State | None, str | None]:
    wanted = _state(state) if state is not None else None
    if segment is not None:
        reg.get_segment(segment)
    if after is None:
        return wanted, None
    if not isinstance(after, str):
        raise InvalidIdTypeError(
            f"after must be a campaign id (a str), not {type(after).__name__}: {after!r}."
        )
    # A str subclass is read as its text (str.__str__ copies it to an exact str); a
    # lone surrogate cannot be sent to a SQL store, and no id holds one.
    text = str.__str__(after)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidIdError(f"after holds a lone surrogate: {after!r}.") from None
    return wanted, text


def _state(value: object) -> State:
    if isinstance(value, State):
        return value
    if type(value) is str:
        try:
            return State(value)
        except ValueError:
            pass
    raise InvalidValueError(
        f"Unknown state {value!r:.40}: use one of {', '.join(s.value for s in State)}."
    )
