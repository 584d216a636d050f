"""The README stays true to the code it documents."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class TestReadme:
    """The README embeds what the code generates and keeps its required sections."""

    def test_mermaid_block_is_the_generated_diagram(self):
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        block = re.search(r"```mermaid\n(.*?)```", readme, re.S)
        assert block is not None
        generated = (ROOT / "diagrams" / "campaign_lifecycle.mmd").read_text(encoding="utf-8")
        assert generated == block.group(1)

    def test_setup_commands_come_first_and_changelog_last(self):
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        headings = re.findall(r"^## (.+)$", readme, re.M)
        assert "Set up" == headings[0]
        assert "Changelog" == headings[-1]
        assert "make demo" in readme.split("## Quickstart")[0]
        assert "make test" in readme.split("## Quickstart")[0]
