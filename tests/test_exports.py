"""Each package's ``__all__`` is sorted and complete (httpx's test_exported_members)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect

import pytest

PACKAGES = ["campaign_states", "campaign_states.exceptions", "campaign_states.stores"]
if importlib.util.find_spec("starlette") is not None:  # the console needs the web extra
    PACKAGES += ["campaign_states.web"]
if importlib.util.find_spec("delivery_gate") is not None:
    PACKAGES += ["delivery_gate"]
    if importlib.util.find_spec("delivery_gate.exceptions") is not None:
        PACKAGES += ["delivery_gate.exceptions"]
    PACKAGES += ["delivery_gate.integrations"]


def public_members(module) -> set[str]:
    """Names a user reaches on the module: public, and not a submodule or a __future__."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and name not in ("annotations", "TYPE_CHECKING", "Any")
        and getattr(value, "__module__", module.__name__).split(".")[0]
        == module.__name__.split(".")[0]
    }


def missing(module) -> set[str]:
    return public_members(module) - set(module.__all__)


class TestExports:
    """__all__ is sorted, names only what exists, and lists every public member."""

    @pytest.mark.parametrize("name", PACKAGES)
    def test_sorted(self, name):
        module = importlib.import_module(name)
        assert sorted(module.__all__) == list(module.__all__)

    @pytest.mark.parametrize("name", PACKAGES)
    def test_exists(self, name):
        module = importlib.import_module(name)
        assert [] == [n for n in module.__all__ if not hasattr(module, n)]

    @pytest.mark.parametrize("name", PACKAGES)
    def test_complete(self, name):
        assert set() == missing(importlib.import_module(name))

    def test_checker_catches_an_unlisted_name(self, monkeypatch):
        import campaign_states

        extra = type("Extra", (), {"__module__": "campaign_states._extra"})
        monkeypatch.setattr(campaign_states, "Extra", extra, raising=False)
        assert {"Extra"} == missing(campaign_states)

    def test_ecosystem_contract_names(self):
        """Issue 11's names, exactly."""
        import campaign_states
        from campaign_states.otel import instrument_registry
        from delivery_gate.integrations import gated
        from delivery_gate.otel import instrument_gate

        assert all(callable(f) for f in (instrument_registry, instrument_gate, gated))
        assert {"AsyncRegistry", "open_async_registry"} <= set(campaign_states.__all__)
        celery_mod = pytest.importorskip("delivery_gate.integrations.celery")
        assert "GatedTask" in celery_mod.__all__

    def test_issue_contract_names(self):
        import campaign_states
        from campaign_states import exceptions

        for name in ("open_registry", "State", "Registry"):
            assert name in campaign_states.__all__
        states = {s.name: s.value for s in campaign_states.State}
        assert {
            "ACTIVE_RUNNING": "active_running",
            "ACTIVE_STOPPED": "active_stopped",
            "ARCHIVED": "archived",
        } == states
        for name in (
            "CampaignStateError", "CampaignNotFoundError", "SegmentNotFoundError",
            "InvalidTransitionError", "CampaignArchivedError", "SegmentArchivedError",
            "StoreError",
        ):  # fmt: skip
            assert issubclass(getattr(exceptions, name), exceptions.CampaignStateError)
        for method in (
            "create_segment", "create_campaign", "get", "edit", "resume", "stop", "archive",
            "unarchive", "archive_many", "unarchive_many", "stop_many", "resume_many",
            "archive_segment", "unarchive_segment", "history", "results", "list",
        ):  # fmt: skip
            assert callable(getattr(campaign_states.Registry, method))


class TestMovedToStores:
    """The store protocols moved to campaign_states.stores; the old names still work, warned."""

    @pytest.mark.parametrize(
        "name",
        [
            "ChangeBatch",
            "GateReader",
            "GateRow",
            "GateRowBatch",
            "Reader",
            "SetWriteTx",
            "Store",
            "WriteTx",
        ],
    )
    def test_old_name_warns_and_is_the_same_object(self, name):
        import campaign_states
        import campaign_states.stores

        assert name not in campaign_states.__all__
        assert name in campaign_states.stores.__all__
        with pytest.warns(DeprecationWarning, match=f"campaign_states.stores.{name}"):
            old = getattr(campaign_states, name)
        assert getattr(campaign_states.stores, name) is old

    def test_an_unknown_name_is_still_an_attribute_error(self):
        import campaign_states

        with pytest.raises(AttributeError, match="no_such_name"):
            campaign_states.no_such_name  # noqa: B018
