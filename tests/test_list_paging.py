"""`Registry.list(limit=, after=)` pages by id on every store, and `count` agrees with it."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import pytest

from campaign_states import Campaign, Registry, State
from campaign_states.exceptions import (
    InvalidIdError,
    InvalidIdTypeError,
    InvalidValueError,
    SegmentNotFoundError,
)

# Case, digits, punctuation and non-ASCII: ordered by code point (Python's str order,
# SQLite's BINARY collation, PostgreSQL's under a C or C.UTF-8 database).
IDS = ["B-2", "a-1", "a-10", "a-2", "c", "z", "é-1", "日本-1", "a.b", "A"]


def _fill(registry: Registry) -> list[str]:
    registry.create_segment("s")
    for i, cid in enumerate(IDS):
        registry.create_campaign(
            name=cid, channels=["email"], segments={"s"} if i % 3 == 0 else set(), campaign_id=cid
        )
        if i % 2:
            registry.resume(cid)
    return sorted(IDS)


def walk(list_page: Callable[..., list[Campaign]], limit: int, **filters: Any) -> list[str]:
    """Every id, page by page; fails on an id seen twice."""
    seen: list[str] = []
    after = None
    while True:
        page = list_page(limit=limit, after=after, **filters)
        assert len(page) <= limit
        seen.extend(c.id for c in page)
        if len(page) < limit:
            break
        after = page[-1].id
    assert len(seen) == len(set(seen)), f"an id was listed twice: {seen}"
    return seen


class TestPages:
    """Pages read in turn give exactly `list()`, in id order, with or without filters."""

    @pytest.mark.parametrize("limit", [1, 2, 3, 7, 10, 50])
    def test_pages_concatenate_to_the_list(self, registry: Registry, limit: int):
        ordered = _fill(registry)
        assert ordered == [c.id for c in registry.list()]
        assert ordered == walk(registry.list, limit)

    @pytest.mark.parametrize(
        "filters",
        [
            {"state": State.ACTIVE_RUNNING},
            {"state": "active_stopped"},
            {"segment": "s"},
            {"state": State.ACTIVE_RUNNING, "segment": "s"},
        ],
    )
    def test_with_filters(self, registry: Registry, filters: dict[str, Any]):
        _fill(registry)
        expected = [c.id for c in registry.list(**filters)]
        assert expected  # the fixture has some of each
        for limit in (1, 2, 5):
            assert expected == walk(registry.list, limit, **filters)

    def test_after_need_not_exist(self, registry: Registry):
        ordered = _fill(registry)
        assert [i for i in ordered if i > "a-10a"] == [c.id for c in registry.list(after="a-10a")]
        assert ordered == [c.id for c in registry.list(after="")]
        assert [] == registry.list(after="\U0010ffff")
        assert ordered[:2] == [c.id for c in registry.list(limit=2, after="")]

    def test_after_is_exclusive(self, registry: Registry):
        ordered = _fill(registry)
        assert ordered[3:5] == [c.id for c in registry.list(limit=2, after=ordered[2])]

    def test_str_subclass_after_reads_as_its_text(self, registry: Registry):
        ordered = _fill(registry)

        class Cursor(enum.StrEnum):
            AT = "a-1"

        assert [i for i in ordered if i > "a-1"] == [c.id for c in registry.list(after=Cursor.AT)]

    def test_new_campaigns_are_listed(self, registry: Registry):
        """A campaign created after a first list is in the next one (no stale id cache)."""
        _fill(registry)
        registry.list(limit=3)
        registry.create_campaign(name="n", channels=["email"], campaign_id="a-0")
        assert "a-0" in [c.id for c in registry.list(limit=3)]
        assert registry.count() == len(IDS) + 1


class TestKeysetIsStable:
    """Campaigns created while paging neither repeat nor push others off a page."""

    def test_created_before_the_cursor(self, registry: Registry):
        ordered = _fill(registry)
        first = registry.list(limit=3)
        registry.create_campaign(name="early", channels=["email"], campaign_id="0-early")
        rest = walk(registry.list, 3)
        rest = [i for i in rest if i > first[-1].id]
        assert ordered == [c.id for c in first] + rest

    def test_offset_paging_is_caught(self, registry: Registry):
        """The check catches an OFFSET pager, which repeats an id when one is inserted."""
        _fill(registry)
        offset = [0]

        def offset_pages(*, limit: int, after: str | None, **filters: Any) -> list[Campaign]:
            page = registry.list(**filters)[offset[0] : offset[0] + limit]
            offset[0] += limit
            if offset[0] == limit:  # after the first page, an id sorting first appears
                registry.create_campaign(name="x", channels=["email"], campaign_id="0-new")
            return page

        with pytest.raises(AssertionError, match="listed twice"):
            walk(offset_pages, 2)


class TestCount:
    """`count` is how many `list` would return, with the same filters and cursor."""

    def test_count_matches_list(self, registry: Registry):
        ordered = _fill(registry)
        assert len(ordered) == registry.count()
        for filters in ({}, {"state": "active_running"}, {"segment": "s"}):
            for after in (None, "", "a-10", "z", "\U0010ffff"):
                expected = len(registry.list(after=after, **filters))
                assert expected == registry.count(after=after, **filters), (filters, after)

    def test_empty_store(self, registry: Registry):
        assert (0, []) == (registry.count(), registry.list(limit=5))


class TestBadArguments:
    """Bad paging arguments are typed errors; nothing is read."""

    @pytest.mark.parametrize("limit", [0, -1, True, 1.5, "5"])
    def test_bad_limit(self, registry: Registry, limit: object):
        with pytest.raises(InvalidValueError, match="limit must be an int >= 1"):
            registry.list(limit=limit)  # type: ignore[arg-type]

    @pytest.mark.parametrize("after", [5, b"a", ["a"]])
    def test_bad_after(self, registry: Registry, after: object):
        with pytest.raises(InvalidIdTypeError, match="after must be a campaign id"):
            registry.list(after=after)  # type: ignore[arg-type]
        with pytest.raises(InvalidIdTypeError):
            registry.count(after=after)  # type: ignore[arg-type]

    def test_lone_surrogate_after(self, registry: Registry):
        with pytest.raises(InvalidIdError, match="surrogate"):
            registry.list(after="a\ud800")

    def test_unknown_segment(self, registry: Registry):
        with pytest.raises(SegmentNotFoundError):
            registry.count(segment="nope")
        with pytest.raises(SegmentNotFoundError):
            registry.list(segment="nope", limit=1)
