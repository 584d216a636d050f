"""The committed state diagrams are generated from the lifecycle declaration and kept fresh."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import support
from click.testing import CliRunner

from campaign_states import CAMPAIGN_LIFECYCLE, SEGMENT_LIFECYCLE
from campaign_states.cli import _diagrams, app

COMMITTED = Path(__file__).resolve().parents[1] / "diagrams"
CAMPAIGN, SEGMENT = _diagrams.DIAGRAMS


def run(*args: str):
    return CliRunner().invoke(app(), ["diagram", *args])


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A scratch copy of the committed diagrams."""
    target = tmp_path / "diagrams"
    shutil.copytree(COMMITTED, target)
    return target


class TestCommittedDiagramsAreFresh:
    """`diagram --check` passes on the committed files: they match the code."""

    def test_check_passes_on_the_committed_files(self):
        result = run("--check", "--dir", str(COMMITTED))
        assert (0, "") == (result.exit_code, result.stderr)

    def test_every_format_is_committed(self):
        expected = {f"{d.stem}.{ext}" for d in _diagrams.DIAGRAMS for ext in ("mmd", "dot", "svg")}
        assert expected == {p.name for p in COMMITTED.iterdir()}


class TestCheckCatchesStaleFiles:
    """`diagram --check` exits 1 naming the file when a diagram no longer matches the code."""

    @pytest.mark.parametrize("name", ["campaign_lifecycle.mmd", "segment_lifecycle.dot"])
    def test_edited_text_diagram_fails(self, copy: Path, name: str):
        path = copy / name
        path.write_text(path.read_text().replace("archive", "archiv", 1))
        result = run("--check", "--dir", str(copy))
        assert 1 == result.exit_code
        assert name in result.stderr
        assert "diagram --write" in result.stderr

    def test_missing_file_fails(self, copy: Path):
        (copy / "campaign_lifecycle.mmd").unlink()
        result = run("--check", "--dir", str(copy))
        assert 1 == result.exit_code
        assert "campaign_lifecycle.mmd is missing" in result.stderr

    def test_svg_rendered_from_an_older_dot_fails(self, copy: Path):
        old_dot = _diagrams.dot_source(CAMPAIGN).replace("unarchive", "restore")
        svg = copy / "campaign_lifecycle.svg"
        svg.write_text(_fake_svg(old_dot))
        result = run("--check", "--dir", str(copy))
        assert 1 == result.exit_code
        assert "campaign_lifecycle.svg was not rendered from the current" in result.stderr

    def test_svg_is_checked_by_source_hash_not_bytes(self, copy: Path):
        """Another Graphviz version lays out differently: same DOT source, still fresh."""
        svg = copy / "segment_lifecycle.svg"
        svg.write_text(_fake_svg(_diagrams.dot_source(SEGMENT)))
        assert 0 == run("--check", "--dir", str(copy)).exit_code

    def test_write_repairs_what_check_reports(self, copy: Path):
        support.require_graphviz()  # --write renders the SVGs
        (copy / "segment_lifecycle.mmd").write_text("stale\n")
        assert 1 == run("--check", "--dir", str(copy)).exit_code
        assert 0 == run("--write", "--dir", str(copy)).exit_code
        assert 0 == run("--check", "--dir", str(copy)).exit_code


def _fake_svg(dot: str) -> str:
    """An SVG with another layout, stamped with ``dot``'s hash as `render_svg` does."""
    h = _diagrams._dot_hash(dot)
    return (
        f'<?xml version="1.0"?>\n<!-- campaign-states dot-sha256: {h} -->\n'
        "<svg><!-- laid out by some other Graphviz --></svg>\n"
    )


