"""The CLI as real processes sharing one SQLite file, as operators run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def cs(tmp_path: Path):
    """Run ``python -m campaign_states.cli`` in a fresh process, store chosen by the env."""
    env = {
        **os.environ,
        "CAMPAIGN_STATES_URL": f"sqlite:///{tmp_path / 'ops.db'}",
        "CAMPAIGN_STATES_ACTOR": "ops@example.com",
    }

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "campaign_states.cli", *args],
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


class TestProcesses:
    """Each command is its own process; state persists in the file between them."""

    def test_lifecycle_across_processes(self, cs):
        assert 0 == cs("segment", "create", "seg-vip").returncode
        created = cs("create", "Black Friday", "-c", "email", "-s", "seg-vip", "--json")
        assert 0 == created.returncode, created.stderr
        cid = json.loads(created.stdout)["id"]
        assert 0 == cs("resume", cid).returncode
        admitted = cs("gate", "check", cid, "--channel", "email")
        assert (0, "admitted: running") == (admitted.returncode, admitted.stdout[:17])
        archived = cs("archive", cid)
        assert 0 == archived.returncode
        assert "no gate admits it any more" in archived.stdout
        shown = json.loads(cs("show", cid, "--json").stdout)
        assert ("archived", ["create", "resume", "archive"]) == (
            shown["state"],
            [h["trigger"] for h in shown["history"]],
        )
        assert {"ops@example.com"} == {h["actor"] for h in shown["history"]}
        assert [] == json.loads(cs("list", "--json").stdout)["campaigns"]
        denied = cs("gate", "check", cid, "--channel", "email", "--json")
        assert (1, "archived") == (denied.returncode, json.loads(denied.stdout)["reason"])

    def test_exit_codes_and_one_line_errors(self, cs):
        no_store = cs("show", "nope")
        assert (2, "") == (no_store.returncode, no_store.stdout)
        assert no_store.stderr.startswith("Error: no store at ")
        cs("segment", "create", "seg-x")  # creates the store
        missing = cs("show", "nope")
        assert (1, "", "Error: Campaign 'nope' does not exist.\n") == (
            missing.returncode,
            missing.stdout,
            missing.stderr,
        )
        usage = cs("list", "--state", "bogus")
        assert 2 == usage.returncode
        assert "Traceback" not in usage.stderr
        malformed = cs("show", "a\tb")
        assert 2 == malformed.returncode
        assert 1 == len(malformed.stderr.splitlines())

    def test_segment_archive_asks_on_stdin(self, cs):
        cs("segment", "create", "seg-x")
        cs("create", "A", "-c", "sms", "-s", "seg-x", "--id", "c-a")
        declined = cs("segment", "archive", "seg-x", input="n\n")
        assert 1 == declined.returncode
        assert "c-a" in declined.stdout
        assert "active" == json.loads(cs("segment", "show", "seg-x", "--json").stdout)["state"]

    def test_help(self, cs):
        done = cs("--help")
        assert 0 == done.returncode
        for command in ("archive", "segment", "gate", "diagram", "demo", "history"):
            assert command in done.stdout
