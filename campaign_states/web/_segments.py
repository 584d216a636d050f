"""The segment screens: the list, a segment's campaigns, archive (with its warning list)
and unarchive (optionally restoring the campaigns its archive took)."""

from __future__ import annotations

import functools

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from campaign_states import SegmentState, State

from ._base import call, console, form, render
from ._changes import start_and_finish
from ._security import safe_back

__all__ = ["segment_archive", "segment_confirm", "segment_page", "segment_unarchive", "segments"]

_SHOWN = 200  # campaigns named on a confirmation; the rest are counted


async def segments(request: Request) -> Response:
    """GET /segments: every segment."""
    con = console(request)
    who = con.auth.require(request)
    return render(
        request, "segments.html", {"segments": await call(con.registry.segments)}, who=who
    )


async def segment_page(request: Request) -> Response:
    """GET /segment?id=: a segment and the campaigns targeting it (paged)."""
    con = console(request)
    who = con.auth.require(request)
    reg = con.registry
    seg = await call(reg.get_segment, request.query_params.get("id", ""))
    after = request.query_params.get("after") or None
    rows = await call(functools.partial(reg.find_campaigns, segment=seg.id, after=after, limit=100))
    return render(
        request,
        "segment.html",
        {
            "seg": seg,
            "rows": rows,
            "more": len(rows) == 100,
            "archived": seg.state is SegmentState.ARCHIVED,
        },
        who=who,
    )


async def _restorable(request: Request, segment_id: str) -> list[str]:
    # The campaigns this segment's archive took: archived, with this segment as the cause.
    reg = console(request).registry
    out: list[str] = []
    after = None
    while True:
        page = await call(
            functools.partial(
                reg.find_campaigns,
                segment=segment_id,
                states=[State.ARCHIVED],
                after=after,
                limit=1000,
            )
        )
        out.extend(c.name for c in page if c.archive_cause == segment_id)
        if len(page) < 1000:
            return out
        after = page[-1].id


async def segment_confirm(request: Request) -> Response:
    """GET /segment/confirm?id=&action=archive|unarchive: the dialog; archive shows the
    dry run (every campaign it will archive) first."""
    con = console(request)
    who = con.auth.require(request)
    action = request.query_params.get("action")
    if action not in ("archive", "unarchive"):
        raise HTTPException(400, "action must be archive or unarchive.")
    reg = con.registry
    seg = await call(reg.get_segment, request.query_params.get("id", ""))
    back = f"/segment?id={_q(seg.id)}"
    ctx = {"seg": seg, "back": back, "fields": {"id": seg.id, "back": back}}
    if action == "archive":
        preview = await call(functools.partial(reg.archive_segment, seg.id, dry_run=True))
        ids = list(preview.campaign_ids)
        names = (
            await call(
                reg.find_campaigns,
                segment=seg.id,
                states=[State.ACTIVE_RUNNING, State.ACTIVE_STOPPED],
                limit=_SHOWN,
            )
            if ids
            else []
        )
        ctx.update(
            {
                "action": "/segment/archive",
                "title": f"Archive segment “{seg.name}”?",
                "explain": (
                    f"This archives {len(ids)} campaign{'s' if len(ids) != 1 else ''} that "
                    "target it, in one transaction: they stop delivering and leave the "
                    "default list."
                    if ids
                    else "No active campaign targets it: nothing else is archived."
                ),
                "items": [c.name for c in names],
                "more": max(0, len(ids) - len(names)),
                "list_label": "Campaigns it will archive",
            }
        )
    else:
        names_r = await _restorable(request, seg.id)
        ctx.update(
            {
                "action": "/segment/unarchive",
                "title": f"Unarchive segment “{seg.name}”?",
                "explain": "Campaigns can target it again.",
                "items": names_r[:_SHOWN],
                "more": max(0, len(names_r) - _SHOWN),
                "list_label": "Campaigns its archive took",
                "restore": bool(names_r),
            }
        )
    return render(request, "confirm.html", ctx, who=who)


def _q(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


async def segment_archive(request: Request) -> Response:
    """POST /segment/archive: archive it and every campaign targeting it."""
    con = console(request)
    who = con.auth.require(request, change=True)
    f = await form(request)
    reg = con.registry
    seg = await call(reg.get_segment, f.get("id", ""))
    fn = functools.partial(reg.archive_segment, seg.id, actor=who.name)
    return await start_and_finish(
        request, who, fn, title=f"Archive segment “{seg.name}”",
        back=safe_back(f.get("back"), "/segments"), kind="segment",
        meta={"action": "archive", "name": seg.name}, silencing=True,
    )  # fmt: skip


async def segment_unarchive(request: Request) -> Response:
    """POST /segment/unarchive (restore=on to restore its campaigns, stopped)."""
    con = console(request)
    who = con.auth.require(request, change=True)
    f = await form(request)
    reg = con.registry
    seg = await call(reg.get_segment, f.get("id", ""))
    restore = f.get("restore") == "on"
    fn = functools.partial(reg.unarchive_segment, seg.id, actor=who.name, restore_campaigns=restore)
    return await start_and_finish(
        request, who, fn, title=f"Unarchive segment “{seg.name}”",
        back=safe_back(f.get("back"), "/segments"), kind="segment",
        meta={"action": "unarchive", "name": seg.name, "restore": restore}, silencing=False,
    )  # fmt: skip
