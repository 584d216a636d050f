"""Counting a gate's decisions at the cost of a dict lookup and a C call (for metrics).

`install` shadows a gate's ``check`` with a counting variant, the way a decision observer
does, but without a Python call per decision: an admit on the hot path (always RUNNING,
always a MESSAGE) is ``next()`` on an ``itertools.count`` picked by the channel key. That
is atomic under the GIL (one C call), so no lock and no lost count with many threads.
Every other decision (denials, impressions, stale, malformed) already takes the gate's
slow path; there a counter is picked by the decision's labels.

Counts are read by metric callbacks (`Tally.snapshot`), never pushed: an exporter that
collects every minute costs the deciding threads nothing between collections.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from campaign_states import Channel, Emission

from ._decision import CHANNEL_INDEX, Decision

if TYPE_CHECKING:
    from ._gate import DeliveryGate

__all__ = ["Labels", "Tally", "install"]

_MESSAGE: Final = Emission.MESSAGE
# Attribute values for what is not a channel or a kind: bounded cardinality whatever a
# caller passes (OTel's convention for an unknown value, lowercased as ours are).
OTHER: Final = "_other"
_CHANNEL_LABEL: Final[dict[object, str]] = {k: Channel(k).value for k in CHANNEL_INDEX}
_KIND_LABEL: Final[dict[object, str]] = {
    **{e: e.value for e in Emission},
    **{e.value: e.value for e in Emission},
}

# (reason, channel, emission): the attribute values of one decision count.
Labels = tuple[str, str, str]


def _label(table: dict[object, str], key: object) -> str:
    try:
        return table.get(key, OTHER)
    except TypeError:  # unhashable
        return OTHER


class _Reading:
    """An ``itertools.count`` read without a lock on the counting side: reading is itself a
    ``next()``, so the true count is the value read minus the reads made before."""

    __slots__ = ("counter", "reads")

    def __init__(self) -> None:
        self.counter = itertools.count()
        self.reads = 0

    def value(self) -> int:
        # Called with the tally's read lock held: reads never interleave.
        n = next(self.counter) - self.reads
        self.reads += 1
        return n


class Tally:
    """A gate's decision counts by (reason, channel, emission) labels."""

    def __init__(self) -> None:
        # One counter per channel *key* (member and value): the hot path indexes by the
        # key the caller passed, which the gate's row just accepted.
        self._hot: dict[object, _Reading] = {k: _Reading() for k in CHANNEL_INDEX}
        self.hot: dict[object, Iterator[int]] = {k: r.counter for k, r in self._hot.items()}
        self._slow: dict[Labels, _Reading] = {}
        self._slow_lock = threading.Lock()
        self._read_lock = threading.Lock()

    def count(self, d: Decision, channel: object, kind: object) -> None:
        """Count one decision from the slow path (any reason, any kind)."""
        labels = (d.reason.value, _label(_CHANNEL_LABEL, channel), _label(_KIND_LABEL, kind))
        r = self._slow.get(labels)
        if r is None:
            # Labels are bounded (reasons x channels x kinds): the dict stops growing.
            with self._slow_lock:
                r = self._slow.setdefault(labels, _Reading())
        next(r.counter)

    def snapshot(self) -> dict[Labels, int]:
        """Every count so far (cumulative), by labels."""
        out: dict[Labels, int] = {}
        with self._read_lock:
            for key, r in self._hot.items():
                labels = ("running", _CHANNEL_LABEL[key], _MESSAGE.value)
                out[labels] = out.get(labels, 0) + r.value()
            for labels, r in list(self._slow.items()):
                out[labels] = out.get(labels, 0) + r.value()
        return {k: v for k, v in out.items() if v}


def install(gate: DeliveryGate, tally: Tally) -> None:
    """Make ``gate`` count its decisions in ``tally`` (checks, permits and filters).

    The gate's own decision observer, if any, is still called after counting. Permits and
    filters take the gate's observed path (as with a decision observer), which calls
    ``gate.check``: this counting one.
    """
    observer = gate._on_decision
    decide = gate._decide
    now = gate._now
    rows = gate._rows
    hot = tally.hot
    count = tally.count
    _next = next

    def check(campaign_id: object, channel: object, kind: object = _MESSAGE) -> Decision:
        # The gate's hot path (see DeliveryGate.check), plus one counter bump. The deadline
        # is read from the gate each time: refreshes and close() replace it.
        try:
            if kind is _MESSAGE and now() < gate._deadline:
                d = rows[campaign_id][channel]  # type: ignore[index]
                _next(hot[channel])
                return d
        except Exception:
            pass
        d = decide(campaign_id, channel, kind)
        try:  # noqa: SIM105 (a with-statement costs more on the deciding thread)
            count(d, channel, kind)
        except Exception:
            pass  # counting never turns a decision into an exception
        return d

    new_check: Callable[..., Decision] = check
    if observer is not None:

        def observed(campaign_id: object, channel: object, kind: object = _MESSAGE) -> Decision:
            d = check(campaign_id, channel, kind)
            try:  # noqa: SIM105 (as above)
                observer(campaign_id, channel, kind, d)
            except Exception:
                pass
            return d

        new_check = observed

    def count_invalid(
        campaign_id: object, channel: object, kind: object, decision: Decision
    ) -> None:
        # `filter` calls its observer only for items whose key raised (no channel known);
        # every other item goes through `gate.check`, counted above.
        if channel is None:
            count(decision, None, kind)
        if observer is not None:
            observer(campaign_id, channel, kind, decision)

    gate.check = new_check  # type: ignore[method-assign]
    # Permits: a kind nothing matches sends every permit through `gate.check` (counted).
    gate._fast_kind = object()
    # Filters: an observer sends batches down the per-item path (each item counted).
    gate._on_decision = count_invalid
