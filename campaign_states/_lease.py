"""Lease settings: how long a gate may trust its snapshot, and how to change them safely."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from .exceptions import InvalidSettingsError, StoreError

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["LeaseSettings", "change_lease_settings"]

log = logging.getLogger("campaign_states")


# Bounds on the lease settings (also `LeaseSettings.MIN_REFRESH` etc.): below a millisecond a
# refresher would spin; past a day an archive would wait a day. previous_wait is not bounded:
# it is an old commit wait, computed, never typed in.
_MIN_REFRESH = 0.001
_MIN_LEASE = 0.002
_MAX_SECONDS = 86_400.0


def _seconds(
    *, allow_zero: bool, low: float = 0.0, high: float = math.inf
) -> Callable[[object, attrs.Attribute[float], float], None]:
    def check(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidSettingsError(f"{attribute.name} must be a number, not {value!r}.")
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise InvalidSettingsError(
                f"{attribute.name} must be finite and {'>= 0' if allow_zero else '> 0'}, "
                f"not {value!r}."
            )
        if not low <= value <= high:
            raise InvalidSettingsError(
                f"{attribute.name} must be between {low:g} and {high:g} seconds, not {value!r}."
            )

    return check


@attrs.frozen(kw_only=True)
class LeaseSettings:
    """How long a gate may trust its snapshot, and so how long an archive waits.

    They belong to the store (persisted in it), not to each process: an archiver must wait
    at least as long as the longest lease any gate holds.

    Attributes:
        lease: A gate denies (STALE) once this long has passed since its last successful
            refresh *started*; 0.002 s to 86,400 s (one day). Shorter: archives return
            sooner; longer: store blips of up to about ``lease - refresh`` go unnoticed.
        grace: Time allowed between ``still_valid()`` and the bytes leaving; 0 to 86,400 s.
        refresh: How often a gate polls the store: at least 0.001 s, below ``lease``.
        clock_margin: Relative clock-rate error allowed between hosts.
        previous_wait: While changed settings are taking effect, the old commit wait:
            archivers wait at least this long until `Registry.set_lease_settings` has
            waited out the old leases and cleared it.

    The bounds are class attributes: ``MIN_REFRESH`` (0.001 s), ``MIN_LEASE`` (0.002 s) and
    ``MAX_LEASE`` (86,400 s, also the most ``grace`` may be).
    """

    MIN_REFRESH: ClassVar[float] = _MIN_REFRESH
    MIN_LEASE: ClassVar[float] = _MIN_LEASE
    MAX_LEASE: ClassVar[float] = _MAX_SECONDS

    # Defaults chosen for availability (README, "Settings and their trade-offs"): with
    # acknowledged invalidation an archive waits the lease only for a gate that does not
    # answer, so the lease can be long enough to ride out seconds-long stalls.
    lease: float = attrs.field(
        default=10.0, validator=_seconds(allow_zero=False, low=_MIN_LEASE, high=_MAX_SECONDS)
    )
    grace: float = attrs.field(default=0.1, validator=_seconds(allow_zero=True, high=_MAX_SECONDS))
    refresh: float = attrs.field(
        default=1.0, validator=_seconds(allow_zero=False, low=_MIN_REFRESH, high=_MAX_SECONDS)
    )
    clock_margin: float = attrs.field(default=0.01, validator=_seconds(allow_zero=True))
    previous_wait: float = attrs.field(default=0.0, validator=_seconds(allow_zero=True))

    def __attrs_post_init__(self) -> None:
        if self.refresh >= self.lease:
            raise InvalidSettingsError(
                f"refresh ({self.refresh}s) must be shorter than lease ({self.lease}s): "
                "a gate would lapse between refreshes."
            )
        if self.clock_margin >= 1:
            raise InvalidSettingsError("clock_margin is a fraction; use e.g. 0.01.")

    @classmethod
    def stored(cls, **values: Any) -> LeaseSettings:
        """Settings as a store persisted them, by this version or an older one.

        A store written before the bounds existed may hold settings outside them (a
        refresh of 1e-9 s). Refusing to load those would make every gate deny for good and
        leave `Registry.set_lease_settings` unable to read what it must wait out, so they
        load as they are (a warning is logged); only non-numbers are refused.
        """
        try:
            return cls(**values)
        except InvalidSettingsError:
            fields = {f.name: f.default for f in attrs.fields(cls)}
            clean: dict[str, float] = {}
            for name, default in fields.items():
                v = values.get(name, default)
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise
                clean[name] = float(v)
            log.warning(
                "the store's lease settings are outside today's bounds (%s); loaded as they "
                "are: set new ones with Registry.set_lease_settings()",
                clean,
            )
            settings = object.__new__(cls)
            for name, v in clean.items():
                object.__setattr__(settings, name, v)
            return settings

    def commit_wait(self) -> float:
        """How long an archive waits after its commit.

        A pending ``previous_wait`` applies until it is cleared in the store, not until a
        time on some host's clock (hosts' clocks are not comparable).
        """
        return max((self.lease + self.grace) * (1 + self.clock_margin), self.previous_wait)


def change_lease_settings(
    store: Store, *, lease: float, grace: float, refresh: float, clock_margin: float
) -> LeaseSettings:
    """`Registry.set_lease_settings` (its docstring says why two writes, and which failed)."""
    old = store.lease_settings()
    old_wait = old.commit_wait()
    pending = LeaseSettings(
        lease=lease,
        grace=grace,
        refresh=refresh,
        clock_margin=clock_margin,
        previous_wait=old_wait,
    )
    store.set_lease_settings(pending)
    settled = attrs.evolve(pending, previous_wait=0.0)
    try:
        if store.needs_commit_wait:
            store.clock.sleep(old_wait)
        store.set_lease_settings(settled)
    except StoreError as e:
        # The store's own message says its write changed nothing, which is true of the
        # second write only: say what the first one left in force.
        raise type(e)(
            f"The new lease settings (lease={lease:g}s, grace={grace:g}s, "
            f"refresh={refresh:g}s) are in force, but clearing the old commit wait "
            f"failed, so archives still wait at least {old_wait:g}s (safe, only slower) "
            f"until set_lease_settings() is called again and succeeds. The failed write: "
            f"{e}"
        ) from e
    return settled
