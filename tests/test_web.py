"""The operator console over HTTP: logins, roles, CSRF, escaping, headers, bad input.

Starlette's TestClient drives the ASGI app in-process on a memory registry; the browser
walkthrough is tests/test_web_browser.py.
"""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest
from web_support import (
    PASSWORDS,
    TOKEN,
    client,
    csrf,
    fresh_registry,
    make_users,
    password_login,
    post,
    signed_in,
    token_login,
)

from campaign_states import Registry, State
from campaign_states.web import Role, Users, create_app
from campaign_states.web import _app as web_app
from campaign_states.web._base import redact_url
from campaign_states.web._security import CSP, is_loopback, safe_back

GET_PAGES = [
    "/campaigns",
    "/campaigns?status=all",
    "/campaign?id=c-bf",
    "/campaign/confirm?id=c-bf&trigger=archive",
    "/segments",
    "/segment?id=seg-vip",
    "/segment/confirm?id=seg-vip&action=archive",
    "/history",
    "/history.csv",
    "/history.json",
    "/health",
]
POSTS = [
    ("/campaign/trigger", {"id": "c-bf", "trigger": "archive"}),
    ("/campaign/edit", {"id": "c-bf", "name": "x", "channel": "email"}),
    ("/bulk/confirm", {"id": "c-bf", "trigger": "archive"}),
    ("/bulk", {"id": ["c-bf", "c-cm"], "trigger": "archive"}),
    ("/segment/archive", {"id": "seg-vip"}),
    ("/segment/unarchive", {"id": "seg-vip", "restore": "on"}),
]


def snapshot(reg: Registry) -> object:
    """Everything a change could touch."""
    return (
        reg.list(),
        reg.segments(),
        [reg.history(c.id) for c in reg.list()],
    )


@pytest.fixture
def reg() -> Registry:
    return fresh_registry()


@pytest.fixture
def users(tmp_path) -> Users:
    return make_users(tmp_path / "users.json")


class TestLoginRequired:
    """Every page needs a login, even on loopback; the token or a password gives one."""

    @pytest.mark.parametrize("page", GET_PAGES)
    def test_pages_redirect_to_login(self, reg, page):
        r = client(reg).get(page)
        assert 303 == r.status_code
        assert r.headers["location"].startswith("/login?next=")

    @pytest.mark.parametrize(("path", "data"), POSTS)
    def test_posts_are_refused_and_change_nothing(self, reg, path, data):
        before = snapshot(reg)
        c = client(reg)
        token = csrf(c, "/login")  # a CSRF token, but no session
        r = c.post(path, data={"csrftoken": token, **data})
        assert 401 == r.status_code
        assert before == snapshot(reg)

    def test_healthz_needs_no_login_and_says_no_more(self, reg):
        r = client(reg).get("/healthz")
        assert 200 == r.status_code
        assert {"status": "ok"} == r.json()

    def test_token_login(self, reg):
        c = client(reg)
        r = c.get(f"/?token={TOKEN}")
        assert 303 == r.status_code
        assert "/campaigns" == r.headers["location"]  # the token leaves the address bar
        assert 200 == c.get("/campaigns").status_code

    @pytest.mark.parametrize("bad", ["", "x", TOKEN + "x", TOKEN[:-1], "é" * 20])
    def test_wrong_token_is_refused(self, reg, bad):
        c = client(reg)
        assert 403 == c.get("/", params={"token": bad}).status_code
        assert 303 == c.get("/campaigns").status_code

    def test_generated_token_when_nothing_is_configured(self, reg):
        app = create_app(reg)
        token = app.state.login_token
        assert isinstance(token, str)
        assert len(token) >= 16
        from starlette.testclient import TestClient

        c = TestClient(app, follow_redirects=False)
        assert 303 == c.get(f"/?token={token}").status_code
        assert 200 == c.get("/campaigns").status_code

    def test_generated_token_when_the_users_file_is_missing(self, reg, tmp_path):
        """No one could log in otherwise."""
        app = create_app(reg, users=tmp_path / "missing.json")
        assert isinstance(app.state.login_token, str)

    def test_no_generated_token_when_users_exist(self, reg, users):
        assert create_app(reg, users=users).state.login_token is None

    def test_short_token_refused(self, reg):
        with pytest.raises(ValueError):
            create_app(reg, token="short")

    def test_password_login_and_logout(self, reg, users):
        c = client(reg, users=users, token=None)
        password_login(c, "olga")
        page = c.get("/campaigns")
        assert 200 == page.status_code
        assert "olga" in page.text
        r = c.post("/logout", data={"csrftoken": csrf(c)})
        assert 303 == r.status_code
        assert 303 == c.get("/campaigns").status_code

    def test_wrong_password(self, reg, users):
        c = client(reg, users=users, token=None)
        token = csrf(c, "/login")
        for name, pw in [("olga", "nope"), ("nobody", PASSWORDS["olga"]), ("olga", "")]:
            r = c.post("/login", data={"csrftoken": token, "username": name, "password": pw})
            assert 401 == r.status_code
            assert "Wrong user name or password." in r.text
        assert 303 == c.get("/campaigns").status_code

    def test_no_token_login_when_only_users(self, reg, users):
        c = client(reg, users=users, token=None)
        assert 403 == c.get(f"/?token={TOKEN}").status_code

    def test_removed_user_is_logged_out(self, reg, users):
        c = client(reg, users=users, token=None)
        password_login(c, "olga")
        users.remove("olga")
        assert 303 == c.get("/campaigns").status_code

    def test_session_cookie_flags(self, reg):
        c = client(reg)
        r = c.get(f"/?token={TOKEN}")
        cookie = r.headers["set-cookie"].lower()
        assert "cs_session=" in cookie
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert TOKEN.lower() not in cookie

    def test_login_next_is_local_only(self, reg, users):
        c = client(reg, users=users, token=None)
        token = csrf(c, "/login")
        r = c.post(
            "/login",
            data={
                "csrftoken": token,
                "username": "olga",
                "password": PASSWORDS["olga"],
                "next": "//evil.example/x",
            },
        )
        assert "/campaigns" == r.headers["location"]


