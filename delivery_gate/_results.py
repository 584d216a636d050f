"""Completed permits, batched into the registry's results."""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter, deque

from campaign_states import Channel, Delivery, Emission, Registry
from campaign_states.exceptions import StoreError

from ._decision import CHANNEL_INDEX, N_CHANNELS

__all__ = ["ResultsBuffer", "slot_of"]

log = logging.getLogger("delivery_gate")

_CHANNELS = tuple(Channel)
_KINDS: dict[object, Emission] = {**{e: e for e in Emission}, **{e.value: e for e in Emission}}

# Recording waits for this many completed permits, or for the refresher's next flush.
FLUSH_AT = 4096


def slot_of(channel: object, kind: object) -> int:
    """The queue a completed permit on this (valid) channel and kind goes to."""
    index = CHANNEL_INDEX[channel]
    return index if _KINDS[kind] is Emission.MESSAGE else N_CHANNELS + index


class ResultsBuffer:
    """One queue of campaign ids per (channel, kind) slot; `flush` counts and records them.

    A permit leaving its block appends its campaign id to its slot's queue: one
    ``deque.append`` (atomic under the GIL, no lock on the hot path) of a str, which the
    cyclic garbage collector never tracks, so a second's worth of completed permits costs
    the interpreter nothing while it waits to be recorded. Counts a flush could not record
    because the store failed are kept and retried: nothing is dropped. A count the registry
    refuses (it would refuse it on every retry) is set aside in `refused`, logged, and
    reported by ``close()``, so one bad entry never blocks the others.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self.slots: tuple[deque[str], ...] = tuple(deque() for _ in range(2 * N_CHANNELS))
        self._pending: Counter[tuple[str, Channel, Emission]] = Counter()
        #: Deliveries the registry refused, with its reason (never retried).
        self.refused: list[tuple[Delivery, str]] = []
        self._lock = threading.Lock()

    def _take(self) -> None:
        pending = self._pending
        for slot, queue in enumerate(self.slots):
            if not queue:
                continue
            # popleft, never swapping the deque: an id appended concurrently lands in this
            # batch or the next, never in a detached list. islice(iter(popleft)) and
            # Counter keep the per-permit work in C.
            taken = itertools.islice(iter(queue.popleft, None), len(queue))
            channel = _CHANNELS[slot % N_CHANNELS]
            kind = Emission.MESSAGE if slot < N_CHANNELS else Emission.IN_APP_IMPRESSION
            for cid, n in Counter(taken).items():
                # The gate admits a str subclass (a StrEnum member) by its characters; the
                # results are the plain str's, as the registry's rule for ids says. Once
                # per campaign and flush, not per permit.
                key = cid if type(cid) is str else str.__str__(cid)
                pending[(key, channel, kind)] += n

    def flush(self) -> None:
        """Record every completed permit so far.

        Raises:
            campaign_states.exceptions.StoreError: Recording failed; the counts are kept
                for the next flush.
        """
        with self._lock:
            self._take()
            if not self._pending:
                return
            try:
                rows = [
                    Delivery(campaign_id=c, channel=ch, kind=k, count=n)
                    for (c, ch, k), n in self._pending.items()
                ]
                self._registry.record_results(rows)
            except StoreError:
                raise  # the store is down: everything stays pending for the next flush
            except Exception:
                # The registry refused the batch for what is in it, not for the store:
                # record entry by entry, so the refused ones are set aside and the rest land.
                self._record_one_by_one()
            else:
                self._pending.clear()

    def _record_one_by_one(self) -> None:
        for key, n in list(self._pending.items()):
            c, ch, k = key
            row: Delivery | None = None
            try:
                row = Delivery(campaign_id=c, channel=ch, kind=k, count=n)
                self._registry.record_results([row])
            except StoreError:
                raise  # what is still pending stays pending; what landed was removed
            except Exception as e:
                reason = f"{type(e).__name__}: {e}"
                log.error("results refused by the registry, set aside: %r x%d (%s)", c, n, reason)
                # An entry that is not even a Delivery (the gate never admits such an id)
                # keeps only the log line above as its record.
                if row is not None:
                    self.refused.append((row, reason))
            del self._pending[key]

    def forget(self) -> None:
        """In a forked child: the queued counts are the parent's to record, not ours."""
        self._lock = threading.Lock()
        for queue in self.slots:
            queue.clear()
        self._pending.clear()
        self.refused.clear()

    def unrecorded(self) -> list[Delivery]:
        """What has not been recorded yet (after a failed flush), queues included."""
        with self._lock:
            self._take()
            return [
                Delivery(campaign_id=c, channel=ch, kind=k, count=n)
                for (c, ch, k), n in self._pending.items()
            ]

    def __len__(self) -> int:
        return sum(map(len, self.slots))
