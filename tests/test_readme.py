"""The README stays true to the code it documents."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class TestReadme:
    """The README embeds what the code generates and keeps its required sections."""

    def test_the_lifecycle_page_shows_the_generated_diagrams(self):
        # The SVGs are what `campaign-states diagram --check` holds to the declaration.
        page = (ROOT / "docs" / "lifecycle.md").read_text(encoding="utf-8")
        shown = re.findall(r"!\[[^\]]*\]\(\.\./(diagrams/[^)]+\.svg)\)", page)
        assert ["diagrams/campaign_lifecycle.svg", "diagrams/segment_lifecycle.svg"] == shown
        assert all((ROOT / p).is_file() for p in shown)

    def test_short_and_every_link_to_docs_resolves(self):
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        assert len(readme.splitlines()) <= 250
        links = re.findall(r"\]\((docs/[^)#]+)", readme)
        assert links
        assert [] == [link for link in links if not (ROOT / link).is_file()]

    def test_every_page_is_in_the_site(self):
        index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
        toctree = index.split("```{toctree}")[1].split("```")[0].split()
        pages = sorted(p.stem for p in (ROOT / "docs").glob("*.md") if p.stem != "index")
        assert pages == sorted(toctree[toctree.index(":maxdepth:") + 2 :])

    def test_setup_commands_come_first_and_changelog_last(self):
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        headings = re.findall(r"^## (.+)$", readme, re.M)
        assert "Set up" == headings[0]
        assert "Changelog" == headings[-1]
        assert "make demo" in readme.split("## Quickstart")[0]
        assert "make test" in readme.split("## Quickstart")[0]