class TestRoles:
    """A viewer reads every page and gets 403 on every change; the actor is the user."""

    @pytest.mark.parametrize(("path", "data"), POSTS)
    def test_viewer_mutation_is_403_and_changes_nothing(self, reg, users, path, data):
        c = client(reg, users=users, token=None)
        password_login(c, "vic")
        before = snapshot(reg)
        r = post(c, path, data)
        assert 403 == r.status_code
        assert "Nothing was changed." in r.text
        assert before == snapshot(reg)

    @pytest.mark.parametrize("page", GET_PAGES)
    def test_viewer_reads(self, reg, users, page):
        c = client(reg, users=users, token=None)
        password_login(c, "vic")
        assert 200 == c.get(page).status_code

    def test_viewer_sees_no_controls(self, reg, users):
        c = client(reg, users=users, token=None)
        password_login(c, "vic")
        page = c.get("/campaigns").text
        assert "Archive selected" not in page
        assert 'aria-label="Select Black Friday"' not in page

    def test_operator_is_the_actor(self, reg, users):
        c = client(reg, users=users, token=None)
        password_login(c, "olga")
        r = post(c, "/campaign/trigger", {"id": "c-bf", "trigger": "archive", "back": "/campaigns"})
        assert 303 == r.status_code
        assert State.ARCHIVED == reg.get("c-bf").state
        assert ("archive", "olga") == (
            reg.history("c-bf")[-1].trigger,
            reg.history("c-bf")[-1].actor,
        )

    def test_token_admin_is_the_actor(self, reg):
        c = signed_in(reg)
        post(c, "/campaign/trigger", {"id": "c-cm", "trigger": "resume"})
        assert "token-admin" == reg.history("c-cm")[-1].actor

    def test_the_check_catches_a_viewer_who_may_change(self, reg, users, monkeypatch):
        """Broken variant: viewers allowed to change. The 403 test's assertion fails."""
        monkeypatch.setattr(Role, "can_change", property(lambda self: True))
        with pytest.raises(AssertionError):
            self.test_viewer_mutation_is_403_and_changes_nothing(reg, users, *POSTS[0])


