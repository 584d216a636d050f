"""OpenTelemetry metrics for delivery gates: ``instrument_gate(gate)``.

Needs the ``otel`` extra (``pip install 'campaign-states[otel]'``: the OpenTelemetry API
only; the application brings the SDK and its exporters). Nothing is counted or emitted
until `instrument_gate` is called, and with no SDK installed it changes nothing.

Metrics (meter ``delivery_gate``):

- ``campaign_states.gate.decisions`` (observable counter, ``{decision}``), attributes
  ``campaign_states.decision.reason``, ``campaign_states.channel``,
  ``campaign_states.emission``: never a campaign id (unbounded cardinality). A channel or
  kind a caller got wrong reads ``_other``.
- ``campaign_states.gate.lease_remaining`` (observable gauge, ``s``): seconds until the
  lease lapses, for the instrumented gate closest to lapsing (negative once lapsed).
- ``campaign_states.gate.refresh.duration`` (histogram, ``s``): each refresh of a gate's
  view, with ``error.type`` when it failed.

The gate counts each decision with one ``itertools.count`` bump (see ``_tally``); the
counter is observable, so exporting reads those counts at collection time and the
deciding threads never call into the SDK.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

try:
    from opentelemetry import metrics
except ImportError as e:  # the extra is missing
    raise ImportError(
        "delivery_gate.otel needs the OpenTelemetry API: pip install 'campaign-states[otel]'."
    ) from e

from ._gate import DeliveryGate
from ._tally import Labels, Tally, install

__all__ = ["instrument_gate"]

_REASON = "campaign_states.decision.reason"
_CHANNEL = "campaign_states.channel"
_EMISSION = "campaign_states.emission"


def _sdk_installed() -> bool:
    """Whether an OpenTelemetry SDK is importable (without it, metrics go nowhere)."""
    return importlib.util.find_spec("opentelemetry.sdk") is not None


class _GateMetrics:
    """The instruments of one meter provider, and the gates that report through them."""

    def __init__(self, provider: metrics.MeterProvider) -> None:
        self._lock = threading.Lock()
        # Live gates and their tallies; a closed or collected gate's counts move into
        # `_retired`, so the cumulative counter never goes backwards.
        self._gates: list[tuple[weakref.ref[DeliveryGate], Tally]] = []
        self._retired: dict[Labels, int] = {}
        meter = provider.get_meter("delivery_gate")
        meter.create_observable_counter(
            "campaign_states.gate.decisions",
            callbacks=[self._decisions],
            unit="{decision}",
            description="Decisions made by delivery gates, by reason, channel and emission.",
        )
        meter.create_observable_gauge(
            "campaign_states.gate.lease_remaining",
            callbacks=[self._lease_remaining],
            unit="s",
            description="Seconds until the gate's lease lapses (the gate closest to lapsing).",
        )
        self.refresh_duration = meter.create_histogram(
            "campaign_states.gate.refresh.duration",
            unit="s",
            description="How long a gate's refresh of its view took.",
        )

    def add(self, gate: DeliveryGate, tally: Tally) -> None:
        with self._lock:
            self._gates.append((weakref.ref(gate), tally))

    def _decisions(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        with self._lock:
            totals = dict(self._retired)
            live: list[tuple[weakref.ref[DeliveryGate], Tally]] = []
            for ref, tally in self._gates:
                counts = tally.snapshot()
                for labels, n in counts.items():
                    totals[labels] = totals.get(labels, 0) + n
                gate = ref()
                if gate is None or gate._closed:
                    # Its counts are final: keep them, stop reading the tally.
                    for labels, n in counts.items():
                        self._retired[labels] = self._retired.get(labels, 0) + n
                else:
                    live.append((ref, tally))
            self._gates = live
        return [
            metrics.Observation(n, {_REASON: r, _CHANNEL: c, _EMISSION: k})
            for (r, c, k), n in sorted(totals.items())
        ]

    def _lease_remaining(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        with self._lock:
            gates = [g for ref, _ in self._gates if (g := ref()) is not None and not g._closed]
        if not gates:
            return []
        return [metrics.Observation(min(g.status().seconds_left for g in gates))]


_providers_lock = threading.Lock()
_providers: dict[int, tuple[metrics.MeterProvider, _GateMetrics]] = {}


def _after_fork_in_child() -> None:
    # A parent thread may have held these locks at the fork (a collection in progress).
    global _providers_lock  # noqa: PLW0603 (a fresh lock for the child)
    _providers_lock = threading.Lock()
    for _, exported in _providers.values():
        exported._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _metrics_for(provider: metrics.MeterProvider) -> _GateMetrics:
    # One set of instruments per provider: registering the same names twice would make
    # the SDK warn and report the gates twice.
    with _providers_lock:
        entry = _providers.get(id(provider))
        if entry is None or entry[0] is not provider:
            entry = _providers[id(provider)] = (provider, _GateMetrics(provider))
        return entry[1]


def instrument_gate(
    gate: DeliveryGate, *, meter_provider: metrics.MeterProvider | None = None
) -> DeliveryGate:
    """Report ``gate``'s decisions, lease and refreshes as OpenTelemetry metrics.

    Call it once per gate, after building it (a second call changes nothing). The gate's
    decision observer, if it has one, is still called.

    Args:
        gate: The gate to instrument.
        meter_provider: Where to report; default: the global one
            (``opentelemetry.metrics.set_meter_provider``). Without an explicit provider
            and with no SDK installed, nothing is installed: the gate keeps its
            uninstrumented cost.

    Returns:
        The same gate.

    Raises:
        TypeError: ``gate`` is not a `DeliveryGate`.
    """
    if not isinstance(gate, DeliveryGate):
        raise TypeError(f"instrument_gate needs a DeliveryGate, not {type(gate).__name__}.")
    if meter_provider is None and not _sdk_installed():
        return gate
    with _providers_lock:
        if getattr(gate, "_otel_tally", None) is not None:
            return gate
        tally = Tally()
        gate._otel_tally = tally  # type: ignore[attr-defined]
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    exported = _metrics_for(provider)
    install(gate, tally)
    exported.add(gate, tally)
    _time_refreshes(gate, exported)
    return gate


def _time_refreshes(gate: DeliveryGate, exported: _GateMetrics) -> None:
    refresh = gate.refresh
    histogram = exported.refresh_duration

    def timed_refresh() -> bool:
        # The refresher thread calls `self.refresh()`: this instance attribute shadows it.
        started = time.perf_counter()
        ok = refresh()
        if gate._closed:
            return ok
        took = time.perf_counter() - started
        attributes: dict[str, Any] = {}
        if not ok:
            # `last_error` is "TypeName: message"; the type alone is bounded (no message).
            attributes["error.type"] = (gate.status().last_error or "_other").split(":", 1)[0]
        histogram.record(took, attributes)
        return ok

    gate.refresh = timed_refresh  # type: ignore[method-assign]
