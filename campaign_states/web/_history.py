"""The event log: every change across campaigns, filtered, paged, exported as CSV or JSON."""

from __future__ import annotations

import csv
import datetime
import functools
import io
import json
from collections.abc import AsyncIterator
from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from campaign_states import HistoryEntry, HistoryQuery, Trigger

from ._base import call, console, render

__all__ = ["TRIGGERS", "history", "history_export"]

TRIGGERS: Final = ("create", "edit", *(t.value for t in Trigger))
_PAGE: Final = 100
_COLUMNS: Final = (
    "seq",
    "time",
    "campaign_id",
    "trigger",
    "from_state",
    "to_state",
    "actor",
    "cause",
    "version",
)


def _time(value: str, name: str) -> float | None:
    if not value:
        return None
    try:
        dt = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(
            400, f"{name} must be a date and time like 2026-12-01T09:30 (UTC)."
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()


def _filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    trigger = q.get("trigger") or None
    if trigger is not None and trigger not in TRIGGERS:
        raise HTTPException(
            400, f"Unknown trigger {trigger!r:.40}: use one of {', '.join(TRIGGERS)}."
        )
    return {
        "actor": q.get("actor") or None,
        "trigger": trigger,
        "campaign": q.get("campaign") or None,
        "since": _time(q.get("since", ""), "From"),
        "until": _time(q.get("until", ""), "To"),
    }


def _after(request: Request) -> int | None:
    raw = request.query_params.get("after")
    if not raw:
        return None
    if not raw.isdigit():
        raise HTTPException(400, "after must be a sequence number.")
    return int(raw)


async def history(request: Request) -> Response:
    """GET /history: newest first, filtered by actor, trigger, campaign and time range."""
    con = console(request)
    who = con.auth.require(request)
    filters = _filters(request)
    entries = await call(
        functools.partial(
            con.registry.event_log, **filters, after=_after(request), limit=_PAGE, newest_first=True
        )
    )
    q = request.query_params
    keep = {k: q.get(k, "") for k in ("actor", "trigger", "campaign", "since", "until")}
    return render(
        request,
        "history.html",
        {
            "entries": entries,
            "triggers": TRIGGERS,
            "form": keep,
            "query": "&".join(f"{k}={_q(v)}" for k, v in keep.items() if v),
            "more": len(entries) == _PAGE,
        },
        who=who,
    )


def _q(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _row(e: HistoryEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "time": datetime.datetime.fromtimestamp(e.time, datetime.UTC).isoformat(),
        "campaign_id": e.campaign_id,
        "trigger": e.trigger,
        "from_state": e.from_state.value if e.from_state else None,
        "to_state": e.to_state.value,
        "actor": e.actor,
        "cause": e.cause,
        "version": e.version,
    }


def _cell(value: object) -> str:
    # A spreadsheet runs a cell starting with = + - @ as a formula: quote it as text.
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def history_export(request: Request) -> Response:
    """GET /history.csv and /history.json: every matching entry, oldest first, streamed."""
    con = console(request)
    con.auth.require(request)
    filters = _filters(request)
    HistoryQuery(**filters)  # a bad filter gets its error page before the stream starts
    as_json = request.url.path.endswith(".json")

    async def entries() -> AsyncIterator[HistoryEntry]:
        after = None
        while True:
            page = await call(
                functools.partial(con.registry.event_log, **filters, after=after, limit=1000)
            )
            for e in page:
                yield e
            if len(page) < 1000:
                return
            after = page[-1].seq

    async def as_csv() -> AsyncIterator[str]:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(_COLUMNS)
        async for e in entries():
            row = _row(e)
            w.writerow([_cell(row[c]) for c in _COLUMNS])
            if buf.tell() > 65536:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    async def as_json_lines() -> AsyncIterator[str]:
        yield "["
        first = True
        async for e in entries():
            yield ("" if first else ",\n") + json.dumps(_row(e))
            first = False
        yield "]\n"

    name = "campaign-history." + ("json" if as_json else "csv")
    return StreamingResponse(
        as_json_lines() if as_json else as_csv(),
        media_type="application/json" if as_json else "text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
