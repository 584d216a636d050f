"""Commands beyond the lifecycle: the gate, the diagrams, the demo."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from . import _diagrams
from . import _render as r
from ._app import CHANNELS, cli, defaulted_option, json_option
from ._base import EXIT_USAGE, CliGroup, Env, fail, pass_env

__all__: list[str] = []

_BROKEN_GATE_GONE = (
    "--broken-gate is no longer part of the demo: the deliberately broken gate lives with "
    "the test suite (tests/race/broken.py), which runs the demo with it and shows the "
    "checker fail: pytest tests/test_demo.py -k broken_gate."
)


@cli.group(cls=CliGroup)
def gate() -> None:
    """Ask the delivery gate, as a pipeline would."""


@gate.command(name="check")
@click.argument("campaign_id")
@click.option("-c", "--channel", required=True, type=CHANNELS, help="The channel to send on.")
@click.option("--impression", is_flag=True, help="An in-app impression rather than a message.")
@json_option
@pass_env
def gate_check(env: Env, campaign_id: str, channel: str, impression: bool, as_json: bool) -> None:
    """Print the gate's decision and reason (exit 0 admitted, 1 denied)."""
    from delivery_gate import DeliveryGate, Emission

    kind = Emission.IN_APP_IMPRESSION if impression else Emission.MESSAGE
    g = DeliveryGate(env.registry)
    try:
        d = g.check(campaign_id, channel=channel, kind=kind)
    finally:
        g.close()
    # The enum's value ("segment_archived"), lowercase as every other field's value.
    reason = getattr(d.reason, "value", str(d.reason))
    if as_json:
        r.print_json(
            {
                "campaign_id": campaign_id,
                "channel": channel,
                "kind": kind.value,
                "admitted": d.admitted,
                "reason": reason,
                "version": d.version,
            }
        )
    else:
        verdict = Text("admitted", style="green") if d.admitted else Text("denied", style="red")
        r.console().print(
            Text.assemble(
                verdict,
                f": {reason} (campaign ",
                (r.safe(campaign_id), "bold"),
                f", {channel}, {kind.value}, version {d.version})",
            )
        )
    if not d.admitted:
        raise click.exceptions.Exit(1)


@cli.command()
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 if a committed .mmd/.dot differs from the code, or an .svg was not "
    "rendered from the current .dot.",
)
@click.option("--write", is_flag=True, help="Regenerate every file (SVG needs Graphviz's dot).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot", "svg"]),
    default=None,
    help="Print one diagram in this format (default: mermaid).",
)
@click.option(
    "--lifecycle",
    type=click.Choice(["campaign", "segment"]),
    default="campaign",
    show_default=True,
    help="Which diagram --format prints.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("diagrams"),
    show_default=True,
    help="Where the committed files are.",
)
def diagram(check: bool, write: bool, fmt: str | None, lifecycle: str, directory: Path) -> None:
    """Print, check or regenerate the state diagrams (generated from the lifecycle)."""
    if sum((check, write, fmt is not None)) > 1:
        raise click.UsageError("Use one of --check, --write, --format.")
    if write:
        for path in _diagrams.write(directory):
            click.echo(f"wrote {r.safe(path)}")
        return
    if check:
        problems = _diagrams.check(directory)
        if problems:
            fail(
                "Stale diagrams: "
                + "; ".join(problems)
                + ". Regenerate: campaign-states diagram --write (or make diagrams)."
            )
        click.echo(f"{r.safe(directory)}/ is up to date with the lifecycle declaration.")
        return
    (d,) = [d for d in _diagrams.DIAGRAMS if d.lifecycle.name == lifecycle]
    if fmt == "dot":
        click.echo(_diagrams.dot_source(d), nl=False)
    elif fmt == "svg":
        click.echo(_diagrams.render_svg(_diagrams.dot_source(d)), nl=False)
    else:
        click.echo(_diagrams.mermaid_source(d), nl=False)


@cli.command()
@defaulted_option(
    "--duration",
    8.0,
    click.FloatRange(min=2.0),
    "Seconds the workers emit for (at least; the scripted actions may extend it).",
)
@defaulted_option(
    "--workers", 3, click.IntRange(1, 64), "Worker processes emitting through their own gates."
)
@defaulted_option(
    "--campaigns",
    10,
    click.IntRange(6, 500),
    "Campaigns created (6 play scripted roles; the rest keep running).",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite file to create (must not exist; default: a temporary directory).",
)
@click.option(
    "--broken-gate",
    is_flag=True,
    hidden=True,
    help="Gone: the deliberately broken gate lives with the test suite.",
)
def demo(duration: float, workers: int, campaigns: int, db: Path | None, broken_gate: bool) -> None:
    """Watch a multi-process pipeline stop delivering the moment a campaign is archived.

    Exits 1 if any delivery happened after an archive returned.
    """
    from ._demo import run_demo

    if broken_gate:
        # Still accepted, so a script using it gets a reason rather than "no such option".
        fail(_BROKEN_GATE_GONE, EXIT_USAGE)
    if db is not None and db.exists():
        fail(f"{db} exists: the demo needs a fresh SQLite file.", EXIT_USAGE)
    report = run_demo(
        duration=duration,
        workers=workers,
        campaigns=campaigns,
        db=db,
        console=r.console(),
    )
    if report.exit_code:
        raise click.exceptions.Exit(report.exit_code)
