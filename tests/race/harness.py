"""The race harness: processes and threads emitting through gates while another process archives.

One SQLite file is shared by:

* worker processes (spawned), each with its own registry and gate, several threads each,
  emitting continuously through permits (``still_valid()`` right before the "send");
* an archiver process that archives, bulk-archives and segment-archives groups of
  campaigns, one call at a time, while its own threads emit through a gate built on the
  archiver's registry (their permits are the "local in-flight" ones an archive drains).

Every event is stamped with ``CLOCK_BOOTTIME``, one clock for every process on the host.
`check` then asserts the guarantee: no emission sent after the archive of its campaign
returned, and no local permit admitted before an archive still in flight after it returned.

Deliberately broken variants (``Variant``) show the checker catches what it must.
"""

from __future__ import annotations

import enum
import functools
import json
import multiprocessing
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from campaign_states import LeaseSettings, Registry, open_registry
from campaign_states.stores import GateRowBatch, Reader, SQLiteStore
from delivery_gate import DeliveryGate, Reason
from delivery_gate._refresh import Refresher

_BOOTTIME = time.CLOCK_BOOTTIME


def now() -> float:
    """The host-wide clock every event is stamped with."""
    return time.clock_gettime(_BOOTTIME)


class Variant(enum.Enum):
    """The gate under test: the real one, or one deliberately broken."""

    CORRECT = "correct"
    NO_COMMIT_WAIT = "no_commit_wait"  # the archiver returns right after its commit
    LEASE_AFTER_READ = "lease_after_read"  # workers' leases start after a (slow) read
    NO_DRAIN = "no_drain"  # the archiver's gate does not wait for local permits
    ACK_BEFORE_DRAIN = "ack_before_drain"  # workers' gates ack with permits still in flight


@attrs.frozen(kw_only=True)
class RaceConfig:
    """One run of the harness.

    Attributes:
        path: The SQLite file.
        seed: Drives the plan, the workers' picks and the hold times.
        groups: Archive calls (each a single, bulk or segment archive of a group).
        workers: Worker processes.
        threads: Emitting threads per worker process.
        local_threads: Emitting threads in the archiver's process.
        lease: The store's lease (short, so hundreds of archives fit in a test run).
        grace: The store's send grace.
        refresh: The store's refresh period.
        slow_read: Seconds a worker's change read takes (LEASE_AFTER_READ only).
        hold: The longest a worker holds a permit (seconds; uniform from 0).
        probe: Whether workers' gates probe for changes between refreshes (the wake-up);
            without it they see changes only at refresh, as a loaded machine may.
        variant: Which gate runs.
    """

    path: str
    seed: int
    groups: int = 40
    workers: int = 2
    threads: int = 2
    local_threads: int = 2
    lease: float = 0.1
    grace: float = 0.1
    refresh: float = 0.02
    slow_read: float = 0.5
    hold: float = 0.004
    probe: bool = True
    variant: Variant = Variant.CORRECT

    def to_json(self) -> str:
        return json.dumps({**attrs.asdict(self), "variant": self.variant.value})

    @classmethod
    def from_json(cls, text: str) -> RaceConfig:
        raw = json.loads(text)
        raw["variant"] = Variant(raw["variant"])
        return cls(**raw)


@attrs.frozen
class Group:
    """Campaigns archived together by one call: ``one``, ``many`` or ``segment``."""

    how: str
    ids: tuple[str, ...]
    segment: str | None = None


def plan(seed: int, groups: int) -> list[Group]:
    """The archiver's calls, in order; campaign ids are numbered in that order."""
    rnd = random.Random(seed)
    out: list[Group] = []
    n = 0
    for g in range(groups):
        # Stops get the same promise as archives, through the same fence/drain/wait path.
        how = rnd.choice(["one", "many", "many", "segment", "segment", "stop", "stop_many"])
        size = 1 if how in ("one", "stop") else rnd.randint(3, 8)
        ids = tuple(f"c-{n + i:05d}" for i in range(size))
        n += size
        out.append(Group(how, ids, f"seg-{g:04d}" if how == "segment" else None))
    return out


def silence(reg: Registry, g: Group) -> list[str]:
    """Make the group's call (archive, bulk archive, segment archive, stop, bulk stop);
    return the campaigns that no gate may admit once it has returned."""
    if g.how in ("one", "stop"):
        (reg.archive if g.how == "one" else reg.stop)(g.ids[0])
        return list(g.ids)
    if g.how in ("many", "stop_many"):
        outcomes = (reg.archive_many if g.how == "many" else reg.stop_many)(g.ids)
        return [cid for cid, o in outcomes.items() if o.campaign is not None]
    assert g.segment is not None
    return list(reg.archive_segment(g.segment).campaign_ids)


def order(groups: list[Group]) -> list[str]:
    return [cid for g in groups for cid in g.ids]


