"""Campaign commands: create, list, show, edit, history."""

from __future__ import annotations

from collections.abc import Sequence

import click
from rich.table import Table
from rich.text import Text

from campaign_states import Campaign, Registry, State

from . import _render as r
from ._app import STATES, channels_option, cli, defaulted_option, json_option, segments_option
from ._base import EXIT_USAGE, Env, fail, pass_env

__all__: list[str] = []


@cli.command()
@click.argument("name")
@channels_option("A channel it delivers on (repeat for several).", required=True)
@segments_option("A segment it targets (repeat for several).")
@click.option("--content", default="", help="Message body or template reference.")
@click.option("--id", "campaign_id", default=None, help="Its id (default: generated).")
@json_option
@pass_env
def create(
    env: Env,
    *,
    name: str,
    channels: Sequence[str],
    segments: Sequence[str],
    content: str,
    campaign_id: str | None,
    as_json: bool,
) -> None:
    """Create a campaign (it starts stopped; `resume` launches it)."""
    c = env.open_registry(create=True).create_campaign(
        name=name,
        channels=channels,
        segments=segments,
        content=content,
        campaign_id=campaign_id,
        actor=env.actor,
    )
    if as_json:
        r.print_json(r.campaign_json(c))
        return
    con = r.console()
    con.print(Text.assemble("Created campaign ", (r.safe(c.id), "bold"), f" ({c.state.value})."))
    con.print(r.text(f"Launch it with: campaign-states resume {c.id}", style="dim"))


DEFAULT_LIMIT = 50


@cli.command(name="list")
@click.option("--state", type=STATES, default=None, help="Only campaigns in this state.")
@click.option(
    "--segment", default=None, metavar="SEGMENT_ID", help="Only campaigns targeting this segment."
)
@click.option("--archived", is_flag=True, help="Include archived campaigns (hidden by default).")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help=f"At most this many, in id order  [default: {DEFAULT_LIMIT}].",
)
@click.option(
    "--after", default=None, metavar="ID", help="Start after this id (the next page: the last id)."
)
@click.option("--all", "show_all", is_flag=True, help="Every matching campaign, no limit.")
@json_option
@pass_env
def list_(
    env: Env,
    *,
    state: str | None,
    segment: str | None,
    archived: bool,
    limit: int | None,
    after: str | None,
    show_all: bool,
    as_json: bool,
) -> None:
    """List campaigns in id order, 50 at a time (archived ones hidden unless --archived or
    --state archived); the footer says how many more and how to see them."""
    if show_all and limit is not None:
        fail("--all and --limit exclude each other: pick one.", EXIT_USAGE)
    page_size = None if show_all else (limit or DEFAULT_LIMIT)
    hide_archived = state is None and not archived
    found, more = _page(
        env.registry,
        state=state,
        segment=segment,
        hide_archived=hide_archived,
        limit=page_size,
        after=after,
    )
    next_after = found[-1].id if more else None
    if as_json:
        r.print_json(
            {
                "campaigns": [r.campaign_json(c) for c in found],
                "more": more,
                "next_after": next_after,
            }
        )
        return
    con = r.console()
    if not found:
        con.print(
            r.text(
                "No campaigns"
                + (f" after {after}" if after is not None else "")
                + "."
                + (
                    ""
                    if archived or state
                    else " (archived ones are hidden: --archived shows them)"
                )
            )
        )
        return
    con.print(r.campaigns_table(found))
    if more:
        con.print(r.text(f"{more:,} more: --limit N, --after {next_after}, or --all", style="dim"))


def _page(
    reg: Registry,
    *,
    state: str | None,
    segment: str | None,
    hide_archived: bool,
    limit: int | None,
    after: str | None,
) -> tuple[list[Campaign], int]:
    """One page in id order and how many more match after it (one count query, two when
    archived ones are hidden)."""
    wanted = None if state is None else State(state)
    if not hide_archived:
        found = reg.list(state=wanted, segment=segment, limit=limit, after=after)
    else:
        # Archived campaigns are filtered out here, so read in chunks until the page is
        # full: a chunk is one keyset query, however deep in the table it starts.
        found = []
        cursor = after
        chunk = None if limit is None else max(limit * 2, 200)
        while limit is None or len(found) < limit:
            rows = reg.list(segment=segment, limit=chunk, after=cursor)
            found.extend(c for c in rows if c.state is not State.ARCHIVED)
            if chunk is None or len(rows) < chunk:
                break
            cursor = rows[-1].id
        found = found if limit is None else found[:limit]
    if limit is None or len(found) < limit:
        return found, 0
    last = found[-1].id
    more = reg.count(state=wanted, segment=segment, after=last)
    if hide_archived and more:
        more -= reg.count(state=State.ARCHIVED, segment=segment, after=last)
    return found, more


