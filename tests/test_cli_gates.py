"""`campaign-states gates`: the registered gates, as an operator sees them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from campaign_states import open_registry
from campaign_states.cli import app
from delivery_gate import DeliveryGate


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def _run(url: str, *args: str):
    return CliRunner().invoke(app(), ["--store", url, "gates", *args])


class TestGates:
    """The command lists every registered gate with its heartbeat and acknowledgement."""

    def test_none_registered(self, url):
        open_registry(url).close()  # a store must exist: only creating commands create one
        result = _run(url)
        assert 0 == result.exit_code, result.output
        assert "No gates registered." in result.output
        assert [] == json.loads(_run(url, "--json").stdout)

    def test_lists_a_live_gate_and_forgets_it_once_closed(self, url):
        with DeliveryGate.open(url, background_refresh=False) as gate:
            (row,) = json.loads(_run(url, "--json").stdout)
            assert gate._gate_id == row["gate_id"]
            assert (True, 0) == (row["live"], row["in_flight"])
            assert {"host", "pid", "started", "lease", "heartbeat_age", "acked_seq"} <= set(row)
            table = _run(url)
            assert 0 == table.exit_code
            assert row["gate_id"][:12] in table.output
        assert [] == json.loads(_run(url, "--json").stdout)
