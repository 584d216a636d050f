"""The operator console in a real browser: Debian's Chromium driven by Playwright.

The seed's walkthrough end to end, as a person clicks through it, on a SQLite store
whose archives wait about two seconds (so the progress page and htmx's polling are
exercised too). Skips, saying why, without Chromium or Playwright, unless
CAMPAIGN_STATES_REQUIRE_BROWSER=1 (CI), where it fails instead. With
CAMPAIGN_STATES_SCREENSHOTS=DIR set, it saves a screenshot of each screen there
(`make screenshots`).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CAMPAIGN_STATES_CHROMIUM", "/usr/bin/chromium")
REQUIRE = os.environ.get("CAMPAIGN_STATES_REQUIRE_BROWSER") == "1"
SHOTS = os.environ.get("CAMPAIGN_STATES_SCREENSHOTS")


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed (pip install 'campaign-states[test]')"
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


_REASON = _missing()
if _REASON is not None:
    if REQUIRE:
        pytest.fail(f"CAMPAIGN_STATES_REQUIRE_BROWSER=1 but {_REASON}", pytrace=False)
    pytest.skip(_REASON, allow_module_level=True)

import uvicorn  # noqa: E402
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

from campaign_states import Channel, Delivery, Emission, Registry, open_registry  # noqa: E402
from campaign_states.web import Role, Users, create_app  # noqa: E402

USER, PASSWORD = "olga", "olga-pw-123"


def seed(reg: Registry) -> None:
    reg.create_segment("seg-vip", name="VIP customers")
    reg.create_segment("seg-eu", name="EU newsletter")
    specs = [
        ("c-bf", "Black Friday", ["email", "in_app"], ["seg-vip"], True),
        ("c-cm", "Cyber Monday", ["push"], ["seg-eu"], True),
        ("c-ws", "Winter sale", ["email", "sms"], ["seg-eu"], False),
        ("c-nl", "Weekly newsletter", ["email"], ["seg-eu"], True),
        ("c-xss", "<script>alert(1)</script>", ["webhook"], [], False),
        ("c-loy", "Loyalty points reminder", ["push", "email"], ["seg-vip"], False),
        ("c-spring", "Spring preview", ["in_app"], ["seg-vip"], True),
    ]
    for cid, name, channels, segments, running in specs:
        reg.create_campaign(
            name=name, channels=channels, segments=segments, campaign_id=cid, actor="seed"
        )
        if running:
            reg.resume(cid, actor="seed")
    reg.record_results(
        [
            Delivery(campaign_id="c-bf", channel=Channel.EMAIL, count=12840),
            Delivery(
                campaign_id="c-bf",
                channel=Channel.IN_APP,
                count=3310,
                kind=Emission.IN_APP_IMPRESSION,
            ),
            Delivery(campaign_id="c-cm", channel=Channel.PUSH, count=5120),
            Delivery(campaign_id="c-nl", channel=Channel.EMAIL, count=40211),
        ]
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Registry]]:
    """The console on 127.0.0.1 and a free port, served by uvicorn in a thread."""
    tmp = tmp_path_factory.mktemp("console")
    reg = open_registry(f"sqlite:///{tmp / 'campaigns.db'}")
    # Archives wait ~2 s: longer than the 1 s a request waits inline, so the walkthrough
    # sees the progress page and htmx polling it until the archive is confirmed. Live gates
    # acknowledge in milliseconds, so the store gets a gate that heartbeats but never
    # acknowledges (a stalled pipeline): every archive waits out its 2 s lease.
    reg.set_lease_settings(lease=2.0, grace=0.05, refresh=0.5)
    table = reg.store.gate_table()
    silent = table.register(lease=2.0)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(0.2):
            table.heartbeat(silent, lease=2.0)

    threading.Thread(target=heartbeat, daemon=True).start()
    seed(reg)
    users = Users(tmp / "users.json")
    users.put(USER, Role.OPERATOR, PASSWORD)
    app = create_app(reg, users=users, allowed_hosts=["127.0.0.1"])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(500):
        if srv.started:
            break
        threading.Event().wait(0.02)
    assert srv.started, "uvicorn did not start"
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", reg
    srv.should_exit = True
    thread.join(10)
    stop.set()
    reg.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 760})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    # A CSP violation (an inline script or style) or a script error shows up here.
    assert [] == errors


def shot(page: Page, name: str, *, full: bool = False) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=full)


def log_in(page: Page, base: str) -> None:
    page.goto(base + "/campaigns")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    shot(page, "01-login")
    page.get_by_label("User name").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Campaigns")).to_be_visible()


def confirm_and_wait(page: Page) -> None:
    """Click the dialog's Confirm; follow the progress page until the change is confirmed."""
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Confirmed: no gate admits")).to_be_visible(timeout=30_000)