@cli.command()
@click.argument("campaign_id")
@defaulted_option("--last", 5, click.IntRange(min=0), "How many recent history entries to show.")
@json_option
@pass_env
def show(env: Env, campaign_id: str, last: int, as_json: bool) -> None:
    """Show a campaign: state, channels, segments, results, recent history."""
    reg = env.registry
    c = reg.get(campaign_id)
    segments = [reg.get_segment(s) for s in sorted(c.segments)]
    results = reg.results(campaign_id)
    history = reg.history(campaign_id)[-last:] if last else []
    if as_json:
        r.print_json(
            {
                **r.campaign_json(c),
                "segments": [r.segment_json(s) for s in segments],
                "results": r.results_json(results),
                "history": [r.history_json(h) for h in history],
            }
        )
        return
    con = r.console()
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    info.add_row("id", r.text(c.id))
    info.add_row("name", r.text(c.name))
    info.add_row("state", r.text(c.state.value, style=r.STATE_STYLE.get(c.state.value, "")))
    info.add_row("version", str(c.version))
    info.add_row("channels", r.text(", ".join(sorted(ch.value for ch in c.channels))))
    info.add_row(
        "segments", r.text(", ".join(f"{s.id} ({s.state.value})" for s in segments) or "-")
    )
    if c.archive_cause:
        info.add_row("archived by", r.text(f"segment {c.archive_cause}"))
    info.add_row("content", r.text(c.content or "-"))
    delivered = ", ".join(
        f"{ch.value} {n}" for ch, n in sorted(results.delivered.items(), key=lambda i: i[0].value)
    )
    info.add_row("delivered", r.text(delivered or "0"))
    info.add_row("impressions", str(results.impressions))
    con.print(info)
    if history:
        con.print(r.history_table(history, title=f"last {len(history)} change(s)"))


@cli.command()
@click.argument("campaign_id")
@click.option("--name", default=None, help="New display name.")
@click.option("--content", default=None, help="New content.")
@channels_option("Replace the channels (repeat for several).")
@segments_option("Replace the targeted segments (repeat for several).")
@click.option("--no-segments", is_flag=True, help="Target no segment.")
@json_option
@pass_env
def edit(
    env: Env,
    *,
    campaign_id: str,
    name: str | None,
    content: str | None,
    channels: Sequence[str],
    segments: Sequence[str],
    no_segments: bool,
    as_json: bool,
) -> None:
    """Change a campaign's name, content, channels or segments (refused when archived)."""
    if segments and no_segments:
        raise click.UsageError("--segment and --no-segments contradict each other.")
    if name is None and content is None and not channels and not segments and not no_segments:
        raise click.UsageError("Nothing to change: give --name, --content, --channel or --segment.")
    c = env.registry.edit(
        campaign_id,
        name=name,
        content=content,
        channels=channels or None,
        segments=() if no_segments else (segments or None),
        actor=env.actor,
    )
    if as_json:
        r.print_json(r.campaign_json(c))
        return
    r.console().print(Text.assemble("Edited ", (r.safe(c.id), "bold"), f" (version {c.version})."))


@cli.command()
@click.argument("campaign_id")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Only the last N entries.")
@json_option
@pass_env
def history(env: Env, campaign_id: str, limit: int | None, as_json: bool) -> None:
    """A campaign's change history, oldest first (readable when archived)."""
    entries = env.registry.history(campaign_id)
    if limit is not None:
        entries = entries[-limit:]
    if as_json:
        r.print_json([r.history_json(h) for h in entries])
        return
    r.console().print(r.history_table(entries, title=f"history of {campaign_id}"))
