"""Runs the docs' ``console`` blocks: every ``$ campaign-states ...`` line, checked against
the output the page shows.

The CLI transcript is the text most likely to drift from the code, so it runs as a test
like the Python blocks (through Sybil, each page in a fresh directory). The rules a page's
author writes to:

- ``$ campaign-states ARGS`` runs the CLI in-process (click's runner, stdout and stderr as a
  terminal shows them); ``$ export NAME=VALUE`` sets a variable for the rest of the page.
  A trailing ``# comment`` is a comment. ``; echo $?`` prints the exit code after the
  output. Any other command (``make``, a shell pipeline) fails the page: put
  ``<!-- skip: next -->`` before a block that is not meant to run.
- The lines after a command are its expected output. None at all: the output is not
  checked, but the command must succeed (exit 0), unless ``; echo $?`` shows the code.
- A line ``...`` stands for any number of lines; otherwise every line must match, in order.
  A line ending in ``[y/N]: y`` answers the prompt with ``y``.
- Durations (``0.56s``, ``12 ms``) and ISO timestamps are compared as placeholders, and
  trailing spaces are ignored; table borders are compared as they are (a changed column is
  a changed table).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from sybil import Example

__all__ = ["evaluate_console"]

_DURATION = re.compile(r"\b\d+(?:[.,]\d+)?\s?(?:ms|s)\b")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)?")
# Rich pads table cells to the widest value, so a duration's length moves borders: padding
# runs are compared as one space.
_PADDING = re.compile(r" {2,}")


def _normalise(line: str) -> str:
    line = _TIMESTAMP.sub("<time>", line.rstrip())
    line = _DURATION.sub("<duration>", line)
    return _PADDING.sub(" ", line)


def _commands(source: str) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for line in source.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"console block: output before any command: {line!r}")
    return out


def _matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` fits ``expected``, where a ``...`` line is any number of lines."""
    exp = [_normalise(x) for x in expected]
    act = [_normalise(x) for x in actual]
    while exp and not exp[-1]:
        exp.pop()
    while act and not act[-1]:
        act.pop()

    def fit(i: int, j: int) -> bool:
        if i == len(exp):
            return j == len(act)
        if exp[i] == "...":
            return any(fit(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and exp[i] == act[j] and fit(i + 1, j + 1)

    return fit(0, 0)


def _run(argv: list[str], env: dict[str, str], answer: str | None) -> tuple[str, int]:
    from click.testing import CliRunner

    from campaign_states.cli import app

    runner = CliRunner(echo_stdin=answer is not None)
    result = runner.invoke(app(), argv, env=env, input=answer, prog_name="campaign-states")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.output, result.exit_code


def evaluate_console(example: Example) -> str | None:
    """Sybil evaluator for a ``console`` block; returns a failure message, or None."""
    ns: dict[str, Any] = example.namespace
    env: dict[str, str] = ns.setdefault("_console_env", {})
    for command, expected in _commands(example.parsed):
        words = shlex.split(command, comments=True)
        show_code = words[-2:] == ["echo", "$?"]
        if show_code:
            words = words[:-2]
            if words and words[-1].endswith(";"):
                words[-1] = words[-1][:-1] or words.pop()
        if not words:
            continue
        if words[0] == "export" and len(words) == 2 and "=" in words[1]:
            name, value = words[1].split("=", 1)
            env[name] = value
            continue
        if words[0] != "campaign-states":
            return f"console block runs only campaign-states and export, not: {command}"
        answer = "y\n" if any(x.rstrip().endswith("[y/N]: y") for x in expected) else None
        output, code = _run(words[1:], {**env, "COLUMNS": "100"}, answer)
        lines = output.splitlines()
        if show_code:
            lines.append(str(code))
        elif not expected:
            if code != 0:
                return f"$ {command}\nexited {code}:\n{output}"
            continue
        if not _matches(expected, lines):
            return (
                f"$ {command}\n--- the page shows:\n"
                + "\n".join(expected)
                + "\n--- the command printed:\n"
                + "\n".join(lines)
            )
    return None
