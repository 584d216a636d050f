"""Input checks that run before any store sees a value.

sqlite3 matches the int 5 to the text '5' and raises OverflowError on 2**63, so wrong types
are refused here, not coerced there.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from typing import TypeVar

from .exceptions import (
    BulkLimitError,
    InvalidChannelError,
    InvalidIdError,
    InvalidIdTypeError,
    InvalidSettingsError,
)

MAX_ID_LENGTH = 128

E = TypeVar("E", bound=enum.Enum)


# C0, DEL and C1 controls: they break logs, terminals and our \x1f-joined columns.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]").search


def _well_formed(value: str) -> bool:
    # isprintable() is False for every control character, so the common case costs one C
    # call; only ids holding other non-printables (e.g. U+00A0) take the regex.
    return (
        0 < len(value) <= MAX_ID_LENGTH
        and (value.isprintable() or _CONTROL(value) is None)
        and not value[0].isspace()
        and not value[-1].isspace()
    )


def check_id(value: object, kind: str = "campaign") -> str:
    """Return ``value`` (as a plain ``str``) if it is a well-formed id, else raise a typed error.

    Raises:
        InvalidIdTypeError: ``value`` is not a ``str`` (ints, bytes, None, lists...). A
            ``str`` subclass is accepted and returned as the plain ``str`` of its characters.
        InvalidIdError: It is empty, too long, or holds control characters or surrounding
            whitespace.
    """
    if type(value) is not str:
        if not isinstance(value, str):
            raise InvalidIdTypeError(
                f"A {kind} id must be a str, not {type(value).__name__} ({value!r:.40})."
            )
        # The one rule for str subclasses (enum.StrEnum members, numpy.str_...), here and
        # in the gate alike: the id is the plain str of the same characters. str.__str__
        # copies the characters whatever the subclass's own __str__ says (StrEnum and
        # numpy override it); stores and results then only ever see exact str.
        value = str.__str__(value)
    if _well_formed(value):
        return value
    if not value or len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(
            f"A {kind} id must be 1 to {MAX_ID_LENGTH} characters, got {len(value)}."
        )
    raise InvalidIdError(
        f"A {kind} id must not hold control characters or surrounding spaces: {value!r:.60}."
    )


def check_ids(values: object, kind: str = "campaign") -> list[str]:
    """Check an iterable of ids (not a single str, which would iterate its characters)."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidIdTypeError(
            f"Expected a collection of {kind} ids, not {type(values).__name__}."
        )
    out = list(values)
    for i, v in enumerate(out):
        if type(v) is not str or not _well_formed(v):
            out[i] = check_id(v, kind)
    return out


def check_distinct_ids(values: object, limit: int, kind: str = "campaign") -> list[str]:
    """Check ids, fold duplicates (first occurrence order) and refuse more than ``limit``.

    The cap is checked while reading, so an oversized request is refused before any store
    work and without materializing it.

    Raises:
        BulkLimitError: More than ``limit`` distinct ids.
    """
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidIdTypeError(
            f"Expected a collection of {kind} ids, not {type(values).__name__}."
        )
    seen: dict[str, None] = {}
    for v in values:
        if type(v) is not str or not _well_formed(v):
            v = check_id(v, kind)  # noqa: PLW2901 (the normalised id replaces the given one)
        if v not in seen:
            seen[v] = None
            if len(seen) > limit:
                raise BulkLimitError(limit + 1, limit)
    return list(seen)


def check_channels(value: object, enum_type: type[E]) -> frozenset[E]:
    """Turn names or members into a frozenset of channels, refusing unknown ones."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidIdTypeError(f"Expected a collection of channels, not {type(value).__name__}.")
    out = set()
    valid = [m.value for m in enum_type]
    for item in value:
        if isinstance(item, enum_type):
            out.add(item)
        elif type(item) is str and item in valid:
            out.add(enum_type(item))
        else:
            raise InvalidChannelError(item, valid)
    return frozenset(out)


def check_positive_seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A finite, positive number of seconds (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSettingsError(f"{name} must be a number of seconds, not {value!r}.")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise InvalidSettingsError(f"{name} must be a finite number of seconds > 0, not {value!r}.")
    return v
