"""Helpers the benchmark modules share (``python -m bench`` runs only ``bench_*`` modules).

`insert_campaigns` is the benchmarks' set-up: many campaigns written straight through the
store protocol in one transaction, far faster than one `Registry.create_campaign` each.
`timed` is the one way a benchmark times a single call.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from campaign_states import Campaign, HistoryEntry, Registry


def insert_campaigns(
    reg: Registry,
    n: int,
    campaign: Callable[[int, int], Campaign],
    *,
    history: bool = False,
    actor: str | None = None,
) -> list[str]:
    """Write ``campaign(i, seq)`` for ``i`` in ``range(n)`` in one store transaction; return
    their ids.

    ``seq`` is the change number the store allotted to the ``i``-th campaign; each campaign
    is inserted with the segments it targets. With ``history``, each also gets the create
    entry `Registry.create_campaign` would record (by ``actor``); without, none.
    """
    ids: list[str] = []
    entries: list[HistoryEntry] = []
    with reg.store.write() as tx:
        first = tx.next_seq(n)
        for i in range(n):
            c = campaign(i, first + i)
            tx.insert_campaign(c, c.segments)
            ids.append(c.id)
            if history:
                entries.append(
                    HistoryEntry(
                        campaign_id=c.id, trigger="create", from_state=None, to_state=c.state,
                        actor=actor, cause=None, time=time.time(), seq=c.seq, version=1,
                    )
                )  # fmt: skip
        if entries:
            tx.append_history(entries)
    return ids


def timed(call: Callable[[], object]) -> float:
    """Seconds one ``call()`` takes (wall clock, `time.perf_counter`)."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start
