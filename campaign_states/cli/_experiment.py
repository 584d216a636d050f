"""The one experiment behind `campaign-states demo` and the race suite (``tests/race``).

Gates in other processes (and threads) emit through permits on one store while a driver
archives; every send and every call is stamped with ``CLOCK_BOOTTIME``, a clock shared by
every process on the host, and the checker then holds the stamps to the guarantee: no send
stamped after the archive covering its campaign returned (until that campaign's resume was
called), and, for the race suite's permit records, no permit admitted before an archive
still inside its block after that archive returned.

The pieces, each used by both:

* `boottime`, the stamp;
* `Emitter`, the emitting loop (permit, the message's work, ``still_valid()``, the send);
  the demo cycles every target as fast as it can, the race suite chases the campaigns about
  to be archived and holds its permits;
* `Pool`, the spawned processes of one run, started and stopped together;
* `timed` and `Action`, the driver's stamped lifecycle calls;
* `silences`, `Silence.late` and `straddles`, the checker's rules.

Imports neither click nor rich: spawned workers import it.
"""

from __future__ import annotations

import math
import multiprocessing
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import attrs

__all__ = [
    "FAILED",
    "FINISHED",
    "RUNNING",
    "STARTING",
    "Action",
    "Emitter",
    "Pool",
    "Silence",
    "Target",
    "WorkerFailedError",
    "boottime",
    "denial_reason",
    "in_slot",
    "late_sends",
    "silences",
    "straddles",
    "timed",
]

# A worker's slot in `Pool.states`.
STARTING: Final = 0
RUNNING: Final = 1
FINISHED: Final = 2
FAILED: Final = -1

# The lifecycle calls that silence a campaign and the one that lets it send again.
_SILENCING: Final = frozenset({"archive", "stop"})
_RESUMING: Final = "resume"


