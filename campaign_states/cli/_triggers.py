"""archive, unarchive, stop, resume: one id prints a line, several a per-id table."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import click
from rich.text import Text

from campaign_states import BulkResult, Outcome, State, TransitionResult, Trigger

from . import _render as r
from ._app import cli, json_option
from ._base import Env, Failure, pass_env

__all__: list[str] = []


def _trigger_command(trigger: Trigger, summary: str, past: str) -> Callable[..., None]:
    @click.argument("campaign_ids", nargs=-1, required=True, metavar="ID...")
    @json_option
    @pass_env
    def command(env: Env, campaign_ids: Sequence[str], as_json: bool) -> None:
        reg = env.registry
        ids = list(dict.fromkeys(campaign_ids))
        started = time.perf_counter()
        if len(ids) == 1:
            one: TransitionResult = getattr(reg, trigger.value)(ids[0], actor=env.actor)
            _report_one(one, trigger, past, time.perf_counter() - started, as_json)
            return
        many: BulkResult = getattr(reg, f"{trigger.value}_many")(ids, actor=env.actor)
        _report_many(many, trigger, time.perf_counter() - started, as_json)

    command.__doc__ = summary
    return cli.command(name=trigger.value)(command)


def _report_one(
    result: TransitionResult, trigger: Trigger, past: str, elapsed: float, as_json: bool
) -> None:
    c = result.campaign
    previous = result.previous.value if isinstance(result.previous, State) else str(result.previous)
    if as_json:
        # The shape of a bulk call's, for one id: scripts read one shape whatever they pass.
        outcome = Outcome.CHANGED if result.changed else Outcome.UNCHANGED
        item = {"outcome": outcome.value, "from": previous, "state": c.state.value, "reason": None}
        r.print_json({"outcomes": {c.id: item}, "seconds": round(elapsed, 3)})
        return
    con = r.console()
    if not result.changed:
        con.print(
            Text.assemble((r.safe(c.id), "bold"), f" is already {c.state.value}: nothing to do.")
        )
        return
    line = Text.assemble(f"{past} ", (r.safe(c.id), "bold"), f" ({previous} -> {c.state.value})")
    if trigger in (Trigger.ARCHIVE, Trigger.STOP):
        line.append(f" in {elapsed:.2f}s: no gate admits it any more.")
    else:
        line.append(".")
    con.print(line)


def _report_many(result: BulkResult, trigger: Trigger, elapsed: float, as_json: bool) -> None:
    counts = result.counts()
    if as_json:
        r.print_json({"outcomes": r.bulk_json(result), "seconds": round(elapsed, 3)})
    else:
        con = r.console()
        con.print(r.bulk_table(result, verb=trigger.value))
        con.print(f"{r.counts_line(counts)} ({elapsed:.2f}s).")
    bad = counts[Outcome.REFUSED] + counts[Outcome.NOT_FOUND]
    if bad:
        failure = Failure(
            f"{bad} of {len(result)} campaign(s) could not be {trigger.value}d: "
            f"{r.counts_line(counts)}."
        )
        # With --json the outcomes above already say it: no second JSON document.
        failure.reported = as_json  # type: ignore[attr-defined]
        raise failure


_trigger_command(
    Trigger.ARCHIVE, "Archive campaigns: once this returns, no gate admits them.", "Archived"
)
_trigger_command(
    Trigger.UNARCHIVE, "Unarchive campaigns (to active_stopped, never running).", "Unarchived"
)
_trigger_command(
    Trigger.STOP, "Stop running campaigns: once this returns, no gate admits them.", "Stopped"
)
_trigger_command(
    Trigger.RESUME, "Resume stopped campaigns (refused while a segment is archived).", "Resumed"
)
