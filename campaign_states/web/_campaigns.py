"""The campaign screens: the list, a campaign's page, its triggers, edits and bulk actions."""

from __future__ import annotations

import functools
from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from campaign_states import Channel, State, Trigger
from campaign_states.exceptions import CampaignNotFoundError

from ._base import (
    MAX_FORM_IDS,
    STATUS_FILTERS,
    call,
    console,
    flash,
    form,
    render,
    see_other,
)
from ._changes import SILENCING, start_and_finish
from ._security import safe_back

__all__ = [
    "bulk",
    "bulk_confirm",
    "campaign_confirm",
    "campaign_edit",
    "campaign_page",
    "campaign_trigger",
    "campaigns",
]

PAGE_SIZES: Final = (25, 50, 100, 500, 1000)
_TRIGGERS: Final = {t.value: t for t in Trigger}
_LABEL: Final = {"archive": "Archive", "unarchive": "Unarchive", "stop": "Stop", "resume": "Resume"}


def _one(values: Any, name: str, default: str | None = None) -> str | None:
    value = values.get(name, default)
    if value is not None and not isinstance(value, str):
        raise HTTPException(400, f"{name} must be text.")
    return value


def _trigger(value: str | None) -> str:
    if value not in _TRIGGERS:
        raise HTTPException(
            400, f"Unknown action {value!r:.40}: use archive, unarchive, stop or resume."
        )
    return value


async def campaigns(request: Request) -> Response:
    """GET /campaigns: filtered, keyset-paged list (archived ones hidden by default)."""
    con = console(request)
    who = con.auth.require(request)
    q = request.query_params
    status = q.get("status", "active")
    if status not in STATUS_FILTERS:
        raise HTTPException(400, f"Unknown status {status!r:.40}: use {', '.join(STATUS_FILTERS)}.")
    text = (q.get("q") or "").strip() or None
    segment = q.get("segment") or None
    after = q.get("after") or None
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        limit = 0
    if limit not in PAGE_SIZES:
        raise HTTPException(400, f"limit must be one of {', '.join(map(str, PAGE_SIZES))}.")
    reg = con.registry
    rows = await call(
        functools.partial(
            reg.find_campaigns,
            states=STATUS_FILTERS[status][1],
            segment=segment,
            text=text,
            after=after,
            limit=limit,
        )
    )
    results = await call(reg.results_many, [c.id for c in rows]) if rows else {}
    segments = await call(reg.segments)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return render(
        request,
        "campaigns.html",
        {
            "rows": rows,
            "results": results,
            "segments": segments,
            "status": status,
            "statuses": STATUS_FILTERS,
            "text": text or "",
            "segment": segment or "",
            "after": after,
            "limit": limit,
            "page_sizes": PAGE_SIZES,
            "more": len(rows) == limit,
            "here": here,
        },
        who=who,
    )


async def campaign_page(request: Request) -> Response:
    """GET /campaign?id=: state, channels, segments, results, history; edit unless archived."""
    con = console(request)
    who = con.auth.require(request)
    cid = request.query_params.get("id", "")
    reg = con.registry
    c = await call(reg.get, cid)
    results = await call(reg.results, cid)
    history = await call(reg.history, cid)
    segments = await call(reg.segments)
    return render(
        request,
        "campaign.html",
        {
            "c": c,
            "results": results,
            "result_rows": sorted(
                (ch.value, results.delivered.get(ch, 0))
                for ch in set(c.channels) | set(results.delivered)
            ),
            "history": list(reversed(history)),
            "segments": segments,
            "channels": [ch.value for ch in Channel],
            "archived": c.state is State.ARCHIVED,
            "here": request.url.path + "?" + request.url.query,
        },
        who=who,
    )


async def campaign_confirm(request: Request) -> Response:
    """GET /campaign/confirm?id=&trigger=: the confirmation dialog for one trigger."""
    con = console(request)
    who = con.auth.require(request)
    trigger = _trigger(request.query_params.get("trigger"))
    c = await call(con.registry.get, request.query_params.get("id", ""))
    back = safe_back(request.query_params.get("back"), "/campaigns")
    return render(
        request,
        "confirm.html",
        {
            "action": "/campaign/trigger",
            "title": f"{_LABEL[trigger]} “{c.name}”?",
            "fields": {"id": c.id, "trigger": trigger, "back": back},
            "items": [],
            "explain": _explain(trigger, 1),
            "back": back,
        },
        who=who,
    )