def setup(config: RaceConfig) -> list[Group]:
    """Create the store, its segments and running campaigns (all email)."""
    lease = LeaseSettings(lease=config.lease, grace=config.grace, refresh=config.refresh)
    reg = Registry(SQLiteStore(config.path, lease=lease))
    groups = plan(config.seed, config.groups)
    with reg:
        for g in groups:
            if g.segment:
                reg.create_segment(g.segment)
            for cid in g.ids:
                reg.create_campaign(
                    name=cid,
                    channels={"email"},
                    campaign_id=cid,
                    segments={g.segment} if g.segment else set(),
                )
        reg.resume_many(order(groups))
    return groups


# -- broken variants ------------------------------------------------------------------------


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


def _slow_reads(reg: Registry, delay: float) -> None:
    original = reg.open_reader
    reg.open_reader = lambda: SlowReader(original(), delay)  # type: ignore[method-assign]


# -- emitters -------------------------------------------------------------------------------


def emit_loop(
    gate: DeliveryGate,
    ids: list[str],
    *,
    seed: int,
    stop: Callable[[], bool],
    log: list[tuple[Any, ...]],
    hold: Callable[[random.Random], float],
) -> None:
    """Emit through permits on the campaigns about to be archived, until ``stop()``.

    Each thread keeps a frontier: the first campaign, in archive order, that its gate has
    not yet denied as archived; it emits on the few campaigns from there, which are the
    ones the archiver is about to take.
    """
    rnd = random.Random(seed)
    frontier = 0
    gone = (Reason.ARCHIVED, Reason.SEGMENT_ARCHIVED)
    while not stop() and frontier < len(ids):
        i = min(frontier + rnd.randrange(8), len(ids) - 1)
        cid = ids[i]
        entered = now()
        with gate.permit(cid, "email") as p:
            if p.admitted:
                time.sleep(hold(rnd))  # rendering the message
                if p.still_valid():
                    log.append(("sent", cid, entered, now()))
            # Stamped inside the block: the permit was certainly still in flight then.
            inside = now()
        # Stamped after the block: the permit has left the in-flight set by now.
        if p.admitted:
            log.append(("permit", cid, entered, now(), inside))
        elif p.reason in gone:
            if i == frontier:
                frontier += 1
        else:
            time.sleep(0.0005)


def _uniform_hold(longest: float, rnd: random.Random) -> float:
    return rnd.uniform(0, longest)


_short_hold = functools.partial(_uniform_hold, 0.004)


def _local_hold(rnd: random.Random) -> float:
    # Some local permits outlast the commit wait, so only the drain can cover them.
    return rnd.uniform(0.25, 0.45) if rnd.random() < 0.2 else rnd.uniform(0, 0.01)


def _run_threads(
    gate: DeliveryGate,
    ids: list[str],
    seeds: list[int],
    stop: Callable[[], bool],
    hold: Callable[[random.Random], float],
) -> tuple[list[threading.Thread], list[tuple[Any, ...]]]:
    log: list[tuple[Any, ...]] = []  # list.append is atomic: the threads share it
    threads = [
        threading.Thread(
            target=emit_loop,
            args=(gate, ids),
            kwargs={"seed": s, "stop": stop, "log": log, "hold": hold},
            daemon=True,
        )
        for s in seeds
    ]
    for t in threads:
        t.start()
    return threads, log


def worker_main(config_json: str, index: int, out: str, ready: Any, stop: Any) -> None:
    """A worker process: its own registry and gate, ``threads`` emitting threads."""
    config = RaceConfig.from_json(config_json)
    if not config.probe:
        from delivery_gate import _refresh

        _refresh.PROBE = 3600.0  # type: ignore[misc]  # refresh period only
    reg = open_registry(f"sqlite:///{config.path}")
    cls: type[DeliveryGate] = DeliveryGate
    if config.variant is Variant.LEASE_AFTER_READ:
        _slow_reads(reg, config.slow_read)
        cls = LeaseAfterReadGate
    elif config.variant is Variant.ACK_BEFORE_DRAIN:
        cls = AckBeforeDrainGate
    gate = cls(reg)
    ids = order(plan(config.seed, config.groups))
    seeds = [config.seed * 1000 + index * 10 + t for t in range(config.threads)]
    hold = functools.partial(_uniform_hold, config.hold)
    threads, log = _run_threads(gate, ids, seeds, stop.is_set, hold)
    ready.set()
    for t in threads:
        t.join()
    gate.close()
    reg.close()
    Path(out).write_text(json.dumps(log))


def archiver_main(config_json: str, out: str, go: Any) -> None:
    """The archiver process: one call per group, local emitters running meanwhile."""
    config = RaceConfig.from_json(config_json)
    reg = open_registry(f"sqlite:///{config.path}", drain_timeout=10.0)
    if config.variant is Variant.NO_COMMIT_WAIT:
        reg.store.needs_commit_wait = False  # type: ignore[misc]
    cls = NoDrainGate if config.variant is Variant.NO_DRAIN else DeliveryGate
    run_archiver(
        reg,
        cls(reg),
        seed=config.seed,
        groups=config.groups,
        threads=config.local_threads,
        out=out,
        go=go,
    )


