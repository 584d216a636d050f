"""A demo worker process: emits through its own gate as fast as it can, into a local sink.

Runs in a process started with the ``spawn`` method, so it imports only
``campaign_states`` and ``delivery_gate`` (no click, no rich). Every send is recorded in the
sink with ``CLOCK_BOOTTIME``, a clock shared by every process on the host, so the parent
can compare each send with the moment an archive returned.
"""

from __future__ import annotations

import signal
import time
import traceback
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs

__all__ = [
    "SINK_SUFFIX",
    "Counters",
    "StaleCacheGate",
    "WorkerConfig",
    "boottime",
    "read_sink",
    "run_worker",
    "sink_name",
]

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
        broken: Test only: use a gate that caches every admit forever.
    """

    index: int
    url: str
    sink_dir: str
    targets: tuple[tuple[int, str, str], ...]
    campaigns: int
    broken: bool = False


@attrs.frozen
class Counters:
    """Shared-memory counters the parent reads for its live display and the denial table.

    Each worker writes only its own slice, so no lock is needed; the parent's reads are
    approximate while workers run and exact after they have exited.

    Attributes:
        ready: Per worker: 0 starting, 1 emitting, 2 finished, -1 failed.
        sent: ``[worker * campaigns + campaign]`` sends.
        denied: ``[(worker * campaigns + campaign) * reasons + reason]`` denials.
        reasons: How many gate reasons there are (the ``denied`` stride).
    """

    ready: Any
    sent: Any
    denied: Any
    reasons: int


def boottime() -> float:
    """The system-wide clock every process stamps with (keeps counting during suspend)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


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


class _Forever:
    """What the broken gate hands out once it has admitted a target: an eternal yes."""

    admitted = True
    reason = None

    def still_valid(self) -> bool:
        return True

    def __enter__(self) -> _Forever:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _Refused:
    def __init__(self, reason: Any) -> None:
        self.admitted = False
        self.reason = reason

    def still_valid(self) -> bool:
        return False

    def __enter__(self) -> _Refused:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class StaleCacheGate:
    """Deliberately broken (test only): caches each admit forever.

    The failure mode of feature-flag SDKs that serve the last known value: it asks the real
    gate once per target and never again, so it keeps sending after an archive.
    """

    def __init__(self, gate: Any) -> None:
        self._gate = gate
        self._admitted: set[tuple[str, str]] = set()

    def permit(self, campaign_id: str, *, channel: str, kind: Any) -> Any:
        key = (campaign_id, channel)
        if key in self._admitted:
            return _FOREVER
        d = self._gate.check(campaign_id, channel=channel, kind=kind)
        if d.admitted:
            self._admitted.add(key)
            return _FOREVER
        return _Refused(d.reason)

    def check(self, campaign_id: str, *, channel: str, kind: Any) -> Any:
        return self._gate.check(campaign_id, channel=channel, kind=kind)


_FOREVER: Final = _Forever()


def _reason_of(gate: Any, permit: Any, campaign_id: str, channel: str, kind: Any) -> Any:
    """Why a permit did not lead to a send."""
    if permit.admitted:
        # Admitted, then `still_valid()` said no: ask again for the reason it now has.
        return gate.check(campaign_id, channel=channel, kind=kind).reason
    return permit.reason


def run_worker(cfg: WorkerConfig, stop: Any, counters: Counters) -> None:
    """Emit until ``stop`` is set; record each send in the sink. The spawn entry point."""
    # Ctrl-C reaches the whole process group; the parent owns shutdown (it sets `stop` and
    # then reads the sink), so a worker must not die mid-append with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sink = Path(cfg.sink_dir)
    try:
        _run(cfg, stop, counters, sink)
    except BaseException:
        (sink / f"w{cfg.index:03d}.error").write_text(traceback.format_exc())
        counters.ready[cfg.index] = -1
        raise


def _run(cfg: WorkerConfig, stop: Any, counters: Counters, sink: Path) -> None:
    from delivery_gate import DeliveryGate, Emission, Reason

    reasons = {reason: i for i, reason in enumerate(Reason)}
    n, base = cfg.campaigns, cfg.index * cfg.campaigns
    real = DeliveryGate.open(cfg.url)
    gate: Any = StaleCacheGate(real) if cfg.broken else real
    targets = [
        (ci, cid, ch, Emission.IN_APP_IMPRESSION if ch == "in_app" else Emission.MESSAGE)
        for ci, cid, ch in cfg.targets
    ]
    buffers = [array("d") for _ in range(n)]
    sent = [0] * n
    denied = [0] * (n * counters.reasons)
    clock, boottime = time.clock_gettime, time.CLOCK_BOOTTIME
    rounds = 0
    try:
        counters.ready[cfg.index] = 1
        while True:
            for ci, cid, ch, kind in targets:
                with gate.permit(cid, channel=ch, kind=kind) as p:
                    if p.admitted and p.still_valid():
                        # The send: the sink records the moment the bytes leave.
                        buffers[ci].append(clock(boottime))
                        sent[ci] += 1
                        continue
                    reason = _reason_of(gate, p, cid, ch, kind)
                denied[ci * counters.reasons + reasons[reason]] += 1
            rounds += 1
            if rounds % _PUBLISH_EVERY == 0:
                _publish(counters, base, sent, denied)
                _flush(sink, cfg.index, buffers, _FLUSH_AT)
                if stop.is_set():
                    break
    finally:
        # Sink first: the parent analyses the files once every worker has exited.
        _flush(sink, cfg.index, buffers, 1)
        _publish(counters, base, sent, denied)
        real.close()
    counters.ready[cfg.index] = 2


def _publish(counters: Counters, base: int, sent: Sequence[int], denied: Sequence[int]) -> None:
    n = len(sent)
    counters.sent[base : base + n] = sent
    stride = counters.reasons
    counters.denied[base * stride : (base + n) * stride] = denied


def _flush(sink: Path, worker: int, buffers: list[array[float]], at_least: int) -> None:
    for ci, buf in enumerate(buffers):
        if len(buf) >= at_least:
            with open(sink / sink_name(worker, ci), "ab") as f:
                buf.tofile(f)
            del buf[:]
