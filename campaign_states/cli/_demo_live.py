"""The demo's live view: sends per campaign and per second, and a log of the actions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ._demo_worker import Counters
from ._experiment import boottime

if TYPE_CHECKING:
    from ._demo import Planned

__all__ = ["LiveView"]


@attrs.define
class LiveView:
    """What the live view shows; updated by the timeline, read by rich's refresh thread."""

    campaigns: list[Planned]
    counters: Counters
    workers: int
    duration: float
    started: float = 0.0
    states: dict[str, str] = attrs.field(factory=dict)
    log: list[str] = attrs.field(factory=list)
    _last: tuple[float, list[int]] | None = None

    def sent(self) -> list[int]:
        """Sends per campaign so far, summed over workers (approximate while they run)."""
        n = len(self.campaigns)
        raw = list(self.counters.sent)
        return [sum(raw[w * n + i] for w in range(self.workers)) for i in range(n)]

    def render(self) -> Group:
        """The current frame (called from rich's refresh thread)."""
        now, sent = boottime(), self.sent()
        rates = [0.0] * len(sent)
        if self._last is not None and now > self._last[0]:
            dt = now - self._last[0]
            rates = [(a - b) / dt for a, b in zip(sent, self._last[1], strict=True)]
        self._last = (now, sent)
        table = Table(
            title=f"{self.workers} workers, t = {now - self.started:4.1f}s "
            f"of ~{self.duration:.0f}s",
            title_justify="left",
        )
        for col in ("campaign", "channels", "state", "sent", "sends/s"):
            table.add_column(col, justify="right" if col.startswith("sen") else "left")
        for c, n, rate in zip(self.campaigns, sent, rates, strict=True):
            state = self.states.get(c.id, "running")
            style = "green" if state == "running" else "dim" if "archived" in state else "yellow"
            table.add_row(
                c.id, ", ".join(c.channels), Text(state, style=style), f"{n:,}", f"{rate:,.0f}"
            )
        return Group(table, *(Text(line) for line in self.log[-8:]))

    def note(self, line: str, console: Console, live: bool) -> None:
        """Log an event, stamped with the time since the timeline started."""
        stamped = f"{boottime() - self.started:5.2f}s  {line}"
        self.log.append(stamped)
        if not live:  # without a live view, the log is the progress display
            console.print(Text(stamped))
