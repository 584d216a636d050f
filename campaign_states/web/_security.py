"""Who is logged in, what they may do, and the headers every response carries."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from typing import Final

import attrs
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._users import Role, Users

__all__ = [
    "CSP",
    "TOKEN_ACTOR",
    "Auth",
    "Principal",
    "SecurityHeaders",
    "is_loopback",
    "safe_back",
]

#: No inline script or style anywhere: htmx and the console's script are static files.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: The actor history records for changes made after a token login.
TOKEN_ACTOR: Final = "token-admin"


@attrs.frozen
class Principal:
    """The logged-in user of a request."""

    name: str
    role: Role

    @property
    def can_change(self) -> bool:
        """Whether they may change campaigns and segments."""
        return self.role.can_change


def _fingerprint(token: str) -> str:
    # Kept in the session instead of the token: a session logged in with an old token
    # (the console restarted with a new one) no longer counts.
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@attrs.define
class Auth:
    """Logins: the users file and, if set, the admin token.

    Attributes:
        users: The users file, or None for none.
        token: The admin token, or None when logins need a user and password.
    """

    users: Users | None
    token: str | None = attrs.field(repr=False)

    def token_matches(self, offered: str) -> bool:
        """Whether ``offered`` is the admin token (compared in constant time)."""
        return self.token is not None and secrets.compare_digest(
            offered.encode("utf-8", "surrogateescape"), self.token.encode()
        )

    def log_in_token(self, request: Request) -> Principal:
        """Start a token session (the session is cleared first: no fixation)."""
        assert self.token is not None
        request.session.clear()
        request.session.update({"via": "token", "fp": _fingerprint(self.token)})
        return Principal(TOKEN_ACTOR, Role.ADMIN)

    def log_in_user(self, request: Request, name: str) -> None:
        """Start a password session for ``name``."""
        request.session.clear()
        request.session.update({"via": "password", "user": name})

    def principal(self, request: Request) -> Principal | None:
        """Who is logged in, re-checked against the users file and token on every request."""
        s = request.session
        if s.get("via") == "token":
            if self.token is not None and s.get("fp") == _fingerprint(self.token):
                return Principal(TOKEN_ACTOR, Role.ADMIN)
            return None
        if s.get("via") == "password" and self.users is not None:
            name = s.get("user")
            user = self.users.get(name) if isinstance(name, str) else None
            if user is not None:
                return Principal(user.name, user.role)
        return None

    def require(self, request: Request, *, change: bool = False) -> Principal:
        """The principal, or a redirect to the login page, or 403 for a viewer's change."""
        who = self.principal(request)
        if who is None:
            if request.method == "GET":
                raise HTTPException(303, headers={"Location": "/login?next=" + _next(request)})
            raise HTTPException(401, "Log in first.")
        if change and not who.can_change:
            raise HTTPException(403, f"{who.role.value}s may look, not change: ask an operator.")
        return who


def _next(request: Request) -> str:
    from urllib.parse import quote

    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return quote(path, safe="")


def safe_back(value: object, default: str) -> str:
    """``value`` if it is a path on this site, else ``default`` (no open redirects)."""
    if (
        isinstance(value, str)
        and value.startswith("/")
        and not value.startswith("//")
        and "\\" not in value
        and all(32 < ord(ch) < 127 for ch in value)
    ):
        return value
    return default


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` listens on this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SecurityHeaders:
    """Adds the CSP, frame, sniffing, referrer and cache headers to every response.

    ``Referrer-Policy: no-referrer`` matters here: a token login URL must never leak to
    another site through a Referer header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CSP
                headers["X-Frame-Options"] = "DENY"
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                headers["Cross-Origin-Opener-Policy"] = "same-origin"
                if not static:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
