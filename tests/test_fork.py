"""A registry and gate opened before os.fork() work in the child (issue 8, item 7).

Celery's prefork pool, gunicorn --preload and multiprocessing's fork start method all fork a
process that already opened its registry and gate. Before the fix the child's gate denied
STALE forever (its refresher thread did not survive the fork) and the child's registry
wrote through the parent's SQLite connection.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from support import eventually

from campaign_states import State, open_registry
from delivery_gate import DeliveryGate, Reason

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")


def _in_child(work):
    """Run ``work()`` in a forked child; return what it returned (JSON), or raise."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(read)
            out = json.dumps({"ok": work()})
        except BaseException as e:
            out = json.dumps({"error": f"{type(e).__name__}: {e}"})
            code = 1
        try:
            os.write(write, out.encode())
        finally:
            os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks) or b'{"error": "no output"}')
    assert "error" not in result, result["error"]
    assert 0 == os.waitstatus_to_exitcode(status)
    return result["ok"]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "postgres":
        return request.getfixturevalue("pg_dsn")
    return f"sqlite:///{tmp_path / 'fork.db'}"


def test_child_gate_admits_and_child_archive_is_seen_everywhere(url):
    reg = open_registry(url)
    a = reg.create_campaign(name="a", channels={"email"}, campaign_id="c-a")
    reg.resume(a.id)
    b = reg.create_campaign(name="b", channels={"email"}, campaign_id="c-b")
    reg.resume(b.id)
    gate = DeliveryGate(reg, refresh=0.02)
    assert gate.check(a.id, "email").admitted

    def child():
        # Admits by itself once its own refresher has read the store (before: STALE forever).
        admitted = eventually(lambda: gate.check(a.id, "email").admitted)
        with gate.permit(a.id, "email") as p:
            sent = p.admitted
        gate.flush()  # recorded through the child's own connection
        reg.archive(a.id)  # through the child's registry and connection
        return {
            "admitted": admitted,
            "sent": sent,
            "after_archive": gate.check(a.id, "email").reason.value,
            "state": reg.get(a.id).state.value,
        }

    seen = _in_child(child)
    assert {
        "admitted": True,
        "sent": True,
        "after_archive": "archived",
        "state": "archived",
    } == seen
    # The parent's registry and gate still work (the child did not end the parent's
    # sessions), see the child's archive, and did not record the child's delivery twice.
    assert State.ARCHIVED is reg.get(a.id).state
    assert eventually(lambda: gate.check(a.id, "email").reason is Reason.ARCHIVED)
    assert gate.check(b.id, "email").admitted
    reg.stop(b.id)
    assert Reason.STOPPED == gate.check(b.id, "email").reason
    assert 1 == reg.results(a.id).total
    gate.close()
    reg.close()


def test_deliveries_queued_before_the_fork_are_recorded_once(url):
    reg = open_registry(url)
    c = reg.create_campaign(name="q", channels={"sms"}, campaign_id="c-q")
    reg.resume(c.id)
    gate = DeliveryGate(reg, background_refresh=False)
    for _ in range(5):
        with gate.permit(c.id, "sms"):
            pass

    def child():
        gate.flush()  # the five queued deliveries are the parent's, not the child's
        return reg.results(c.id).total

    assert 0 == _in_child(child)
    gate.flush()
    assert 5 == reg.results(c.id).total
    gate.close()
    reg.close()


def test_the_check_catches_a_gate_without_the_fork_hook(url, monkeypatch):
    # The broken variant: the child keeps the parent's (dead) refresher. Its gate never
    # admits again: the first test's "admitted" would be False.
    monkeypatch.setattr(DeliveryGate, "_after_fork_in_child", lambda self: None)
    reg = open_registry(url)
    c = reg.create_campaign(name="x", channels={"email"}, campaign_id="c-x")
    reg.resume(c.id)
    gate = DeliveryGate(reg, refresh=0.02, lease=0.1)

    def child():
        time.sleep(0.2)  # past the inherited lease
        return eventually(lambda: gate.check(c.id, "email").admitted, timeout=1.0)

    assert _in_child(child) is False
    gate.close()
    reg.close()


def test_the_fork_hook_does_no_io_and_skips_closed_stores(tmp_path):
    # A parent with many stores (a test run, a long-lived worker) must not pay for them in
    # every child, nor block there: the child reopens a store at its first use only.
    from campaign_states.stores import SQLiteStore

    closed = SQLiteStore(tmp_path / "closed.db")
    closed.close()
    unused = SQLiteStore(tmp_path / "unused.db")
    used = open_registry(f"sqlite:///{tmp_path / 'used.db'}")
    used.create_campaign(name="u", channels={"push"}, campaign_id="c-u")

    def child():
        return {
            "closed_untouched": closed._connection is None or closed._closed,
            "unused_not_reopened": unused._connection is None,
            "used_works": used.get("c-u").name,
        }

    assert {"closed_untouched": True, "unused_not_reopened": True, "used_works": "u"} == (
        _in_child(child)
    )
    assert "u" == used.get("c-u").name  # the parent's connection is untouched
    unused.close()
    used.close()
