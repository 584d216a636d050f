"""Records: frozen attrs values that the machine decides on and the store persists."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from ._lifecycle import SegmentState, State
from ._validation import check_channels, check_id, check_ids

__all__ = [
    "Campaign",
    "Channel",
    "Delivery",
    "Emission",
    "HistoryEntry",
    "Results",
    "Segment",
]


class Channel(enum.Enum):
    """Where a campaign's messages go."""

    EMAIL = "email"
    PUSH = "push"
    SMS = "sms"
    WEBHOOK = "webhook"
    IN_APP = "in_app"


class Emission(enum.Enum):
    """What a pipeline emits: a message, or an in-app impression."""

    MESSAGE = "message"
    IN_APP_IMPRESSION = "in_app_impression"


def _channels(value: object) -> frozenset[Channel]:
    return check_channels(value, Channel)


def _one_channel(value: object) -> Channel:
    (channel,) = check_channels([value], Channel)
    return channel


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

    id: str = attrs.field(validator=lambda _i, _a, v: check_id(v, "campaign"))
    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    content: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    channels: frozenset[Channel] = attrs.field(converter=_channels)
    segments: frozenset[str] = attrs.field(factory=frozenset, converter=_segments)
    state: State = attrs.field(default=State.ACTIVE_STOPPED,
                               validator=attrs.validators.instance_of(State))
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

    id: str = attrs.field(validator=lambda _i, _a, v: check_id(v, "segment"))
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

    campaign_id: str = attrs.field(validator=lambda _i, _a, v: check_id(v, "campaign"))
    channel: Channel = attrs.field(converter=_one_channel)
    kind: Emission = attrs.field(default=Emission.MESSAGE, converter=Emission)
    count: int = attrs.field(default=1)

    @count.validator
    def _count_positive(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if type(value) is not int or value < 1:
            raise ValueError(f"Delivery count must be a positive int, got {value!r}.")
