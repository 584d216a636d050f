"""A gate's settings: its own lease and refresh, checked alone and against the store's."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from campaign_states import LeaseSettings

from .exceptions import GateSettingsError

if TYPE_CHECKING:
    from ._refresh import Refresher

__all__ = ["check_against_store", "seconds", "wanted"]


def seconds(name: str, value: object, low: float = 0.0, high: float = math.inf) -> float | None:
    """``value`` as seconds in ``[low, high]`` (None stays None), else GateSettingsError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GateSettingsError(f"{name} must be a number of seconds, not {value!r}.")
    if not math.isfinite(value) or value <= 0:
        raise GateSettingsError(f"{name} must be finite and > 0 seconds, not {value!r}.")
    if not low <= value <= high:
        raise GateSettingsError(
            f"{name} must be between {low:g} and {high:g} seconds, not {value!r}."
        )
    return float(value)


def wanted(lease: float | None, refresh: float | None) -> tuple[float | None, float | None]:
    """The gate's own lease and refresh, checked against the bounds and each other."""
    want_lease = seconds("lease", lease, LeaseSettings.MIN_LEASE, LeaseSettings.MAX_LEASE)
    want_refresh = seconds("refresh", refresh, LeaseSettings.MIN_REFRESH, LeaseSettings.MAX_LEASE)
    if want_lease and want_refresh and want_refresh >= want_lease:
        raise GateSettingsError(
            f"refresh ({refresh}s) must be shorter than lease ({lease}s): the gate would "
            "lapse between refreshes."
        )
    return want_lease, want_refresh


def check_against_store(refresher: Refresher, lease: float | None, refresh: float | None) -> None:
    """After the first successful read: the gate's settings against the store's."""
    store_lease = refresher.store_settings().lease
    if lease is not None and lease > store_lease:
        raise GateSettingsError(
            f"lease ({lease}s) is longer than the store's ({store_lease}s): an "
            "archive waits only the store's lease, so this gate could still admit "
            "after it returned. Use a lease <= the store's, or raise the store's "
            "with Registry.set_lease_settings()."
        )
    in_force = refresher.lease()
    if refresh is not None and refresh >= in_force:
        raise GateSettingsError(
            f"refresh ({refresh}s) must be shorter than the lease in force "
            f"({in_force:g}s, {'this gate' if lease is not None else 'the store'}'s):"
            " the gate would lapse between refreshes."
        )
