"""Every error the lifecycle raises.

The tree::

    CampaignStateError
    ├── CampaignNotFoundError (LookupError)
    ├── SegmentNotFoundError (LookupError)
    ├── InvalidIdError (ValueError)
    ├── InvalidIdTypeError (TypeError)
    ├── InvalidChannelError (ValueError)
    ├── InvalidFieldError (TypeError)
    ├── InvalidSettingsError (ValueError)
    ├── InvalidValueError (ValueError)
    ├── InvalidTextError (ValueError)
    │   └── TextTooLongError
    ├── BulkLimitError (ValueError)
    ├── DuplicateIdError (ValueError)
    ├── InvalidTransitionError
    │   ├── CampaignArchivedError
    │   └── SegmentArchivedError
    ├── ConcurrentUpdateError
    ├── DrainTimeoutError (TimeoutError)
    └── StoreError
        ├── StoreBusyError
        ├── StoreFullError
        ├── StoreReadOnlyError
        ├── StoreCorruptError
        │   └── ForeignStoreError
        ├── StoreUnavailableError (ConnectionError)
        │   ├── StoreNotFoundError
        │   └── StoreReplacedError
        └── CommitUnknownError

Foreign exceptions (``transitions.MachineError``, ``sqlite3.Error``, ``psycopg.Error``) are
translated where they arise and never reach a caller.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = [
    "BulkLimitError",
    "CampaignArchivedError",
    "CampaignNotFoundError",
    "CampaignStateError",
    "CommitUnknownError",
    "ConcurrentUpdateError",
    "DrainTimeoutError",
    "DuplicateIdError",
    "ForeignStoreError",
    "InvalidChannelError",
    "InvalidFieldError",
    "InvalidIdError",
    "InvalidIdTypeError",
    "InvalidSettingsError",
    "InvalidTextError",
    "InvalidTransitionError",
    "InvalidValueError",
    "SegmentArchivedError",
    "SegmentNotFoundError",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreError",
    "StoreFullError",
    "StoreNotFoundError",
    "StoreReadOnlyError",
    "StoreReplacedError",
    "StoreUnavailableError",
    "TextTooLongError",
]


class CampaignStateError(Exception):
    """Base of every error this package raises."""


class CampaignNotFoundError(CampaignStateError, LookupError):
    """No campaign has this id."""

    def __init__(self, campaign_id: str) -> None:
        self.campaign_id = campaign_id
        super().__init__(f"Campaign {campaign_id!r} does not exist.")


class SegmentNotFoundError(CampaignStateError, LookupError):
    """No segment has this id."""

    def __init__(self, segment_id: str) -> None:
        self.segment_id = segment_id
        super().__init__(f"Segment {segment_id!r} does not exist: create it first.")


class InvalidIdError(CampaignStateError, ValueError):
    """An id is empty, too long or holds control characters."""


class InvalidIdTypeError(CampaignStateError, TypeError):
    """An id is not a ``str`` (ints, bytes, None and lists are refused, not coerced)."""


class InvalidChannelError(CampaignStateError, ValueError):
    """A channel name is not one of the known channels."""

    def __init__(
        self, channel: object, valid: Iterable[str], *, message: str | None = None
    ) -> None:
        self.channel = channel
        self.valid = tuple(valid)
        super().__init__(
            message or f"Unknown channel {channel!r}: valid channels are {', '.join(self.valid)}."
        )


class InvalidFieldError(CampaignStateError, TypeError):
    """A name, content or actor is not a ``str``."""


class InvalidSettingsError(CampaignStateError, ValueError):
    """A setting (lease, grace, refresh period, bulk cap, busy timeout) is out of range."""


class InvalidValueError(CampaignStateError, ValueError):
    """A value is out of range: an unknown state or emission kind, a bad delivery count."""


class InvalidTextError(CampaignStateError, ValueError):
    """A name, content or actor holds a NUL or a lone surrogate (no store can hold them)."""


class TextTooLongError(InvalidTextError):
    """A name, content or actor is over the registry's size limit; nothing was done.

    Attributes:
        field: ``"name"``, ``"content"`` or ``"actor"``.
        size: Its size, in the limit's unit.
        limit: The limit.
        unit: ``"characters"`` or ``"bytes"`` (UTF-8).
        option: The `campaign_states.open_registry` option that sets the limit.
    """

    def __init__(self, field: str, size: int, limit: int, unit: str, option: str) -> None:
        self.field = field
        self.size = size
        self.limit = limit
        self.unit = unit
        self.option = option
        super().__init__(
            f"The {field} is {size:,} {unit}, over the limit of {limit:,}; nothing was done. "
            f"Shorten it, or open the registry with a larger {option} "
            f"(open_registry(url, {option}=...))."
        )


class BulkLimitError(CampaignStateError, ValueError):
    """A bulk request names more distinct ids than the registry's cap; nothing was done.

    Attributes:
        size: How many distinct ids were counted before the request was refused (the cap
            plus one: counting stops there).
        limit: The cap.
    """

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"Bulk request names more than {limit} distinct ids (the limit); nothing was "
            "done: split it, or raise bulk_limit when opening the registry."
        )


class DuplicateIdError(CampaignStateError, ValueError):
    """A create names an id that already exists."""


class InvalidTransitionError(CampaignStateError):
    """A trigger is impossible from the record's current state.

    Attributes:
        record_id: The campaign (or segment) id.
        trigger: The trigger asked for.
        state: The current state.
        allowed: The triggers that are possible from ``state``.
    """

    def __init__(
        self,
        record_id: str,
        trigger: str,
        state: str,
        allowed: Collection[str],
        *,
        message: str | None = None,
    ) -> None:
        self.record_id = record_id
        self.trigger = trigger
        self.state = state
        self.allowed = tuple(allowed)
        super().__init__(
            message
            or f"Cannot {trigger} {record_id!r}: it is {state}; allowed from {state}: "
            f"{', '.join(self.allowed) or 'nothing'}."
        )


class CampaignArchivedError(InvalidTransitionError):
    """An archived campaign is read-only: unarchive it first."""

    def __init__(
        self, campaign_id: str, action: str = "edit", allowed: Collection[str] = ()
    ) -> None:
        allowed = tuple(allowed) or ("unarchive",)
        super().__init__(
            campaign_id,
            action,
            "archived",
            allowed,
            message=(
                f"Campaign {campaign_id!r} is archived: unarchive it before you {action} it. "
                f"Allowed from archived: {', '.join(allowed)}."
            ),
        )


class SegmentArchivedError(InvalidTransitionError):
    """Resume (or targeting) refused because a segment is archived.

    Attributes:
        segment_ids: The archived segments in the way.
    """

    def __init__(
        self,
        campaign_id: str,
        segment_ids: Collection[str],
        action: str = "resume",
        state: str = "active_stopped",
    ) -> None:
        self.segment_ids = tuple(sorted(segment_ids))
        names = ", ".join(repr(s) for s in self.segment_ids)
        super().__init__(
            campaign_id,
            action,
            state,
            (),
            message=(
                f"Cannot {action} campaign {campaign_id!r}: it targets archived segment(s) "
                f"{names}. Unarchive the segment or edit the campaign to target another."
            ),
        )


class ConcurrentUpdateError(CampaignStateError):
    """Another writer changed the record between read and write more times than retried."""


class DrainTimeoutError(CampaignStateError, TimeoutError):
    """The change is committed, but emissions admitted before it were still in flight.

    Attributes:
        campaign_ids: Campaigns whose in-flight permits did not finish in time.
    """

    def __init__(
        self, campaign_ids: Collection[str], timeout: float, change: str = "change"
    ) -> None:
        self.campaign_ids = tuple(sorted(campaign_ids))
        #: What was committed: ``"archive"``, ``"stop"`` or ``"segment archive"``.
        self.change = change
        super().__init__(
            f"The {change} is committed, and no new emission will be admitted, but permits "
            f"admitted before it were still in flight after {timeout:g}s for "
            f"{len(self.campaign_ids)} campaign(s) (e.g. {self.campaign_ids[:3]}). "
            "Check for stuck senders."
        )


class StoreError(CampaignStateError):
    """The store failed; the transaction was rolled back and nothing changed."""


class StoreBusyError(StoreError):
    """Another writer held the store's write lock past the busy timeout: retry later."""


