"""State diagrams generated from the one lifecycle declaration.

Each diagram comes from a transitions ``GraphMachine`` built by
`campaign_states._lifecycle.build_machine` from `CAMPAIGN_LIFECYCLE` or
`SEGMENT_LIFECYCLE`, so a diagram cannot show a transition the engine does not have.

Determinism: the machine is fresh and has no model bound (our triggers are enum members,
which transitions cannot bind as model attributes), so no "current state" is marked; the
engine is named explicitly and checked afterwards, because transitions silently falls back
from graphviz to mermaid when the ``graphviz`` package is missing.

SVG embeds Graphviz's version and layout, so it is not compared byte for byte: each SVG
carries the SHA-256 of the DOT source it was rendered from, and the check compares that.
"""

from __future__ import annotations

import enum
import hashlib
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from campaign_states._lifecycle import (
    CAMPAIGN_LIFECYCLE,
    SEGMENT_LIFECYCLE,
    Lifecycle,
    SegmentState,
    State,
    build_machine,
)

__all__ = [
    "DIAGRAMS",
    "Diagram",
    "DiagramError",
    "check",
    "dot_source",
    "mermaid_source",
    "render_svg",
    "svg_dot_hash",
    "write",
]

_HASH_MARK: Final = "campaign-states dot-sha256:"
_HASH_RE: Final = re.compile(re.escape(_HASH_MARK) + r" ([0-9a-f]{64})")


class DiagramError(Exception):
    """A diagram cannot be generated here (missing Graphviz, engine fallback...)."""


@attrs.frozen(kw_only=True)
class Diagram:
    """One committed diagram: which lifecycle, under which file stem, with which notes.

    Attributes:
        stem: File name without extension in ``diagrams/``.
        title: The diagram's title.
        lifecycle: The declaration it is generated from.
        notes: Notes attached to states (state -> text): behaviour that is not a transition,
            such as the segment archive's cascade.
    """

    stem: str
    title: str
    lifecycle: Lifecycle
    notes: Mapping[enum.Enum, str] = attrs.field(factory=dict)


DIAGRAMS: Final = (
    Diagram(
        stem="campaign_lifecycle",
        title="Campaign lifecycle",
        lifecycle=CAMPAIGN_LIFECYCLE,
        notes={
            State.ARCHIVED: (
                "read-only, and once archive() has returned no gate admits a message or impression"
            ),
        },
    ),
    Diagram(
        stem="segment_lifecycle",
        title="Segment lifecycle",
        lifecycle=SEGMENT_LIFECYCLE,
        notes={
            SegmentState.ARCHIVED: (
                "archive cascades, archiving every campaign targeting it in the same "
                "transaction. unarchive leaves them archived unless restore_campaigns "
                "(then active_stopped, never running)"
            ),
        },
    ),
)


def _machine(diagram: Diagram, engine: str, title: str) -> Any:
    machine = build_machine(
        diagram.lifecycle,
        graph=True,
        model=None,
        graph_engine=engine,
        title=title,
        # transitions' auto-transition filter calls str methods on event names; ours are
        # enums. auto_transitions is off, so there are none to show anyway.
        show_auto_transitions=True,
    )
    got = getattr(machine.graph_cls, "__module__", "")
    if not got.endswith(f"diagrams_{engine}"):
        hint = ""
        if engine == "graphviz":
            hint = " Install it: pip install 'campaign-states[diagrams]'."
        raise DiagramError(
            f"transitions fell back from the {engine} engine to {got.rsplit('_', 1)[-1]}: "
            f"the Python package it needs is missing.{hint}"
        )
    _label(machine, diagram.lifecycle)
    return machine


def _label(machine: Any, lifecycle: Lifecycle) -> None:
    """Label states by their value and edges by trigger and guard, from the declaration."""
    for state in machine.states.values():
        state.label = state.value.value if isinstance(state.value, enum.Enum) else str(state.name)
    for event in machine.events.values():
        trigger = event.name.value if isinstance(event.name, enum.Enum) else str(event.name)
        for transitions in event.transitions.values():
            for transition in transitions:
                guards = [
                    ("" if cond.target else "not ") + lifecycle.guard_labels[cond.func]
                    for cond in transition.conditions
                ]
                transition.label = f"{trigger} [{' and '.join(guards)}]" if guards else trigger


