"""Login, logout, the landing redirect and the health screens."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._base import call, console, error_page, form, redact_url, render, see_other
from ._security import safe_back

__all__ = ["health", "healthz", "index", "login", "login_form", "logout"]


def _token_login(request: Request) -> Response | None:
    token = request.query_params.get("token")
    if token is None:
        return None
    auth = console(request).auth
    if not auth.token_matches(token):
        return error_page(
            request, 403, "That login token is not valid (it changes when the console restarts)."
        )
    auth.log_in_token(request)
    # Redirected at once, so the token leaves the address bar and the browser history.
    return see_other(safe_back(request.query_params.get("next"), "/campaigns"))


async def index(request: Request) -> Response:
    """GET /: log in with ``?token=...`` (as Jupyter does), else go to the campaigns."""
    by_token = _token_login(request)
    if by_token is not None:
        return by_token
    console(request).auth.require(request)
    return see_other("/campaigns")


async def login_form(request: Request) -> Response:
    """GET /login: the login form (or a token login)."""
    by_token = _token_login(request)
    if by_token is not None:
        return by_token
    con = console(request)
    return render(
        request,
        "login.html",
        {
            "next": safe_back(request.query_params.get("next"), "/campaigns"),
            "users": bool(con.auth.users),
            "token": con.auth.token is not None,
            "error": None,
        },
    )


async def login(request: Request) -> Response:
    """POST /login: user name and password against the users file."""
    con = console(request)
    f = await form(request)
    name, password = f.get("username"), f.get("password")
    nxt = safe_back(f.get("next"), "/campaigns")
    offered = f.get("token")
    if isinstance(offered, str) and offered and con.auth.token_matches(offered):
        con.auth.log_in_token(request)
        return see_other(nxt)
    user = None
    if isinstance(name, str) and isinstance(password, str) and con.auth.users is not None:
        # Argon2 verification takes tens of milliseconds on purpose: off the event loop.
        user = await call(con.auth.users.authenticate, name, password)
    if user is None:
        return render(
            request,
            "login.html",
            {
                "next": nxt,
                "users": bool(con.auth.users),
                "token": con.auth.token is not None,
                "error": "Wrong user name or password." if name else "Wrong token.",
            },
            status=401,
        )
    con.auth.log_in_user(request, user.name)
    return see_other(nxt)


async def logout(request: Request) -> Response:
    """POST /logout."""
    request.session.clear()
    return see_other("/login")


async def health(request: Request) -> Response:
    """GET /health: the store, its lease settings and (once they exist) the gates."""
    con = console(request)
    who = con.auth.require(request)
    reg = con.registry
    lease = await call(reg.lease_settings)
    gates: list[Any] | None = None
    if hasattr(reg, "gates"):
        gates = list(await call(reg.gates))
    return render(
        request,
        "health.html",
        {
            "url": redact_url(reg.url),
            "store": type(reg.store).__name__,
            "lease": lease,
            "commit_wait": lease.commit_wait() if reg.store.needs_commit_wait else 0.0,
            "gates": gates,
            "bulk_limit": reg.bulk_limit,
        },
        who=who,
    )


async def healthz(request: Request) -> Response:
    """GET /healthz: 200 when the store answers, 503 when not (no login: it says no more)."""
    try:
        await call(console(request).registry.lease_settings)
    except Exception:
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})
