"""Deliberately broken gates, archivers and readers: the negative controls of the guarantee.

Each breaks one thing the guarantee rests on; the experiment's checker must report the
violations they cause (``tests/test_race.py``, ``tests/test_demo.py``), or it proves nothing.
They live here, with the tests, never in the wheel.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Any

from campaign_states import Registry
from campaign_states.stores import GateRowBatch, Reader
from delivery_gate import DeliveryGate
from delivery_gate._refresh import Refresher


class _LeaseAfterRead(Refresher):
    def refresh(self) -> bool:
        with self._lock:
            if self.closed:
                return False
            try:
                self._pull()
            except Exception as e:
                self._fail(e)
                return False
            self._renew(self._now())
            return True


class LeaseAfterReadGate(DeliveryGate):
    """BROKEN: measures the lease from *after* the refresh read, not before it."""

    _refresher_type = _LeaseAfterRead


class NoDrainGate(DeliveryGate):
    """BROKEN: tells the registry its permits drained without waiting for them."""

    def __init__(self, registry: Registry) -> None:
        super().__init__(registry)
        self._listener.drain = lambda campaign_ids, timeout: set()  # type: ignore[method-assign]


class _AckBeforeDrain(Refresher):
    def _ack_if_drained(self) -> None:
        self.registration.waiting = []
        super()._ack_if_drained()


class AckBeforeDrainGate(DeliveryGate):
    """BROKEN: acknowledges a change as soon as its view is installed, before its permits
    on the silenced campaigns have left their blocks."""

    _refresher_type = _AckBeforeDrain


class SlowReader:
    """A reader whose change reads take ``delay`` s (the data is as of the read's start)."""

    def __init__(self, inner: Reader, delay: float) -> None:
        self._inner, self._delay = inner, delay

    def version_token(self) -> object:
        return self._inner.version_token()

    def gate_rows_since(self, seq: int) -> GateRowBatch:
        batch = self._inner.gate_rows_since(seq)  # type: ignore[attr-defined]
        time.sleep(self._delay)
        return batch

    def close(self) -> None:
        self._inner.close()


def slow_reads(reg: Registry, delay: float) -> None:
    """Make every reader ``reg`` hands out a `SlowReader` (instance attribute: tests only)."""
    original = reg.open_reader
    reg.open_reader = lambda: SlowReader(original(), delay)  # type: ignore[method-assign]


class _Fixed:
    """A permit whose answer never changes: what `StaleCacheGate` hands out."""

    def __init__(self, admitted: bool, reason: Any = None) -> None:
        self.admitted, self.reason = admitted, reason

    def still_valid(self) -> bool:
        return self.admitted

    def __enter__(self) -> _Fixed:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_FOREVER = _Fixed(True)


class StaleCacheGate:
    """BROKEN: caches each admit forever (wraps a real gate, for the demo's workers).

    The failure mode of feature-flag SDKs that serve the last known value: it asks the real
    gate once per target and never again, so it keeps sending after an archive. Its admits
    skip the real gate's permits, so the store records none of its sends.
    """

    def __init__(self, gate: Any) -> None:
        self._gate = gate
        self._admitted: set[tuple[str, str]] = set()

    def permit(self, campaign_id: str, channel: str, kind: Any) -> Any:
        key = (campaign_id, channel)
        if key in self._admitted:
            return _FOREVER
        d = self._gate.check(campaign_id, channel=channel, kind=kind)
        if d.admitted:
            self._admitted.add(key)
            return _FOREVER
        return _Fixed(False, d.reason)

    def check(self, campaign_id: str, *, channel: str, kind: Any) -> Any:
        return self._gate.check(campaign_id, channel=channel, kind=kind)


def demo_with_stale_cache_gate() -> None:
    """`campaign-states demo ARGS...` (from ``sys.argv``) with every worker's gate wrapped
    in `StaleCacheGate`: the real command, its real exit code, only the gates broken.

    Run as ``python -c "from race.broken import demo_with_stale_cache_gate as d; d()" ...``
    with ``tests/`` on ``PYTHONPATH`` (the spawned workers import this module by name).
    """
    from campaign_states.cli import _demo, app

    _demo.run_demo = functools.partial(_demo.run_demo, gate_wrapper=StaleCacheGate)  # type: ignore[assignment]
    app()(sys.argv[1:], prog_name="campaign-states")
