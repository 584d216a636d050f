"""Process entry points for the PostgreSQL race runs (spawned: module-level functions only).

No tests here: `test_postgres_race` starts these in child processes, which import this
module by name (``tests/`` is on sys.path), reusing the race harness's emitters and checker
with the store on PostgreSQL instead of SQLite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from race.harness import _run_threads, _short_hold, order, plan, populate, run_archiver

from campaign_states import LeaseSettings, Registry, open_registry
from campaign_states._stores.postgres import PostgresReader
from campaign_states.stores import PostgresStore
from delivery_gate import DeliveryGate


def setup(url: str, seed: int, groups: int, lease: LeaseSettings) -> None:
    """Create the segments and running campaigns of the plan."""
    with Registry(PostgresStore(url, lease=lease)) as reg:
        populate(reg, plan(seed, groups))


def worker_main(url: str, run: dict[str, Any], index: int, ready: Any, stop: Any) -> None:
    """A worker process: its own registry and gate on PostgreSQL, emitting threads.

    ``run["listen"]`` false: the gate gets no LISTEN/NOTIFY wake-ups and only polls (as
    when notifications are lost, which correctness must not depend on).
    """
    seed, groups, threads = run["seed"], run["groups"], run["threads"]
    out = str(Path(run["workdir"]) / f"w{index}.json")
    if not run["listen"]:
        PostgresReader.wait = None  # type: ignore[assignment, method-assign]
    reg = open_registry(url)
    gate = DeliveryGate(reg)
    ids = order(plan(seed, groups))
    seeds = [seed * 1000 + index * 10 + t for t in range(threads)]
    running, log = _run_threads(gate, ids, seeds, stop.is_set, _short_hold)
    ready.set()
    for t in running:
        t.join()
    gate.close()
    reg.close()
    Path(out).write_text(json.dumps(log))


def archiver_main(url: str, run: dict[str, Any], go: Any) -> None:
    """The archiver: one archive call per group while its own threads emit locally.

    ``run["broken"]`` skips the commit wait (the deliberately broken variant).
    """
    seed, groups, broken = run["seed"], run["groups"], run["broken"]
    out = str(Path(run["workdir"]) / "a.json")
    reg = open_registry(url, drain_timeout=10.0)
    if broken:
        reg.store.needs_commit_wait = False  # type: ignore[misc]
    run_archiver(
        reg, DeliveryGate(reg), seed=seed, groups=groups, threads=run["threads"], out=out, go=go
    )
