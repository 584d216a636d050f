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
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from campaign_states import Channel, Emission

from ._decision import CHANNEL_INDEX, Decision, Reason, decision
from ._filter import read_batch

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

_INVALID: Final = decision(False, Reason.INVALID_REQUEST)

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


_tallies: weakref.WeakSet[Tally] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A parent thread (a metric reader collecting) may have held a lock at the fork.
    for t in list(_tallies):
        t._slow_lock = threading.Lock()
        t._read_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Tally:
    """A gate's decision counts by (reason, channel, emission) labels.

    After a fork the child's counts start from the parent's (the counters are copied), as a
    forked process's cumulative metrics do; its locks are fresh.
    """

    def __init__(self) -> None:
        # One counter per channel *key* (member and value): the hot path indexes by the
        # key the caller passed, which the gate's row just accepted.
        self._hot: dict[object, _Reading] = {k: _Reading() for k in CHANNEL_INDEX}
        # The counting side calls each counter's bound ``__next__`` (one C call, no lookup
        # of ``next``); the reading side calls ``next()`` on the same counter.
        self.hot: dict[object, Callable[[], int]] = {
            k: r.counter.__next__ for k, r in self._hot.items()
        }
        self._slow: dict[Labels, _Reading] = {}
        self._slow_lock = threading.Lock()
        self._read_lock = threading.Lock()
        _tallies.add(self)

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


# The counting variants are closures over the gate's attributes, defined together so each
# reads them as locals (the cost budget of the issue); hence one long function.
def install(gate: DeliveryGate, tally: Tally) -> None:  # noqa: PLR0915
    """Make ``gate`` count its decisions in ``tally`` (checks, permits and filters).

    The gate's own decision observer, if any, is still called after counting. Permits take
    the gate's observed path (as with a decision observer), which calls ``gate.check``:
    this counting one; ``filter`` decides item by item (see ``counting_filter``).
    """
    observer = gate._on_decision
    decide = gate._decide
    now = gate._now
    rows = gate._rows
    hot = tally.hot
    count = tally.count

    def check(campaign_id: object, channel: object, kind: object = _MESSAGE) -> Decision:
        # The gate's hot path (see DeliveryGate.check), plus one counter bump. The deadline
        # is read from the gate each time: refreshes and close() replace it.
        try:
            if kind is _MESSAGE and now() < gate._deadline:
                d = rows[campaign_id][channel]  # type: ignore[index]
                hot[channel]()
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

    plain_filter = gate.filter

    def counting_filter(
        batch: Iterable[Any], key: Callable[[Any], Any] | None = None, *, kind: object = _MESSAGE
    ) -> tuple[list[Any], list[Any]]:
        # The gate's filter decides item by item once an observer is installed; this is
        # that, with the counting check's hot path inlined, and no exception raised for a
        # denied item (raising costs a microsecond).
        if kind is not _MESSAGE or observer is not None:
            return plain_filter(batch, key, kind=kind)
        # As the gate's filter: never raises (see `DeliveryGate.filter`).
        items = batch if type(batch) is list else read_batch(batch)
        if items is None:
            count(_INVALID, None, kind)
            return [], [batch]
        admitted: list[Any] = []
        denied: list[Any] = []
        admit, deny = admitted.append, denied.append
        # As the gate's own filter: the lease is read once, for the whole batch.
        fresh = now() < gate._deadline
        for m in items:
            try:
                cid, ch = m if key is None else key(m)
            except Exception:
                count(_INVALID, None, kind)
                deny(m)
                continue
            if fresh:
                try:
                    row = rows.get(cid)
                    if row is not None:
                        d = row.get(ch)
                        if d is not None:
                            hot[ch]()
                            admit(m)
                            continue
                        if ch in CHANNEL_INDEX:
                            # A known campaign, a valid channel it does not admit: the
                            # row's denial, as `DeliveryGate._decide` would return it.
                            count(row.deny, ch, kind)
                            deny(m)
                            continue
                except Exception:
                    pass  # unhashable: the slow path below classifies it
            d = decide(cid, ch, kind)
            count(d, ch, kind)
            (admit if d.admitted else deny)(m)
        return admitted, denied

    gate.check = new_check  # type: ignore[method-assign]
    gate.filter = counting_filter  # type: ignore[method-assign]
    # Permits: a kind nothing matches sends every permit through `gate.check` (counted).
    gate._fast_kind = object()
    # Filters: an observer sends batches down the per-item path (each item counted).
    gate._on_decision = count_invalid
