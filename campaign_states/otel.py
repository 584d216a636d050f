"""OpenTelemetry traces and metrics for a registry: ``instrument_registry(registry)``.

Needs the ``otel`` extra (the OpenTelemetry API only). Nothing is emitted until
`instrument_registry` is called; with no SDK installed the API's no-op tracer and meter
make each span a few attribute stores.

Spans (tracer ``campaign_states``), one per lifecycle change: ``archive campaign``,
``stop campaign``, ``resume campaign``, ``unarchive campaign``, ``bulk archive``,
``bulk stop``, ``bulk resume``, ``bulk unarchive``, ``archive segment``, ``unarchive
segment``. Attributes: ``campaign_states.campaign.id`` or ``campaign_states.segment.id``,
``campaign_states.campaign.count`` (ids in a bulk call, or campaigns a segment cascaded
to), ``campaign_states.changed``; on failure the span's status is ERROR with ``error.type``
(the exception's class). An archive or stop that waited has a child span ``wait``: from
its commit to its return (local permits drained, remote leases waited out).

Metric (meter ``campaign_states``): ``campaign_states.registry.wait.duration``
(histogram, ``s``) with ``campaign_states.wait.outcome``: how the wait ended, as the
registry reports it (see `WaitProbe`): ``acknowledged``, ``lease`` or ``local``
(`campaign_states.WaitReport.outcome`).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final, TypeVar

try:
    from opentelemetry import metrics, trace
except ImportError as e:  # the extra is missing
    raise ImportError(
        "campaign_states.otel needs the OpenTelemetry API: pip install 'campaign-states[otel]'."
    ) from e

from ._outcomes import BulkResult, SegmentChange, TransitionResult
from ._records import Campaign, Segment
from ._registry import Registry

__all__ = ["WaitProbe", "instrument_registry"]

_F = TypeVar("_F", bound=Callable[..., Any])

LEASE: Final = "lease"
ACKNOWLEDGED: Final = "acknowledged"
_OUTCOME = "campaign_states.wait.outcome"


class _Call:
    """One silencing call in progress on this thread: when its wait began, how it ended."""

    __slots__ = ("outcome", "started_ns")

    def __init__(self) -> None:
        self.started_ns: int | None = None
        self.outcome: str | None = None


class WaitProbe:
    """A `campaign_states.ChangeListener` that notes when an archive's wait begins.

    The registry calls ``apply`` right after its commit and ``drain`` before waiting; the
    probe notes the first of the two on the calling thread (the registry calls its
    listeners on the thread that called it), so the instrumented method can time the wait.

    **The outcome hook.** A registry that knows how its wait ended calls
    ``waited(campaign_ids, outcome)`` on its listeners that have the method (``outcome``:
    ``"acknowledged"`` when every gate acknowledged the change, ``"lease"`` when it waited
    out leases, ``"local"`` for a memory store). The registry reports it once the wait is
    over (`campaign_states._invalidation.settle`); a wait without a report records
    ``"lease"``, the conservative reading.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def begin(self) -> _Call:
        call = _Call()
        self._local.call = call
        return call

    def end(self) -> None:
        self._local.call = None

    def _mark(self) -> None:
        call: _Call | None = getattr(self._local, "call", None)
        if call is not None and call.started_ns is None:
            call.started_ns = time.time_ns()

    def fence(self, campaign_ids: Collection[str]) -> None:
        pass

    def unfence(self, campaign_ids: Collection[str]) -> None:
        pass

    def apply(self, campaigns: Sequence[Campaign], segments: Sequence[Segment]) -> None:
        self._mark()

    def drain(self, campaign_ids: Collection[str], timeout: float) -> Collection[str]:
        self._mark()
        return ()

    def waited(self, campaign_ids: Collection[str], outcome: str) -> None:
        """The registry reports how the current call's wait ended."""
        call: _Call | None = getattr(self._local, "call", None)
        if call is not None:
            call.outcome = outcome


# method name -> (span name, what the first argument is, whether it waits).
_SINGLE = {
    "archive": ("archive campaign", True),
    "stop": ("stop campaign", True),
    "resume": ("resume campaign", False),
    "unarchive": ("unarchive campaign", False),
}
_BULK = {
    "archive_many": ("bulk archive", True),
    "stop_many": ("bulk stop", True),
    "resume_many": ("bulk resume", False),
    "unarchive_many": ("bulk unarchive", False),
}
_SEGMENT = {
    "archive_segment": ("archive segment", True),
    "unarchive_segment": ("unarchive segment", False),
}


