"""The `campaign-states` command line: operate campaigns, check the gate, draw, demo.

An application on top of `campaign_states` and `delivery_gate`; nothing imports it.
click and rich are imported only when the command runs, so the demo's worker processes
(which import a module of this package) stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click

__all__ = ["app", "main"]


def app() -> click.Group:
    """The click group behind `campaign-states` (for embedding and tests)."""
    # Each module registers its commands on the group when imported.
    from . import _campaigns, _gates, _segments, _tools, _triggers, _web  # noqa: F401
    from ._app import cli

    return cli


def main() -> None:
    """Run `campaign-states` (the console script's entry point)."""
    app()(prog_name="campaign-states")
