"""Lease settings have documented bounds, and a half-done change says what holds."""

from __future__ import annotations

import math
import multiprocessing
from pathlib import Path

import core_workers
import pytest
from race.faults import StillClock, make_registry

from campaign_states import LeaseSettings, Registry
from campaign_states.exceptions import InvalidSettingsError, StoreError, StoreFullError
from campaign_states.stores import MemoryStore, SQLiteStore
from delivery_gate import DeliveryGate
from delivery_gate.exceptions import GateSettingsError

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def reg() -> Registry:
    return make_registry("memory", None, StillClock())


class TestGateBounds:
    """DeliveryGate refuses a refresh or lease outside the bounds, or a refresh >= the lease."""

    @pytest.mark.parametrize(
        ("settings", "match"),
        [
            ({"refresh": 1e-9}, "refresh must be between 0.001 and 86400"),
            ({"refresh": 0.0009}, "refresh must be between"),
            ({"lease": 1e9}, "lease must be between 0.002 and 86400"),
            ({"lease": 0.001}, "lease must be between"),
            ({"lease": 0.2, "refresh": 0.2}, "shorter than lease"),
        ],
    )
    def test_out_of_bounds(self, reg: Registry, settings: dict[str, float], match: str):
        with pytest.raises(GateSettingsError, match=match):
            DeliveryGate(reg, background_refresh=False, **settings)

    def test_refresh_at_the_store_lease_is_refused(self, reg: Registry):
        """No lease given: the refresh is checked against the store's (the default, 10 s)."""
        store_lease = reg.lease_settings().lease
        for refresh in (store_lease, store_lease * 2):
            with pytest.raises(GateSettingsError, match=r"the lease in force .* the store's"):
                DeliveryGate(reg, refresh=refresh, background_refresh=False)

    def test_refresh_at_a_smaller_gate_lease_is_refused(self, reg: Registry):
        with pytest.raises(GateSettingsError, match="shorter than lease"):
            DeliveryGate(reg, lease=0.1, refresh=0.1, background_refresh=False)

    def test_refused_gate_leaves_no_subscription(self, reg: Registry):
        with pytest.raises(GateSettingsError):
            DeliveryGate(reg, refresh=2 * reg.lease_settings().lease, background_refresh=False)
        assert () == reg._listeners._items

    def test_in_bounds_is_kept_as_given(self, reg: Registry):
        with DeliveryGate(reg, lease=0.4, refresh=0.001, background_refresh=False) as gate:
            assert (0.4, 0.001) == (gate.status().lease, gate.status().refresh)

    def test_broken_variant_is_caught(self, reg: Registry, monkeypatch: pytest.MonkeyPatch):
        """Checked against the gate's own lease only (as before), a refresh of twice the
        store's lease is accepted and silently halved: what
        `test_refresh_at_the_store_lease_is_refused` refuses."""
        refresh = 2 * reg.lease_settings().lease
        monkeypatch.setattr("delivery_gate._refresh.Refresher.lease", lambda self: math.inf)
        with DeliveryGate(reg, refresh=refresh, background_refresh=False) as gate:
            monkeypatch.undo()
            assert gate.status().refresh < refresh


class TestLeaseSettingsBounds:
    """LeaseSettings (so set_lease_settings and every store) refuse absurd values."""

    @pytest.mark.parametrize(
        "settings",
        [
            {"lease": 1e9, "grace": 0.0, "refresh": 1.0},
            {"lease": 1.0, "grace": 0.0, "refresh": 1e-9},
            {"lease": 0.001, "grace": 0.0, "refresh": 0.001},
            {"lease": 1.0, "grace": 1e6, "refresh": 0.1},
        ],
    )
    def test_set_lease_settings_refuses(self, reg: Registry, settings: dict[str, float]):
        before = reg.lease_settings()
        with pytest.raises(InvalidSettingsError, match="must be between"):
            reg.set_lease_settings(**settings)
        assert before == reg.lease_settings()

    def test_the_bounds_are_published(self):
        assert (0.001, 0.002, 86_400.0) == (
            LeaseSettings.MIN_REFRESH,
            LeaseSettings.MIN_LEASE,
            LeaseSettings.MAX_LEASE,
        )
        LeaseSettings(lease=86_400, grace=86_400, refresh=0.001)  # the edges are allowed
        LeaseSettings(lease=0.002, grace=0, refresh=0.001)


