"""Batch decisions: one pass over the batch, no call per item when it can be helped.

A key given as ``operator.attrgetter("campaign_id", "channel")`` or ``itemgetter(0, 1)``
(or no key: items are ``(campaign_id, channel)`` pairs) is compiled once into a loop that
reads the two fields inline; any other callable is called per item. Each item costs one
dict lookup (its campaign's shared `Row`) and one membership test (``channel in row``:
a row holds exactly the channel keys it admits).
"""

from __future__ import annotations

import keyword
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["split_function"]

# items, the gate's rows -> (admitted, denied).
SplitFunction = Callable[[Sequence[Any], Mapping[str, Any]], tuple[list[Any], list[Any]]]

_CACHE: dict[tuple[object, ...], SplitFunction] = {}

# try/except costs nothing in 3.11 unless raised: only an unknown campaign raises KeyError.
# Anything else raised (an unhashable field) aborts the fast path; `filter` then decides
# the batch item by item.
_TEMPLATE = """
def split(items, rows):
    admitted = []
    denied = []
    admit = admitted.append
    deny = denied.append
    for m in items:
        try:
            if {channel} in rows[{campaign}]:
                admit(m)
                continue
        except KeyError:
            pass
        deny(m)
    return admitted, denied
"""


def _build(campaign: str, channel: str) -> SplitFunction:
    # Only `m`-rooted expressions built from checked identifiers or int/str literals.
    namespace: dict[str, Any] = {"__builtins__": {"KeyError": KeyError}}
    exec(_TEMPLATE.format(campaign=campaign, channel=channel), namespace)  # checked names only
    fn: SplitFunction = namespace["split"]
    return fn


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


def _attr_expr(name: object) -> str | None:
    if type(name) is not str:
        return None
    parts = name.split(".")
    if all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        return "m." + name
    return None


def _item_expr(index: object) -> str | None:
    # Only exact ints and strs: their repr is a literal that evaluates back to them.
    if type(index) is int or type(index) is str:
        return f"m[{index!r}]"
    return None


def split_function(key: Callable[[Any], Any] | None) -> SplitFunction:
    """The fastest split function for ``key``."""
    if key is None:
        key = operator.itemgetter(0, 1)
    spec: tuple[object, ...] | None = None
    if type(key) is operator.attrgetter or type(key) is operator.itemgetter:
        reduced: tuple[Any, ...] = key.__reduce__()  # type: ignore[assignment]
        args: tuple[object, ...] = reduced[1]
        if len(args) == 2:
            spec = (type(key), *args)
    if spec is None:
        return _generic(key)
    fn = _CACHE.get(spec)
    if fn is None:
        to_expr = _attr_expr if spec[0] is operator.attrgetter else _item_expr
        cid, ch = to_expr(spec[1]), to_expr(spec[2])
        if cid is None or ch is None:
            return _generic(key)
        if len(_CACHE) > 256:
            _CACHE.clear()
        fn = _CACHE[spec] = _build(cid, ch)
    return fn
