"""Rows to records and back, shared by the SQL stores.

Rows come from our own schema, already validated when written, so they are turned into
records without re-running validators: loading a million campaigns into a gate, or a
100,000-campaign bulk archive, would otherwise spend most of its time re-checking ids.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, Final, TypeAlias

from ._lifecycle import SegmentState, State
from ._records import Campaign, Channel, Emission, HistoryEntry, Results, Segment, slot_setters

# A campaign as a gate needs it: (id, state value, channels text, segments text, version,
# archive_cause); the texts are `join_ids` of the channel values and of the segment ids.
GateRow: TypeAlias = tuple[str, str, str, str, int, str | None]

# Unit separator: ids can't hold control characters, so it never occurs inside one.
SEP: Final = "\x1f"

_new = object.__new__
_CAMPAIGN_FIELDS: Final = (
    "id",
    "name",
    "content",
    "channels",
    "segments",
    "state",
    "version",
    "seq",
    "archive_cause",
    "state_changed_at",
    "created_at",
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


_STATES: Final = {s.value: s for s in State}
_SEGMENT_STATES: Final = {s.value: s for s in SegmentState}


_CS = slot_setters(Campaign)
(_S_ID, _S_NAME, _S_CONTENT, _S_CHANNELS, _S_SEGMENTS, _S_STATE, _S_VERSION, _S_SEQ,
 _S_CAUSE, _S_CHANGED_AT, _S_CREATED_AT) = (_CS[n] for n in _CAMPAIGN_FIELDS)  # fmt: skip


def channels_from_text(text: str) -> frozenset[Channel]:
    """The channel set stored as ``text`` (see `join_ids`); equal texts share one set."""
    return _channels(text)


def ids_from_text(text: str) -> frozenset[str]:
    """The id set stored as ``text`` (see `join_ids`); equal texts share one set."""
    return _segments(text)


def state_from_value(value: str) -> State:
    """The `State` stored as ``value``."""
    return _STATES[value]


@functools.lru_cache(maxsize=4096)
def _channels_text(channels: frozenset[Channel]) -> str:
    return join_ids(ch.value for ch in channels)


@functools.lru_cache(maxsize=65536)
def _ids_text(ids: frozenset[str]) -> str:
    return join_ids(ids)


def gate_row(c: Campaign) -> GateRow:
    """A campaign as a gate row, the same text the SQL stores hold (see `GateRowBatch`)."""
    return (
        c.id, c.state.value, _channels_text(c.channels), _ids_text(c.segments), c.version,
        c.archive_cause,
    )  # fmt: skip


def campaign_from_row(row: Sequence[Any]) -> Campaign:
    """Build a `Campaign` from a trusted row in ``_CAMPAIGN_FIELDS`` order."""
    c = _new(Campaign)
    _S_ID(c, row[0])
    _S_NAME(c, row[1])
    _S_CONTENT(c, row[2])
    _S_CHANNELS(c, _channels(row[3]))
    _S_SEGMENTS(c, _segments(row[4]))
    _S_STATE(c, _STATES[row[5]])
    _S_VERSION(c, row[6])
    _S_SEQ(c, row[7])
    _S_CAUSE(c, row[8])
    _S_CHANGED_AT(c, row[9])
    _S_CREATED_AT(c, row[10])
    return c


def segment_from_row(row: Sequence[Any]) -> Segment:
    """Build a `Segment` from a trusted ``(id, name, state, version, seq)`` row."""
    return Segment(
        id=row[0], name=row[1], state=_SEGMENT_STATES[row[2]], version=row[3], seq=row[4]
    )


def history_from_rows(rows: Iterable[Sequence[Any]]) -> list[HistoryEntry]:
    """History entries from trusted ``(campaign_id, trigger, from_state, to_state, actor,
    cause, time, seq, version)`` rows, in the order given."""
    return [
        HistoryEntry(
            campaign_id=r[0],
            trigger=r[1],
            from_state=State(r[2]) if r[2] else None,
            to_state=State(r[3]),
            actor=r[4],
            cause=r[5],
            time=r[6],
            seq=r[7],
            version=r[8],
        )
        for r in rows
    ]


def results_from_rows(campaign_id: str, rows: Iterable[Sequence[Any]]) -> Results:
    """A campaign's `Results` from ``(channel, kind, count)`` rows."""
    delivered: dict[Channel, int] = {}
    shown = 0
    for channel, kind, count in rows:
        if kind == Emission.IN_APP_IMPRESSION.value:
            shown += count
        elif kind == Emission.MESSAGE.value:
            delivered[Channel(channel)] = delivered.get(Channel(channel), 0) + count
    return Results(campaign_id=campaign_id, delivered=delivered, impressions=shown)
