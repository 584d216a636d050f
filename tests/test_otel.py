"""OpenTelemetry: gate metrics, registry spans and waits, read back through the SDK's
in-memory reader and exporter."""

from __future__ import annotations

import threading

import pytest

from campaign_states._listeners import Listeners

pytest.importorskip("opentelemetry.sdk", reason="the test extra installs opentelemetry-sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from campaign_states import Channel, Emission, FakeClock, Registry, open_registry
from campaign_states.exceptions import CampaignNotFoundError, DrainTimeoutError
from campaign_states.otel import instrument_registry
from campaign_states.stores import SQLiteStore
from delivery_gate import DeliveryGate, Reason
from delivery_gate import _tally as tally_module
from delivery_gate import otel as gate_otel
from delivery_gate.otel import instrument_gate


@pytest.fixture
def reader():
    r = InMemoryMetricReader()
    return r, MeterProvider(metric_readers=[r])


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider


def points(reader, name):
    """{attributes (as a sorted tuple): value} for the metric ``name``."""
    data = reader.get_metrics_data()
    out = {}
    found = None
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    found = m
                    for p in m.data.data_points:
                        key = tuple(sorted(p.attributes.items()))
                        out[key] = getattr(p, "value", None) if hasattr(p, "value") else p
    return found, out


def decision_key(reason, channel, emission="message"):
    return (
        ("campaign_states.channel", channel),
        ("campaign_states.decision.reason", reason),
        ("campaign_states.emission", emission),
    )


@pytest.fixture
def campaigns():
    reg = open_registry("memory://")
    ids = [
        reg.create_campaign(name="c", channels={"email", "in_app"}, campaign_id=f"c-{i}").id
        for i in range(3)
    ]
    reg.resume_many(ids)
    yield reg, ids
    reg.close()


class TestGateDecisions:
    """Every decision is counted once by reason, channel and emission; never by campaign."""

    def test_counts_checks_permits_and_filters(self, campaigns, reader):
        reg, ids = campaigns
        r, provider = reader
        gate = instrument_gate(DeliveryGate(reg, background_refresh=False), meter_provider=provider)
        reg.archive(ids[2])
        for _ in range(5):
            gate.check(ids[0], "email")
        gate.check(ids[0], Channel.EMAIL)
        gate.check(ids[0], "sms")
        gate.check(ids[2], "email")
        gate.check("nope", "email")
        gate.check(ids[0], "fax")  # not a channel: bounded label
        gate.check(ids[0], "in_app", Emission.IN_APP_IMPRESSION)
        with gate.permit(ids[1], "email") as p:
            assert p.admitted
        admitted, _denied = gate.filter([(ids[0], "email"), (ids[2], "email"), object()])
        assert 1 == len(admitted)
        metric, got = points(r, "campaign_states.gate.decisions")
        assert "{decision}" == metric.unit
        assert {
            decision_key("running", "email"): 8,
            decision_key("channel_not_enabled", "sms"): 1,
            decision_key("archived", "email"): 2,
            decision_key("unknown_campaign", "email"): 1,
            decision_key("invalid_request", "_other"): 2,
            decision_key("running", "in_app", "in_app_impression"): 1,
        } == got
        for key in got:
            assert not any("c-" in str(v) for _, v in key), "a campaign id is an attribute"
        gate.close()

    def test_counts_are_cumulative_and_survive_a_closed_gate(self, campaigns, reader):
        reg, ids = campaigns
        r, provider = reader
        gate = instrument_gate(DeliveryGate(reg, background_refresh=False), meter_provider=provider)
        gate.check(ids[0], "email")
        assert 1 == points(r, "campaign_states.gate.decisions")[1][decision_key("running", "email")]
        gate.check(ids[0], "email")
        gate.close()
        assert 2 == points(r, "campaign_states.gate.decisions")[1][decision_key("running", "email")]
        other = instrument_gate(
            DeliveryGate(reg, background_refresh=False), meter_provider=provider
        )
        other.check(ids[0], "email")
        assert 3 == points(r, "campaign_states.gate.decisions")[1][decision_key("running", "email")]
        other.close()

    def test_many_threads_lose_no_count(self, campaigns, reader):
        """The hot path counts without a lock: 8 threads x 20,000 checks, all counted."""
        reg, ids = campaigns
        r, provider = reader
        gate = instrument_gate(DeliveryGate(reg, background_refresh=False), meter_provider=provider)
        barrier = threading.Barrier(8)

        def work():
            barrier.wait()
            check = gate.check
            for _ in range(20_000):
                check(ids[0], "email")
                # Collections run concurrently with the counting.
            points(r, "campaign_states.gate.decisions")

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = points(r, "campaign_states.gate.decisions")[1]
        assert 160_000 == got[decision_key("running", "email")]
        gate.close()

    def test_the_check_catches_a_lossy_counter(self, campaigns, reader, monkeypatch):
        """A broken tally that drops slow-path counts is caught by the exact totals."""
        reg, ids = campaigns
        r, provider = reader
        monkeypatch.setattr(tally_module.Tally, "count", lambda self, d, ch, kind: None)
        gate = instrument_gate(DeliveryGate(reg, background_refresh=False), meter_provider=provider)
        gate.check(ids[0], "sms")
        got = points(r, "campaign_states.gate.decisions")[1]
        assert decision_key("channel_not_enabled", "sms") not in got
        gate.close()

    def test_instrumented_decisions_equal_the_plain_gate(self, campaigns, reader):
        """The counting check copies the gate's hot path: on every kind of input it must
        decide exactly as an uninstrumented gate on the same registry."""
        reg, ids = campaigns
        _r, provider = reader
        plain = DeliveryGate(reg, background_refresh=False)
        counted = instrument_gate(
            DeliveryGate(reg, background_refresh=False), meter_provider=provider
        )
        reg.archive(ids[1])

        class Sub(str):
            pass

        cids = [*ids, "nope", Sub(ids[0]), "", " c-0", None, 42, ["unhashable"], "c-\x00"]
        channels = [*Channel, *(c.value for c in Channel), Sub("email"), "fax", None, {}]
        kinds = [*Emission, *(e.value for e in Emission), "other", None]
        for cid in cids:
            for ch in channels:
                for kind in kinds:
                    assert plain.check(cid, ch, kind) == counted.check(cid, ch, kind), (
                        cid, ch, kind,
                    )  # fmt: skip
                with plain.permit(cid, "email") as p, counted.permit(cid, "email") as q:
                    assert p.decision == q.decision
        batch = [(cid, ch) for cid in cids[:5] for ch in channels[:6]]
        assert plain.filter(batch) == counted.filter(batch)

        def broken_midway():
            yield batch[0]
            raise RuntimeError("consumer died")

        odd_batches = [
            lambda: None,  # not iterable: denied as one item
            lambda: 5,
            lambda: iter(batch[:3]),
            lambda: (x for x in [batch[0], 1.0, batch[1]]),  # an item that is no pair
            broken_midway,  # the items read before the error are decided
        ]
        for make in odd_batches:
            assert plain.filter(make()) == counted.filter(make())
        plain.close()
        counted.close()

    def test_the_decision_observer_still_runs(self, campaigns, reader):
        reg, ids = campaigns
        _r, provider = reader
        seen = []
        gate = DeliveryGate(
            reg, background_refresh=False, on_decision=lambda c, ch, k, d: seen.append(d.reason)
        )
        instrument_gate(gate, meter_provider=provider)
        gate.check(ids[0], "email")
        gate.filter([object()])
        assert [Reason.RUNNING, Reason.INVALID_REQUEST] == seen
        gate.close()

    def test_instrumenting_twice_counts_once(self, campaigns, reader):
        reg, ids = campaigns
        r, provider = reader
        gate = DeliveryGate(reg, background_refresh=False)
        instrument_gate(gate, meter_provider=provider)
        instrument_gate(gate, meter_provider=provider)
        gate.check(ids[0], "email")
        assert 1 == points(r, "campaign_states.gate.decisions")[1][decision_key("running", "email")]
        gate.close()

    def test_no_sdk_installs_nothing(self, campaigns, monkeypatch):
        """Without an SDK (and no provider given) the gate keeps its own check: zero cost."""
        reg, ids = campaigns
        monkeypatch.setattr(gate_otel, "_sdk_installed", lambda: False)
        gate = instrument_gate(DeliveryGate(reg, background_refresh=False))
        assert "check" not in vars(gate)
        assert gate.check(ids[0], "email").admitted
        gate.close()

    def test_rejects_a_non_gate(self):
        with pytest.raises(TypeError, match="DeliveryGate"):
            instrument_gate(object())  # type: ignore[arg-type]


class TestGateLeaseAndRefresh:
    """The lease's seconds left is a gauge; each refresh is timed."""

    def test_lease_remaining_and_refresh_duration(self, reader):
        r, provider = reader
        clock = FakeClock()
        reg = open_registry("memory://", clock=clock)
        gate = instrument_gate(
            DeliveryGate(reg, background_refresh=False, lease=0.5, refresh=0.1),
            meter_provider=provider,
        )
        gate.refresh()
        clock.advance(0.2)
        metric, got = points(r, "campaign_states.gate.lease_remaining")
        assert "s" == metric.unit
        assert 0.3 == pytest.approx(got[()])
        metric, got = points(r, "campaign_states.gate.refresh.duration")
        assert "s" == metric.unit
        assert 1 == got[()].count  # the refresh after instrumenting (not the first load)
        gate.close()
        reg.close()

    def test_a_failed_refresh_names_the_error_type(self, reader, tmp_path):
        r, provider = reader
        reg = open_registry(f"sqlite:///{tmp_path / 'x.db'}")
        gate = instrument_gate(DeliveryGate(reg, background_refresh=False), meter_provider=provider)

        def broken():
            raise OSError("disk gone")

        gate._refresher._pull = broken  # type: ignore[method-assign]
        assert not gate.refresh()
        got = points(r, "campaign_states.gate.refresh.duration")[1]
        assert 1 == got[(("error.type", "OSError"),)].count
        gate.close()
        reg.close()


@pytest.fixture
def traced(spans, reader):
    exporter, tp = spans
    r, mp = reader
    reg = instrument_registry(
        open_registry("memory://"),
        tracer_provider=tp,
        meter_provider=mp,
    )
    yield reg, exporter, r
    reg.close()


def by_name(exporter):
    return {s.name: s for s in exporter.get_finished_spans()}


class TestRegistrySpans:
    """Each lifecycle change is a span; archives and stops carry their wait as a child."""

    def test_archive_span_with_wait_child(self, spans, reader, tmp_path):
        exporter, tp = spans
        r, mp = reader
        clock = FakeClock()
        # SQLite waits out a silent remote gate's lease (on a fake clock: instantly).
        reg = instrument_registry(
            Registry(SQLiteStore(tmp_path / "c.db", clock=clock)),
            tracer_provider=tp,
            meter_provider=mp,
        )
        c = reg.create_campaign(name="c", channels={"email"}, campaign_id="c-ü-1")
        reg.resume(c.id)
        reg.store.gate_table().register(lease=1.0)  # another process's gate, never acking
        reg.archive(c.id)
        got = by_name(exporter)
        archive, wait = got["archive campaign"], got["wait"]
        assert "c-ü-1" == archive.attributes["campaign_states.campaign.id"]
        assert archive.attributes["campaign_states.changed"] is True
        assert archive.context.span_id == wait.parent.span_id
        assert "lease" == wait.attributes["campaign_states.wait.outcome"]
        assert archive.start_time <= wait.start_time <= wait.end_time <= archive.end_time
        assert "resume campaign" in got
        assert "wait" not in [s.name for s in exporter.get_finished_spans() if s is not wait]
        metric, hist = points(r, "campaign_states.registry.wait.duration")
        assert "s" == metric.unit
        assert 1 == hist[(("campaign_states.wait.outcome", "lease"),)].count
        reg.close()

    def test_bulk_and_segment_spans_count(self, traced):
        reg, exporter, _r = traced
        reg.create_segment("s-1")
        ids = [
            reg.create_campaign(name="c", channels={"email"}, segments={"s-1"}).id for _ in range(3)
        ]
        reg.resume_many(iter(ids))
        reg.stop_many(ids[:1])
        reg.archive_segment("s-1")
        got = by_name(exporter)
        assert 3 == got["bulk resume"].attributes["campaign_states.campaign.count"]
        assert 1 == got["bulk stop"].attributes["campaign_states.campaign.count"]
        seg = got["archive segment"]
        assert "s-1" == seg.attributes["campaign_states.segment.id"]
        assert 3 == seg.attributes["campaign_states.campaign.count"]
        waits = [s for s in exporter.get_finished_spans() if s.name == "wait"]
        assert {got["bulk stop"].context.span_id, seg.context.span_id} == {
            w.parent.span_id for w in waits
        }

    def test_only_archives_and_stops_wait(self, traced):
        """A resume or unarchive has no wait; a retried archive waits what remains of the
        first call's wait (the registry's rule), so it has one too."""
        reg, exporter, _r = traced
        c = reg.create_campaign(name="c", channels={"email"})
        reg.resume(c.id)
        reg.archive(c.id)
        reg.archive(c.id)
        reg.unarchive(c.id)
        names = [s.name for s in exporter.get_finished_spans()]
        assert [
            "resume campaign", "wait", "archive campaign", "wait", "archive campaign",
            "unarchive campaign",
        ] == names  # fmt: skip

    def test_failure_sets_error_type(self, traced):
        reg, exporter, _r = traced
        with pytest.raises(CampaignNotFoundError):
            reg.archive("c-missing")
        (span,) = exporter.get_finished_spans()
        assert StatusCode.ERROR == span.status.status_code
        assert "CampaignNotFoundError" == span.attributes["error.type"]

    def test_drain_timeout_marks_the_wait(self, spans, reader):
        exporter, tp = spans
        _r, mp = reader
        reg = instrument_registry(
            open_registry("memory://", drain_timeout=0.05), tracer_provider=tp, meter_provider=mp
        )
        c = reg.create_campaign(name="c", channels={"email"})
        reg.resume(c.id)
        gate = DeliveryGate(reg, background_refresh=False)
        with gate.permit(c.id, "email"), pytest.raises(DrainTimeoutError):
            reg.archive(c.id)
        got = by_name(exporter)
        assert "DrainTimeoutError" == got["wait"].attributes["error.type"]
        assert "DrainTimeoutError" == got["archive campaign"].attributes["error.type"]
        gate.close()
        reg.close()

    def test_the_registry_reports_its_outcome(self, spans, reader, tmp_path, monkeypatch):
        """Every live gate acknowledged (here: none registered): the wait is recorded as
        "acknowledged", reported by the registry through ``listener.waited``; a registry
        that did not report it would be recorded "lease" and fail here."""
        exporter, tp = spans
        r, mp = reader

        def archive_outcome(name):
            exporter.clear()
            reg = instrument_registry(
                Registry(SQLiteStore(tmp_path / f"{name}.db", clock=FakeClock())),
                tracer_provider=tp,
                meter_provider=mp,
            )
            c = reg.create_campaign(name="c", channels={"email"})
            reg.resume(c.id)
            assert "acknowledged" == reg.stop(c.id).wait.outcome
            reg.close()
            return by_name(exporter)["wait"].attributes["campaign_states.wait.outcome"]

        assert "acknowledged" == archive_outcome("reported")
        hist = points(r, "campaign_states.registry.wait.duration")[1]
        assert 1 == hist[(("campaign_states.wait.outcome", "acknowledged"),)].count
        monkeypatch.setattr(Listeners, "waited", lambda self, ids, outcome: None)
        assert "lease" == archive_outcome("silent")  # the broken registry, caught

    def test_instrumenting_twice_traces_once(self, traced):
        reg, exporter, _r = traced
        instrument_registry(reg)
        c = reg.create_campaign(name="c", channels={"email"})
        reg.resume(c.id)
        assert ["resume campaign"] == [s.name for s in exporter.get_finished_spans()]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork (POSIX)")
class TestFork:
    """A gate instrumented before a fork counts and is collected in the child, even when a
    parent thread held the metric locks at the fork (a collection in progress)."""

    def test_child_counts_with_locks_held_at_fork(self, reader, tmp_path):
        from test_fork import _in_child

        r, provider = reader
        reg = open_registry(f"sqlite:///{tmp_path / 'f.db'}")
        c = reg.create_campaign(name="c", channels={"email"})
        reg.resume(c.id)
        gate = instrument_gate(DeliveryGate(reg), meter_provider=provider)
        gate.check(c.id, "email")
        tally = gate._otel_tally
        exported = gate_otel._metrics_for(provider)
        held = [tally._read_lock, tally._slow_lock, exported._lock]
        for lock in held:
            lock.acquire()
        try:

            def work():
                import time as _time

                end = _time.monotonic() + 10
                while not gate.check(c.id, "email").admitted and _time.monotonic() < end:
                    _time.sleep(0.005)  # the child's gate reads its own view first
                gate.check(c.id, "sms")
                return points(r, "campaign_states.gate.decisions")[1][
                    decision_key("running", "email")
                ]

            assert 2 == _in_child(work)  # the parent's one, plus the child's
        finally:
            for lock in held:
                lock.release()
        gate.close()
        reg.close()


class TestAsyncRegistrySpans:
    """An awaited call is traced like a sync one, under the awaiting task's span."""

    def test_awaited_archive_is_a_child_of_the_callers_span(self, spans, reader):
        got = self.trace_one(spans, reader, "open")
        assert got["handle request"].context.span_id == got["archive campaign"].parent.span_id
        assert got["archive campaign"].context.span_id == got["wait"].parent.span_id

    def test_the_check_catches_a_registry_that_drops_the_context(self, spans, reader):
        """Deliberately broken: run_in_executor without the caller's context."""
        got = self.trace_one(spans, reader, "contextless")
        assert got["archive campaign"].parent is None

    def trace_one(self, spans, reader, how):
        import asyncio
        import functools

        from campaign_states import AsyncRegistry, open_async_registry

        class Contextless(AsyncRegistry):
            async def _run(self, fn, *args, **kwargs):
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(
                    self._pool, functools.partial(fn, *args, **kwargs)
                )

        exporter, tp = spans
        _r, mp = reader
        tracer = tp.get_tracer("test")

        def opened():
            if how == "open":
                return open_async_registry("memory://")
            return Contextless(open_registry("memory://"))

        async def main():
            async with opened() as areg:
                instrument_registry(areg, tracer_provider=tp, meter_provider=mp)
                c = await areg.create_campaign(name="c", channels={"email"})
                await areg.resume(c.id)
                with tracer.start_as_current_span("handle request"):
                    await areg.archive(c.id)

        asyncio.run(main())
        return by_name(exporter)