def _graph(machine: Any, title: str) -> Any:
    # No model: nothing is marked as the current state, so the output is deterministic.
    return machine.graph_cls(machine).get_graph(title=title)


def mermaid_source(diagram: Diagram) -> str:
    """The diagram as Mermaid ``stateDiagram-v2`` text (needs no binary)."""
    # transitions writes the title verbatim between front-matter fences; "title: ..." makes
    # it the YAML mapping Mermaid reads.
    machine = _machine(diagram, "mermaid", f"title: {diagram.title}")
    lines = str(_graph(machine, f"title: {diagram.title}").source).splitlines()
    for state, text in diagram.notes.items():
        # Multi-line form: a one-line note's text may not contain ':'.
        lines += [
            f"  note right of {state.name}",
            *(f"    {line}" for line in _wrap(text)),
            "  end note",
        ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def dot_source(diagram: Diagram) -> str:
    """The diagram as Graphviz DOT text (needs the ``graphviz`` Python package, not ``dot``)."""
    machine = _machine(diagram, "graphviz", diagram.title)
    graph = _graph(machine, diagram.title)
    initial = diagram.lifecycle.initial
    graph.node(
        "__initial__", label="", shape="point", width="0.15", style="filled", fillcolor="black"
    )
    graph.edge("__initial__", initial.name)
    for state, text in diagram.notes.items():
        note = f"note_{state.name}"
        # DOT's "\\n" escape (centred line break); a raw newline would be kept verbatim.
        graph.node(
            note,
            label="\\n".join(_wrap(text)),
            shape="note",
            style="filled",
            fillcolor="lightyellow",
        )
        graph.edge(state.name, note, style="dashed", arrowhead="none")
    return "\n".join(line.rstrip() for line in str(graph.source).splitlines()) + "\n"


def _wrap(text: str, width: int = 40) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _dot_hash(dot: str) -> str:
    return hashlib.sha256(dot.encode()).hexdigest()


def render_svg(dot: str) -> str:
    """Render DOT with Graphviz's ``dot -Tsvg``; the SVG records the hash of ``dot``."""
    exe = shutil.which("dot")
    if exe is None:
        raise DiagramError(
            "Graphviz's `dot` is not installed: apt-get install graphviz (Debian/Ubuntu), "
            "brew install graphviz (macOS)."
        )
    try:
        done = subprocess.run(
            [exe, "-Tsvg"], input=dot, capture_output=True, text=True, check=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise DiagramError(f"`dot -Tsvg` failed: {e}") from e
    svg = done.stdout
    comment = f"<!-- {_HASH_MARK} {_dot_hash(dot)} -->\n"
    # After the XML declaration (which must come first), before the DOCTYPE.
    head, sep, rest = svg.partition("?>\n")
    return head + sep + comment + rest if sep else comment + svg


def svg_dot_hash(svg: str) -> str | None:
    """The DOT hash an SVG was rendered from, or ``None`` when it carries none."""
    found = _HASH_RE.search(svg)
    return found.group(1) if found else None


def _expected_text() -> dict[str, str]:
    out: dict[str, str] = {}
    for d in DIAGRAMS:
        out[f"{d.stem}.mmd"] = mermaid_source(d)
        out[f"{d.stem}.dot"] = dot_source(d)
    return out


def check(directory: Path) -> list[str]:
    """Problems with the committed diagrams in ``directory`` (empty when all are current).

    ``.mmd`` and ``.dot`` must equal what the code generates; each ``.svg`` must have been
    rendered from the current DOT (its embedded hash).
    """
    problems: list[str] = []
    expected = _expected_text()
    for name, text in expected.items():
        path = directory / name
        if not path.exists():
            problems.append(f"{path} is missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path} differs from what the lifecycle declaration generates")
    for d in DIAGRAMS:
        path = directory / f"{d.stem}.svg"
        if not path.exists():
            problems.append(f"{path} is missing")
            continue
        got = svg_dot_hash(path.read_text(encoding="utf-8"))
        if got != _dot_hash(expected[f"{d.stem}.dot"]):
            problems.append(f"{path} was not rendered from the current {d.stem}.dot")
    return problems


def write(directory: Path) -> list[Path]:
    """Regenerate every diagram file in ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    contents = _expected_text()
    for d in DIAGRAMS:
        contents[f"{d.stem}.svg"] = render_svg(contents[f"{d.stem}.dot"])
    for name, text in contents.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
