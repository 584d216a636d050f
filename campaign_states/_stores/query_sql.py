"""The SQL both SQL stores share: their common reads (`SQLReads`) and the WHERE clauses of
the paged reads (`_queries`).

Each store gives its `Dialect`: its placeholder, its tables' names and its "contains,
ignoring the case of A-Z" expression, so SQLite and PostgreSQL select exactly what
`matches_campaign`/`matches_history` do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Final

import attrs

from campaign_states._lifecycle import State
from campaign_states._queries import CampaignQuery, HistoryQuery, ascii_lower
from campaign_states._records import Campaign, HistoryEntry, Results, Segment
from campaign_states._rows import (
    campaign_from_row,
    history_from_rows,
    results_from_rows,
    segment_from_row,
)

__all__ = [
    "CAMPAIGN_COLS",
    "HISTORY_COLS",
    "SEGMENT_COLS",
    "Dialect",
    "SQLReads",
    "campaign_where",
    "history_page",
]

# The columns of a campaign row, in `campaign_from_row`'s order; the same in both schemas.
CAMPAIGN_COLS: Final = (
    "id, name, content, channels, segments, state, version, seq, archive_cause, "
    "state_changed_at, created_at"
)
SEGMENT_COLS: Final = "id, name, state, version, seq"
HISTORY_COLS: Final = "campaign_id, trigger, from_state, to_state, actor, cause, time, seq, version"


@attrs.frozen
class Dialect:
    """One SQL store's spelling of the shared reads; the statements are built once.

    Attributes:
        ph: The parameter placeholder (``?`` or ``%s``).
        prefix: The tables' prefix (``""`` or ``cs_``).
        contains: ``contains(col)``, true when the A-Z-lowered column holds the parameter.
        history_order: The column a campaign's history is ordered by, oldest first.
    """

    ph: str
    prefix: str
    contains: Callable[[str], str]
    history_order: str
    campaigns: str = attrs.field(init=False)
    links: str = attrs.field(init=False)
    history_table: str = attrs.field(init=False)
    get_campaign: str = attrs.field(init=False)
    get_segment: str = attrs.field(init=False)
    list_segments: str = attrs.field(init=False)
    history: str = attrs.field(init=False)
    results: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        p, ph = self.prefix, self.ph
        built = {
            "campaigns": f"{p}campaigns",
            "links": f"{p}campaign_segments",
            "history_table": f"{p}history",
            "get_campaign": f"SELECT {CAMPAIGN_COLS} FROM {p}campaigns WHERE id = {ph}",
            "get_segment": f"SELECT {SEGMENT_COLS} FROM {p}segments WHERE id = {ph}",
            "list_segments": f"SELECT {SEGMENT_COLS} FROM {p}segments ORDER BY id",
            "history": f"SELECT {HISTORY_COLS} FROM {p}history WHERE campaign_id = {ph} "
            f"ORDER BY {self.history_order}",
            "results": f"SELECT channel, kind, count FROM {p}results WHERE campaign_id = {ph}",
        }
        for name, sql in built.items():
            object.__setattr__(self, name, sql)

    def list_filter(
        self, state: State | None, segment: str | None, after: str | None
    ) -> tuple[str, list[object]]:
        """``(sql, args)`` for `SQLReads.list_campaigns`' WHERE."""
        ph = self.ph
        where: list[str] = ["1 = 1"]
        args: list[object] = []
        if state is not None:
            where.append(f"state = {ph}")
            args.append(state.value)
        if segment is not None:
            where.append(f"id IN (SELECT campaign_id FROM {self.links} WHERE segment_id = {ph})")
            args.append(segment)
        if after is not None:
            where.append(f"id > {ph}")
            args.append(after)
        return " AND ".join(where), args


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
    sql = f"SELECT {HISTORY_COLS} FROM {table} WHERE {where} ORDER BY seq {order} LIMIT {ph}"
    return sql, [*args, q.limit]


class SQLReads:
    """The reads both SQL stores run as the same SQL, each in its own dialect.

    A store sets `_dialect` (its placeholder, table prefix and "contains" expression) and
    `_fetch`, which runs one query on its connection with its error translation. What
    genuinely differs stays in each store: `results_many` (SQLite's variable limit against
    PostgreSQL's array parameter) and the ordering of a campaign's history (SQLite's
    insertion id, PostgreSQL's seq: that table has no id).
    """

    _dialect: ClassVar[Dialect]

    def _fetch(self, sql: str, args: Sequence[object]) -> list[Any]:
        raise NotImplementedError

    def get_campaign(self, campaign_id: str) -> Campaign | None:
        """One campaign, or None."""
        rows = self._fetch(self._dialect.get_campaign, (campaign_id,))
        return campaign_from_row(rows[0]) if rows else None

    def get_segment(self, segment_id: str) -> Segment | None:
        """One segment, or None."""
        rows = self._fetch(self._dialect.get_segment, (segment_id,))
        return segment_from_row(rows[0]) if rows else None

    def list_campaigns(
        self,
        state: State | None,
        segment: str | None,
        *,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[Campaign]:
        """Campaigns, optionally filtered, ordered by id: at most ``limit``, ids > ``after``.

        The order is the database's: byte order in SQLite, the collation of ``id`` in
        PostgreSQL (byte order under C or C.UTF-8).
        """
        d = self._dialect
        where, args = d.list_filter(state, segment, after)
        # The primary key's index gives id order and the start at `after` (keyset paging):
        # a page reads `limit` rows (more only when a filter skips some), wherever it starts.
        sql = f"SELECT {CAMPAIGN_COLS} FROM {d.campaigns} WHERE {where} ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {d.ph}"
            args.append(limit)
        return [campaign_from_row(r) for r in self._fetch(sql, args)]

    def count_campaigns(
        self, state: State | None, segment: str | None, *, after: str | None = None
    ) -> int:
        """How many campaigns `list_campaigns` would return with no limit."""
        d = self._dialect
        where, args = d.list_filter(state, segment, after)
        rows = self._fetch(f"SELECT count(*) FROM {d.campaigns} WHERE {where}", args)
        return int(rows[0][0]) if rows else 0

    def list_segments(self) -> list[Segment]:
        """Every segment, ordered by id."""
        return [segment_from_row(r) for r in self._fetch(self._dialect.list_segments, ())]

    def history(self, campaign_id: str) -> list[HistoryEntry]:
        """A campaign's history, oldest first."""
        return history_from_rows(self._fetch(self._dialect.history, (campaign_id,)))

    def results(self, campaign_id: str) -> Results:
        """A campaign's results."""
        return results_from_rows(campaign_id, self._fetch(self._dialect.results, (campaign_id,)))

    # -- paged reads for operator screens (see `_queries`) -----------------------------

    def find_campaigns(self, query: CampaignQuery) -> list[Campaign]:
        """One page of the campaigns ``query`` selects, ordered by id (the primary key)."""
        d = self._dialect
        where, args = campaign_where(query, d.ph, d.contains, d.links)
        sql = f"SELECT {CAMPAIGN_COLS} FROM {d.campaigns} WHERE {where} ORDER BY id LIMIT {d.ph}"
        return [campaign_from_row(r) for r in self._fetch(sql, [*args, query.limit])]

    def query_history(self, query: HistoryQuery) -> list[HistoryEntry]:
        """One page of history entries across campaigns, ordered by seq as asked."""
        sql, args = history_page(query, self._dialect.history_table, self._dialect.ph)
        return history_from_rows(self._fetch(sql, args))
