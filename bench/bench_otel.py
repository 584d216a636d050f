"""What OpenTelemetry instrumentation costs, as ratios against the same gate uninstrumented
in the same run.

Run: ``python -m bench otel`` (needs the test extra: opentelemetry-sdk).

Target (issue 11): with metrics on and an SDK installed, ``check()`` <= 1.5x its
uninstrumented cost. Also shown: permits and ``filter`` (instrumented gates decide those
item by item, through the counting check), and an archive traced on a memory store.
"""

from __future__ import annotations

import operator
import random
import timeit

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from campaign_states import open_registry
from campaign_states.otel import instrument_registry
from delivery_gate import DeliveryGate
from delivery_gate.otel import instrument_gate

from .bench_gate import _mins, _Msg, _registry


def bench_check() -> None:
    reg, ids = _registry(1000)
    reg.archive_many(ids[::10])
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    plain = DeliveryGate(reg)
    counted = instrument_gate(DeliveryGate(reg), meter_provider=provider)
    cid, gone = ids[501], ids[500]
    env = {"plain": plain.check, "counted": counted.check, "cid": cid, "gone": gone}
    base, inst, base_denied, inst_denied = _mins(
        [
            "plain(cid, 'email')",
            "counted(cid, 'email')",
            "plain(gone, 'email')",
            "counted(gone, 'email')",
        ],
        env,
        number=300_000,
        repeat=11,
    )
    reader.collect()  # a collection reads the counters: it works while the gate counts
    print(
        f"check, admitted      {base:7.1f} ns plain, {inst:7.1f} ns instrumented = "
        f"{inst / base:4.2f}x (target <= 1.5x)"
    )
    print(
        f"check, denied        {base_denied:7.1f} ns plain, {inst_denied:7.1f} ns instrumented "
        f"= {inst_denied / base_denied:4.2f}x"
    )
    env = {"plain": plain.permit, "counted": counted.permit, "cid": cid}
    p_base, p_inst = _mins(
        [
            "with plain(cid, 'email'): pass",
            "with counted(cid, 'email'): pass",
        ],
        env,
        number=100_000,
    )
    print(
        f"permit enter+exit    {p_base:7.1f} ns plain, {p_inst:7.1f} ns instrumented = "
        f"{p_inst / p_base:4.2f}x"
    )
    rnd = random.Random(1)
    batch = [_Msg(rnd.choice(ids), rnd.choice(["email", "push", "sms"])) for _ in range(20_000)]
    key = operator.attrgetter("campaign_id", "channel")
    env = {"plain": plain, "counted": counted, "batch": batch, "key": key}
    f_base, f_inst = (
        t / len(batch)
        for t in _mins(
            ["plain.filter(batch, key=key)", "counted.filter(batch, key=key)"], env, number=5
        )
    )
    print(
        f"filter 20k, per item {f_base:7.1f} ns plain, {f_inst:7.1f} ns instrumented = "
        f"{f_inst / f_base:4.2f}x (decided item by item when instrumented)"
    )
    plain.close()
    counted.close()
    reg.close()


def bench_archive_span() -> None:
    exporter = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    results = []
    for traced in (False, True):
        reg = open_registry("memory://")
        if traced:
            instrument_registry(reg, tracer_provider=tracer, meter_provider=meters)
        ids = [reg.create_campaign(name="c", channels={"email"}).id for _ in range(2000)]
        reg.resume_many(ids)
        archive, it = reg.archive, iter(ids)
        took = min(timeit.repeat(lambda: archive(next(it)), number=200, repeat=5))  # noqa: B023
        results.append(took / 200 * 1e6)
        reg.close()
    print(
        f"archive() on memory  {results[0]:7.1f} us plain, {results[1]:7.1f} us traced = "
        f"{results[1] / results[0]:4.2f}x (span + wait span + histogram)"
    )


def main() -> None:
    bench_check()
    bench_archive_span()


if __name__ == "__main__":
    main()
