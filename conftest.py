"""Runs the README's and the docs' examples as tests (Sybil), each page in a fresh directory.

Python blocks run as code; ``console`` blocks run their ``$ campaign-states`` lines and
compare the output (see tests/console_transcripts.py).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from console_transcripts import evaluate_console
from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser


def _enter_tmpdir(namespace: dict[str, Any]) -> None:
    # Examples open sqlite:///campaigns.db relative to the working directory.
    namespace["_cwd"] = os.getcwd()
    namespace["_tmp"] = tempfile.TemporaryDirectory()
    os.chdir(namespace["_tmp"].name)


def _leave_tmpdir(namespace: dict[str, Any]) -> None:
    os.chdir(namespace["_cwd"])
    namespace["_tmp"].cleanup()


pytest_collect_file = Sybil(
    parsers=[
        PythonCodeBlockParser(),
        CodeBlockParser(language="console", evaluator=evaluate_console),
        SkipParser(),
    ],
    patterns=["README.md", "docs/*.md"],
    setup=_enter_tmpdir,
    teardown=_leave_tmpdir,
).pytest()
