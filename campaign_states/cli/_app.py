"""The `campaign-states` group and what its commands share (options, choices)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import click

from campaign_states import Channel, State

from ._base import DEFAULT_URL, CliGroup, Env, default_actor

__all__ = [
    "CHANNELS",
    "STATES",
    "channels_option",
    "cli",
    "defaulted_option",
    "json_option",
    "segments_option",
]

CHANNELS: Final = click.Choice([c.value for c in Channel])
STATES: Final = click.Choice([s.value for s in State])


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    "url",
    envvar="CAMPAIGN_STATES_URL",
    default=DEFAULT_URL,
    show_default=True,
    metavar="URL",
    help="Store URL: sqlite:///path.db, postgresql://..., memory:// (env CAMPAIGN_STATES_URL).",
)
@click.option(
    "--actor",
    envvar="CAMPAIGN_STATES_ACTOR",
    default=None,
    metavar="NAME",
    help="Who the history records for changes (env CAMPAIGN_STATES_ACTOR; default: login).",
)
@click.version_option(package_name="campaign-states")
@click.pass_context
def cli(ctx: click.Context, url: str, actor: str | None) -> None:
    """Operate campaigns and segments: archive, stop, resume, inspect.

    Exit codes: 0 success, 1 refused or not found, 2 usage (bad option or malformed input).
    """
    ctx.obj = Env(ctx=ctx, url=url, actor=actor or default_actor())


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def channels_option(help: str, *, required: bool = False) -> Callable[[Any], Any]:
    """``-c/--channel`` (repeatable), into the ``channels`` parameter."""
    return click.option(
        "-c", "--channel", "channels", multiple=True, required=required, type=CHANNELS, help=help
    )


def segments_option(help: str) -> Callable[[Any], Any]:
    """``-s/--segment`` (repeatable), into the ``segments`` parameter."""
    return click.option(
        "-s", "--segment", "segments", multiple=True, metavar="SEGMENT_ID", help=help
    )


def defaulted_option(name: str, default: object, type: Any, help: str) -> Callable[[Any], Any]:
    """An option whose default the help shows."""
    return click.option(name, default=default, show_default=True, type=type, help=help)