def instrument_registry(
    registry: Registry,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> Registry:
    """Trace ``registry``'s lifecycle changes and measure its waits.

    Call it once, before sharing the registry (a second call changes nothing). An
    `AsyncRegistry`'s calls run the registry it wraps: instrument that one
    (``instrument_registry(async_registry.registry)``), or pass the `AsyncRegistry`.

    Args:
        registry: A `Registry` (or an `AsyncRegistry`: its wrapped registry).
        tracer_provider: Default: the global one.
        meter_provider: Default: the global one.

    Returns:
        The registry instrumented.

    Raises:
        TypeError: ``registry`` is not a registry.
    """
    inner = getattr(registry, "registry", registry)
    if not isinstance(inner, Registry):
        raise TypeError(f"instrument_registry needs a Registry, not {type(registry).__name__}.")
    if getattr(inner, "_otel_probe", None) is not None:
        return inner
    tracer = trace.get_tracer("campaign_states", tracer_provider=tracer_provider)
    meter = (meter_provider or metrics.get_meter_provider()).get_meter("campaign_states")
    histogram = meter.create_histogram(
        "campaign_states.registry.wait.duration",
        unit="s",
        description="How long archives and stops waited after their commit.",
    )
    probe = WaitProbe()
    inner._otel_probe = probe  # type: ignore[attr-defined]
    inner.subscribe(probe)
    tools = _Tools(tracer, histogram, probe)
    for name, (span, waits) in _SINGLE.items():
        setattr(inner, name, tools.wrap(getattr(inner, name), span, waits, _campaign_attrs))
    for name, (span, waits) in _BULK.items():
        setattr(inner, name, tools.wrap(getattr(inner, name), span, waits, _bulk_attrs))
    for name, (span, waits) in _SEGMENT.items():
        setattr(inner, name, tools.wrap(getattr(inner, name), span, waits, _segment_attrs))
    return inner


def _campaign_attrs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    cid = args[0] if args else kwargs.get("campaign_id")
    return {"campaign_states.campaign.id": str(cid)} if isinstance(cid, str) else {}


def _bulk_attrs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    return {}  # the count comes from the result: the ids may be a one-shot iterator


def _segment_attrs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    sid = args[0] if args else kwargs.get("segment_id")
    return {"campaign_states.segment.id": str(sid)} if isinstance(sid, str) else {}


def _result_attrs(result: object) -> dict[str, Any]:
    if isinstance(result, TransitionResult):
        return {"campaign_states.changed": result.changed}
    if isinstance(result, BulkResult):
        return {"campaign_states.campaign.count": len(result)}
    if isinstance(result, SegmentChange):
        return {
            "campaign_states.changed": result.changed,
            "campaign_states.campaign.count": len(result.campaign_ids),
        }
    return {}


class _Tools:
    def __init__(self, tracer: trace.Tracer, histogram: metrics.Histogram, probe: WaitProbe):
        self.tracer = tracer
        self.histogram = histogram
        self.probe = probe

    def wrap(
        self,
        method: _F,
        span_name: str,
        waits: bool,
        attrs_of: Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]],
    ) -> _F:
        tracer, probe = self.tracer, self.probe

        @functools.wraps(method)
        def traced(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(
                span_name, attributes=attrs_of(args, kwargs), record_exception=False
            ) as span:
                call = probe.begin() if waits else None
                try:
                    result = method(*args, **kwargs)
                except BaseException as e:
                    if call is not None:
                        self._record_wait(span, call, e)
                    span.set_attribute("error.type", type(e).__qualname__)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, type(e).__qualname__))
                    span.record_exception(e)
                    raise
                finally:
                    if call is not None:
                        probe.end()
                if call is not None:
                    self._record_wait(span, call, None)
                span.set_attributes(_result_attrs(result))
                return result

        return traced  # type: ignore[return-value]

    def _record_wait(self, parent: trace.Span, call: _Call, error: BaseException | None) -> None:
        started = call.started_ns
        if started is None:
            return  # nothing committed, or nothing to wait for (a no-op archive)
        ended = time.time_ns()
        outcome = call.outcome or LEASE
        attributes = {_OUTCOME: outcome}
        ctx = trace.set_span_in_context(parent)
        wait = self.tracer.start_span(
            "wait", context=ctx, start_time=started, attributes=attributes
        )
        if error is not None:
            # A drain timeout happens after the wait: the change is committed and no gate
            # admits, but local permits were still in flight.
            wait.set_attribute("error.type", type(error).__qualname__)
            wait.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__qualname__))
        wait.end(end_time=ended)
        self.histogram.record((ended - started) / 1e9, attributes)
