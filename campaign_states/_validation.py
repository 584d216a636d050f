"""Input checks that run before any store sees a value.

sqlite3 matches the int 5 to the text '5' and raises OverflowError on 2**63, so wrong types
are refused here, not coerced there.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from typing import Protocol, TypeVar

from .exceptions import (
    BulkLimitError,
    InvalidChannelError,
    InvalidFieldError,
    InvalidIdError,
    InvalidIdTypeError,
    InvalidSettingsError,
    InvalidTextError,
    TextTooLongError,
)

MAX_ID_LENGTH = 128

# Default size limits of a campaign's (or segment's) name, its content and an actor; see
# the README's "Limits" for why these values. The option of `open_registry` sets each.
NAME_LIMIT = 200  # characters: a display name, never a body
ACTOR_LIMIT = 254  # characters: the longest valid email address (RFC 5321, errata 1690)
CONTENT_LIMIT = 128 * 1024  # UTF-8 bytes: above Gmail's 102 KB clipping point

E = TypeVar("E", bound=enum.Enum)


# C0, DEL and C1 controls: they break logs, terminals and our \x1f-joined columns. Lone
# surrogates ('\ud800', or '\udcff' from a non-UTF-8 argv byte): no store can encode them.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]").search
# In names, content and actors: NUL (PostgreSQL text cannot hold it) and lone surrogates.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]").search


def well_formed_id(value: str) -> bool:
    """Whether a ``str`` follows the id rules: 1 to 128 characters, no control characters
    or lone surrogates, no leading or trailing whitespace.

    The registry refuses ids that break them (`InvalidIdError`) and the gate denies them
    (INVALID_REQUEST): one rule, this function.
    """
    # isprintable() is False for every control character and surrogate, so the common case
    # costs one C call; only ids holding other non-printables (e.g. U+00A0) take the regex.
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
        InvalidIdError: It is empty, too long, or holds control characters, lone
            surrogates or surrounding whitespace.
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
    if well_formed_id(value):
        return value
    if not value or len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(
            f"A {kind} id must be 1 to {MAX_ID_LENGTH} characters, got {len(value)}."
        )
    raise InvalidIdError(
        f"A {kind} id must not hold control characters, lone surrogates or surrounding "
        f"spaces: {value!r:.60}."
    )


def check_ids(values: object, kind: str = "campaign") -> list[str]:
    """Check an iterable of ids (not a single str, which would iterate its characters)."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidIdTypeError(
            f"Expected a collection of {kind} ids, not {type(values).__name__}."
        )
    out = list(values)
    for i, v in enumerate(out):
        if type(v) is not str or not well_formed_id(v):
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
        if type(v) is not str or not well_formed_id(v):
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


def check_limit(name: str, value: object) -> int:
    """A size limit: a positive int (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSettingsError(f"{name} must be a positive int, not {value!r:.40}.")
    return value


def check_text(field: str, value: object, limit: int, option: str, *, in_bytes: bool) -> str:
    """Return ``value`` if it is a ``str`` a store can hold within ``limit``.

    The size is in characters, or in UTF-8 bytes when ``in_bytes`` (message content: what
    a mail or push provider counts). Checked before any store work.

    Raises:
        InvalidFieldError: Not a ``str``.
        TextTooLongError: Over ``limit``; names ``option``, which raises it.
        InvalidTextError: It holds a NUL or a lone surrogate.
    """
    if type(value) is not str:
        raise InvalidFieldError(f"{field} must be a str, not {type(value).__name__}.")
    size = len(value)
    # A UTF-8 character is at most 4 bytes: only a long text needs encoding to be measured.
    if in_bytes and size * 4 > limit:
        size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        unit = "bytes (UTF-8)" if in_bytes else "characters"
        raise TextTooLongError(field, size, limit, unit, option)
    bad = _UNSTORABLE(value)
    if bad is not None:
        what = "a NUL character" if bad.group() == "\x00" else "a lone surrogate"
        raise InvalidTextError(
            f"The {field} holds {what} at index {bad.start()} ({bad.group()!r}), which no "
            "store can hold; nothing was done. Remove it (a surrogate usually means text "
            "decoded with errors='surrogateescape')."
        )
    return value


class TextLimits(Protocol):
    """What `check_field_text` and `check_actor` read: a registry's size limits."""

    name_limit: int
    content_limit: int
    actor_limit: int


def check_field_text(limits: TextLimits, field: str, value: object) -> str:
    """A campaign's or segment's ``name``, or a campaign's ``content``, within its limit."""
    if field == "content":
        return check_text("content", value, limits.content_limit, "content_limit", in_bytes=True)
    return check_text(field, value, limits.name_limit, "name_limit", in_bytes=False)


def check_actor(limits: TextLimits, actor: object) -> None:
    """An actor: None, or a str within ``actor_limit``."""
    if actor is None:
        return
    if type(actor) is not str:
        raise InvalidFieldError(f"actor must be a str or None, not {type(actor).__name__}.")
    check_text("actor", actor, limits.actor_limit, "actor_limit", in_bytes=False)
