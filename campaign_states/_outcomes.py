"""What lifecycle calls return: single changes, bulk outcomes, segment cascades."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping

import attrs

from ._gates import WaitReport
from ._lifecycle import State
from ._records import Campaign, Segment
from .exceptions import CampaignStateError

__all__ = ["BulkResult", "ItemOutcome", "Outcome", "SegmentChange", "TransitionResult"]


class Outcome(enum.Enum):
    """What happened to one id of a bulk action."""

    __hash__ = object.__hash__  # as State: members are singletons

    CHANGED = "changed"
    UNCHANGED = "unchanged"
    REFUSED = "refused"
    NOT_FOUND = "not_found"


@attrs.frozen(kw_only=True)
class TransitionResult:
    """The outcome of one trigger on one campaign.

    Attributes:
        campaign: The campaign after the call.
        changed: False when the trigger's target already held (a safe retry).
        previous: The state before the call.
        wait: For a stop or an archive, how its promise was reached (`WaitReport`: every
            live gate acknowledged, or which gates were waited out); else None.
    """

    campaign: Campaign
    changed: bool
    previous: State
    wait: WaitReport | None = attrs.field(default=None, eq=False)


@attrs.frozen(kw_only=True)
class ItemOutcome:
    """One id's outcome in a bulk action.

    Attributes:
        id: The id as asked.
        outcome: Changed, unchanged, refused or not found.
        reason: Why it was refused (the error message), else ``None``.
        campaign: The campaign after the call, when it exists.
        error: The error a single call would have raised, when refused.
    """

    id: str
    outcome: Outcome
    reason: str | None = None
    campaign: Campaign | None = None
    error: CampaignStateError | None = attrs.field(default=None, eq=False, repr=False)


# (outcome, campaign after, refusal): what the registry records per id; `ItemOutcome`s
# are built from it on access, so a 100,000-id bulk call does not build 100,000 of them.
OutcomeRow = tuple[Outcome, Campaign | None, CampaignStateError | None]


class BulkResult(Mapping[str, ItemOutcome]):
    """Per-id outcomes of a bulk action, in the order the ids were first named.

    It is a read-only mapping from id to `ItemOutcome`; ``ids(Outcome.CHANGED)`` lists the
    ids with one outcome. ``wait`` is, for ``stop_many`` and ``archive_many``, how the
    promise was reached (`WaitReport`), else None.
    """

    __slots__ = ("_rows", "wait")

    def __init__(self, rows: Mapping[str, OutcomeRow], *, wait: WaitReport | None = None) -> None:
        self._rows = rows
        self.wait = wait

    def __getitem__(self, key: str) -> ItemOutcome:
        outcome, campaign, error = self._rows[key]
        return ItemOutcome(
            id=key,
            outcome=outcome,
            campaign=campaign,
            error=error,
            reason=None if error is None else str(error),
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        counts = ", ".join(f"{k.value}={v}" for k, v in self.counts().items() if v)
        return f"BulkResult({counts or 'empty'})"

    def ids(self, outcome: Outcome) -> list[str]:
        """The ids whose outcome is ``outcome``, in request order."""
        return [k for k, v in self._rows.items() if v[0] is outcome]

    def counts(self) -> dict[Outcome, int]:
        """How many ids had each outcome."""
        out = dict.fromkeys(Outcome, 0)
        for v in self._rows.values():
            out[v[0]] += 1
        return out


@attrs.frozen(kw_only=True)
class SegmentChange:
    """The outcome of archiving or unarchiving a segment.

    Attributes:
        segment: The segment after the call (unchanged on a dry run).
        changed: Whether the segment's state changed.
        campaign_ids: Campaigns archived by the cascade (or, on a dry run, that would be);
            on unarchive with ``restore_campaigns``, the campaigns restored.
        dry_run: True when nothing was written.
        wait: For an archive, how its promise was reached (`WaitReport`); else None.
    """

    segment: Segment
    changed: bool
    campaign_ids: tuple[str, ...]
    dry_run: bool = False
    wait: WaitReport | None = attrs.field(default=None, eq=False)
