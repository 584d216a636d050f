"""`campaign-states gates`: who is connected to the store, and who is lagging."""

from __future__ import annotations

import click
from rich.table import Table

from . import _render as r
from ._app import cli, json_option
from ._base import Env, pass_env

__all__: list[str] = []


@cli.command()
@json_option
@pass_env
def gates(env: Env, as_json: bool) -> None:
    """List the gates registered on the store (oldest first).

    A gate whose heartbeat is older than its lease stalled or died without closing:
    archives no longer wait for it. One whose acknowledged sequence trails the store's
    makes archives wait for it.
    """
    rows = env.registry.gates()
    if as_json:
        r.print_json(
            [
                {
                    "gate_id": g.gate_id,
                    "host": g.host,
                    "pid": g.pid,
                    "started": r.when(g.started),
                    "lease": g.lease,
                    "heartbeat_age": round(g.heartbeat_age, 3),
                    "acked_seq": g.acked_seq,
                    "in_flight": g.in_flight,
                    "live": g.heartbeat_age < g.lease,
                }
                for g in rows
            ]
        )
        return
    if not rows:
        click.echo("No gates registered.")
        return
    table = Table(title=r.text(f"{len(rows)} gate(s)", style="italic"))
    for name in ("gate", "host", "pid", "started", "lease", "heartbeat", "acked seq", "in flight"):
        table.add_column(name)
    for g in rows:
        late = g.heartbeat_age >= g.lease
        table.add_row(
            r.text(g.gate_id[:12]),
            r.text(g.host),
            str(g.pid),
            r.when(g.started),
            f"{g.lease:g}s",
            r.text(f"{g.heartbeat_age:.1f}s ago" + (" (lapsed)" if late else ""),
                   style="red" if late else ""),
            str(g.acked_seq),
            str(g.in_flight),
        )  # fmt: skip
    r.console().print(table)