def test_walkthrough(server: tuple[str, Registry], page: Page) -> None:
    """List, row menu Archive (confirmed, gone), Status Archived, read-only page with
    results, Unarchive (stopped), gear Resume (running), bulk archive of two, segment
    archive with its warning list, and the event log naming the logged-in actor."""
    base, reg = server
    log_in(page, base)
    rows = page.get_by_role("row")
    expect(page.get_by_role("checkbox", name="Select Black Friday")).to_be_visible()
    expect(page.get_by_text("<script>alert(1)</script>")).to_be_visible()  # text, not a script
    shot(page, "02-campaigns")

    # Row menu -> Archive -> confirmation -> confirmed, and gone from the default list.
    page.get_by_role("button", name="Actions for Black Friday").click()
    menu = page.get_by_role("menu")
    expect(menu.get_by_role("menuitem")).to_have_text(["Stop", "Archive"])
    shot(page, "03-row-menu")
    menu.get_by_role("menuitem", name="Archive", exact=True).click()
    expect(page.get_by_role("dialog")).to_contain_text("Archive “Black Friday”?")
    shot(page, "04-confirm-archive")
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    waiting = page.get_by_text("Waiting for gates")
    if waiting.is_visible():
        shot(page, "05-waiting-for-gates")
    expect(page.get_by_text("Confirmed: no gate admits it any more.")).to_be_visible(timeout=30_000)
    shot(page, "06-archive-confirmed")
    page.get_by_role("link", name="Back").click()
    expect(page.get_by_role("checkbox", name="Select Cyber Monday")).to_be_visible()
    expect(page.get_by_role("checkbox", name="Select Black Friday")).to_have_count(0)

    # Status "Archived" shows it (the select submits on change).
    page.get_by_label("Status").select_option(label="Archived")
    expect(page.get_by_role("checkbox", name="Select Black Friday")).to_be_visible()
    expect(rows).to_have_count(2)  # the header and Black Friday
    shot(page, "07-status-archived")

    # Its page: read-only, with its results.
    page.get_by_role("link", name="Black Friday").click()
    expect(page.locator("#state-value")).to_have_text("archived")
    expect(page.get_by_role("note")).to_contain_text("Unarchive it to edit")
    expect(page.get_by_label("Name")).to_be_disabled()
    expect(page.get_by_role("button", name="Save changes")).to_be_disabled()
    expect(page.get_by_role("row", name=re.compile(r"email\s+12,840"))).to_be_visible()
    expect(page.get_by_role("row", name=re.compile(r"impressions\s+3,310"))).to_be_visible()
    shot(page, "08-campaign-archived", full=True)

    # Gear -> Unarchive -> stopped; gear -> Resume -> running.
    page.get_by_role("button", name="Campaign settings").click()
    expect(page.get_by_role("menuitem")).to_have_text(["Unarchive"])
    page.get_by_role("menuitem", name="Unarchive").click()
    expect(page.locator("#state-value")).to_have_text("active_stopped")
    expect(page.get_by_label("Name")).to_be_enabled()
    page.get_by_role("button", name="Campaign settings").click()
    expect(page.get_by_role("menuitem")).to_have_text(["Resume", "Archive"])
    shot(page, "09-gear-menu")
    page.get_by_role("menuitem", name="Resume").click()
    expect(page.locator("#state-value")).to_have_text("active_running")
    shot(page, "10-campaign-running", full=True)

    # Bulk archive of two, with each one's outcome.
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="Campaigns").click()
    page.get_by_role("checkbox", name="Select Cyber Monday").check()
    page.get_by_role("checkbox", name="Select Winter sale").check()
    expect(page.get_by_text("2 selected")).to_be_visible()
    shot(page, "11-bulk-selected")
    page.get_by_role("button", name="Archive selected", exact=True).click()
    expect(page.get_by_role("dialog")).to_contain_text("Archive 2 selected campaigns?")
    shot(page, "12-bulk-confirm")
    confirm_and_wait(page)
    expect(page.get_by_text("2 changed, 0 unchanged, 0 refused, 0 not found")).to_be_visible()
    outcomes = page.locator("table.outcomes")
    expect(outcomes.get_by_role("row", name=re.compile("Cyber Monday.*changed"))).to_be_visible()
    expect(outcomes.get_by_role("row", name=re.compile("Winter sale.*changed"))).to_be_visible()
    shot(page, "13-bulk-outcomes")

    # Segment archive: its warning list first, then the cascade.
    nav.get_by_role("link", name="Segments").click()
    shot(page, "14-segments")
    page.get_by_role("link", name="VIP customers").click()
    shot(page, "15-segment")
    page.get_by_role("button", name="Archive segment", exact=True).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("This archives 3 campaigns")
    for name in ("Black Friday", "Loyalty points reminder", "Spring preview"):
        expect(dialog.get_by_role("listitem").filter(has_text=name)).to_be_visible()
    shot(page, "16-segment-archive-warning")
    confirm_and_wait(page)
    expect(page.get_by_text("and 3 campaigns targeting it")).to_be_visible()
    page.get_by_role("link", name="Back").click()
    expect(page.get_by_role("button", name="Unarchive segment")).to_be_visible()
    page.get_by_role("button", name="Unarchive segment").click()
    expect(page.get_by_role("dialog")).to_contain_text("Campaigns its archive took")
    shot(page, "17-segment-unarchive")
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("button", name="Unarchive segment")).to_be_visible()

    # The event log: each step, with the logged-in actor.
    nav.get_by_role("link", name="Event log").click()
    page.get_by_label("Actor").fill(USER)
    page.get_by_role("button", name="Filter").click()
    log = page.get_by_role("row")
    expected = [
        ("c-bf", "archive", "segment:seg-vip"),
        ("c-loy", "archive", "segment:seg-vip"),
        ("c-spring", "archive", "segment:seg-vip"),
        ("c-cm", "archive", ""),
        ("c-ws", "archive", ""),
        ("c-bf", "resume", ""),
        ("c-bf", "unarchive", ""),
        ("c-bf", "archive", ""),
    ]
    expect(log).to_have_count(1 + len(expected))
    texts = [t.split("\t") for t in log.all_inner_texts()[1:]]
    got = {(cells[2].strip(), cells[3].strip(), cells[7].strip()) for cells in texts}
    assert set(expected) == got
    assert {USER} == {cells[6].strip() for cells in texts}
    shot(page, "18-event-log")

    nav.get_by_role("link", name="Health").click()
    expect(page.get_by_text("Lease settings")).to_be_visible()
    shot(page, "19-health")
    assert {USER} == {e.actor for e in reg.event_log(since=0, limit=1000) if e.actor != "seed"}


def test_row_menu_keyboard(server: tuple[str, Registry], page: Page) -> None:
    """The row menu works from the keyboard (Enter opens, arrows move, Escape closes)."""
    base, _reg = server
    log_in(page, base)
    button = page.get_by_role("button", name="Actions for Weekly newsletter")
    button.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("menuitem", name="Stop")).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(page.get_by_role("menuitem", name="Archive", exact=True)).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("menu")).to_be_hidden()
    expect(button).to_be_focused()
