"""A gate's in-memory view: campaign id -> verdict row, with fences.

Readers (``check``, permits, ``filter``) never lock: each update is a single dict store,
atomic under the GIL, and a reader sees either the old row or the new one. Writers (the
registry's listener calls and the refresher) serialize on one lock so that the
"newer version wins" rule and the fence bookkeeping are never interleaved.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable

import attrs

from campaign_states import Channel, Segment, SegmentState, State
from campaign_states.stores import GateRow, GateRowBatch

from ._decision import SENDING, Reason, Row, deny_row, row_for

__all__ = ["FENCED_ROW", "Snapshot"]

# Stored state texts of the sending states (rows carry the value, not the member).
SENDING_VALUES = frozenset(s.value for s in SENDING)

# While a registry in this process is archiving or stopping a campaign, between its fence
# (before the commit) and its apply (after): the view is being replaced, so it is stale.
FENCED_ROW = deny_row(Reason.STALE)
# A fenced id that had no row: unfence forgets it.
_NO_ROW = Row(deny_row(Reason.UNKNOWN_CAMPAIGN).deny)


def _version(row: Row) -> int:
    v = row.deny.version
    return -1 if v is None else v


@attrs.frozen(kw_only=True)
class _Fields:
    """The fields of a campaign that `row_for` reads (it reads no others), decoded from a
    `campaign_states.GateRow`: a row's verdict without building its whole record."""

    state: State
    archive_cause: str | None
    channels: frozenset[Channel]
    segments: frozenset[str]
    version: int


class Snapshot:
    """Verdict rows per campaign, the fenced campaigns, and the archived segments."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        # Fenced id -> the newest real row known for it (_NO_ROW if none): restored by
        # unfence, and the version a record must exceed to lift the fence.
        self._fenced: dict[str, Row] = {}
        self._archived_segments: set[str] = set()
        self._lock = threading.Lock()

    def fence(self, campaign_ids: Iterable[str]) -> None:
        """Deny these campaigns from now on, until a newer record arrives or `unfence`."""
        with self._lock:
            rows, fenced = self.rows, self._fenced
            for cid in campaign_ids:
                if cid not in fenced:
                    fenced[cid] = rows.get(cid, _NO_ROW)
                # One dict store: visible to every reader thread from here on.
                rows[cid] = FENCED_ROW

    def unfence(self, campaign_ids: Iterable[str]) -> None:
        """The write failed: restore the newest row known (or forget an unknown id)."""
        with self._lock:
            for cid in campaign_ids:
                old = self._fenced.pop(cid, None)
                if old is None:
                    continue
                if old is _NO_ROW:
                    self.rows.pop(cid, None)
                else:
                    self.rows[cid] = old

    def reset(self) -> None:
        """Forget every row and archived segment, before a full load from another file.

        Versions in a restored file are not comparable with the ones held (a backup's can
        be lower, or equal for other content), so "newer version wins" would keep rows of
        the file nobody writes any more. Fenced campaigns stay denied until the load brings
        their row (their base is forgotten: the fenced write went to the old file). Called
        while the gate denies everything (its lease is void), so readers never see the
        emptied view as an answer: they deny before they look.
        """
        with self._lock:
            self.rows.clear()  # in place: the gate's hot path holds this very dict
            self._archived_segments.clear()
            for cid in self._fenced:
                self._fenced[cid] = _NO_ROW
                self.rows[cid] = FENCED_ROW

    def apply(self, rows: Iterable[GateRow], segments: Iterable[Segment]) -> int:
        """Reflect committed campaigns, as `campaign_states.GateRow` rows; an older version
        than the one held is ignored.

        Rows reach a gate by two paths (the registry's apply, converted from its records,
        and the refresher's read) in either order, so the campaign version decides: it is
        bumped by every write. A row newer than a fence's base can only be the fenced
        write's commit or a later one (the writer held the store's write lock or row lock
        from before the fence until its commit), so it lifts the fence.

        The loop works on the stored texts; a row's texts are decoded only for the few
        distinct (state, cause, blocked, channels, version) it sees (a million-campaign
        load has a few hundred), and its segments only while some segment is archived.

        Returns:
            How many campaign rows changed.
        """
        changed = 0
        with self._lock:
            archived = self._note_segments(segments)
            held, fenced = self.rows, self._fenced
            ids_of = GateRowBatch.segment_ids
            sending = SENDING_VALUES
            memo: dict[tuple[object, ...], Row] = {}
            for cid, state, channels, segs, version, cause in rows:
                # `_supersedes` inlined for the common case: no fence, no row (a first load)
                # or an older one. This loop runs a million times on a first load.
                if fenced and cid in fenced:
                    if not self._supersedes(cid, version):
                        continue
                else:
                    cur = held.get(cid)
                    if cur is not None and _version(cur) >= version:
                        continue
                blocked = (
                    bool(archived) and state in sending and not ids_of(segs).isdisjoint(archived)
                )
                key = (state, bool(cause), blocked, channels, version)
                row = memo.get(key)
                if row is None:
                    fields = _Fields(
                        state=GateRowBatch.state(state),
                        archive_cause=cause,
                        channels=GateRowBatch.channels(channels),
                        segments=ids_of(segs),
                        version=version,
                    )
                    row = memo[key] = row_for(fields, archived)
                held[cid] = row
                changed += 1
        return changed

    def _note_segments(self, segments: Iterable[Segment]) -> set[str]:
        # Called with the lock held.
        archived = self._archived_segments
        for s in segments:
            if s.state is SegmentState.ARCHIVED:
                archived.add(s.id)
            else:
                archived.discard(s.id)
        return archived

    def _supersedes(self, cid: str, version: int) -> bool:
        """Whether a record of ``version`` replaces what the view holds for ``cid``; lifts
        a fence it supersedes. Called with the lock held."""
        fenced = self._fenced
        if fenced and cid in fenced:
            base = fenced[cid]
            if base is not _NO_ROW and _version(base) >= version:
                return False
            del fenced[cid]
            return True
        cur = self.rows.get(cid)
        return cur is None or _version(cur) < version

    def fenced(self) -> Collection[str]:
        """The campaigns fenced now (a copy)."""
        with self._lock:
            return tuple(self._fenced)

    def archived_segments(self) -> Collection[str]:
        """The segments this view knows to be archived (a copy)."""
        with self._lock:
            return frozenset(self._archived_segments)
