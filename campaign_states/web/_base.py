"""What every view shares: the console's state, rendering, forms and errors."""

from __future__ import annotations

import datetime
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from campaign_states import CAMPAIGN_LIFECYCLE, Campaign, Registry, State
from campaign_states import exceptions as exc

from ._jobs import Jobs
from ._security import Auth, Principal

__all__ = [
    "MAX_FORM_IDS",
    "STATUS_FILTERS",
    "Console",
    "allowed_triggers",
    "console",
    "error_page",
    "flash",
    "form",
    "redact_url",
    "render",
    "see_other",
]

HERE: Final = Path(__file__).parent
#: Most ids one bulk form may carry (the page shows at most 1,000 rows).
MAX_FORM_IDS: Final = 1000

#: The campaign list's "Status" filter: label, and the states it shows.
STATUS_FILTERS: Final[Mapping[str, tuple[str, frozenset[State] | None]]] = {
    "active": ("Active", frozenset({State.ACTIVE_RUNNING, State.ACTIVE_STOPPED})),
    "running": ("Running", frozenset({State.ACTIVE_RUNNING})),
    "stopped": ("Stopped", frozenset({State.ACTIVE_STOPPED})),
    "archived": ("Archived", frozenset({State.ARCHIVED})),
    "all": ("All", None),
}


def allowed_triggers(c: Campaign) -> list[tuple[str, str]]:
    """``(trigger value, label)`` for what the lifecycle declaration allows from ``c``'s
    state, in declaration order. The label is the trigger's name ("Archive"): there is no
    second table to drift from the declaration."""
    return [(t.value, t.value.capitalize()) for t in CAMPAIGN_LIFECYCLE.allowed(c.state)]


def _when(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (pages never show a secret)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = urllib.parse.quote(parts.username or "", safe="")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.globals["allowed_triggers"] = allowed_triggers
    return env


@attrs.define
class Console:
    """The state of one console app.

    Attributes:
        registry: The registry it operates.
        auth: Logins.
        jobs: The worker threads changes run in.
        wait_inline: How long a change request waits before showing a progress page.
    """

    registry: Registry
    auth: Auth
    jobs: Jobs = attrs.field(factory=Jobs)
    wait_inline: float = 1.0
    env: Environment = attrs.field(factory=_environment)


def console(request: Request) -> Console:
    """The console serving ``request``."""
    c: Console = request.app.state.console
    return c


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    who: Principal | None = None,
) -> HTMLResponse:
    """Render a template with the request, user, CSRF token and flash message."""
    con = console(request)
    get_token = request.scope.get("csrftoken")
    ctx: dict[str, Any] = {
        "request": request,
        "who": who if who is not None else con.auth.principal(request),
        "csrf": get_token() if callable(get_token) else "",
        "flash": request.session.pop("flash", None) if "session" in request.scope else None,
        "path": request.url.path,
    }
    ctx.update(context or {})
    html = con.env.get_template(template).render(ctx)
    return HTMLResponse(html, status_code=status)


def error_page(request: Request, status: int, message: str, *, title: str = "") -> HTMLResponse:
    """A page saying what went wrong; nothing was changed."""
    titles = {400: "Bad request", 401: "Log in first", 403: "Not allowed", 404: "Not found"}
    return render(
        request,
        "error.html",
        {"status": status, "title": title or titles.get(status, "Refused"), "message": message},
        status=status,
    )


def flash(request: Request, message: str, kind: str = "ok") -> None:
    """A message the next page shows once."""
    request.session["flash"] = {"message": message, "kind": kind}


def see_other(url: str) -> RedirectResponse:
    """A 303 to ``url`` (after a POST: the browser then GETs it)."""
    return RedirectResponse(url, status_code=303)


async def form(request: Request) -> FormData:
    """The request's form, with its size bounded (bulk forms carry up to 1,000 ids)."""
    try:
        return await request.form(max_files=0, max_fields=MAX_FORM_IDS + 50)
    except Exception as e:  # multipart's own errors: malformed or oversized bodies
        raise HTTPException(400, f"The form could not be read: {e}") from e


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a registry call in a worker thread (they block on the store)."""
    return await run_in_threadpool(fn, *args, **kwargs)


#: Library errors and the HTTP status their page is served with.
STATUS_OF: Final[tuple[tuple[type[Exception], int], ...]] = (
    (exc.CampaignNotFoundError, 404),
    (exc.SegmentNotFoundError, 404),
    (exc.InvalidTransitionError, 409),
    (exc.DuplicateIdError, 409),
    (exc.ConcurrentUpdateError, 409),
    (exc.StoreError, 503),
    (exc.CampaignStateError, 400),
)