class TestCsrf:
    """Every POST needs the form's CSRF token; without it: 403, nothing changed."""

    @pytest.mark.parametrize(("path", "data"), [*POSTS, ("/logout", {})])
    @pytest.mark.parametrize("token", [None, "", "forged"])
    def test_post_without_token_is_403(self, reg, path, data, token):
        c = signed_in(reg)
        before = snapshot(reg)
        form = dict(data) if token is None else {"csrftoken": token, **data}
        r = c.post(path, data=form)
        assert 403 == r.status_code
        assert before == snapshot(reg)
        assert 200 == c.get("/campaigns").status_code  # still logged in: logout was refused

    def test_login_needs_it_too(self, reg, users):
        c = client(reg, users=users, token=None)
        r = c.post("/login", data={"username": "olga", "password": PASSWORDS["olga"]})
        assert 403 == r.status_code

    def test_get_never_changes(self, reg):
        c = signed_in(reg)
        before = snapshot(reg)
        for page in [*GET_PAGES, "/campaign/trigger?id=c-bf&trigger=archive", "/bulk?id=c-bf"]:
            c.get(page)
        assert before == snapshot(reg)

    def test_the_check_catches_a_console_without_csrf(self, reg, monkeypatch):
        """Broken variant: the CSRF middleware left out. The 403 test's assertion fails."""
        monkeypatch.setattr(web_app, "asgi_csrf", lambda app, **_: app)
        with pytest.raises(AssertionError):
            self.test_post_without_token_is_403(reg, *POSTS[0], None)


HOSTILE = "<script>alert(1)</script>"


class TestEscaping:
    """Names and ids render as text: a campaign called <script>... is not a script."""

    @pytest.mark.parametrize(
        "page",
        [
            "/campaigns",
            "/campaign?id=c-%3Cb%3Ex%3C%2Fb%3E",
            "/campaign/confirm?id=c-%3Cb%3Ex%3C%2Fb%3E&trigger=archive",
            "/history",
            "/campaigns?q=%3Cscript%3E",
        ],
    )
    def test_hostile_text_is_escaped(self, reg, page):
        c = signed_in(reg)
        assert_escaped(c.get(page).text)

    def test_hostile_search_text_is_escaped(self, reg):
        c = signed_in(reg)
        r = c.get("/campaigns", params={"q": '"><img src=x onerror=alert(1)>'})
        assert "<img src=x" not in r.text
        assert "&#34;&gt;&lt;img src=x" in r.text

    def test_hostile_error_is_escaped(self, reg):
        c = signed_in(reg)
        r = c.get("/campaign", params={"id": HOSTILE})
        assert 404 == r.status_code
        assert_escaped(r.text)

    def test_the_check_catches_unescaped_output(self, reg):
        """Broken variant: autoescape off. The escaping assertion fails."""
        c = signed_in(reg)
        c.app.state.console.env.autoescape = False
        with pytest.raises(AssertionError):
            assert_escaped(c.get("/campaigns").text)


def assert_escaped(html: str) -> None:
    assert HOSTILE not in html
    assert "<b>x</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html or "&lt;b&gt;x&lt;/b&gt;" in html


class TestHeaders:
    """Every response, pages, errors, static files and refusals, carries the CSP and DENY."""

    @pytest.mark.parametrize(
        "page",
        [
            "/campaigns",
            "/login",
            "/campaign?id=nope",
            "/static/console.css",
            "/healthz",
            "/nowhere",
        ],
    )
    def test_security_headers(self, reg, page):
        c = signed_in(reg)
        h = c.get(page).headers
        assert CSP == h["content-security-policy"]
        assert "DENY" == h["x-frame-options"]
        assert "nosniff" == h["x-content-type-options"]
        assert "no-referrer" == h["referrer-policy"]

    def test_csp_allows_no_inline_script(self):
        scripts = next(p for p in CSP.split(";") if p.strip().startswith("script-src"))
        assert "'self'" in scripts
        assert "unsafe" not in CSP

    def test_no_inline_script_or_style_in_pages(self, reg):
        c = signed_in(reg)
        for page in GET_PAGES[:8]:
            html = c.get(page).text
            assert "<script>" not in html.replace(HOSTILE, "")
            assert " style=" not in html
            assert "onclick" not in html.lower()

    def test_csrf_refusal_has_headers(self, reg):
        c = signed_in(reg)
        h = c.post("/bulk", data={"id": "c-bf"}).headers
        assert "DENY" == h["x-frame-options"]

    def test_the_check_catches_missing_headers(self, reg, monkeypatch):
        """Broken variant: no header middleware. The header assertion fails."""
        monkeypatch.setattr(web_app, "SecurityHeaders", lambda app: app)
        with pytest.raises((AssertionError, KeyError)):
            self.test_security_headers(reg, "/campaigns")