def _explain(trigger: str, n: int) -> str:
    them = "it" if n == 1 else "them"
    return {
        "archive": f"Archiving stops every delivery and hides {them} from the default list. "
        f"Results and history stay readable; unarchive brings {them} back stopped.",
        "stop": f"Stopping ends delivery until {them} {'is' if n == 1 else 'are'} resumed.",
        "resume": "Resuming starts delivery again.",
        "unarchive": f"Unarchived campaigns come back stopped: resume {them} to deliver.",
    }[trigger]


async def campaign_trigger(request: Request) -> Response:
    """POST /campaign/trigger (id, trigger, back): fire one trigger as the logged-in user."""
    con = console(request)
    who = con.auth.require(request, change=True)
    f = await form(request)
    trigger = _trigger(_one(f, "trigger"))
    back = safe_back(_one(f, "back"), "/campaigns")
    reg = con.registry
    # Read first: a bad or unknown id gets its error page before anything starts.
    # The row menus submit one shared form, naming the campaign in the query string.
    c = await call(reg.get, _one(f, "id") or request.query_params.get("id", ""))
    fn = functools.partial(getattr(reg, trigger), c.id, actor=who.name)
    return await start_and_finish(
        request, who, fn,
        title=f"{_LABEL[trigger]} “{c.name}”", back=back, kind="trigger",
        meta={"trigger": trigger, "name": c.name, "id": c.id},
        silencing=trigger in SILENCING,
    )  # fmt: skip


async def campaign_edit(request: Request) -> Response:
    """POST /campaign/edit: change name, content, channels, segments (not when archived)."""
    con = console(request)
    who = con.auth.require(request, change=True)
    f = await form(request)
    cid = _one(f, "id", "") or ""
    name = _one(f, "name")
    if name is not None and not name.strip():
        raise HTTPException(400, "A campaign needs a name.")
    content = _one(f, "content")
    if not all(isinstance(v, str) for v in [*f.getlist("channel"), *f.getlist("segment")]):
        raise HTTPException(400, "Channels and segments must be text.")
    channels = [str(v) for v in f.getlist("channel")]
    segments = [str(v) for v in f.getlist("segment")]
    c = await call(
        functools.partial(
            con.registry.edit,
            cid,
            name=name,
            content=content,
            channels=channels,
            segments=segments,
            actor=who.name,
        )
    )
    flash(request, f"Saved “{c.name}”.")
    return see_other(f"/campaign?id={_quote(c.id)}")


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _bulk_form(f: Any) -> tuple[str, list[str], str]:
    trigger = _trigger(_one(f, "trigger"))
    ids = f.getlist("id")
    if not ids:
        raise HTTPException(400, "Select at least one campaign first.")
    if len(ids) > MAX_FORM_IDS or not all(isinstance(i, str) for i in ids):
        raise HTTPException(400, f"Select at most {MAX_FORM_IDS} campaigns at a time.")
    back = safe_back(_one(f, "back"), "/campaigns")
    return trigger, ids, back


async def bulk_confirm(request: Request) -> Response:
    """POST /bulk/confirm: the confirmation dialog for a bulk action (changes nothing)."""
    con = console(request)
    who = con.auth.require(request, change=True)
    trigger, ids, back = _bulk_form(await form(request))
    distinct = list(dict.fromkeys(ids))
    n = len(distinct)
    shown = [await _label(con, cid) for cid in distinct[:20]]
    return render(
        request,
        "confirm.html",
        {
            "action": "/bulk",
            "title": f"{_LABEL[trigger]} {n} selected campaign{'s' if n != 1 else ''}?",
            "fields": {"trigger": trigger, "back": back},
            "ids": ids,
            "items": shown,
            "more": max(0, n - 20),
            "explain": _explain(trigger, n),
            "back": back,
        },
        who=who,
    )


async def _label(con: Any, cid: str) -> str:
    # A bad id gets its error page here, before the confirmation.
    try:
        c = await call(con.registry.get, cid)
    except CampaignNotFoundError:
        return f"{cid} (not found)"
    return f"{c.name} ({c.id})"


async def bulk(request: Request) -> Response:
    """POST /bulk: one bulk trigger, one transaction; its job page shows each id's outcome."""
    con = console(request)
    who = con.auth.require(request, change=True)
    trigger, ids, back = _bulk_form(await form(request))
    reg = con.registry
    fn = functools.partial(getattr(reg, f"{trigger}_many"), ids, actor=who.name)
    n = len(dict.fromkeys(ids))
    return await start_and_finish(
        request, who, fn,
        title=f"{_LABEL[trigger]} {n} campaign{'s' if n != 1 else ''}", back=back, kind="bulk",
        meta={"trigger": trigger}, silencing=trigger in SILENCING,
    )  # fmt: skip
