"""`GatedTask`: a Celery task base class whose body cannot run for a campaign that may not send.

Needs the ``celery`` extra (``pip install 'campaign-states[celery]'``)::

    @app.task(base=GatedTask)
    def send_email(campaign_id: str, channel: str, to: str) -> None:
        if send_email.permit.still_valid():
            smtp.send(...)

Why a base class: a ``task_prerun`` signal handler cannot skip a task (Celery catches
what a signal receiver raises, ``Ignore`` included, and runs the body anyway). `GatedTask`
overrides ``__call__``, which the worker calls in place of the body, so it decides
before the body and holds the permit while the body runs.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

try:
    import celery
    from celery.backends.base import DisabledBackend
    from celery.exceptions import Ignore
    from celery.signals import worker_process_shutdown, worker_shutdown
except ImportError as e:  # the extra is missing
    raise ImportError(
        "delivery_gate.integrations.celery needs Celery: pip install 'campaign-states[celery]'."
    ) from e

from campaign_states import Emission
from campaign_states.exceptions import CampaignStateError
from delivery_gate._decision import Decision, Reason, decision
from delivery_gate._gate import DeliveryGate
from delivery_gate._permit import Permit
from delivery_gate.exceptions import GateSettingsError

__all__ = ["DENIED", "GatedTask", "close_gates", "denials"]

log = logging.getLogger("delivery_gate.celery")

#: The result state of a task whose campaign was denied (``result.info["reason"]`` says why).
DENIED: Final = "DENIED"
_INVALID: Final = decision(False, Reason.INVALID_REQUEST)
_UNAVAILABLE: Final = decision(False, Reason.STORE_UNAVAILABLE)

# -- one gate per worker process ---------------------------------------------------------

_lock = threading.Lock()
_gates: dict[str, DeliveryGate] = {}
_denials: Counter[Reason] = Counter()


def _after_fork_in_child() -> None:
    # A prefork child: a parent thread may have held the lock at the fork, and the counts
    # are the parent's. Gates are normally opened in the child (on first use, after the
    # fork); one the parent opened restarts itself there (delivery_gate's own fork hook:
    # fresh connections and refresher, denying until its first read in the child).
    global _lock  # noqa: PLW0603 (a fresh lock for the child, as CPython does its own)
    _lock = threading.Lock()
    _denials.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def denials() -> Counter[Reason]:
    """This process's denied tasks so far, per reason (a copy)."""
    with _lock:
        return Counter(_denials)


def close_gates(**_: object) -> None:
    """Close this process's gates: records their last deliveries (on worker shutdown)."""
    with _lock:
        gates = list(_gates.values())
        _gates.clear()
    for gate in gates:
        try:
            gate.close()
        except Exception:
            log.exception("closing the delivery gate failed")


# A prefork child shuts down through worker_process_shutdown; solo and threads pools
# through worker_shutdown. Either way the buffered delivery counts get recorded.
worker_process_shutdown.connect(close_gates, weak=False)
worker_shutdown.connect(close_gates, weak=False)


