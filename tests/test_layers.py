"""Who may import whom (DESIGN.md section 5), checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = [
    "click", "rich", "psycopg", "psycopg_pool", "graphviz", "campaign_states.cli",
    # The ecosystem extras: imported only by the modules that need them.
    "opentelemetry", "celery", "kombu", "redis",
]  # fmt: skip
# The console's (the `web` extra): never on the gate's or the core's import path.
WEB = [
    "starlette",
    "jinja2",
    "uvicorn",
    "itsdangerous",
    "multipart",
    "python_multipart",
    "asgi_csrf",
    "argon2",
    "campaign_states.web",
]


def _modules_after(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


class TestImportPaths:
    """The gate's import path stays light, and the core never imports the gate or the CLI."""

    @pytest.mark.parametrize(
        "module", ["delivery_gate", "campaign_states", "delivery_gate.integrations"]
    )
    def test_no_heavy_import(self, module):
        loaded = _modules_after(f"import {module}")
        assert [] == [m for m in HEAVY + WEB if m in loaded]

    def test_the_cli_loads_the_console_only_to_serve(self):
        """Building the CLI (every command registered) imports none of the web extra."""
        loaded = _modules_after("import campaign_states.cli; campaign_states.cli.app()")
        assert [] == [m for m in WEB if m in loaded]

    def test_the_check_catches_a_web_import(self):
        """The probe can fail for the web extra too: the console does import starlette."""
        loaded = _modules_after("import campaign_states.web")
        assert {"starlette", "jinja2", "asgi_csrf", "argon2"} <= loaded

    def test_core_does_not_import_the_gate(self):
        loaded = _modules_after(
            "import campaign_states, campaign_states.stores, campaign_states.otel"
        )
        assert [] == sorted(m for m in loaded if m.split(".")[0] == "delivery_gate")

    def test_otel_modules_import_the_api_only(self):
        """Instrumenting needs the OpenTelemetry API, never the SDK or Celery."""
        loaded = _modules_after("import delivery_gate.otel, campaign_states.otel")
        assert "opentelemetry.metrics" in loaded
        assert [] == sorted(m for m in loaded if m.startswith(("opentelemetry.sdk", "celery")))

    @pytest.mark.parametrize(
        ("blocked", "module", "extra"),
        [
            ("opentelemetry", "delivery_gate.otel", "otel"),
            ("opentelemetry", "campaign_states.otel", "otel"),
            ("celery", "delivery_gate.integrations.celery", "celery"),
        ],
    )
    def test_a_missing_extra_says_how_to_install_it(self, blocked, module, extra):
        code = (
            f"import sys; sys.modules[{blocked!r}] = None\n"
            f"try:\n    import {module}\nexcept ImportError as e:\n    print(e)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert f"pip install 'campaign-states[{extra}]'" in out

    def test_the_check_catches_a_heavy_import(self):
        """The probe itself can fail: building the CLI does pull in click."""
        loaded = _modules_after("import campaign_states.cli; campaign_states.cli.app()")
        assert "click" in loaded

    def test_a_registered_sqlite_gate_stays_light(self, tmp_path):
        """Registering, heartbeating and acking (campaign_states._gates, _stores.sqlite.gates,
        _invalidation) pull in nothing heavy either."""
        url = f"sqlite:///{tmp_path / 'light.db'}"
        loaded = _modules_after(
            "from delivery_gate import DeliveryGate\n"
            f"g = DeliveryGate.open({url!r})\n"
            "assert g.registry.gates()\n"
            "g.registry.create_campaign(name='c', channels=['email'], campaign_id='c')\n"
            "g.registry.archive('c')\n"
            "g.close()"
        )
        assert {"campaign_states._gates", "campaign_states._stores.sqlite.gates"} <= loaded
        assert [] == [m for m in HEAVY if m in loaded]
