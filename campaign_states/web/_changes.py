"""Running changes: one campaign's trigger, a bulk trigger, a segment archive, and their
results (shown at once when quick, else on a page that polls until they are)."""

from __future__ import annotations

import concurrent.futures
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from campaign_states import BulkResult, Outcome, SegmentChange, TransitionResult, Trigger
from campaign_states import exceptions as exc

from ._base import STATUS_OF, call, console, error_page, flash, render, see_other
from ._jobs import Job
from ._security import Principal

__all__ = ["SILENCING", "job_page", "start_and_finish", "summary"]

#: Triggers that return only once no gate admits the campaign (so they wait).
SILENCING: Final = frozenset({Trigger.ARCHIVE.value, Trigger.STOP.value})
_CONFIRMED: Final = "Confirmed: no gate admits it any more."
_PAST: Final = {
    "archive": "Archived",
    "unarchive": "Unarchived",
    "stop": "Stopped",
    "resume": "Resumed",
}


def nothing_changed(error: BaseException) -> str:
    """ " Nothing was changed." unless the error means the change may have happened."""
    if isinstance(error, exc.CommitUnknownError | exc.DrainTimeoutError):
        return ""
    return " Nothing was changed."


def status_of(error: BaseException) -> int:
    """The HTTP status a library error's page gets."""
    for kind, status in STATUS_OF:
        if isinstance(error, kind):
            return status
    return 500


def expected_wait(request: Request) -> float:
    """How long a silencing change is expected to wait at most (the store's commit wait)."""
    reg = console(request).registry
    return reg.lease_settings().commit_wait() if reg.store.needs_commit_wait else 0.0


def trigger_message(trigger: str, name: str, r: TransitionResult) -> str:
    """One line on what a single trigger did."""
    state = r.campaign.state.value
    if not r.changed:
        text = f"“{name}” was already {state}: nothing to do."
    else:
        text = f"{_PAST[trigger]} “{name}”: now {state}."
    if trigger in SILENCING:
        text += " " + _CONFIRMED
    elif trigger == Trigger.UNARCHIVE.value and r.changed:
        text += " Resume it to deliver again."
    return text


def summary(job: Job) -> dict[str, Any]:
    """What a finished job's page shows."""
    error = job.future.exception()
    if error is not None:
        return {"error": str(error) + nothing_changed(error), "status": status_of(error)}
    result = job.future.result()
    out: dict[str, Any] = {"error": None, "status": 200}
    if job.kind == "trigger":
        assert isinstance(result, TransitionResult)
        out["message"] = trigger_message(job.meta["trigger"], job.meta["name"], result)
    elif job.kind == "bulk":
        assert isinstance(result, BulkResult)
        counts = dict.fromkeys(Outcome, 0)
        for item in result.values():
            counts[item.outcome] += 1
        out["outcomes"] = list(result.values())
        out["counts"] = {o.value: n for o, n in counts.items()}
        out["confirmed"] = job.meta["trigger"] in SILENCING
    else:
        assert isinstance(result, SegmentChange)
        out["change"] = result
    return out


async def start_and_finish(
    request: Request,
    who: Principal,
    fn: Any,
    *,
    title: str,
    back: str,
    kind: str,
    meta: dict[str, Any],
    silencing: bool,
) -> Response:
    """Start ``fn`` as a job. Refused at once (bad input, not allowed): its error page.
    A quick single trigger: back to ``back`` with a message. Anything else, or still
    waiting: its job page."""
    con = console(request)
    expected = await call(expected_wait, request) if silencing else 0.0
    job = con.jobs.start(
        fn, owner=who.name, title=title, back=back, expected=expected, kind=kind, meta=meta
    )
    # Waited for in a worker thread: the event loop keeps serving other requests.
    await call(concurrent.futures.wait, [job.future], con.wait_inline)
    if job.done:
        s = summary(job)
        if s["error"] is not None:
            return error_page(request, s["status"], s["error"])
        if kind == "trigger":
            flash(request, s["message"])
            return see_other(back)
    return see_other(f"/jobs/{job.id}")


async def job_page(request: Request) -> Response:
    """GET /jobs/{id}: a job's progress (polled by htmx while it runs) or its result."""
    con = console(request)
    who = con.auth.require(request)
    job = con.jobs.get(request.path_params["job_id"], who.name)
    if job is None:
        return error_page(request, 404, "No such job (jobs are kept for the user who ran them).")
    ctx: dict[str, Any] = {"job": job, "summary": summary(job) if job.done else None}
    if job.done:
        elapsed = job.elapsed()
        ctx["elapsed"] = elapsed
    else:
        elapsed = job.elapsed()
        ctx["elapsed"] = elapsed
        ctx["progress"] = min(elapsed / job.expected, 0.99) if job.expected > 0 else 0.5
    status = 200 if not job.done or ctx["summary"]["error"] is None else ctx["summary"]["status"]
    return render(request, "job.html", ctx, status=status, who=who)