class GatedTask(celery.Task):  # type: ignore[misc]
    """A task that runs its body only while its campaign may send, under a held permit.

    Before the body runs, the process's gate (one per worker process, opened on first use,
    after the fork) decides for the task's campaign and channel. Admitted: the body runs
    inside the permit (an archive in this process waits for it), and ``self.permit``
    (``task.permit``) is that permit: call ``self.permit.still_valid()`` right before the
    send. Denied: the body does not run, the task's result state becomes ``DENIED`` with
    ``{"reason", "campaign_id", "channel"}`` as its info, and the task ends with Celery's
    ``Ignore`` so nothing overwrites that state; it is never retried. A task called
    directly (``task(...)``, not through a worker) skips its body and returns ``None``.

    Configure per task (``@app.task(base=GatedTask, campaign_key=..., ...)``) or in a
    subclass:

    Attributes:
        campaign_key: A function of the task's arguments returning ``(campaign_id,
            channel)``; default: the ``campaign_id`` and ``channel`` arguments, positional
            or keyword (bound with the body's signature).
        campaign_states_url: The store; default: the app's ``campaign_states_url`` setting,
            else the ``CAMPAIGN_STATES_URL`` environment variable.
        emission: The emission kind (``Emission.MESSAGE``).
    """

    campaign_key: Callable[..., tuple[object, object]] | None = None
    campaign_states_url: str | None = None
    emission: object = Emission.MESSAGE

    # -- the gate --------------------------------------------------------------------------

    def store_url(self) -> str:
        """The store URL this task's gate reads (see the class attributes)."""
        url = (
            self.campaign_states_url
            or self.app.conf.get("campaign_states_url")
            or os.environ.get("CAMPAIGN_STATES_URL")
        )
        if not url:
            raise GateSettingsError(
                f"Task {self.name!r} has no store: set CAMPAIGN_STATES_URL, the app's "
                "campaign_states_url setting, or the task's campaign_states_url."
            )
        return str(url)

    def open_gate(self, url: str) -> DeliveryGate:
        """Open this process's gate on ``url`` (override to instrument it, say)."""
        return DeliveryGate.open(url)

    @property
    def gate(self) -> DeliveryGate:
        """This worker process's gate for the task's store (opened on first use)."""
        url = self.store_url()
        with _lock:
            gate = _gates.get(url)
            if gate is None or gate._closed:
                # Opened under the lock: two threads of a threads pool open one gate.
                gate = _gates[url] = self.open_gate(url)
            return gate

    @property
    def _permits(self) -> threading.local:
        # Per task and per thread (a threads pool runs bodies side by side); created on
        # first use: dict.setdefault is atomic, so two threads get the same one.
        local: threading.local = self.__dict__.setdefault("_permit_local", threading.local())
        return local

    @property
    def permit(self) -> Permit | None:
        """The permit the running body holds (``None`` outside a body)."""
        return getattr(self._permits, "permit", None)

    # -- deciding --------------------------------------------------------------------------

    def campaign_of(self, *args: Any, **kwargs: Any) -> tuple[object, object]:
        """The ``(campaign_id, channel)`` a call of this task emits for."""
        key = inspect.getattr_static(self, "campaign_key", None)
        if isinstance(key, staticmethod):
            key = key.__func__
        if key is not None:
            cid, channel = key(*args, **kwargs)
            return cid, channel
        bound = inspect.signature(self.run).bind(*args, **kwargs)
        return bound.arguments["campaign_id"], bound.arguments["channel"]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        cid: object = None
        channel: object = None
        try:
            cid, channel = self.campaign_of(*args, **kwargs)
        except Exception:
            # No campaign to decide for (missing argument, a key that raised): deny.
            log.warning("task %s: no (campaign_id, channel) in its arguments", self.name)
            return self._deny(_INVALID, cid, channel)
        try:
            gate = self.gate
        except CampaignStateError as e:
            log.error("task %s: cannot open the delivery gate (%s); denying", self.name, e)
            return self._deny(_UNAVAILABLE, cid, channel)
        with gate.permit(cid, channel, self.emission) as permit:
            if permit.admitted:
                # The body runs inside the permit: a local archive waits for it to end.
                # Restored after, not cleared: a body may call this task directly.
                local = self._permits
                outer = getattr(local, "permit", None)
                local.permit = permit
                try:
                    return super().__call__(*args, **kwargs)
                finally:
                    local.permit = outer
        return self._deny(permit.decision, cid, channel)

    def on_denied(self, decision: Decision, campaign_id: object, channel: object) -> None:
        """Called for each denied task, before its state is stored (override to count)."""

    def _deny(self, decision: Decision, campaign_id: object, channel: object) -> None:
        reason = decision.reason
        with _lock:
            _denials[reason] += 1
        self.on_denied(decision, campaign_id, channel)
        log.info("task %s denied: %s", self.name, reason.value)
        if self.request.called_directly:
            return None
        meta = {
            "reason": reason.value,
            "campaign_id": _text(campaign_id),
            "channel": _text(channel),
        }
        if not isinstance(self.backend, DisabledBackend) and self.request.id is not None:
            try:
                self.update_state(state=DENIED, meta=meta)
            except Exception:
                log.warning("task %s: storing the DENIED state failed", self.name, exc_info=True)
        # Ignore: the worker neither stores a result over DENIED nor retries the task.
        raise Ignore(f"denied: {reason.value}")


def _text(value: object) -> str | None:
    """A JSON-safe rendering of an id or channel, bounded in length."""
    if value is None:
        return None
    text = getattr(value, "value", value)
    return str(text)[:200]
