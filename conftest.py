"""Runs the README's Python examples as tests (Sybil), each document in a fresh directory."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser


def _enter_tmpdir(namespace: dict[str, Any]) -> None:
    # Examples open sqlite:///campaigns.db relative to the working directory.
    namespace["_cwd"] = os.getcwd()
    namespace["_tmp"] = tempfile.TemporaryDirectory()
    os.chdir(namespace["_tmp"].name)


def _leave_tmpdir(namespace: dict[str, Any]) -> None:
    os.chdir(namespace["_cwd"])
    namespace["_tmp"].cleanup()


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["README.md"],
    setup=_enter_tmpdir,
    teardown=_leave_tmpdir,
).pytest()
