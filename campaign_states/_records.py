"""Records: frozen attrs values that the machine decides on and the store persists."""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from typing import Any

import attrs

from ._lifecycle import SegmentState, State
from ._validation import check_channels, check_id, check_ids
from .exceptions import InvalidFieldError, InvalidValueError

__all__ = [
    "Campaign",
    "Channel",
    "Delivery",
    "Emission",
    "HistoryEntry",
    "Results",
    "Segment",
    "campaign_after_transition",
    "moved",
    "slot_setters",
]

# Per call: totals then stay far inside a signed 64-bit column (sqlite3 raises OverflowError,
# not a database error, on 2**63).
MAX_DELIVERY_COUNT = 2**31 - 1


class Channel(enum.Enum):
    """Where a campaign's messages go."""

    __hash__ = object.__hash__  # as State: members are singletons

    EMAIL = "email"
    PUSH = "push"
    SMS = "sms"
    WEBHOOK = "webhook"
    IN_APP = "in_app"


class Emission(enum.Enum):
    """What a pipeline emits: a message, or an in-app impression."""

    __hash__ = object.__hash__  # as State: members are singletons

    MESSAGE = "message"
    IN_APP_IMPRESSION = "in_app_impression"


def _channels(value: object) -> frozenset[Channel]:
    return check_channels(value, Channel)


def _one_channel(value: object) -> Channel:
    (channel,) = check_channels([value], Channel)
    return channel


def _emission(value: object) -> Emission:
    if isinstance(value, Emission):
        return value
    if type(value) is str:
        try:
            return Emission(value)
        except ValueError:
            pass
    raise InvalidValueError(
        f"Unknown emission kind {value!r:.40}: use one of {', '.join(e.value for e in Emission)}."
    )


def _segment_id(value: object) -> str:
    return check_id(value, "segment")


def _segments(value: object) -> frozenset[str]:
    return frozenset(check_ids(value, "segment"))


@attrs.frozen(kw_only=True)
class Campaign:
    """One campaign as stored.

    Attributes:
        id: Unique id (1 to 128 characters, no control characters).
        name: Display name.
        content: The message body or template reference the pipeline renders.
        channels: The channels it may deliver on.
        segments: Ids of the segments it targets.
        state: Its lifecycle state.
        version: Bumped by every change; every write is a compare-and-set on it, and the
            gate hands it out as a fencing token.
        seq: The store's global change sequence number of its last change.
        archive_cause: The segment whose archive cascaded to this campaign, while it is
            archived because of that; ``None`` otherwise.
        state_changed_at: When its state last changed, on the store's clock (seconds).
        created_at: Wall-clock creation time (UNIX seconds).
    """

    id: str = attrs.field(converter=check_id)
    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    content: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    channels: frozenset[Channel] = attrs.field(converter=_channels)
    segments: frozenset[str] = attrs.field(factory=frozenset, converter=_segments)
    state: State = attrs.field(
        default=State.ACTIVE_STOPPED, validator=attrs.validators.instance_of(State)
    )
    version: int = 1
    seq: int = 0
    archive_cause: str | None = None
    state_changed_at: float = 0.0
    created_at: float = 0.0


@attrs.frozen(kw_only=True)
class Segment:
    """A segment: a named audience campaigns target.

    Attributes:
        id: Unique id.
        name: Display name.
        state: ``active`` or ``archived``.
        version: Bumped by every change.
        seq: The store's global change sequence number of its last change.
    """

    id: str = attrs.field(converter=_segment_id)
    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    state: SegmentState = SegmentState.ACTIVE
    version: int = 1
    seq: int = 0