class _SecondWriteFails(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def set_lease_settings(self, settings: LeaseSettings) -> None:
        self.writes += 1
        if self.writes == 2:
            raise StoreFullError("disk full; nothing was changed.")
        super().set_lease_settings(settings)


class TestHalfDoneChange:
    """When the second write fails, the error says the new settings hold, old wait pending."""

    def test_second_write_fails(self):
        store = _SecondWriteFails()
        reg = Registry(store)
        old_wait = reg.lease_settings().commit_wait()
        with pytest.raises(StoreFullError) as info:
            reg.set_lease_settings(lease=0.3, grace=0.02, refresh=0.03)
        message = str(info.value)
        assert "are in force" in message
        assert f"at least {old_wait:g}s" in message
        assert "disk full" in message  # the store's own error, as the failed write
        held = store.lease_settings()
        assert (0.3, old_wait) == (held.lease, held.previous_wait)

    def test_first_write_failing_changed_nothing(self):
        class FirstFails(MemoryStore):
            def set_lease_settings(self, settings: LeaseSettings) -> None:
                raise StoreFullError("disk full; nothing was changed.")

        reg = Registry(FirstFails())
        with pytest.raises(StoreFullError) as info:
            reg.set_lease_settings(lease=0.3, grace=0.02, refresh=0.03)
        assert "in force" not in str(info.value)

    def test_on_a_full_disk(self, tmp_path: Path):
        """SQLite under RLIMIT_FSIZE: the first write lands, the second hits the limit."""
        db = str(tmp_path / "campaigns.db")
        SQLiteStore(db).close()
        with SPAWN.Pool(1) as pool:
            name, message, held = pool.apply(core_workers.lease_change_on_full_disk, (db,))
        assert "StoreFullError" == name, message
        assert "are in force" in message
        assert "nothing was changed" not in message.split("The failed write:")[0]
        assert 0.3 == held["lease"]
        assert held["previous_wait"] > 0

    def test_error_type(self):
        assert issubclass(StoreFullError, StoreError)


class TestStoredBeforeTheBounds:
    """A store written by a version without the bounds still loads, and can be repaired."""

    def _store_with_settings(self, path, **settings):
        import json
        import sqlite3

        from campaign_states import open_registry

        open_registry(f"sqlite:///{path}").close()
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'lease'", (json.dumps(settings),))
        conn.close()

    def test_gates_keep_working_and_set_lease_settings_repairs(self, tmp_path, caplog):
        from campaign_states import FakeClock, Registry
        from campaign_states.stores import SQLiteStore
        from delivery_gate import DeliveryGate

        path = tmp_path / "old.db"
        self._store_with_settings(
            path, lease=0.5, grace=0.05, refresh=1e-9, clock_margin=0.01, previous_wait=0.0
        )
        reg = Registry(SQLiteStore(path, clock=FakeClock()))
        assert 1e-9 == reg.lease_settings().refresh  # loaded as it is, with a warning
        assert "outside today's bounds" in caplog.text
        c = reg.create_campaign(name="c", channels={"email"})
        reg.resume(c.id)
        gate = DeliveryGate(reg, background_refresh=False, refresh=0.05)
        assert gate.check(c.id, "email").admitted
        reg.set_lease_settings(lease=0.5, grace=0.05, refresh=0.05)
        assert 0.05 == reg.lease_settings().refresh
        gate.close()
        reg.close()

    def test_non_numbers_are_still_refused(self):
        from campaign_states import LeaseSettings

        with pytest.raises(InvalidSettingsError):
            LeaseSettings.stored(lease="soon")