class StoreFullError(StoreError):
    """The disk (or file size limit) is full: free space, then retry."""


class StoreReadOnlyError(StoreError):
    """The store is read-only (file mode, mount, or ``mode=ro``): writes are refused."""


class StoreCorruptError(StoreError):
    """The store's file is damaged: restore it from a backup."""


class ForeignStoreError(StoreCorruptError):
    """The file is a database, but not a campaign-states store (or of a newer schema)."""


class StoreUnavailableError(StoreError, ConnectionError):
    """The store cannot be reached (server down, connection lost)."""


class StoreNotFoundError(StoreUnavailableError):
    """No store at the path, and the caller asked not to create one (``create=False``).

    Attributes:
        path: The path that holds no store.
    """

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        super().__init__(
            f"no store at {path}{detail}: nothing was created. Check the path (or --store), "
            "or create a campaign or segment there first."
        )


class StoreReplacedError(StoreUnavailableError):
    """The SQLite file this store opened was replaced (a backup restored over it) or
    deleted: a write would land in a file nobody reads any more. Open the store again.

    Attributes:
        path: The store's path.
        deleted: Whether the path names no file now (else it names another file).
    """

    def __init__(self, path: str, *, deleted: bool) -> None:
        self.path = path
        self.deleted = deleted
        what = "deleted" if deleted else "replaced by another file"
        super().__init__(
            f"{path}: the file this store opened was {what} (a backup restored, or the file "
            "moved?); nothing was changed through it. Open the store again to use the file "
            "the path names now (a gate does so by itself)."
        )


class CommitUnknownError(StoreError):
    """The connection was lost during COMMIT: the change may or may not be saved.

    Retrying the same call is safe: every trigger is idempotent.
    """