class TestBadInput:
    """Bad ids and bad form input: a clear error page, and nothing changed."""

    @pytest.mark.parametrize(
        ("method", "path", "data", "status", "says"),
        [
            ("get", "/campaign?id=nope", None, 404, "nope"),
            ("get", "/campaign?id=", None, 400, "1 to 128 characters"),
            ("get", "/campaign?id=a%00b", None, 400, "control characters"),
            ("get", "/campaign?id=" + "x" * 200, None, 400, "1 to 128"),
            ("get", "/campaigns?status=bogus", None, 400, "Unknown status"),
            ("get", "/campaigns?limit=7", None, 400, "limit must be one of"),
            ("get", "/campaigns?segment=nope", None, 404, "nope"),
            ("get", "/campaigns?q=" + "x" * 300, None, 400, "text must be"),
            ("get", "/campaign/confirm?id=c-bf&trigger=delete", None, 400, "Unknown action"),
            ("get", "/segment?id=nope", None, 404, "nope"),
            ("get", "/segment/confirm?id=seg-vip&action=drop", None, 400, "archive or unarchive"),
            ("get", "/history?since=yesterday", None, 400, "date and time"),
            ("get", "/history?trigger=drop", None, 400, "Unknown trigger"),
            ("get", "/history?after=-3", None, 400, "sequence number"),
            ("get", "/history.csv?campaign=%01", None, 400, "control characters"),
            ("get", "/jobs/nope", None, 404, "No such job"),
            ("post", "/campaign/trigger", {"id": "nope", "trigger": "archive"}, 404, "nope"),
            (
                "post",
                "/campaign/trigger",
                {"id": "c-bf", "trigger": "explode"},
                400,
                "Unknown action",
            ),
            ("post", "/campaign/trigger", {"id": "c-cm", "trigger": "unarchive"}, 303, ""),
            ("post", "/campaign/edit", {"id": "c-bf", "name": "X"}, 400, "at least one channel"),
            (
                "post",
                "/campaign/edit",
                {"id": "c-bf", "name": " ", "channel": "email"},
                400,
                "needs a name",
            ),
            ("post", "/campaign/edit", {"id": "c-bf", "name": "X", "channel": "fax"}, 400, "fax"),
            (
                "post",
                "/campaign/edit",
                {"id": "c-bf", "name": "X", "channel": "email", "segment": "nope"},
                404,
                "nope",
            ),
            ("post", "/bulk/confirm", {"trigger": "archive"}, 400, "Select at least one"),
            ("post", "/bulk", {"trigger": "archive", "id": ["c-bf", ""]}, 400, "1 to 128"),
            ("post", "/bulk", {"trigger": "nope", "id": "c-bf"}, 400, "Unknown action"),
            (
                "post",
                "/bulk",
                {"trigger": "archive", "id": [f"c-{i}" for i in range(1001)]},
                400,
                "at most 1000",
            ),
            ("post", "/segment/archive", {"id": "nope"}, 404, "nope"),
        ],
    )
    def test_error_page_and_nothing_changed(self, reg, method, path, data, status, says):  # noqa: PLR0917
        c = signed_in(reg)
        before = snapshot(reg)
        r = post(c, path, data) if method == "post" else c.get(path)
        assert status == r.status_code, r.text[:400]
        if status != 303:
            assert says in r.text
            assert "Back to campaigns" in r.text
        assert before == snapshot(reg) or (status == 303)

    def test_archived_campaign_cannot_be_edited(self, reg):
        reg.archive("c-cm")
        c = signed_in(reg)
        before = snapshot(reg)
        page = c.get("/campaign?id=c-cm").text
        assert "Unarchive it to edit" in page
        assert "<fieldset disabled>" in page
        r = post(c, "/campaign/edit", {"id": "c-cm", "name": "X", "channel": "push"})
        assert 409 == r.status_code
        assert "unarchive it" in r.text
        assert before == snapshot(reg)

    def test_resume_refused_with_reason(self, reg):
        reg.archive_segment("seg-eu")
        reg.unarchive("c-cm")
        c = signed_in(reg)
        r = post(c, "/campaign/trigger", {"id": "c-cm", "trigger": "resume"})
        assert 409 == r.status_code
        assert "seg-eu" in r.text
        assert State.ACTIVE_STOPPED == reg.get("c-cm").state

    def test_back_must_be_local(self):
        assert "/d" == safe_back("https://evil.example/", "/d")
        assert "/d" == safe_back("//evil.example/", "/d")
        assert "/d" == safe_back("/\\evil", "/d")
        assert "/campaigns?x=1" == safe_back("/campaigns?x=1", "/d")


