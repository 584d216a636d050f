"""The WHERE clauses of the paged reads (`_queries`), shared by the SQL stores.

Each store passes its placeholder and its "contains, ignoring the case of A-Z" expression,
so SQLite and PostgreSQL select exactly what `matches_campaign`/`matches_history` do.
"""

from __future__ import annotations

from collections.abc import Callable

from campaign_states._queries import CampaignQuery, HistoryQuery, ascii_lower

__all__ = ["campaign_where", "history_page", "history_where"]


def campaign_where(
    q: CampaignQuery, ph: str, contains: Callable[[str], str], links: str
) -> tuple[str, list[object]]:
    """``(sql, args)`` for ``WHERE sql ORDER BY id LIMIT ...`` over the campaigns table.

    ``contains(col)`` is an expression true when the lowered column holds the parameter;
    ``links`` is the campaign-segment link table's name.
    """
    sql = ["1 = 1"]
    args: list[object] = []
    if q.after is not None:
        sql.append(f"id > {ph}")
        args.append(q.after)
    if q.states is not None:
        sql.append(f"state IN ({', '.join([ph] * len(q.states))})")
        args.extend(sorted(s.value for s in q.states))
    if q.segment is not None:
        sql.append(f"id IN (SELECT campaign_id FROM {links} WHERE segment_id = {ph})")
        args.append(q.segment)
    if q.text is not None:
        needle = ascii_lower(q.text)
        sql.append(f"({contains('id')} OR {contains('name')})")
        args.extend((needle, needle))
    return " AND ".join(sql), args


def history_where(q: HistoryQuery, ph: str) -> tuple[str, list[object]]:
    """``(sql, args)`` for ``WHERE sql ORDER BY seq [DESC] LIMIT ...`` over history."""
    sql = ["1 = 1"]
    args: list[object] = []
    if q.after is not None:
        sql.append(f"seq {'<' if q.newest_first else '>'} {ph}")
        args.append(q.after)
    for column, value in (("actor", q.actor), ("trigger", q.trigger), ("campaign_id", q.campaign)):
        if value is not None:
            sql.append(f"{column} = {ph}")
            args.append(value)
    if q.since is not None:
        sql.append(f"time >= {ph}")
        args.append(float(q.since))
    if q.until is not None:
        sql.append(f"time < {ph}")
        args.append(float(q.until))
    return " AND ".join(sql), args


def history_page(q: HistoryQuery, table: str, ph: str) -> tuple[str, list[object]]:
    """The whole page query over ``table`` (the stores name it differently), with its args."""
    where, args = history_where(q, ph)
    order = "DESC" if q.newest_first else "ASC"
    sql = (
        "SELECT campaign_id, trigger, from_state, to_state, actor, cause, time, seq, "
        f"version FROM {table} WHERE {where} ORDER BY seq {order} LIMIT {ph}"
    )
    return sql, [*args, q.limit]
