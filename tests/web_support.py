"""Helpers for the console's tests: an app on a memory registry, logins, CSRF tokens."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the console needs the web extra")

from starlette.testclient import TestClient

from campaign_states import Registry, open_registry
from campaign_states.web import Role, Users, create_app

TOKEN = "test-token-0123456789abcdef"
PASSWORDS = {"olga": "operator-pw", "vic": "viewer-pw", "ada": "admin-pw"}
_CSRF = re.compile(r'name="csrftoken" value="([^"]*)"')


def seed(reg: Registry) -> None:
    """Two segments and four campaigns, one with a hostile name."""
    reg.create_segment("seg-vip", name="VIP customers")
    reg.create_segment("seg-eu", name="EU newsletter")
    reg.create_campaign(
        name="Black Friday", channels=["email", "in_app"], segments=["seg-vip"], campaign_id="c-bf"
    )
    reg.create_campaign(
        name="Cyber Monday", channels=["push"], segments=["seg-eu"], campaign_id="c-cm"
    )
    reg.create_campaign(
        name="<script>alert(1)</script>", channels=["sms"], campaign_id="c-<b>x</b>"
    )
    reg.create_campaign(
        name="Winter sale", channels=["email"], segments=["seg-vip", "seg-eu"], campaign_id="c-ws"
    )
    reg.resume("c-bf")


def make_users(path: Any) -> Users:
    users = Users(path)
    users.put("olga", Role.OPERATOR, PASSWORDS["olga"])
    users.put("vic", Role.VIEWER, PASSWORDS["vic"])
    users.put("ada", Role.ADMIN, PASSWORDS["ada"])
    return users


def client(reg: Registry, **options: Any) -> TestClient:
    options.setdefault("token", TOKEN)
    return TestClient(create_app(reg, **options), follow_redirects=False)


def token_login(c: TestClient) -> None:
    r = c.get(f"/?token={TOKEN}")
    assert 303 == r.status_code, r.text


def signed_in(reg: Registry) -> TestClient:
    """A client of a console on ``reg``, signed in with the token (an administrator)."""
    c = client(reg)
    token_login(c)
    return c


def password_login(c: TestClient, name: str) -> None:
    token = csrf(c, "/login")
    r = c.post("/login", data={"csrftoken": token, "username": name, "password": PASSWORDS[name]})
    assert 303 == r.status_code, r.text


def csrf(c: TestClient, page: str = "/campaigns") -> str:
    """The CSRF token a page's forms carry."""
    r = c.get(page)
    assert 200 == r.status_code, (page, r.status_code, r.text[:500])
    found = _CSRF.search(r.text)
    assert found is not None, page
    return found.group(1)


def post(c: TestClient, path: str, data: dict[str, Any], page: str = "/campaigns") -> Any:
    """POST a form as the page's own form would (with its CSRF token)."""
    return c.post(path, data={"csrftoken": csrf(c, page), **data})


def fresh_registry() -> Registry:
    reg = open_registry("memory://")
    seed(reg)
    return reg