class TestOddIds:
    """Ids holding / ? & # %, spaces and non-ASCII work everywhere (they travel in queries)."""

    @pytest.mark.parametrize("cid", ["a/b", "q?x=1&y=#2", "100% ü", "名前", "c-\u00a0nbsp"])
    def test_page_and_trigger(self, reg, cid):
        reg.create_campaign(name=f"odd {cid}", channels=["email"], campaign_id=cid)
        c = signed_in(reg)
        assert 200 == c.get("/campaign", params={"id": cid}).status_code
        r = post(c, "/campaign/trigger", {"id": cid, "trigger": "archive", "back": "/campaigns"})
        assert 303 == r.status_code
        assert State.ARCHIVED == reg.get(cid).state
        found = c.get("/campaigns", params={"status": "archived", "q": cid}).text
        assert f"odd {cid}".replace("&", "&amp;") in found


class TestChanges:
    """Archive: confirmed once archive() returns; a long wait shows progress, polled."""

    def test_archive_confirmed_and_gone_from_default_list(self, reg):
        c = signed_in(reg)
        r = post(c, "/campaign/trigger", {"id": "c-bf", "trigger": "archive", "back": "/campaigns"})
        assert "/campaigns" == r.headers["location"]
        page = c.get("/campaigns").text
        assert "Confirmed: no gate admits it any more." in page
        assert 'aria-label="Select Black Friday"' not in page
        assert 'aria-label="Select Black Friday"' in c.get("/campaigns?status=archived").text

    def test_row_menu_offers_what_the_lifecycle_allows(self, reg):
        check_menus(reg, client(reg))

    def test_the_check_catches_a_menu_offering_everything(self, reg):
        """Broken variant: every trigger in every row. The menu check fails."""
        c = client(reg)
        every = [(t, t.capitalize()) for t in ("resume", "stop", "archive", "unarchive")]
        c.app.state.console.env.globals["allowed_triggers"] = lambda _c: every
        with pytest.raises(AssertionError):
            check_menus(reg, c)

    def test_slow_archive_shows_progress_then_confirms(self, reg):
        gate = threading.Event()
        real = reg.archive

        def slow_archive(cid, **kw):
            gate.wait(10)
            return real(cid, **kw)

        reg.archive = slow_archive  # type: ignore[method-assign]
        c = client(reg, wait_inline=0.05)
        token_login(c)
        r = post(c, "/campaign/trigger", {"id": "c-bf", "trigger": "archive"})
        assert 303 == r.status_code
        job = r.headers["location"]
        assert job.startswith("/jobs/")
        waiting = c.get(job).text
        assert "Waiting for gates" in waiting
        assert f'hx-get="{job}"' in waiting
        assert 'hx-trigger="every 500ms"' in waiting
        # Another user cannot see it.
        other = client(reg)
        token_login(other)
        gate.set()
        for _ in range(200):
            page = c.get(job).text
            if "Waiting for gates" not in page:
                break
            time.sleep(0.02)
        assert "Confirmed: no gate admits it any more." in page
        assert "hx-trigger" not in page  # polling stops
        assert State.ARCHIVED == reg.get("c-bf").state

    def test_bulk_outcomes(self, reg):
        reg.archive("c-ws")
        c = signed_in(reg)
        confirm = post(c, "/bulk/confirm", {"trigger": "archive", "id": ["c-bf", "c-cm"]})
        assert 'role="dialog"' in confirm.text
        assert State.ACTIVE_RUNNING == reg.get("c-bf").state  # confirming changes nothing
        r = post(c, "/bulk", {"trigger": "archive", "id": ["c-bf", "c-cm", "c-ws", "c-bf", "nope"]})
        assert 303 == r.status_code
        page = c.get(r.headers["location"]).text
        assert "2 changed, 1 unchanged, 0 refused, 1 not found" in page
        r = post(c, "/bulk", {"trigger": "resume", "id": ["c-bf"]})
        page = c.get(r.headers["location"]).text
        assert "1 refused" in page
        assert "archived" in page

    def test_segment_archive_shows_its_campaigns_first(self, reg):
        c = signed_in(reg)
        dialog = c.get("/segment/confirm?id=seg-vip&action=archive").text
        assert "This archives 2 campaigns" in dialog
        assert "Black Friday" in dialog
        assert "Winter sale" in dialog
        assert State.ACTIVE_RUNNING == reg.get("c-bf").state
        r = post(c, "/segment/archive", {"id": "seg-vip", "back": "/segment?id=seg-vip"})
        page = c.get(r.headers["location"]).text
        assert "and 2 campaigns targeting it. Confirmed" in page
        assert {State.ARCHIVED} == {reg.get("c-bf").state, reg.get("c-ws").state}
        dialog = c.get("/segment/confirm?id=seg-vip&action=unarchive").text
        assert "Campaigns its archive took" in dialog
        r = post(c, "/segment/unarchive", {"id": "seg-vip", "restore": "on"})
        page = c.get(r.headers["location"]).text
        assert "Restored 2 campaigns, stopped" in page
        assert {State.ACTIVE_STOPPED} == {reg.get("c-bf").state, reg.get("c-ws").state}

    def test_edit(self, reg):
        c = signed_in(reg)
        r = post(
            c,
            "/campaign/edit",
            {
                "id": "c-cm",
                "name": "Cyber Week",
                "content": "hi",
                "channel": ["push", "email"],
                "segment": "seg-eu",
            },
        )
        assert 303 == r.status_code
        got = reg.get("c-cm")
        assert ("Cyber Week", "hi") == (got.name, got.content)
        assert {"push", "email"} == {ch.value for ch in got.channels}

    def test_many_threads_change_at_once(self, reg):
        """Eight clients in threads archive and unarchive the same campaigns: every
        request gets a page, never a 500, and the history stays one entry per change."""
        errors: list[object] = []

        def worker(i: int) -> None:
            c = signed_in(reg)
            for k in range(5):
                trig = "archive" if (i + k) % 2 else "unarchive"
                r = post(c, "/campaign/trigger", {"id": ["c-cm", "c-ws"][i % 2], "trigger": trig})
                if r.status_code not in (303,):
                    errors.append((r.status_code, r.text[:200]))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [] == errors
        for cid in ("c-cm", "c-ws"):
            versions = [e.version for e in reg.history(cid)]
            assert versions == sorted(set(versions))


