"""The race suite's checker: the experiment's rules applied to the harness's event logs.

The logs are what `race.harness` writes: per process, ``("sent", cid, entered, sent_at)``
and ``("permit", cid, entered, left, inside)`` tuples; the calls are
`campaign_states.cli._experiment.Action` lists. The rules (a send after its archive
returned, a permit in flight across a moment) are the experiment's, shared with the demo.
"""

from __future__ import annotations

from typing import Any

import attrs

from campaign_states.cli._experiment import Action, late_sends, silences, straddles

__all__ = ["Report", "check"]


@attrs.frozen(kw_only=True)
class Report:
    """What a run did, and what the checker found.

    Attributes:
        archives: Campaigns archived (hundreds per run).
        calls: Archive calls made.
        sends: Emissions sent (still_valid() was true), all processes and threads.
        in_flight_at_call: Local admitted permits in flight when an archive of their
            campaign was called: the drain had to wait for each of them.
        violations: Each a description; the guarantee holds iff this is empty.
    """

    archives: int
    calls: int
    sends: int
    in_flight_at_call: int
    violations: list[str]


def check(calls: list[Any], remote: list[list[Any]], local: list[Any]) -> Report:
    """Assert the guarantee on a run's events (``calls`` as `run_archiver` wrote them)."""
    silenced = silences(Action.from_list(c) for c in calls)
    violations: list[str] = []
    for log in remote:
        # The stronger promise of an acknowledged call: no permit admitted before it was
        # still inside its block, in any process, after it returned.
        for kind, cid, t_enter, _t_exit, *inside in log:
            s = silenced.get(cid)
            if kind != "permit" or s is None or not s.acknowledged:
                continue
            if straddles(t_enter, inside[0], s.action.returned):
                violations.append(
                    f"{cid}: a permit in another process was still in flight after its "
                    f"acknowledged archive returned ({inside[0] - s.action.returned:.4f}s more)"
                )
    sends = [(cid, t) for log in [*remote, local] for kind, cid, _, t, *_ in log if kind == "sent"]
    violations += late_sends(silenced, sends)
    in_flight = 0
    for kind, cid, t_enter, t_exit, *_ in local:
        s = silenced.get(cid)
        if kind != "permit" or s is None:
            continue
        in_flight += straddles(t_enter, t_exit, s.action.called)
        if straddles(t_enter, t_exit, s.action.returned):
            violations.append(
                f"{cid}: archive returned with a local permit still in flight "
                f"({t_exit - s.action.returned:.4f}s more)"
            )
    return Report(
        archives=len(silenced),
        calls=len(calls),
        sends=len(sends),
        in_flight_at_call=in_flight,
        violations=violations,
    )