@attrs.frozen(kw_only=True)
class HistoryEntry:
    """One change to a campaign. History is append-only.

    Attributes:
        campaign_id: The campaign changed.
        trigger: ``create``, ``edit``, or a `Trigger` value.
        from_state: State before (``None`` for create).
        to_state: State after.
        actor: Who asked (free text, e.g. an e-mail address), or ``None``.
        cause: Why, when not the actor's direct request: ``segment:<id>`` for a cascade.
        time: Wall-clock time of the change (UNIX seconds).
        seq: The store's global change sequence number.
        version: The campaign's version after the change.
    """

    campaign_id: str
    trigger: str
    from_state: State | None
    to_state: State
    actor: str | None
    cause: str | None
    time: float
    seq: int
    version: int


@attrs.frozen(kw_only=True)
class Results:
    """What a campaign delivered. Survives archive and unarchive.

    Attributes:
        campaign_id: The campaign.
        delivered: Messages delivered, per channel (channels never used are absent).
        impressions: In-app impressions shown.
    """

    campaign_id: str
    delivered: Mapping[Channel, int] = attrs.field(factory=dict)
    impressions: int = 0

    @property
    def total(self) -> int:
        """Messages delivered on every channel, plus impressions."""
        return sum(self.delivered.values()) + self.impressions


@attrs.frozen(kw_only=True)
class Delivery:
    """A count of emissions to add to a campaign's results.

    Attributes:
        campaign_id: The campaign.
        channel: The channel it went out on.
        kind: A message, or an in-app impression.
        count: How many (at least 1).
    """

    campaign_id: str = attrs.field(converter=check_id)
    channel: Channel = attrs.field(converter=_one_channel)
    kind: Emission = attrs.field(default=Emission.MESSAGE, converter=_emission)
    count: int = attrs.field(default=1)

    @count.validator
    def _count_positive(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if type(value) is not int:
            raise InvalidFieldError(f"Delivery count must be an int, not {value!r:.40}.")
        if not 1 <= value <= MAX_DELIVERY_COUNT:
            raise InvalidValueError(
                f"Delivery count must be from 1 to {MAX_DELIVERY_COUNT}, got {value}."
            )


_new = object.__new__


def slot_setters(cls: type) -> dict[str, Any]:
    """Each field's slot setter on a slotted attrs class.

    A slot's descriptor sets the field directly: a third faster than
    ``object.__setattr__`` (no lookup by name), and it bypasses the frozen class's
    refusing ``__setattr__`` too. Only for records built from trusted values.
    """
    out = {}
    for f in attrs.fields(cls):
        descriptor = getattr(cls, f.name)
        assert isinstance(descriptor, types.MemberDescriptorType), f.name
        out[f.name] = descriptor.__set__
    return out


_CS = slot_setters(Campaign)
_S_ID, _S_NAME, _S_CONTENT = _CS["id"], _CS["name"], _CS["content"]
_S_CHANNELS, _S_SEGMENTS, _S_STATE = _CS["channels"], _CS["segments"], _CS["state"]
_S_VERSION, _S_SEQ, _S_CAUSE = _CS["version"], _CS["seq"], _CS["archive_cause"]
_S_CHANGED_AT, _S_CREATED_AT = _CS["state_changed_at"], _CS["created_at"]


def campaign_after_transition(
    c: Campaign,
    *,
    state: State,
    version: int,
    seq: int,
    archive_cause: str | None,
    state_changed_at: float,
) -> Campaign:
    """``c`` after a transition, without re-running validators.

    Only lifecycle fields change, and ``c`` was validated when it was built, so this skips
    ``attrs.evolve`` (whose converters re-check every id): a 100,000-campaign bulk archive
    would otherwise spend most of its time there.
    """
    n = _new(Campaign)
    _S_ID(n, c.id)
    _S_NAME(n, c.name)
    _S_CONTENT(n, c.content)
    _S_CHANNELS(n, c.channels)
    _S_SEGMENTS(n, c.segments)
    _S_STATE(n, state)
    _S_VERSION(n, version)
    _S_SEQ(n, seq)
    _S_CAUSE(n, archive_cause)
    _S_CHANGED_AT(n, state_changed_at)
    _S_CREATED_AT(n, c.created_at)
    return n


# The old name (store modules call it): kept as an alias.
moved = campaign_after_transition
