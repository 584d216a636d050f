"""The Celery app the worker tests run in a real worker (``celery -A celery_app worker``).

Configured from the environment the test sets: broker and backend (Redis), the queue (one
per test run, so parallel runs on a shared Redis never steal each other's tasks), the
store (``CAMPAIGN_STATES_URL``) and a Redis list prefix where task bodies note that they ran.
"""

from __future__ import annotations

import json
import os

import redis
from celery import Celery
from celery.exceptions import Ignore
from celery.signals import task_prerun

from delivery_gate import DeliveryGate
from delivery_gate.integrations.celery import GatedTask

BROKER = os.environ["CS_TEST_BROKER"]
QUEUE = os.environ["CS_TEST_QUEUE"]

app = Celery("cs_test", broker=BROKER, backend=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
_sink = redis.Redis.from_url(BROKER)


def note(kind: str, **fields: object) -> None:
    """A body ran: say so where the test can read it."""
    _sink.rpush(f"{QUEUE}:{kind}", json.dumps(fields))


@app.task(name="cs.ping")
def ping() -> str:
    return "pong"


@app.task(base=GatedTask, bind=True, name="cs.send", autoretry_for=(Exception,), max_retries=3)
def send(self, campaign_id: str, channel: str, n: int = 0) -> int:
    gate = self.gate
    note(
        "sent",
        campaign_id=campaign_id,
        n=n,
        pid=os.getpid(),
        gate=id(gate),
        refresher_alive=gate._thread is not None and gate._thread.is_alive(),
        still_valid=self.permit.still_valid(),
    )
    return n


@app.task(
    base=GatedTask,
    name="cs.send_order",
    campaign_key=lambda order: (order["campaign"], order["via"]),
)
def send_order(order: dict[str, str]) -> str:
    note("sent", campaign_id=order["campaign"], n=-1, pid=os.getpid())
    return order["campaign"]


# -- the deliberately broken, hand-written version: a task_prerun handler raising Ignore ----

_naive_gates: dict[int, DeliveryGate] = {}


@app.task(name="cs.naive_send")
def naive_send(campaign_id: str, channel: str) -> str:
    note("naive_sent", campaign_id=campaign_id, pid=os.getpid())
    return campaign_id


@task_prerun.connect
def naive_gate(sender=None, args=None, kwargs=None, **_: object) -> None:
    if getattr(sender, "name", None) != "cs.naive_send":
        return
    gate = _naive_gates.get(os.getpid())
    if gate is None:
        gate = _naive_gates[os.getpid()] = DeliveryGate.open(os.environ["CAMPAIGN_STATES_URL"])
    if not gate.check(*args).admitted:
        raise Ignore()  # what people write; Celery's signal dispatch swallows it
