"""`GatedTask`: decided before the body, body under the permit, denials stored as DENIED.

Unit tests run tasks eagerly on an in-memory result backend; the worker tests start a real
Celery worker (prefork, 2 processes) on the machine's Redis and skip with a reason when
none is reachable (unless CAMPAIGN_STATES_REQUIRE_REDIS=1).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("celery", reason="the celery extra is not installed")

from celery import Celery
from celery.result import AsyncResult
from support import REDIS_URL, require_redis

from campaign_states import open_registry
from delivery_gate import Reason
from delivery_gate.exceptions import GateSettingsError
from delivery_gate.integrations import celery as gated_celery
from delivery_gate.integrations.celery import DENIED, GatedTask, denials

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def store(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    reg = open_registry(url)
    run = reg.create_campaign(name="r", channels={"email"}, campaign_id="c-run").id
    gone = reg.create_campaign(name="g", channels={"email"}, campaign_id="c-gone").id
    reg.resume_many([run, gone])
    reg.archive(gone)
    monkeypatch.setenv("CAMPAIGN_STATES_URL", url)
    yield reg, run, gone
    gated_celery.close_gates()
    reg.close()


@pytest.fixture
def app():
    app = Celery("unit", broker="memory://", backend="cache+memory://")
    app.conf.task_store_eager_result = True
    return app


class TestEager:
    """The decision, the permit and the DENIED state, without a worker."""

    def test_admitted_body_runs_under_the_permit(self, app, store):
        _reg, run, _gone = store
        seen = []

        @app.task(base=GatedTask, bind=True)
        def send(self, campaign_id, channel):
            seen.append((self.permit.admitted, self.permit.still_valid(), len(self.gate._live)))
            return "sent"

        assert "sent" == send.apply((run, "email")).get()
        assert "sent" == send.apply(kwargs={"channel": "email", "campaign_id": run}).get()
        assert [(True, True, 1)] * 2 == seen
        assert send.permit is None  # outside a body

    def test_an_archive_here_waits_for_the_running_body(self, app, store):
        """The body holds the permit: an archive in this process waits for it to end."""
        import threading

        reg, run, _gone = store
        seen = []
        threads = []

        @app.task(base=GatedTask, bind=True)
        def send(self, campaign_id, channel):
            archiver = threading.Thread(target=self.gate.registry.archive, args=(campaign_id,))
            threads.append(archiver)
            archiver.start()
            archiver.join(0.3)
            seen.append(archiver.is_alive())

        send.apply((run, "email")).get()
        (archiver,) = threads
        archiver.join(30)
        assert [True] == seen  # still waiting while the body ran
        assert not archiver.is_alive()
        assert "archived" == reg.get(run).state.value

    def test_nested_gated_calls_keep_their_own_permits(self, app, store):
        """A body calling another gated task (or itself) directly keeps its own permit."""
        _reg, run, _gone = store
        seen = []

        @app.task(base=GatedTask, bind=True)
        def inner(self, campaign_id, channel):
            seen.append(("inner", self.permit.campaign_id, outer.permit.campaign_id))

        @app.task(base=GatedTask, bind=True)
        def outer(self, campaign_id, channel, depth=0):
            mine = self.permit
            inner(campaign_id, channel)
            if depth == 0:
                outer(campaign_id, channel, depth=1)
            assert mine is self.permit
            seen.append(("outer", depth, self.permit.still_valid()))

        outer.apply((run, "email")).get()
        assert [
            ("inner", run, run), ("inner", run, run), ("outer", 1, True), ("outer", 0, True),
        ] == seen  # fmt: skip
        assert outer.permit is None
        assert inner.permit is None

    def test_denied_body_skipped_state_stored(self, app, store):
        _reg, _run, gone = store
        ran = []
        before = denials()[Reason.ARCHIVED]

        @app.task(base=GatedTask)
        def send(campaign_id, channel):
            ran.append(campaign_id)

        result = send.apply((gone, "email"))
        assert [] == ran
        stored = AsyncResult(result.id, app=app)
        assert DENIED == stored.state
        assert {"reason": "archived", "campaign_id": gone, "channel": "email"} == stored.info
        assert before + 1 == denials()[Reason.ARCHIVED]

    def test_called_directly_skips_the_body(self, app, store):
        _reg, run, gone = store

        @app.task(base=GatedTask)
        def send(campaign_id, channel):
            return "sent"

        assert "sent" == send(run, "email")
        assert send(gone, "email") is None

    def test_custom_key_and_url(self, app, store, monkeypatch):
        _reg, run, gone = store
        url = os.environ["CAMPAIGN_STATES_URL"]
        monkeypatch.delenv("CAMPAIGN_STATES_URL")

        @app.task(
            base=GatedTask,
            campaign_key=lambda order: (order["c"], "email"),
            campaign_states_url=url,
        )
        def send(order):
            return order["c"]

        assert run == send.apply(({"c": run},)).get()
        assert DENIED == AsyncResult(send.apply(({"c": gone},)).id, app=app).state

    def test_app_config_url(self, app, store, monkeypatch):
        _reg, run, _gone = store
        app.conf.campaign_states_url = os.environ["CAMPAIGN_STATES_URL"]
        monkeypatch.delenv("CAMPAIGN_STATES_URL")

        @app.task(base=GatedTask)
        def send(campaign_id, channel):
            return 1

        assert 1 == send.apply((run, "email")).get()

    def test_missing_arguments_deny_as_invalid(self, app, store):
        @app.task(base=GatedTask)
        def send(to):
            raise AssertionError("must not run")

        result = send.apply(("someone@example.com",))
        assert "invalid_request" == AsyncResult(result.id, app=app).info["reason"]

    def test_no_store_configured_is_a_clear_error(self, app, store, monkeypatch):
        monkeypatch.delenv("CAMPAIGN_STATES_URL")

        @app.task(base=GatedTask)
        def send(campaign_id, channel):
            return 1

        with pytest.raises(GateSettingsError, match="CAMPAIGN_STATES_URL"):
            send.apply((store[1], "email")).get()

    def test_one_gate_per_process_and_url(self, app, store):
        _reg, run, _gone = store

        @app.task(base=GatedTask, bind=True)
        def a(self, campaign_id, channel):
            return id(self.gate)

        @app.task(base=GatedTask, bind=True)
        def b(self, campaign_id, channel):
            return id(self.gate)

        assert a.apply((run, "email")).get() == b.apply((run, "email")).get()

    def test_the_check_catches_a_gate_per_call(self, app, store):
        """Deliberately broken: a task opening a gate per call fails the same comparison."""
        _reg, run, _gone = store

        class PerCall(GatedTask):
            @property
            def gate(self):
                g = self.open_gate(self.store_url())
                self._opened = [*getattr(self, "_opened", []), g]
                return g

        @app.task(base=PerCall, bind=True)
        def a(self, campaign_id, channel):
            return id(self.gate)

        first, second = a.apply((run, "email")).get(), a.apply((run, "email")).get()
        assert first != second
        for g in a._opened:
            g.close()


# -- a real worker ------------------------------------------------------------------------


def _list(client, key):
    return [json.loads(x) for x in client.lrange(key, 0, -1)]


@pytest.fixture
def worker(store, tmp_path):
    """A prefork worker (2 processes) on a queue of its own, and the app to send with."""
    require_redis()
    import redis

    queue = f"cs-test-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "CS_TEST_BROKER": REDIS_URL,
        "CS_TEST_QUEUE": queue,
        "PYTHONPATH": str(TESTS),
    }
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "-Q",
            queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "info",
        ],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    os.environ["CS_TEST_BROKER"], os.environ["CS_TEST_QUEUE"] = REDIS_URL, queue
    sys.path.insert(0, str(TESTS))
    import importlib

    import celery_app

    celery_app = importlib.reload(celery_app)  # this test's queue
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert "pong" == celery_app.ping.apply_async(queue=queue).get(timeout=60)
        yield celery_app, client, queue
    finally:
        proc.send_signal(signal.SIGTERM)  # warm shutdown: children close their gates
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for key in client.keys(f"{queue}:*"):
            client.delete(key)
        sys.path.remove(str(TESTS))


def _wait_state(result, state, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if result.state == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"task {result.id} is {result.state}, not {state}")


def bodies_ran_for(client, key, campaign_id):
    """The check: no body may have run for ``campaign_id``."""
    ran = [r for r in _list(client, key) if r["campaign_id"] == campaign_id]
    assert [] == ran, f"a task body ran for {campaign_id!r}, which is archived"


class TestWorker:
    """A real prefork worker: archived campaigns' tasks skipped and counted, running ones
    sent and recorded, one gate per worker process opened after the fork."""

    def test_archived_skipped_running_sent_and_recorded(self, worker, store):
        celery_app, client, queue = worker
        reg, run, gone = store
        sent = [celery_app.send.apply_async((run, "email", i)) for i in range(12)]
        denied = [celery_app.send.apply_async((gone, "email", i)) for i in range(4)]
        by_key = celery_app.send_order.apply_async(({"campaign": gone, "via": "email"},))
        ok_key = celery_app.send_order.apply_async(({"campaign": run, "via": "email"},))
        assert list(range(12)) == [r.get(timeout=60) for r in sent]
        assert run == ok_key.get(timeout=60)
        for r in [*denied, by_key]:
            _wait_state(r, DENIED)
            assert {"reason": "archived", "campaign_id": gone, "channel": "email"} == r.info
        bodies_ran_for(client, f"{queue}:sent", gone)
        notes = _list(client, f"{queue}:sent")
        assert 13 == len(notes)
        assert all(n["still_valid"] for n in notes if n["n"] >= 0)
        # One gate per worker process, opened in that process (its refresher runs there).
        gates_by_pid: dict[int, set[int]] = {}
        for n in notes:
            if "gate" in n:
                gates_by_pid.setdefault(n["pid"], set()).add(n["gate"])
                assert n["refresher_alive"]
        assert all(1 == len(g) for g in gates_by_pid.values())
        assert os.getpid() not in gates_by_pid
        # Deliveries are recorded by the worker's gates (flushed about every second).
        end = time.monotonic() + 30
        while reg.results(run).total < 13 and time.monotonic() < end:
            time.sleep(0.1)
        assert 13 == reg.results(run).total
        assert 0 == reg.results(gone).total

    def test_a_campaign_archived_while_queued_is_skipped(self, worker, store):
        celery_app, client, queue = worker
        reg, run, _gone = store
        assert 0 == celery_app.send.apply_async((run, "email", 0)).get(timeout=60)
        reg.archive(run)  # returns once the workers' gates deny it
        late = celery_app.send.apply_async((run, "email", 1))
        _wait_state(late, DENIED)
        assert [0] == [n["n"] for n in _list(client, f"{queue}:sent")]

    def test_the_check_catches_a_task_prerun_ignore(self, worker, store):
        """The hand-written version (task_prerun raising Ignore) runs the body anyway: the
        same check that passes for GatedTask fails on it."""
        celery_app, client, queue = worker
        _reg, _run, gone = store
        result = celery_app.naive_send.apply_async((gone, "email"))
        assert gone == result.get(timeout=60)  # SUCCESS: the body ran
        with pytest.raises(AssertionError, match="archived"):
            bodies_ran_for(client, f"{queue}:naive_sent", gone)
