"""Segment commands: create, list, show, archive (cascading), unarchive."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from campaign_states import Campaign, Registry, Segment, SegmentState

from . import _render as r
from ._app import cli, json_option
from ._base import CliGroup, Env, pass_env

__all__: list[str] = []


@cli.group(cls=CliGroup)
def segment() -> None:
    """Create, inspect, archive (cascading) and unarchive segments."""


@segment.command(name="create")
@click.argument("segment_id")
@click.option("--name", default=None, help="Display name (default: the id).")
@json_option
@pass_env
def segment_create(env: Env, segment_id: str, name: str | None, as_json: bool) -> None:
    """Create an active segment."""
    s = env.open_registry(create=True).create_segment(segment_id, name=name)
    if as_json:
        r.print_json(r.segment_json(s))
        return
    r.console().print(Text.assemble("Created segment ", (r.safe(s.id), "bold"), "."))


@segment.command(name="list")
@json_option
@pass_env
def segment_list(env: Env, as_json: bool) -> None:
    """List every segment."""
    found = env.registry.segments()
    if as_json:
        r.print_json([r.segment_json(s) for s in found])
        return
    r.console().print(r.segments_table(found) if found else "No segments.")


@segment.command(name="show")
@click.argument("segment_id")
@json_option
@pass_env
def segment_show(env: Env, segment_id: str, as_json: bool) -> None:
    """Show a segment and every campaign targeting it (archived ones included)."""
    reg = env.registry
    s = reg.get_segment(segment_id)
    campaigns = reg.list(segment=segment_id)
    if as_json:
        r.print_json({**r.segment_json(s), "campaigns": [r.campaign_json(c) for c in campaigns]})
        return
    con = r.console()
    con.print(
        Text.assemble(
            "segment ",
            (r.safe(s.id), "bold"),
            f" ({r.safe(s.name)}): ",
            (s.state.value, r.STATE_STYLE.get(s.state.value, "")),
        )
    )
    if campaigns:
        con.print(r.campaigns_table(campaigns, title="campaigns targeting it"))
    else:
        con.print("No campaign targets it.")


def _victims(reg: Registry, segment_id: str, ids: tuple[str, ...]) -> list[Campaign]:
    wanted = set(ids)
    return [c for c in reg.list(segment=segment_id) if c.id in wanted]


@segment.command(name="archive")
@click.argument("segment_id")
@click.option("--dry-run", is_flag=True, help="Only list the campaigns that would be archived.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_env
def segment_archive(env: Env, segment_id: str, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Archive a segment and, atomically, every campaign targeting it.

    Shows the campaigns that will be archived and asks before doing it (unless --yes).
    """
    reg = env.registry
    preview = reg.archive_segment(segment_id, dry_run=True)
    victims = _victims(reg, segment_id, preview.campaign_ids)
    already = preview.segment.state is SegmentState.ARCHIVED
    con = r.console()
    if dry_run:
        if as_json:
            r.print_json(_archive_json(preview.segment, victims, dry_run=True, changed=False))
            return
        _show_victims(con, segment_id, victims, already, conditional=True)
        return
    if not as_json:
        _show_victims(con, segment_id, victims, already, conditional=False)
    if not already and not yes:
        click.confirm(
            f"Archive segment {segment_id!r} and {len(victims)} campaign(s)?", abort=True, err=True
        )
    started = time.perf_counter()
    # Called even when already archived: a retry after an ambiguous failure then waits out
    # whatever remains of the first archive's commit wait (see the guarantee).
    done = reg.archive_segment(segment_id, actor=env.actor)
    elapsed = time.perf_counter() - started
    if as_json:
        archived = _victims(reg, segment_id, done.campaign_ids)
        r.print_json(
            _archive_json(
                done.segment, archived, dry_run=False, changed=done.changed, seconds=elapsed
            )
        )
        return
    if not done.changed:
        con.print(
            Text.assemble(
                "Segment ", (r.safe(segment_id), "bold"), " was already archived: nothing to do."
            )
        )
        return
    con.print(
        Text.assemble(
            "Archived segment ",
            (r.safe(segment_id), "bold"),
            f" and {len(done.campaign_ids)} campaign(s) in {elapsed:.2f}s: "
            "no gate admits them any more.",
        )
    )


def _archive_json(
    segment: Segment,
    campaigns: list[Campaign],
    *,
    dry_run: bool,
    changed: bool,
    seconds: float | None = None,
) -> dict[str, Any]:
    """One shape for `segment archive --json`, dry run or not: ``campaigns`` are those it
    would archive (dry run) or did archive; ``seconds`` is null for a dry run."""
    return {
        "segment": r.segment_json(segment),
        "dry_run": dry_run,
        "changed": changed,
        "campaigns": [r.campaign_json(c) for c in campaigns],
        "seconds": None if seconds is None else round(seconds, 3),
    }


def _show_victims(
    con: Console, segment_id: str, victims: list[Campaign], already: bool, *, conditional: bool
) -> None:
    if already:
        con.print(Text.assemble("Segment ", (r.safe(segment_id), "bold"), " is already archived."))
        return
    verb = "would archive" if conditional else "will archive"
    if not victims:
        con.print(r.text(f"Archiving segment {segment_id} {verb} no campaign."))
        return
    con.print(
        r.campaigns_table(
            victims, title=f"archiving {segment_id} {verb} {len(victims)} campaign(s)"
        )
    )


@segment.command(name="unarchive")
@click.argument("segment_id")
@click.option(
    "--restore-campaigns",
    is_flag=True,
    help="Also unarchive the campaigns this segment's archive cascaded "
    "(to active_stopped, never running).",
)
@json_option
@pass_env
def segment_unarchive(env: Env, segment_id: str, restore_campaigns: bool, as_json: bool) -> None:
    """Unarchive a segment (its campaigns stay archived unless --restore-campaigns)."""
    done = env.registry.unarchive_segment(
        segment_id, actor=env.actor, restore_campaigns=restore_campaigns
    )
    if as_json:
        r.print_json(
            {
                "segment": r.segment_json(done.segment),
                "changed": done.changed,
                "restored": list(done.campaign_ids),
            }
        )
        return
    con = r.console()
    head = "Unarchived segment " if done.changed else "Segment "
    tail = "." if done.changed else " was not archived: nothing to do."
    con.print(Text.assemble(head, (r.safe(segment_id), "bold"), tail))
    if done.campaign_ids:
        con.print(r.text(f"Restored to active_stopped: {', '.join(done.campaign_ids)}"))
    elif done.changed and not restore_campaigns:
        con.print(
            Text(
                "Its campaigns stay archived (--restore-campaigns brings back the ones "
                "its archive cascaded).",
                style="dim",
            )
        )
