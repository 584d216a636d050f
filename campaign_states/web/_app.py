"""`create_app`: the console as one ASGI app, with its protections in the right order."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import Any

from asgi_csrf import asgi_csrf
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from campaign_states import Registry
from campaign_states.exceptions import CampaignStateError

from . import _campaigns as c
from . import _history as h
from . import _pages as p
from . import _segments as s
from ._base import HERE, Console, error_page
from ._changes import job_page, nothing_changed, status_of
from ._security import Auth, SecurityHeaders
from ._users import Users

__all__ = ["create_app"]

#: The session cookie lives this long (an operator logs in once a working day).
SESSION_MAX_AGE = 12 * 3600


def _routes() -> list[Route | Mount]:
    return [
        Route("/", p.index),
        Route("/login", p.login_form, methods=["GET"]),
        Route("/login", p.login, methods=["POST"]),
        Route("/logout", p.logout, methods=["POST"]),
        Route("/campaigns", c.campaigns),
        Route("/campaign", c.campaign_page),
        Route("/campaign/confirm", c.campaign_confirm),
        Route("/campaign/trigger", c.campaign_trigger, methods=["POST"]),
        Route("/campaign/edit", c.campaign_edit, methods=["POST"]),
        Route("/bulk/confirm", c.bulk_confirm, methods=["POST"]),
        Route("/bulk", c.bulk, methods=["POST"]),
        Route("/jobs/{job_id}", job_page),
        Route("/segments", s.segments),
        Route("/segment", s.segment_page),
        Route("/segment/confirm", s.segment_confirm),
        Route("/segment/archive", s.segment_archive, methods=["POST"]),
        Route("/segment/unarchive", s.segment_unarchive, methods=["POST"]),
        Route("/history", h.history),
        Route("/history.csv", h.history_export),
        Route("/history.json", h.history_export),
        Route("/health", p.health),
        Route("/healthz", p.healthz),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


async def _library_error(request: Request, error: Exception) -> Response:
    return error_page(request, status_of(error), f"{error}{nothing_changed(error)}")


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code in (301, 302, 303, 307) and error.headers:
        return Response(status_code=error.status_code, headers=error.headers)
    message = error.detail
    if error.status_code >= 400 and error.status_code not in (401, 404, 405):
        message += " Nothing was changed."
    return error_page(request, error.status_code, message)


class _CsrfFailed:
    """Wraps asgi-csrf and renders its refusals as the console's 403 page."""

    @staticmethod
    async def send(scope: Scope, send: Send, message_id: Any) -> None:
        body = (
            b"<!doctype html><title>403 Forbidden</title><h1>403: the form's CSRF token is "
            b"missing or wrong</h1><p>Nothing was changed. Reload the page and submit again.</p>"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [(b"content-type", b"text/html; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(
    registry: Registry,
    *,
    users: str | os.PathLike[str] | Users | None = None,
    token: str | None = None,
    secret_key: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
    wait_inline: float = 1.0,
) -> ASGIApp:
    """The operator console for ``registry``, as an ASGI app (serve it, or mount it).

    Every page needs a login: a user from ``users`` (see `campaign-states users`), or the
    admin ``token`` (``/?token=...``). With no token and no users (none given, or the file
    missing or empty), a token is generated: read it from ``app.state.login_token``.

    Args:
        registry: What it operates. The app does not close it.
        users: The users file (or a `Users`), or None.
        token: The admin token, or None for none (generated if ``users`` is None too).
        secret_key: Signs session and CSRF cookies; default random (sessions end when the
            process does).
        allowed_hosts: Host headers accepted (refuses DNS rebinding on loopback);
            default any.
        wait_inline: Seconds a change request waits before showing its progress page.
    """
    if isinstance(users, str | os.PathLike):
        users = Users(users)
    if not users and token is None:
        # No one could log in otherwise (a missing or empty users file).
        token = secrets.token_urlsafe(24)
    if token is not None and len(token) < 16:
        raise ValueError("A login token must be at least 16 characters.")
    secret = secret_key or secrets.token_urlsafe(32)
    con = Console(registry=registry, auth=Auth(users, token), wait_inline=wait_inline)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        con.jobs.shutdown()

    app = Starlette(
        routes=_routes(),
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=secret,
                session_cookie="cs_session",
                max_age=SESSION_MAX_AGE,
                same_site="strict",
            ),
        ],
        exception_handlers={CampaignStateError: _library_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.console = con
    app.state.login_token = token
    # Outermost first: headers on every response (refusals too), then the Host check,
    # then CSRF (before any handler reads a form), then the app with its sessions.
    inner: ASGIApp = asgi_csrf(
        app,
        signing_secret=secret,
        cookie_name="cs_csrftoken",
        cookie_samesite="Strict",
        # A POST without cookies is checked too (asgi-csrf skips those by default).
        always_protect={"/login", "/logout"},
        send_csrf_failed=_CsrfFailed.send,
    )
    if allowed_hosts:
        inner = TrustedHostMiddleware(inner, allowed_hosts=list(allowed_hosts))
    outer = _Outer(SecurityHeaders(inner), app)
    return outer


class _Outer:
    """The wrapped app, still exposing ``state`` (``login_token``, ``console``)."""

    def __init__(self, wrapped: ASGIApp, app: Starlette) -> None:
        self._wrapped = wrapped
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._wrapped(scope, receive, send)
