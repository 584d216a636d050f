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

The experiment itself (the emitting loop, the process pool, the stamped calls and the
checker's rules) is `campaign_states.cli._experiment`, shared with `campaign-states demo`;
this module keeps what only the tests need: the random plan, the permit records, the
configuration crossing the spawn, and the deliberately broken variants (``Variant``, from
``race.broken``) that show the checker catches what it must.
"""

from __future__ import annotations

import enum
import functools
import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from campaign_states import LeaseSettings, Registry, open_registry
from campaign_states.cli._experiment import (
    RUNNING,
    Emitter,
    Pool,
    Target,
    boottime,
    in_slot,
    timed,
)
from campaign_states.stores import SQLiteStore
from delivery_gate import DeliveryGate, Emission, Reason

from .broken import AckBeforeDrainGate, LeaseAfterReadGate, NoDrainGate, slow_reads
from .checker import Report, check

# The host-wide clock every event is stamped with (the experiment's, shared with the demo).
now = boottime


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
    groups = plan(config.seed, config.groups)
    with Registry(SQLiteStore(config.path, lease=lease)) as reg:
        populate(reg, groups)
    return groups


def populate(reg: Registry, groups: list[Group]) -> None:
    """The plan's segments and campaigns (all email), every campaign running."""
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


# -- emitters -------------------------------------------------------------------------------


_GONE = (Reason.ARCHIVED, Reason.SEGMENT_ARCHIVED)


class Chasing(Emitter):
    """Emits through permits on the campaigns about to be archived, logging each event.

    It keeps a frontier: the first campaign, in archive order, that its gate has not yet
    denied as archived; it emits on the few campaigns from there, which are the ones the
    archiver is about to take.
    """

    def __init__(
        self,
        gate: DeliveryGate,
        ids: list[str],
        *,
        seed: int,
        log: list[tuple[Any, ...]],
        hold: Callable[[random.Random], float],
    ) -> None:
        super().__init__(gate)
        self.targets = [Target(i, cid, "email", Emission.MESSAGE) for i, cid in enumerate(ids)]
        self.rnd, self.log, self._hold = random.Random(seed), log, hold
        self.frontier = 0

    def batch(self) -> list[Target]:
        if self.frontier >= len(self.targets):
            return []
        return [self.targets[min(self.frontier + self.rnd.randrange(8), len(self.targets) - 1)]]

    def hold(self) -> float:
        return self._hold(self.rnd)  # rendering the message

    def sent(self, target: Target, entered: float, at: float) -> None:
        self.log.append(("sent", target.campaign_id, entered, at))

    def left(self, target: Target, permit: Any, sent: bool, stamps: tuple[float, ...]) -> None:
        entered, inside, left = stamps
        if permit.admitted:
            self.log.append(("permit", target.campaign_id, entered, left, inside))
        elif permit.reason in _GONE:
            if target.index == self.frontier:
                self.frontier += 1
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
            target=Chasing(gate, ids, seed=s, log=log, hold=hold).run, args=(stop,), daemon=True
        )
        for s in seeds
    ]
    for t in threads:
        t.start()
    return threads, log


def worker_main(config_json: str, index: int, out: str, states: Any, stop: Any) -> None:
    """A worker process in slot ``index`` of ``states``: its own registry and gate,
    ``threads`` emitting threads."""
    body = functools.partial(_worker, RaceConfig.from_json(config_json), index, out, states, stop)
    in_slot(states, index, Path(out).parent, body)


def _worker(config: RaceConfig, index: int, out: str, states: Any, stop: Any) -> None:
    if not config.probe:
        from delivery_gate import _refresh

        _refresh.PROBE = 3600.0  # type: ignore[misc]  # refresh period only
    reg = open_registry(f"sqlite:///{config.path}")
    cls: type[DeliveryGate] = DeliveryGate
    if config.variant is Variant.LEASE_AFTER_READ:
        slow_reads(reg, config.slow_read)
        cls = LeaseAfterReadGate
    elif config.variant is Variant.ACK_BEFORE_DRAIN:
        cls = AckBeforeDrainGate
    gate = cls(reg)
    ids = order(plan(config.seed, config.groups))
    seeds = [config.seed * 1000 + index * 10 + t for t in range(config.threads)]
    hold = functools.partial(_uniform_hold, config.hold)
    threads, log = _run_threads(gate, ids, seeds, stop.is_set, hold)
    states[index] = RUNNING
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
    calls: list[list[Any]] = []
    for g in planned:
        time.sleep(rnd.uniform(0.01, 0.06))  # let the emitters reach this group
        # The action keeps how the call reached its promise (acknowledged, lease): the
        # checker holds an acknowledged call to the stronger promise (no permit in flight
        # anywhere).
        kind = "stop" if g.how.startswith("stop") else "archive"
        calls.append(timed(reg, kind, g.how, functools.partial(silence, reg, g)).to_list())
    done.set()
    for t in running:
        t.join()
    gate.close()
    reg.close()
    Path(out).write_text(json.dumps({"calls": calls, "local": log}))


# -- the run ------------------------------------------------------------------------------


def run(config: RaceConfig, workdir: Path, *, timeout: float = 120.0) -> Report:
    """Set up the store, run the workers and the archiver, and check their events."""
    setup(config)
    pool = Pool(config.workers, workdir)
    go = pool.ctx.Event()
    text = config.to_json()
    with pool.running(join_timeout=timeout):
        for i in range(config.workers):
            pool.start(worker_main, text, i, str(workdir / f"w{i}.json"), pool.states, pool.stop)
        archiver = pool.start(archiver_main, text, str(workdir / "a.json"), go)
        pool.wait_running(timeout)
        go.set()
        archiver.join(timeout)
        if archiver.exitcode != 0:
            raise RuntimeError(f"the archiver failed (exit code {archiver.exitcode})")
    if any(code != 0 for code in pool.exitcodes()):
        raise RuntimeError(f"a worker failed: {pool.exitcodes()}")
    archived = json.loads((workdir / "a.json").read_text())
    remote = [json.loads((workdir / f"w{i}.json").read_text()) for i in range(config.workers)]
    return check(archived["calls"], remote, archived["local"])
