"""Rows to records and back, shared by the SQL stores.

Rows come from our own schema, already validated when written, so they are turned into
records without re-running validators: loading a million campaigns into a gate, or a
100,000-campaign bulk archive, would otherwise spend most of its time re-checking ids.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, Final

from ._lifecycle import SegmentState, State
from ._records import Campaign, Channel, Segment

# Unit separator: ids can't hold control characters, so it never occurs inside one.
SEP: Final = "\x1f"

_new = object.__new__
_set = object.__setattr__
_CAMPAIGN_FIELDS: Final = (
    "id", "name", "content", "channels", "segments", "state", "version", "seq",
    "archive_cause", "state_changed_at", "created_at",
)


def join_ids(values: Iterable[str]) -> str:
    """Join ids (or channel values) in sorted order, so equal sets store equal text."""
    return SEP.join(sorted(values))


@functools.lru_cache(maxsize=4096)
def _channels(text: str) -> frozenset[Channel]:
    return frozenset(Channel(v) for v in text.split(SEP)) if text else frozenset()


@functools.lru_cache(maxsize=65536)
def _segments(text: str) -> frozenset[str]:
    return frozenset(text.split(SEP)) if text else frozenset()


def campaign_from_row(row: Sequence[Any]) -> Campaign:
    """Build a `Campaign` from a trusted row in ``_CAMPAIGN_FIELDS`` order."""
    c = _new(Campaign)
    values = (row[0], row[1], row[2], _channels(row[3]), _segments(row[4]), State(row[5]),
              row[6], row[7], row[8], row[9], row[10])
    for name, value in zip(_CAMPAIGN_FIELDS, values, strict=True):
        _set(c, name, value)
    return c


def segment_from_row(row: Sequence[Any]) -> Segment:
    """Build a `Segment` from a trusted ``(id, name, state, version, seq)`` row."""
    return Segment(id=row[0], name=row[1], state=SegmentState(row[2]), version=row[3], seq=row[4])