def run_archiver(
    reg: Registry, gate: DeliveryGate, *, seed: int, groups: int, threads: int, out: str, go: Any
) -> None:
    """One silencing call per planned group while ``threads`` local emitters run; the calls'
    timestamps and the local log go to ``out`` as JSON. Closes the gate and the registry."""
    planned = plan(seed, groups)
    done = threading.Event()
    seeds = [seed * 1000 + 900 + t for t in range(threads)]
    running, log = _run_threads(gate, order(planned), seeds, done.is_set, _local_hold)
    go.wait()
    rnd = random.Random(seed)
    calls: list[tuple[Any, ...]] = []
    for g in planned:
        time.sleep(rnd.uniform(0.01, 0.06))  # let the emitters reach this group
        called = now()
        archived = silence(reg, g)
        returned = now()
        # How the call reached its promise (acknowledged, lease): the checker holds an
        # acknowledged call to the stronger promise (no permit in flight anywhere).
        outcome = reg.last_wait.outcome if reg.last_wait is not None else None
        calls.append((g.how, archived, called, returned, outcome))
    done.set()
    for t in running:
        t.join()
    gate.close()
    reg.close()
    Path(out).write_text(json.dumps({"calls": calls, "local": log}))


# -- the run and the checker ----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Report:
    """What a run did, and what the checker found.

    Attributes:
        archives: Campaigns archived (hundreds per run).
        calls: Archive calls made.
        sends: Emissions sent (still_valid() was true), all processes and threads.
        in_flight_at_call: Local admitted permits in flight when an archive of their
            campaign was called: the drain had to wait for each of them.
        violations: Each a description; the guarantee holds iff this is empty.
    """

    archives: int
    calls: int
    sends: int
    in_flight_at_call: int
    violations: list[str]


def check(calls: list[Any], remote: list[list[Any]], local: list[Any]) -> Report:
    """Assert the guarantee on a run's events."""
    returned: dict[str, float] = {}
    called: dict[str, float] = {}
    acknowledged: set[str] = set()
    for _how, ids, t_call, t_return, *outcome in calls:
        for cid in ids:
            if cid not in returned and outcome == ["acknowledged"]:
                acknowledged.add(cid)
            returned.setdefault(cid, t_return)
            called.setdefault(cid, t_call)
    violations: list[str] = []
    sends = 0
    for log in remote:
        # The stronger promise of an acknowledged call: no permit admitted before it was
        # still inside its block, in any process, after it returned.
        for kind, cid, t_enter, _t_exit, *inside in log:
            if kind == "permit" and cid in acknowledged and t_enter < returned[cid] < inside[0]:
                violations.append(
                    f"{cid}: a permit in another process was still in flight after its "
                    f"acknowledged archive returned ({inside[0] - returned[cid]:.4f}s more)"
                )
    for log in [*remote, local]:
        for kind, cid, _t_enter, t, *_ in log:
            if kind != "sent":
                continue
            sends += 1
            if cid in returned and t > returned[cid]:
                violations.append(f"{cid} sent {t - returned[cid]:.4f}s after its archive returned")
    in_flight = 0
    for kind, cid, t_enter, t_exit, *_ in local:
        if kind != "permit" or cid not in returned:
            continue
        if t_enter < called[cid] < t_exit:
            in_flight += 1
        if t_enter < returned[cid] < t_exit:
            violations.append(
                f"{cid}: archive returned with a local permit still in flight "
                f"({t_exit - returned[cid]:.4f}s more)"
            )
    return Report(
        archives=len(returned),
        calls=len(calls),
        sends=sends,
        in_flight_at_call=in_flight,
        violations=violations,
    )


def run(config: RaceConfig, workdir: Path, *, timeout: float = 120.0) -> Report:
    """Set up the store, run the workers and the archiver, and check their events."""
    setup(config)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    go = ctx.Event()
    text = config.to_json()
    readies = []
    workers = []
    for i in range(config.workers):
        ready = ctx.Event()
        p = ctx.Process(
            target=worker_main, args=(text, i, str(workdir / f"w{i}.json"), ready, stop)
        )
        p.start()
        readies.append(ready)
        workers.append(p)
    archiver = ctx.Process(target=archiver_main, args=(text, str(workdir / "a.json"), go))
    archiver.start()
    try:
        for r in readies:
            if not r.wait(timeout):
                raise RuntimeError("a worker did not start")
        go.set()
        archiver.join(timeout)
        if archiver.exitcode != 0:
            raise RuntimeError(f"the archiver failed (exit code {archiver.exitcode})")
    finally:
        stop.set()
        for p in [*workers, archiver]:
            p.join(timeout)
            if p.is_alive():
                p.kill()
                p.join()
    if any(p.exitcode != 0 for p in workers):
        raise RuntimeError(f"a worker failed: {[p.exitcode for p in workers]}")
    archived = json.loads((workdir / "a.json").read_text())
    remote = [json.loads((workdir / f"w{i}.json").read_text()) for i in range(config.workers)]
    return check(archived["calls"], remote, archived["local"])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