def boottime() -> float:
    """The system-wide clock every process stamps with (keeps counting during suspend)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


# -- the emitters -------------------------------------------------------------------------


@attrs.frozen
class Target:
    """Where an emitter sends: a campaign (by its number in the run and its id), a channel
    and the kind of emission."""

    index: int
    campaign_id: str
    channel: str
    kind: Any


class Emitter:
    """One emitting loop on one gate; subclasses choose what to emit to and what to record.

    For each target: enter a permit, do the message's work (`hold`), and send only if
    ``still_valid()`` is still true right before the bytes leave; the send is stamped then.
    """

    def __init__(self, gate: Any) -> None:
        self.gate = gate

    def batch(self) -> Sequence[Target]:
        """The next targets to try before ``stop`` is asked again; empty: nothing left."""
        raise NotImplementedError

    def hold(self) -> float:
        """Seconds of work inside an admitted permit before its last check (rendering)."""
        return 0.0

    def sent(self, target: Target, entered: float, at: float) -> None:
        """Record a send stamped ``at`` of a permit entered at ``entered``."""

    def left(self, target: Target, permit: Any, sent: bool, stamps: tuple[float, ...]) -> None:
        """After the permit's block: ``stamps`` are (entered, inside, left), where ``inside``
        was taken inside the block (the permit certainly still in flight) and ``left`` after
        it (the permit has left the gate's in-flight set by then)."""

    def run(self, stop: Callable[[], bool]) -> None:
        """Emit until ``stop()`` or until `batch` is empty."""
        # Bound once: the demo runs this loop millions of times.
        gate, now, sleep = self.gate, boottime, time.sleep
        hold, sent, left = self.hold, self.sent, self.left
        while not stop():
            targets = self.batch()
            if not targets:
                return
            for t in targets:
                # Stamped before the permit is asked: its admit came at or after `entered`.
                entered, done = now(), False
                with gate.permit(t.campaign_id, t.channel, t.kind) as p:
                    if p.admitted:
                        seconds = hold()
                        if seconds:
                            sleep(seconds)
                        # The send: stamped the moment the bytes leave, after the last check.
                        if p.still_valid():
                            sent(t, entered, now())
                            done = True
                    inside = now()  # still in the block: certainly in flight at `inside`
                # After the block: the permit has left the in-flight set by this stamp.
                left(t, p, done, (entered, inside, now()))


def denial_reason(gate: Any, target: Target, permit: Any) -> Any:
    """Why a permit did not lead to a send."""
    if permit.admitted:
        # Admitted, then `still_valid()` said no: ask again for the reason it now has.
        return gate.check(target.campaign_id, channel=target.channel, kind=target.kind).reason
    return permit.reason


# -- the processes ------------------------------------------------------------------------


class WorkerFailedError(RuntimeError):
    """A worker of a `Pool` failed; the message is its traceback's last line."""


class Pool:
    """The spawned processes of one run: each has a slot in `states` (`STARTING`,
    `RUNNING`, `FINISHED`, `FAILED`), all share `stop`; leaving `running` stops them all."""

    def __init__(self, workers: int, errors: Path) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.stop = self.ctx.Event()
        self.states: Any = self.ctx.RawArray("b", workers)
        self.errors = errors
        self.processes: list[Any] = []

    def start(self, target: Callable[..., None], *args: Any, name: str | None = None) -> Any:
        p = self.ctx.Process(target=target, args=args, name=name, daemon=True)
        p.start()
        self.processes.append(p)
        return p

    def wait_running(self, timeout: float) -> None:
        """Wait until every slot runs.

        Raises:
            WorkerFailedError: A worker failed first (with its traceback's last line).
            TimeoutError: Not every worker was running within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = list(self.states)
            if FAILED in states:
                files = sorted(self.errors.glob("w*.error"))
                lines = files[0].read_text().strip().splitlines() if files else []
                raise WorkerFailedError(lines[-1] if lines else "unknown error")
            if all(s >= RUNNING for s in states):
                return
            time.sleep(0.05)
        raise TimeoutError(f"the workers did not start within {timeout:.0f}s")

    @contextmanager
    def running(self, join_timeout: float) -> Iterator[Pool]:
        """On exit (normal or not) set `stop`, wait for each process, end the stuck ones."""
        try:
            yield self
        finally:
            self.stop.set()
            for p in self.processes:
                p.join(timeout=join_timeout)
                if p.is_alive():  # stuck: whatever it had not written is lost, the checks say
                    p.terminate()
                    p.join(timeout=5)

    def exitcodes(self) -> list[int | None]:
        return [p.exitcode for p in self.processes]


def in_slot(states: Any, index: int, errors: Path, body: Callable[[], None]) -> None:
    """Run a worker's ``body`` in its slot: `FINISHED` after it, `FAILED` (and the traceback
    in ``errors``) if it raised. The body sets `RUNNING` itself once it emits."""
    try:
        body()
    except BaseException:
        (errors / f"w{index:03d}.error").write_text(traceback.format_exc())
        states[index] = FAILED
        raise
    states[index] = FINISHED


# -- the driver and the checker -------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Action:
    """One lifecycle call the driver made, stamped on ``CLOCK_BOOTTIME``.

    Attributes:
        kind: ``archive`` and ``stop`` silence its campaigns, ``resume`` lets them send
            again; any other kind (``unarchive``) changes nothing the checker holds.
        label: What it was, for people (``bulk-archive c-01, c-02``).
        campaign_ids: The campaigns it changed.
        called: When it was called.
        returned: When it returned.
        outcome: How a silencing call's wait ended (``acknowledged``, ``lease``...).
    """

    kind: str
    label: str
    campaign_ids: tuple[str, ...]
    called: float
    returned: float
    outcome: str | None = None

    def to_list(self) -> list[Any]:
        """As JSON for a process boundary (`from_list` reads it back)."""
        return [
            self.kind,
            self.label,
            list(self.campaign_ids),
            self.called,
            self.returned,
            self.outcome,
        ]

    @classmethod
    def from_list(cls, raw: Sequence[Any]) -> Action:
        kind, label, ids, called, returned, outcome = raw
        return cls(
            kind=kind,
            label=label,
            campaign_ids=tuple(ids),
            called=called,
            returned=returned,
            outcome=outcome,
        )


def timed(registry: Any, kind: str, label: str, call: Callable[[], Iterable[str]]) -> Action:
    """Make one lifecycle call; ``call`` returns the campaigns it changed."""
    # Stamped right around the call: a send after `returned` is one the call promised away.
    called = boottime()
    ids = tuple(call())
    returned = boottime()
    wait = registry.last_wait if kind in _SILENCING else None
    return Action(
        kind=kind,
        label=label,
        campaign_ids=ids,
        called=called,
        returned=returned,
        outcome=None if wait is None else wait.outcome,
    )


@attrs.frozen
class Silence:
    """When a campaign must be silent: from the return of the first call that silenced it
    until its resume was called (``until``, infinite if never)."""

    action: Action
    until: float = math.inf

    def late(self, t: float) -> bool:
        """Whether a send stamped ``t`` breaks the guarantee."""
        # Sends between the call and its return are allowed: the call waits them out.
        return self.action.returned < t < self.until

    def windows(self, times: Iterable[float]) -> tuple[int, int, int, int]:
        """Sends before the call, during it, late, and after the resume was called."""
        before = during = late = resumed = 0
        called, returned, until = self.action.called, self.action.returned, self.until
        for t in times:
            if t < called:
                before += 1
            elif t <= returned:
                during += 1
            elif t < until:
                late += 1
            else:
                resumed += 1
        return before, during, late, resumed

    @property
    def acknowledged(self) -> bool:
        """The call's wait ended on every live gate's acknowledgement: then no permit
        admitted before it may still be in its block, in any process, once it returned."""
        return self.action.outcome == "acknowledged"


def silences(actions: Iterable[Action]) -> dict[str, Silence]:
    """Per campaign, the silence the driver's calls imposed on it (in call order)."""
    out: dict[str, Silence] = {}
    for a in actions:
        for cid in a.campaign_ids:
            if a.kind in _SILENCING and cid not in out:
                out[cid] = Silence(a)
            elif a.kind == _RESUMING and cid in out:
                out[cid] = attrs.evolve(out[cid], until=a.called)
    return out


def straddles(entered: float, left: float, moment: float) -> bool:
    """Whether a permit entered at ``entered`` and left at ``left`` was in flight at
    ``moment``."""
    return entered < moment < left


def late_sends(found: Mapping[str, Silence], sends: Iterable[tuple[str, float]]) -> list[str]:
    """The guarantee's first rule, as violations: sends stamped after their archive returned."""
    out = []
    for cid, t in sends:
        s = found.get(cid)
        if s is not None and s.late(t):
            out.append(f"{cid} sent {t - s.action.returned:.4f}s after its archive returned")
    return out