def check_menus(reg, c) -> None:
    """Each row's menu holds exactly what DESIGN.md's table allows from its state."""
    reg.archive("c-ws")
    token_login(c)
    page = c.get("/campaigns?status=all").text
    menus = dict(_menus(page))
    assert ["Stop", "Archive"] == menus["Actions for Black Friday"]
    assert ["Resume", "Archive"] == menus["Actions for Cyber Monday"]
    assert ["Unarchive"] == menus["Actions for Winter sale"]


def _menus(html: str) -> list[tuple[str, list[str]]]:
    import re

    out = []
    for m in re.finditer(
        r'aria-label="(Actions for [^"]+)".*?<div class="menu"(.*?)</div>', html, re.S
    ):
        out.append((m.group(1), re.findall(r'role="menuitem"[^>]*>([^<]+)<', m.group(2))))
    return out


class TestEventLog:
    """The event log shows every change with its actor, filters, and exports CSV and JSON."""

    def test_filters_and_exports(self, reg, users):
        c = client(reg, users=users, token=None)
        password_login(c, "olga")
        post(c, "/campaign/trigger", {"id": "c-cm", "trigger": "resume"})
        page = c.get("/history?actor=olga").text
        assert "c-cm" in page
        assert "c-bf" not in page
        rows = c.get("/history.json?actor=olga").json()
        assert [("c-cm", "resume", "olga")] == [
            (r["campaign_id"], r["trigger"], r["actor"]) for r in rows
        ]
        csv_text = c.get("/history.csv?trigger=create").text
        assert csv_text.startswith("seq,time,campaign_id,trigger")
        assert 5 == len(csv_text.strip().splitlines())

    def test_csv_cells_cannot_be_formulas(self, reg):
        reg.resume("c-cm", actor='=HYPERLINK("http://evil")')
        c = signed_in(reg)
        csv_text = c.get("/history.csv?trigger=resume").text
        assert "'=HYPERLINK" in csv_text


