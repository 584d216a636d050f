"""The docs' console-transcript checker fails on drifted output (its negative controls)."""

from __future__ import annotations

import types

import pytest
from console_transcripts import _matches, evaluate_console


def run(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    example = types.SimpleNamespace(parsed=block, namespace={})
    return evaluate_console(example)


def test_a_faithful_transcript_passes(tmp_path, monkeypatch):
    block = (
        "$ export CAMPAIGN_STATES_URL=sqlite:///t.db\n"
        "$ campaign-states segment create seg-a --name A\n"
        "Created segment seg-a.\n"
        "$ campaign-states show nope; echo $?\n"
        "Error: Campaign 'nope' does not exist.\n"
        "1\n"
    )
    assert run(block, tmp_path, monkeypatch) is None


@pytest.mark.parametrize(
    ("shown", "why"),
    [
        ("Created segment seg-b.\n", "a changed word"),
        ("Created segment seg-a.\nand a line the command never printed\n", "an extra line"),
        ("", "a missing exit code"),
    ],
)
def test_a_drifted_transcript_fails(tmp_path, monkeypatch, shown, why):
    block = "$ export CAMPAIGN_STATES_URL=sqlite:///t.db\n$ campaign-states segment create seg-a\n"
    if why == "a missing exit code":
        block = "$ export CAMPAIGN_STATES_URL=sqlite:///t.db\n$ campaign-states show nope\n"
    assert run(block + shown, tmp_path, monkeypatch) is not None, why


def test_other_commands_are_refused_not_skipped(tmp_path, monkeypatch):
    assert "not: rm -rf x" in run("$ rm -rf x\n", tmp_path, monkeypatch)


def test_ellipsis_and_placeholders():
    assert _matches(["a", "...", "z"], ["a", "b", "c", "z"])
    assert _matches(["a", "...", "z"], ["a", "z"])
    assert not _matches(["a", "z"], ["a", "b", "z"])
    assert _matches(
        ["done in 0.56s at 2026-11-27T05:37:24"], ["done in 12 ms at 2026-12-01T09:00:00"]
    )
    assert not _matches(["done in 0.56s"], ["failed in 0.56s"])
