"""Batch decisions: one pass over the batch, no call per item when it can be helped.

No code is generated from the key: the fast paths below are written out for the key shapes
the README documents, and chosen when the key's fields are exactly those (``type(x) is str``
or ``int`` and equal). Compiling source from a key's attribute names would read another
attribute than the key does for a name Python normalises (NFKC: a fullwidth ``c``,
U+FF43, in source reads ``campaign_id``), so any other field names go through the key's own getters.

- ``operator.attrgetter("campaign_id", "channel")``: inline attribute reads.
- No key (items are ``(campaign_id, channel)`` pairs) or ``itemgetter(0, 1)``: inline
  indexing; ``itemgetter("campaign_id", "channel")`` (dicts) likewise.
- Any other two-field attrgetter/itemgetter: one single-field getter per field, mapped
  over the batch (C calls, no tuple per item).
- Any other callable: called per item.

Each item costs one dict lookup (its campaign's shared `Row`) and one membership test
(``channel in row``: a row holds exactly the channel keys it admits).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

__all__ = ["decide_each", "read_batch", "split_function"]

log = logging.getLogger("delivery_gate")

# items, the gate's rows -> (admitted, denied).
SplitFunction = Callable[[Sequence[Any], Mapping[str, Any]], tuple[list[Any], list[Any]]]

# try/except costs nothing in 3.11 unless raised: only an unknown campaign raises KeyError.
# Anything else raised (an unhashable field, a missing attribute) aborts the fast path;
# `filter` then decides the batch item by item.


def read_batch(batch: object) -> list[Any] | None:
    """The items of ``batch`` (None if it is not iterable), up to any error its iterator raises."""
    try:
        it = iter(batch)  # type: ignore[call-overload]
    except Exception:
        log.warning("filter(): the batch %s is not iterable; denied as one item", type(batch))
        return None
    items: list[Any] = []
    try:
        items.extend(it)  # extend keeps what was read when the iterator raises part-way
    except Exception:
        log.warning(
            "filter(): the batch's iterator raised after %d items; those are decided, "
            "nothing more was read",
            len(items),
            exc_info=True,
        )
    return items


def _split_attrs(items: Sequence[Any], rows: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    admitted: list[Any] = []
    denied: list[Any] = []
    admit = admitted.append
    deny = denied.append
    for m in items:
        try:
            if m.channel in rows[m.campaign_id]:
                admit(m)
                continue
        except KeyError:
            pass
        deny(m)
    return admitted, denied


def _split_pairs(items: Sequence[Any], rows: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    admitted: list[Any] = []
    denied: list[Any] = []
    admit = admitted.append
    deny = denied.append
    for m in items:
        try:
            if m[1] in rows[m[0]]:
                admit(m)
                continue
        except KeyError:
            pass
        deny(m)
    return admitted, denied


def _split_keys(items: Sequence[Any], rows: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    # A missing "channel"/"campaign_id" key also raises KeyError: that item is denied, as
    # the per-item path would deny it (INVALID_REQUEST).
    admitted: list[Any] = []
    denied: list[Any] = []
    admit = admitted.append
    deny = denied.append
    for m in items:
        try:
            if m["channel"] in rows[m["campaign_id"]]:
                admit(m)
                continue
        except KeyError:
            pass
        deny(m)
    return admitted, denied


def _split_fields(campaign: Callable[[Any], Any], channel: Callable[[Any], Any]) -> SplitFunction:
    def split(items: Sequence[Any], rows: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
        admitted: list[Any] = []
        denied: list[Any] = []
        admit = admitted.append
        deny = denied.append
        # `map` calls the C getters without a Python frame or a (cid, channel) tuple per item.
        for m, cid, ch in zip(items, map(campaign, items), map(channel, items), strict=True):
            try:
                if ch in rows[cid]:
                    admit(m)
                    continue
            except KeyError:
                pass
            deny(m)
        return admitted, denied

    return split


def _generic(key: Callable[[Any], Any]) -> SplitFunction:
    def split(items: Sequence[Any], rows: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
        admitted: list[Any] = []
        denied: list[Any] = []
        for m in items:
            cid, channel = key(m)
            row = rows.get(cid)
            (admitted if row is not None and channel in row else denied).append(m)
        return admitted, denied

    return split


def _exactly(args: tuple[object, ...], *expected: object) -> bool:
    # `type(...) is` keeps out str/int subclasses whose __eq__ could claim equality.
    return len(args) == len(expected) and all(
        type(a) is type(e) and a == e for a, e in zip(args, expected, strict=True)
    )


def split_function(key: Callable[[Any], Any] | None) -> SplitFunction:
    """The fastest split function for ``key``."""
    if key is None:
        return _split_pairs
    getter = type(key)
    if getter is not operator.attrgetter and getter is not operator.itemgetter:
        return _generic(key)
    reduced: tuple[Any, ...] = key.__reduce__()  # type: ignore[assignment]
    args: tuple[object, ...] = reduced[1]
    if len(args) != 2:
        return _generic(key)
    if getter is operator.attrgetter:
        if _exactly(args, "campaign_id", "channel"):
            return _split_attrs
        # attrgetter's own args are strs (it refuses anything else at construction); passed
        # on as they are, since str() of a subclass could give another name.
        cid_name, channel_name = cast(str, args[0]), cast(str, args[1])
        return _split_fields(operator.attrgetter(cid_name), operator.attrgetter(channel_name))
    if _exactly(args, 0, 1):
        return _split_pairs
    if _exactly(args, "campaign_id", "channel"):
        return _split_keys
    return _split_fields(operator.itemgetter(args[0]), operator.itemgetter(args[1]))


def decide_each(
    items: Sequence[Any],
    key: Callable[[Any], Any] | None,
    kind: object,
    check: Callable[[object, object, object], Any],
    observe_invalid: Callable[[object, object], None] | None,
) -> tuple[list[Any], list[Any]]:
    """The per-item path: each item through ``check`` (observed, counted, any kind).

    An item whose key raises or gives no ``(campaign_id, channel)`` pair is denied
    (INVALID_REQUEST, passed to ``observe_invalid`` when there is an observer).
    """
    admitted: list[Any] = []
    denied: list[Any] = []
    for m in items:
        try:
            cid, ch = m if key is None else key(m)
        except Exception:
            if observe_invalid is not None:
                observe_invalid(m, kind)
            denied.append(m)
            continue
        (admitted if check(cid, ch, kind).admitted else denied).append(m)
    return admitted, denied
