"""The SQL text of the PostgreSQL write transaction's set-form moves and bulk updates."""

from __future__ import annotations

from typing import Final

from campaign_states._lifecycle import State

from .schema import CAMPAIGN_COLS

UPDATE_SET: Final = (
    "name = u.name, content = u.content, channels = u.channels, segments = u.segments, "
    "state = u.state, version = u.version, seq = u.seq, archive_cause = u.archive_cause, "
    "state_changed_at = u.state_changed_at"
)
STATE_TEXT: Final = {s: s.value for s in State}
UPPER: Final = "'ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
# Set-form moves (`_Tx.move_campaigns`): %(ids)s are the candidates, in order; each gets
# the sequence number first + its position, moved or not.
CANDIDATES: Final = (
    "unnest(%(ids)s::text[]) WITH ORDINALITY AS j(id, k) JOIN cs_campaigns AS c ON c.id = j.id"
)
# `id = ANY(...)`, not a join with the unnest: the planner estimates the filtered side at
# one row and, joining, loops over every archived campaign per candidate (3.5 s for 1,000
# candidates among 100,000 campaigns); this one is a primary-key lookup per candidate.
ALREADY: Final = (
    "SELECT c.id, c.state_changed_at FROM cs_campaigns AS c WHERE c.id = ANY(%(ids)s::text[]) "
    "AND c.state = %(dest)s AND c.archive_cause IS NOT DISTINCT FROM %(archive_cause)s"
)
HISTORY_MOVE: Final = (
    "INSERT INTO cs_history (campaign_id, trigger, from_state, to_state, actor, cause, time, "
    "seq, version) SELECT c.id, %(trigger)s, c.state, %(dest)s, %(actor)s, %(cause)s, "
    f"%(wall)s, %(first)s + j.k - 1, c.version + 1 FROM {CANDIDATES} "
    "WHERE c.state = ANY(%(sources)s::text[]) ORDER BY j.k"
)
MOVE_SET: Final = (
    "WITH moved AS (UPDATE cs_campaigns AS c SET state = %(dest)s, version = c.version + 1, "
    "seq = %(first)s + j.k - 1, archive_cause = %(archive_cause)s, "
    "state_changed_at = %(now)s FROM unnest(%(ids)s::text[]) WITH ORDINALITY AS j(id, k) "
    "WHERE c.id = j.id AND c.state = ANY(%(sources)s::text[]) "
    f"RETURNING {', '.join('c.' + x for x in CAMPAIGN_COLS.split(', '))}), "
    "feed AS (INSERT INTO cs_changes (seq, campaign_ids) "
    "SELECT max(seq), array_agg(id) FROM moved HAVING count(*) > 0) "
    "SELECT * FROM moved"
)
SEGMENT_LOCK: Final = (
    "hashtextextended('campaign-states:segment:' || current_schema() || ':' || u.id, 0)"
)
