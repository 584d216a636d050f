"""`campaign-states demo`: a multi-process pipeline that provably stops on archive.

On a fresh SQLite file: campaigns across every channel and three segments, all resumed;
worker processes (spawn) emit through their own `DeliveryGate` as fast as they can into a
sink that timestamps each send on ``CLOCK_BOOTTIME``. Meanwhile this process archives one
campaign, bulk-archives two, archives a segment (cascading to two more), unarchives the
first (it stays silent) and resumes it (it sends again), recording when each call returned.
The verdict is computed from the sink's records alone (see `_demo_report`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import attrs
from rich.console import Console
from rich.live import Live
from rich.text import Text

from campaign_states import Registry, open_registry

from ._base import fail
from ._demo_live import LiveView
from ._demo_report import DemoReport, Role, analyse, render_report
from ._demo_worker import Counters, WorkerConfig, run_worker
from ._experiment import Action, Pool, WorkerFailedError, boottime, timed

__all__ = ["CHANNELS", "Planned", "plan", "run_demo"]

CHANNELS: Final = ("email", "push", "sms", "webhook", "in_app")
NAMES: Final = (
    "Welcome series",
    "Black Friday",
    "Cart reminder",
    "Price drop",
    "Win-back",
    "Weekly digest",
    "Flash sale",
    "Loyalty points",
    "App update",
    "Survey",
)
SEGMENTS: Final = (
    ("seg-all", "Everyone"),
    ("seg-vip", "VIP customers"),
    ("seg-churn", "Churn risk"),
)
_TAIL: Final = 1.0  # seconds of emission after the last action, so the resumed one is seen
_READY_TIMEOUT: Final = 120.0


@attrs.frozen(kw_only=True)
class Planned:
    """One demo campaign."""

    index: int
    id: str
    name: str
    channels: tuple[str, ...]
    segments: tuple[str, ...]
    role: Role


def plan(n: int) -> list[Planned]:
    """``n`` campaigns (n >= 6) covering every channel; the first five play the script."""
    roles = [Role.COMEBACK, Role.BULK, Role.BULK, Role.SEGMENT, Role.SEGMENT]
    out = []
    for i in range(n):
        chans = [CHANNELS[i % 5]] + ([CHANNELS[(i + 3) % 5]] if i % 2 == 0 else [])
        role = roles[i] if i < len(roles) else Role.CONTROL
        segs = ["seg-churn"] if role is Role.SEGMENT else ["seg-vip" if i % 3 == 0 else "seg-all"]
        out.append(
            Planned(
                index=i,
                id=f"c-{i:02d}",
                name=NAMES[i % len(NAMES)],
                channels=tuple(chans),
                segments=tuple(segs),
                role=role,
            )
        )
    return out


def _setup(reg: Registry, campaigns: list[Planned]) -> None:
    for sid, name in SEGMENTS:
        reg.create_segment(sid, name=name)
    for c in campaigns:
        reg.create_campaign(
            name=c.name, channels=c.channels, segments=c.segments, campaign_id=c.id, actor="demo"
        )
    reg.resume_many([c.id for c in campaigns], actor="demo")


def run_demo(
    *,
    duration: float = 8.0,
    workers: int = 3,
    campaigns: int = 10,
    db: Path | None = None,
    gate_wrapper: Callable[[Any], Any] | None = None,
    console: Console | None = None,
) -> DemoReport:
    """Run the demo and print its report; the report's ``violations`` decide the exit code.

    Args:
        duration: Seconds to emit for, at least.
        workers: Worker processes, each with its own gate.
        campaigns: Campaigns to create (at least 6).
        db: SQLite file to create; default a temporary directory.
        gate_wrapper: Wraps each worker's gate (a class or function importable by name).
            The test suite's deliberately broken gate goes here, to show the checker
            fail; its admits are not recorded in the store, so its results are not held
            to the sink's count.
        console: Where to print.
    """
    from delivery_gate import Reason

    con = console or Console()
    planned = plan(campaigns)
    with tempfile.TemporaryDirectory(prefix="campaign-states-demo-") as tmp:
        path = (db or Path(tmp) / "demo.db").resolve()
        sink = Path(tmp) / "sink"
        sink.mkdir()
        url = f"sqlite:///{path}"
        reg = open_registry(url)
        try:
            _setup(reg, planned)
            con.print(
                Text(
                    f"Store {url}: {len(planned)} campaigns on {', '.join(CHANNELS)}, "
                    f"{len(SEGMENTS)} segments, all running. Lease "
                    f"{reg.lease_settings().lease:g}s: archives wait for the workers' "
                    "gates to acknowledge, the lease only if one does not answer."
                )
            )
            pool = Pool(workers, sink)
            counters = _counters(pool, len(planned), len(Reason))
            display = LiveView(planned, counters, workers, duration)
            con.print(Text(f"Starting {workers} worker process(es), each with its own gate..."))
            with _workers(pool, url, planned, counters, gate_wrapper):
                _wait_ready(pool)
                actions = _timeline(reg, display, con, duration, pool.stop)
            report = analyse(
                planned,
                actions,
                sink=sink,
                counters=counters,
                workers=workers,
                reasons=list(Reason),
                # Read after every worker closed its gate (which records its permits).
                results={c.id: reg.results(c.id).total for c in planned},
                broken_gate=gate_wrapper is not None,
            )
        finally:
            reg.close()
        render_report(report, con)
        return report


def _counters(pool: Pool, campaigns: int, reasons: int) -> Counters:
    workers = len(pool.states)
    return Counters(
        ready=pool.states,
        sent=pool.ctx.RawArray("q", workers * campaigns),
        denied=pool.ctx.RawArray("q", workers * campaigns * reasons),
        reasons=reasons,
    )


@contextmanager
def _workers(
    pool: Pool,
    url: str,
    planned: list[Planned],
    counters: Counters,
    gate_wrapper: Callable[[Any], Any] | None,
) -> Iterator[None]:
    """Start the workers; on exit (normal or not) stop them and wait for their sink files."""
    targets = tuple((c.index, c.id, ch) for c in planned for ch in c.channels)
    n = len(counters.ready)
    with pool.running(join_timeout=30):
        for w in range(n):
            # Each worker starts at a different target so they do not move in lockstep.
            shift = (w * len(targets)) // n
            cfg = WorkerConfig(
                index=w,
                url=url,
                sink_dir=str(pool.errors),
                campaigns=len(planned),
                targets=targets[shift:] + targets[:shift],
                gate_wrapper=gate_wrapper,
            )
            pool.start(run_worker, cfg, pool.stop, counters, name=f"demo-worker-{w}")
        yield


def _wait_ready(pool: Pool) -> None:
    try:
        pool.wait_running(_READY_TIMEOUT)
    except WorkerFailedError as e:
        fail(f"A demo worker failed to start: {e}")
    except TimeoutError:
        fail(f"Demo workers did not start within {_READY_TIMEOUT:.0f}s.")


_Step = tuple[float, str, str, list[str], Callable[[], object], str]


def _script(reg: Registry, campaigns: list[Planned]) -> list[_Step]:
    """The scripted calls: (fraction of the run, kind, label, campaigns, call, new state)."""
    by_role: dict[Role, list[str]] = {}
    for c in campaigns:
        by_role.setdefault(c.role, []).append(c.id)
    (comeback,) = by_role[Role.COMEBACK]
    bulk, cascaded = by_role[Role.BULK], by_role[Role.SEGMENT]
    return [
        (
            0.15,
            "archive",
            f"archive {comeback}",
            [comeback],
            lambda: reg.archive(comeback, actor="demo"),
            "archived",
        ),
        (
            0.30,
            "archive",
            f"bulk-archive {', '.join(bulk)}",
            bulk,
            lambda: reg.archive_many(bulk, actor="demo"),
            "archived (bulk)",
        ),
        (
            0.45,
            "archive",
            f"archive segment seg-churn (cascades to {', '.join(cascaded)})",
            cascaded,
            lambda: reg.archive_segment("seg-churn", actor="demo"),
            "archived (segment)",
        ),
        (
            0.60,
            "unarchive",
            f"unarchive {comeback}: active_stopped, must stay silent",
            [comeback],
            lambda: reg.unarchive(comeback, actor="demo"),
            "unarchived, stopped",
        ),
        (
            0.75,
            "resume",
            f"resume {comeback}: sends again",
            [comeback],
            lambda: reg.resume(comeback, actor="demo"),
            "running again",
        ),
    ]


def _timeline(
    reg: Registry, display: LiveView, con: Console, duration: float, stop: Any
) -> list[Action]:
    """Run the scripted actions at fixed fractions of ``duration`` while workers emit."""
    live = con.is_terminal
    actions: list[Action] = []
    view = (
        Live(get_renderable=display.render, console=con, refresh_per_second=4, transient=False)
        if live
        else None
    )
    display.started = boottime()
    if view is not None:
        view.start()
    try:
        display.note("workers emitting", con, live)
        for at, kind, label, ids, call, state in _script(reg, display.campaigns):
            _sleep_until(display.started + at * duration)
            action = timed(reg, kind, label, _changing(ids, call))
            display.states.update(dict.fromkeys(ids, state))
            actions.append(action)
            display.note(f"{label}: returned in {action.returned - action.called:.2f}s", con, live)
        _sleep_until(max(display.started + duration, actions[-1].returned + _TAIL))
        stop.set()
        display.note("stopping workers", con, live)
    finally:
        if view is not None:
            view.stop()
    return actions


def _changing(ids: list[str], call: Callable[[], object]) -> Callable[[], list[str]]:
    """``call``, returning the campaigns the script says it changes."""

    def run() -> list[str]:
        call()
        return ids

    return run


def _sleep_until(t: float) -> None:
    while (left := t - boottime()) > 0:
        time.sleep(min(left, 0.1))