class TestHealthAndSecrets:
    """Health shows the store and lease; no password appears on any page."""

    def test_redact_url(self):
        assert "postgresql://app:***@db:5432/x" == redact_url("postgresql://app:s3cret@db:5432/x")
        assert "sqlite:///a.db" == redact_url("sqlite:///a.db")

    def test_health_page(self, reg):
        c = signed_in(reg)
        page = c.get("/health").text
        assert "memory://" in page
        assert "Lease settings" in page
        assert "Gates" in page  # the registry lists its gates (none registered on memory://)

    def test_health_page_lists_registered_gates(self, tmp_path):
        from campaign_states import open_registry
        from delivery_gate import DeliveryGate

        reg = open_registry(f"sqlite:///{tmp_path / 'h.db'}")
        with DeliveryGate(reg, background_refresh=False) as gate:
            c = signed_in(reg)
            page = c.get("/health").text
            (row,) = reg.gates()
            assert row.gate_id[:12] in page
            assert f">{row.pid}<" in page
            assert "RegisteredGate(" not in page  # a table for people, not a repr
            assert gate.check("c-none", "email").reason.value == "unknown_campaign"
        reg.close()

    def test_user_repr_and_file_hold_no_password(self, users, tmp_path):
        text = (tmp_path / "users.json").read_text()
        assert all(pw not in text for pw in PASSWORDS.values())
        assert "$argon2id$" in text
        assert "argon2" not in repr(users.get("olga"))
        assert 0o600 == stat.S_IMODE(os.stat(tmp_path / "users.json").st_mode)


class TestBind:
    """Loopback by default; a non-loopback bind without users is refused."""

    @pytest.mark.parametrize(
        ("host", "loopback"),
        [
            ("127.0.0.1", True),
            ("localhost", True),
            ("::1", True),
            ("127.1.2.3", True),
            ("0.0.0.0", False),
            ("::", False),
            ("10.0.0.5", False),
            ("example.com", False),
        ],
    )
    def test_is_loopback(self, host, loopback):
        assert loopback == is_loopback(host)

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10"])
    def test_serve_refuses_without_users(self, tmp_path, host):
        from click.testing import CliRunner

        from campaign_states.cli import app

        r = CliRunner().invoke(
            app(),
            [
                "--store",
                "memory://",
                "serve",
                "--host",
                host,
                "--users",
                str(tmp_path / "none.json"),
                "--token",
                TOKEN,
            ],
        )
        assert 2 == r.exit_code
        assert "Refusing to listen" in r.output


class TestUsersCommand:
    """`campaign-states users add/list/remove` manage the hashed users file."""

    def test_add_list_remove(self, tmp_path):
        from click.testing import CliRunner

        from campaign_states.cli import app

        path = str(tmp_path / "u.json")
        run = CliRunner().invoke
        r = run(
            app(),
            ["users", "add", "kim", "--role", "viewer", "--password-stdin", "--users", path],
            input="pw-kim\n",
        )
        assert 0 == r.exit_code, r.output
        assert "pw-kim" not in (tmp_path / "u.json").read_text()
        assert Users(path).authenticate("kim", "pw-kim") is not None
        r = run(app(), ["users", "list", "--json", "--users", path])
        assert '[{"name": "kim", "role": "viewer"}]' == r.output.strip()
        r = run(
            app(),
            ["users", "add", "bad name", "--role", "viewer", "--password-stdin", "--users", path],
            input="x\n",
        )
        assert 2 == r.exit_code
        r = run(app(), ["users", "add", "kim", "--role", "root", "--users", path])
        assert 2 == r.exit_code
        r = run(app(), ["users", "remove", "kim", "--users", path])
        assert 0 == r.exit_code
        assert 1 == run(app(), ["users", "remove", "kim", "--users", path]).exit_code

    def test_malformed_file_is_a_clear_error(self, tmp_path):
        from click.testing import CliRunner

        from campaign_states.cli import app

        (tmp_path / "u.json").write_text("{not json")
        r = CliRunner().invoke(app(), ["users", "list", "--users", str(tmp_path / "u.json")])
        assert 2 == r.exit_code
        assert "cannot read the users file" in r.output


