"""Acknowledged invalidation: archive latency with live gate processes, next to the lease.

Run: ``python -m bench ack`` (``BENCH_ACK_QUICK=1``: fewer archives, 1 and 8 gates only;
``BENCH_ACK_PG=0`` skips PostgreSQL).

For 1, 4, 8 and 16 gate processes (spawned, each a `DeliveryGate` on the store, idle) it
archives campaigns one at a time and reports p50/p90/p99 of ``archive()`` and how each
returned (``result.wait.outcome``), next to the lease-only wait measured in the same run
(the gate table made unreadable: every archive waits lease + grace, as before 2.1). Then
what an idle gate costs (CPU per second of its process, store queries per second) with
the fast probe and without it (as before 2.1: one read per refresh period), what a
stopped gate and a gate killed 0.9 of the wait ago cost an archive, and the check
hot path against a dict lookup (bench_gate's figure). Nothing here asserts on time.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from campaign_states import LeaseSettings, Registry, open_registry
from campaign_states.exceptions import StoreUnavailableError

QUICK = os.environ.get("BENCH_ACK_QUICK") == "1"
WITH_PG = os.environ.get("BENCH_ACK_PG", "1") != "0"
PG_DSN = os.environ.get("CAMPAIGN_STATES_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
# A short lease keeps the lease-only baseline quick; with acks the lease does not matter.
LEASE = LeaseSettings(lease=2.0, grace=0.1, refresh=1.0)


def _gate_process(url: str, ready: Any, stop: Any, no_probe: bool) -> None:
    from delivery_gate import DeliveryGate, _refresh

    if no_probe:
        _refresh.PROBE = 10.0  # type: ignore[misc]  # as before 2.1: refresh period only
    gate = DeliveryGate.open(url)
    ready.set()
    stop.wait()
    gate.close()


def _start(url: str, n: int, *, no_probe: bool = False) -> tuple[list[Any], Any]:
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    procs = []
    for _ in range(n):
        ready = ctx.Event()
        p = ctx.Process(target=_gate_process, args=(url, ready, stop, no_probe), daemon=True)
        p.start()
        ready.wait(60)
        procs.append(p)
    return procs, stop


def _stop(procs: list[Any], stop: Any) -> None:
    stop.set()
    for p in procs:
        p.join(30)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def _archives(reg: Registry, ids: list[str]) -> tuple[list[float], dict[str, int]]:
    times: list[float] = []
    outcomes: dict[str, int] = {}
    for cid in ids:
        t = time.perf_counter()
        result = reg.archive(cid)
        times.append((time.perf_counter() - t) * 1000)
        key = result.wait.outcome if result.wait else "none"
        outcomes[key] = outcomes.get(key, 0) + 1
    return times, outcomes


def _latency(name: str, url: str, reg: Registry) -> None:
    counts = [1, 8] if QUICK else [1, 4, 8, 16]
    per = 20 if QUICK else 60
    n = 0
    for gates in counts:
        ids = []
        for _ in range(per):
            n += 1
            cid = f"b-{gates}-{n}"
            reg.create_campaign(name=cid, channels=["email"], campaign_id=cid)
            ids.append(cid)
        reg.resume_many(ids)
        procs, stop = _start(url, gates)
        try:
            time.sleep(0.5)  # every gate has loaded the campaigns
            times, outcomes = _archives(reg, ids)
        finally:
            _stop(procs, stop)
        print(
            f"  {name:10} {gates:2} gates: archive p50 {statistics.median(times):7.1f} ms  "
            f"p90 {_pct(times, 0.9):7.1f}  p99 {_pct(times, 0.99):7.1f}  "
            f"({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))})",
            flush=True,
        )
    # The lease-only baseline, same store, same run: the gate table unreadable.
    ids = [f"lease-{i}" for i in range(2)]
    for cid in ids:
        reg.create_campaign(name=cid, channels=["email"], campaign_id=cid)
    reg.resume_many(ids)
    store = reg.store

    def broken() -> Any:
        raise StoreUnavailableError("bench: lease-only baseline")

    store.gate_table = broken  # type: ignore[method-assign]
    try:
        times, _ = _archives(reg, ids)
    finally:
        del store.gate_table
    print(
        f"  {name:10} lease only: archive {statistics.median(times):7.1f} ms "
        f"(lease {LEASE.lease:g} s + grace {LEASE.grace:g} s, x1.01)",
        flush=True,
    )


def _unanswering(name: str, url: str, reg: Registry) -> None:
    """What a gate that does not answer costs: SIGSTOPped (its whole lease), and SIGKILLed
    0.9 of the wait ago (what remains: about 0.1 of it)."""
    import signal

    wait = reg.lease_settings().commit_wait()
    for how in ("stopped", "killed 0.9 wait ago"):
        cid = f"u-{how[:4]}"
        reg.create_campaign(name=cid, channels=["email"], campaign_id=cid)
        reg.resume(cid)
        procs, stop = _start(url, 1)
        pid = procs[0].pid
        try:
            if how == "stopped":
                os.kill(pid, signal.SIGSTOP)
            else:
                os.kill(pid, signal.SIGKILL)
                procs[0].join(10)
                while max((g.heartbeat_age for g in reg.gates()), default=wait) < 0.9 * wait:
                    time.sleep(0.005)
            t = time.perf_counter()
            result = reg.archive(cid)
            took = time.perf_counter() - t
        finally:
            if how == "stopped":
                os.kill(pid, signal.SIGCONT)
                _stop(procs, stop)
            else:
                # Not stop.set(): setting a multiprocessing Event waits for its sleepers
                # to wake, and a killed one never does.
                procs[0].join(10)
        print(
            f"  {name:10} a gate {how:20}: archive {took * 1000:7.1f} ms = "
            f"{took / wait:4.2f} x the wait ({wait:g} s), outcome {result.wait.outcome}, "
            f"waited out {len(result.wait.waited_out)}",
            flush=True,
        )


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _idle_cost(name: str, url: str) -> None:
    from delivery_gate._refresh import PROBE

    seconds = 3.0 if QUICK else 6.0
    modes = [("probe every 5 ms", False), ("refresh period only", True)]
    if name == "postgresql":
        modes = [("LISTEN, refresh 1 s", False)]  # no probe: notifications wake it
    for label, no_probe in modes:
        procs, stop = _start(url, 1, no_probe=no_probe)
        try:
            time.sleep(1.0)
            pid = procs[0].pid
            before = _cpu_seconds(pid)
            time.sleep(seconds)
            cpu = (_cpu_seconds(pid) - before) / seconds
        finally:
            _stop(procs, stop)
        # Store queries per second: a probe is one query; a refresh one heartbeat and one
        # probe. On PostgreSQL a gate does not probe between refreshes: it waits on LISTEN.
        probes = 0.0 if no_probe or name == "postgresql" else 1 / PROBE
        queries = probes + 2 / LEASE.refresh
        print(
            f"  {name:10} idle gate, {label:20}: CPU {cpu * 100:5.2f}% of a core, "
            f"about {queries:5.0f} store queries/s",
            flush=True,
        )


def _on_store(name: str, url: str) -> None:
    """Every figure of this module for the store at ``url``."""
    reg = open_registry(url, lease=LEASE)
    try:
        _latency(name, url, reg)
        _unanswering(name, url, reg)
        _idle_cost(name, url)
    finally:
        reg.close()


def main() -> None:
    from bench import bench_gate

    with tempfile.TemporaryDirectory() as tmp:
        _on_store("sqlite", f"sqlite:///{Path(tmp) / 'ack.db'}")
    if WITH_PG:
        try:
            import psycopg

            schema = f"bench_ack_{os.getpid()}"
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")  # type: ignore[arg-type]
        except Exception as e:
            print(f"  postgresql skipped: {e}")
        else:
            try:
                _on_store("postgresql", f"{PG_DSN}?options=-csearch_path%3D{schema}")
            finally:
                with psycopg.connect(PG_DSN, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")  # type: ignore[arg-type]
    bench_gate.bench_check()