class TestDiagramsShowTheDeclaration:
    """Every declared transition is an edge labelled with its trigger and guard."""

    @pytest.mark.parametrize("diagram", _diagrams.DIAGRAMS, ids=lambda d: d.stem)
    def test_every_transition_is_an_edge(self, diagram):
        mmd, dot = _diagrams.mermaid_source(diagram), _diagrams.dot_source(diagram)
        for t in diagram.lifecycle.transitions:
            sources = t["source"] if isinstance(t["source"], list) else [t["source"]]
            for src in sources:
                assert f"{src.name} --> {t['dest'].name}: {t['trigger'].value}" in mmd
                assert f"{src.name} -> {t['dest'].name} [label=" in dot

    def test_resume_edge_names_its_guard(self):
        label = "resume [no targeted segment archived]"
        assert f"ACTIVE_STOPPED --> ACTIVE_RUNNING: {label}" in _diagrams.mermaid_source(CAMPAIGN)
        assert f'[label="{label}"]' in _diagrams.dot_source(CAMPAIGN)

    def test_segment_diagram_shows_the_cascade(self):
        assert SEGMENT_LIFECYCLE is SEGMENT.lifecycle
        assert "archive cascades" in _diagrams.mermaid_source(SEGMENT)
        assert "archive cascades" in _diagrams.dot_source(SEGMENT)

    def test_initial_state_is_marked_and_no_current_state(self):
        assert CAMPAIGN_LIFECYCLE is CAMPAIGN.lifecycle
        mmd = _diagrams.mermaid_source(CAMPAIGN)
        assert "[*] --> ACTIVE_STOPPED" in mmd
        # A bound model would mark its current state with the "active" style.
        assert " s_active\n" not in mmd.replace("classDef s_active", "")
        assert "__initial__ -> ACTIVE_STOPPED" in _diagrams.dot_source(CAMPAIGN)

    def test_generation_is_deterministic(self):
        for d in _diagrams.DIAGRAMS:
            assert _diagrams.mermaid_source(d) == _diagrams.mermaid_source(d)
            assert _diagrams.dot_source(d) == _diagrams.dot_source(d)


class TestPrinting:
    """`diagram --format` prints one diagram."""

    def test_default_prints_campaign_mermaid(self):
        result = run()
        assert (0, _diagrams.mermaid_source(CAMPAIGN)) == (result.exit_code, result.stdout)

    def test_dot_for_segment(self):
        result = run("--format", "dot", "--lifecycle", "segment")
        assert (0, _diagrams.dot_source(SEGMENT)) == (result.exit_code, result.stdout)

    def test_svg_embeds_the_dot_hash(self):
        support.require_graphviz()
        result = run("--format", "svg")
        assert 0 == result.exit_code
        expected = _diagrams._dot_hash(_diagrams.dot_source(CAMPAIGN))
        assert expected == _diagrams.svg_dot_hash(result.stdout)
        assert "<svg" in result.stdout

    def test_two_actions_are_a_usage_error(self):
        assert 2 == run("--check", "--write").exit_code


class TestMissingTools:
    """A missing engine or binary is a clear error, never a silently different diagram."""

    def test_engine_fallback_is_refused(self, monkeypatch):
        real = _diagrams.build_machine

        def falling_back(lifecycle, **kwargs):
            # What transitions does, with only a log line, when the graphviz package is
            # missing: it builds the machine with the mermaid engine instead.
            return real(lifecycle, **{**kwargs, "graph_engine": "mermaid"})

        monkeypatch.setattr(_diagrams, "build_machine", falling_back)
        with pytest.raises(_diagrams.DiagramError, match=r"campaign-states\[diagrams\]"):
            _diagrams.dot_source(CAMPAIGN)
        result = run("--format", "dot")
        assert 1 == result.exit_code
        assert "fell back from the graphviz engine to mermaid" in result.stderr

    def test_missing_dot_binary_says_how_to_install(self, monkeypatch):
        monkeypatch.setattr(_diagrams.shutil, "which", lambda _name: None)
        result = run("--format", "svg")
        assert 1 == result.exit_code
        assert "apt-get install graphviz" in result.stderr


class TestGraphvizRequirement:
    """Without `dot` the rendering tests skip, unless CI requires Graphviz; then they fail."""

    def test_skips_without_dot(self, monkeypatch):
        monkeypatch.setattr(shutil, "which", lambda _name: None)
        monkeypatch.setattr(support, "REQUIRE_GRAPHVIZ", False)
        with pytest.raises(pytest.skip.Exception, match="apt-get install graphviz"):
            support.require_graphviz()

    def test_fails_without_dot_when_required(self, monkeypatch):
        monkeypatch.setattr(shutil, "which", lambda _name: None)
        monkeypatch.setattr(support, "REQUIRE_GRAPHVIZ", True)
        with pytest.raises(pytest.fail.Exception, match="CAMPAIGN_STATES_REQUIRE_GRAPHVIZ=1"):
            support.require_graphviz()