class TestShutdown:
    """Stopping the console lets a running archive finish (it is never cut short)."""

    def test_jobs_finish_before_shutdown_returns(self):
        from campaign_states.web._jobs import Jobs

        jobs = Jobs()
        release = threading.Event()
        job = jobs.start(
            lambda: release.wait(5) and "done", owner="o", title="t", back="/", expected=0
        )
        threading.Timer(0.1, release.set).start()
        jobs.shutdown()
        assert job.done
        assert "done" == job.future.result()


class TestServe:
    """`serve` prints a token login URL, builds the app, and keeps the token out of logs."""

    def test_prints_login_url_and_serves(self, tmp_path, monkeypatch):
        import uvicorn
        from click.testing import CliRunner

        from campaign_states.cli import app

        served = {}
        monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
        r = CliRunner().invoke(
            app(),
            ["--store", "memory://", "serve", "--port", "8099", "--users",
             str(tmp_path / "none.json"), "--token", TOKEN],
        )  # fmt: skip
        assert 0 == r.exit_code, r.output
        assert f"http://127.0.0.1:8099/?token={TOKEN}" in r.output
        assert ("127.0.0.1", 8099) == (served["host"], served["port"])
        assert TOKEN == served["app"].state.login_token

    def test_token_is_redacted_in_the_access_log(self):
        import logging

        from campaign_states.cli._web import _RedactToken

        record = logging.LogRecord(
            "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s"', (
                "127.0.0.1", "GET", f"/?next=/x&token={TOKEN}&a=1"), None,
        )  # fmt: skip
        assert _RedactToken().filter(record)
        assert TOKEN not in record.getMessage()
        assert "token=***&a=1" in record.getMessage()


class TestEventLoop:
    """A long archive runs in a worker thread: the event loop keeps serving other pages."""

    def test_pages_served_while_an_archive_waits(self, reg):
        self.check(reg, hold=10.0)

    def test_the_check_catches_a_blocking_console(self, reg, monkeypatch):
        """Broken variant: registry calls made on the event loop. The check fails."""
        from campaign_states.web import _base, _campaigns, _changes

        async def on_the_loop(fn, *args, **kwargs):
            return fn(*args, **kwargs)

        for module in (_base, _campaigns, _changes):
            monkeypatch.setattr(module, "call", on_the_loop)
        with pytest.raises(AssertionError):
            self.check(reg, hold=0.5)

    def check(self, reg, hold):
        import asyncio
        import re

        import httpx2

        gate = threading.Event()
        real = reg.archive

        def slow_archive(cid, **kw):
            gate.wait(hold)
            return real(cid, **kw)

        reg.archive = slow_archive  # type: ignore[method-assign]
        app = create_app(reg, token=TOKEN, wait_inline=30.0)

        async def scenario() -> list[int]:
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://t") as c:
                await c.get(f"/?token={TOKEN}")
                page = await c.get("/campaigns")
                token = re.search(r'name="csrftoken" value="([^"]+)"', page.text).group(1)
                archive = asyncio.create_task(
                    c.post("/campaign/trigger", data={"csrftoken": token, "id": "c-bf",
                                                      "trigger": "archive"})
                )  # fmt: skip
                await asyncio.sleep(0.05)
                assert not archive.done()
                # While the archive waits (for 30 s inline at most), pages still answer.
                others = await asyncio.gather(*(c.get(p) for p in GET_PAGES[:6]))
                assert not archive.done()
                gate.set()
                done = await archive
                return [r.status_code for r in others] + [done.status_code]

        assert [200] * 6 + [303] == asyncio.run(scenario())
        assert State.ARCHIVED == reg.get("c-bf").state

    def test_history_time_range(self, reg):
        c = signed_in(reg)
        all_rows = c.get("/history.json", params={"since": "2000-01-01T00:00"}).json()
        assert len(all_rows) == len(reg.event_log(limit=1000))
        assert [] == c.get("/history.json", params={"until": "2000-01-01T00:00"}).json()
        page = c.get("/history", params={"since": "2000-01-01T00:00", "actor": "nobody"})
        assert "No changes match." in page.text
