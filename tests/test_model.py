"""The Spin model of acknowledged invalidation (model/ack_invalidation.pml) and its checker.

The whole check (`make model-check`, about 30 s) runs in the slow suite; the quick tests
show the checker's inventory is complete and that it fails when a broken variant passes.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import support

MODEL_DIR = Path(__file__).resolve().parent.parent / "model"
MODEL = MODEL_DIR / "ack_invalidation.pml"
CHECK = MODEL_DIR / "check.sh"
BUGS = {
    "ACK_BEFORE_DRAIN",
    "REGISTER_LATE",
    "LEASE_AFTER_READ",
    "DEAD_SHORT",
    "OLDER_OVER_NEWER",
    "HEARTBEAT_AFTER_READ",
    "NO_ACK",
}


def _check(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=240,
        check=False,
    )


class TestInventory:
    """Every broken variant the model defines is one the checker runs, and vice versa."""

    def test_model_and_checker_name_the_same_variants(self):
        in_model = set(re.findall(r"BUG_([A-Z_]+[A-Z])", MODEL.read_text()))
        in_checker = set(re.findall(r"\b([A-Z]+(?:_[A-Z]+)+)\b", CHECK.read_text()))
        assert BUGS == in_model
        assert in_model <= in_checker


class TestChecker:
    """The checker fails when a broken variant is not caught (it cannot pass vacuously)."""

    def test_a_broken_variant_that_passes_fails_the_check(self, tmp_path):
        support.require_spin()
        # Neutralise one bug: that "broken" variant is then the real protocol, which Spin
        # verifies, so the checker must report it and exit non-zero.
        model = tmp_path / "ack_invalidation.pml"
        model.write_text(MODEL.read_text().replace("#ifdef BUG_DEAD_SHORT", "#ifdef NEVER_SET"))
        run = _check({"MODEL": str(model), "ONLY": "DEAD_SHORT"})
        assert 1 == run.returncode, run.stdout + run.stderr
        assert "WRONG broken: DEAD_SHORT" in run.stdout

    def test_the_broken_variant_itself_is_caught(self):
        support.require_spin()
        run = _check({"ONLY": "DEAD_SHORT"})
        assert 0 == run.returncode, run.stdout + run.stderr
        assert "assertion violated" in run.stdout


@pytest.mark.slow
class TestModel:
    """Spin verifies the protocol and finds a counterexample for every broken variant."""

    def test_model_check(self):
        support.require_spin()
        run = _check()
        assert 0 == run.returncode, run.stdout + run.stderr
        for bug in BUGS:
            assert re.search(rf"ok +broken: {bug} .*fail", run.stdout), run.stdout
        assert "model-check: protocol verified" in run.stdout
