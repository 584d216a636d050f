"""A demo worker process: emits through its own gate as fast as it can, into a local sink.

Runs in a process started with the ``spawn`` method, so it imports only
``campaign_states`` and ``delivery_gate`` (no click, no rich). The emitting loop is the
experiment's `Emitter`, shared with the race suite; this worker cycles every target, stamps
each send into the sink (``CLOCK_BOOTTIME``, so the parent can compare it with the moment an
archive returned) and counts each denial by its reason.
"""

from __future__ import annotations

import signal
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from ._experiment import RUNNING, Emitter, Target, denial_reason, in_slot

__all__ = ["SINK_SUFFIX", "Counters", "WorkerConfig", "read_sink", "run_worker", "sink_name"]

SINK_SUFFIX: Final = ".f64"
# Timestamps buffered per campaign before an append to the sink file.
_FLUSH_AT: Final = 4096
# Rounds (one permit per target each) between publishing counters and checking `stop`.
_PUBLISH_EVERY: Final = 8


@attrs.frozen(kw_only=True)
class WorkerConfig:
    """What one worker does.

    Attributes:
        index: The worker's number (0-based).
        url: The store URL; the worker opens its own gate on it.
        sink_dir: Where it appends its send records.
        targets: ``(campaign index, campaign id, channel)`` triples it emits to, in turn.
        campaigns: How many campaigns there are (the counters' stride).
        gate_wrapper: Wraps the worker's gate (importable by name: it crosses the spawn);
            the test suite passes its deliberately broken gate here.
    """

    index: int
    url: str
    sink_dir: str
    targets: tuple[tuple[int, str, str], ...]
    campaigns: int
    gate_wrapper: Callable[[Any], Any] | None = None


@attrs.frozen
class Counters:
    """Shared-memory counters the parent reads for its live display and the denial table.

    Each worker writes only its own slice, so no lock is needed; the parent's reads are
    approximate while workers run and exact after they have exited.

    Attributes:
        ready: Per worker, its `Pool` slot: 0 starting, 1 emitting, 2 finished, -1 failed.
        sent: ``[worker * campaigns + campaign]`` sends.
        denied: ``[(worker * campaigns + campaign) * reasons + reason]`` denials.
        reasons: How many gate reasons there are (the ``denied`` stride).
    """

    ready: Any
    sent: Any
    denied: Any
    reasons: int


def sink_name(worker: int, campaign: int) -> str:
    """The sink file of one worker's sends to one campaign."""
    return f"w{worker:03d}-c{campaign:04d}{SINK_SUFFIX}"


def read_sink(sink_dir: Path) -> dict[int, array[float]]:
    """Every recorded send time, per campaign index, from every worker's files."""
    out: dict[int, array[float]] = {}
    for path in sorted(sink_dir.glob(f"w*-c*{SINK_SUFFIX}")):
        campaign = int(path.stem.split("-c", 1)[1])
        times = out.setdefault(campaign, array("d"))
        data = path.read_bytes()
        # A worker killed mid-append leaves a partial record: ignore the tail.
        times.frombytes(data[: len(data) - len(data) % times.itemsize])
    return out


def run_worker(cfg: WorkerConfig, stop: Any, counters: Counters) -> None:
    """Emit until ``stop`` is set; record each send in the sink. The spawn entry point."""
    # Ctrl-C reaches the whole process group; the parent owns shutdown (it sets `stop` and
    # then reads the sink), so a worker must not die mid-append with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sink = Path(cfg.sink_dir)
    in_slot(counters.ready, cfg.index, sink, lambda: _run(cfg, stop, counters, sink))


def _run(cfg: WorkerConfig, stop: Any, counters: Counters, sink: Path) -> None:
    from delivery_gate import DeliveryGate

    real = DeliveryGate.open(cfg.url)
    gate = real if cfg.gate_wrapper is None else cfg.gate_wrapper(real)
    emitter = _Cycling(gate, cfg, counters)
    try:
        counters.ready[cfg.index] = RUNNING
        emitter.run(stop.is_set)
    finally:
        # Sink first: the parent analyses the files once every worker has exited.
        emitter.flush(1)
        emitter.publish()
        real.close()


class _Cycling(Emitter):
    """Every target in turn, as fast as the gate allows; sends into the sink's buffers."""

    def __init__(self, gate: Any, cfg: WorkerConfig, counters: Counters) -> None:
        from delivery_gate import Emission, Reason

        super().__init__(gate)
        self.cfg, self.counters = cfg, counters
        self.reasons = {reason: i for i, reason in enumerate(Reason)}
        self.round = [
            Target(ci, cid, ch, Emission.IN_APP_IMPRESSION if ch == "in_app" else Emission.MESSAGE)
            for ci, cid, ch in cfg.targets
        ] * _PUBLISH_EVERY
        n = cfg.campaigns
        self.buffers = [array("d") for _ in range(n)]
        self.sent_to = [0] * n
        self.denied = [0] * (n * len(self.reasons))
        self.started = False

    def batch(self) -> Sequence[Target]:
        # Between rounds: publish the counters for the live view, append full buffers.
        if self.started:
            self.publish()
            self.flush(_FLUSH_AT)
        self.started = True
        return self.round

    def sent(self, target: Target, entered: float, at: float) -> None:
        self.buffers[target.index].append(at)
        self.sent_to[target.index] += 1

    def left(self, target: Target, permit: Any, sent: bool, stamps: tuple[float, ...]) -> None:
        if not sent:
            reason = denial_reason(self.gate, target, permit)
            self.denied[target.index * len(self.reasons) + self.reasons[reason]] += 1

    def publish(self) -> None:
        base, n, stride = self.cfg.index * self.cfg.campaigns, self.cfg.campaigns, len(self.reasons)
        self.counters.sent[base : base + n] = self.sent_to
        self.counters.denied[base * stride : (base + n) * stride] = self.denied

    def flush(self, at_least: int) -> None:
        for ci, buf in enumerate(self.buffers):
            if len(buf) >= at_least:
                with open(Path(self.cfg.sink_dir) / sink_name(self.cfg.index, ci), "ab") as f:
                    buf.tofile(f)
                del buf[:]
