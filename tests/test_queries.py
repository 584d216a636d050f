"""Paged, filtered reads (`Registry.find_campaigns`, `event_log`, `results_many`): every
store selects and orders exactly what the reference semantics in `_queries` say.

Runs once per store kind through the `registry` fixture, like tests/test_registry.py.
"""

from __future__ import annotations

import pytest

from campaign_states import Channel, Delivery, Emission, Registry, State
from campaign_states._queries import (
    CampaignQuery,
    HistoryQuery,
    matches_campaign,
    matches_history,
)
from campaign_states.exceptions import (
    InvalidFieldError,
    InvalidIdError,
    InvalidValueError,
    SegmentNotFoundError,
)

RUN, STOP, ARCH = State.ACTIVE_RUNNING, State.ACTIVE_STOPPED, State.ARCHIVED
NAMES = ["Black Friday", "black friday 2", "CYBER Monday", "Ünïcode Ärchive", "<script>x"]


def populate(reg: Registry) -> None:
    """A dozen campaigns in every state, two segments, three actors, a cascade."""
    reg.create_segment("seg-a")
    reg.create_segment("seg-b")
    for i in range(12):
        reg.create_campaign(
            name=NAMES[i % len(NAMES)],
            channels=["email", "in_app"] if i % 2 else ["email"],
            segments=[["seg-a"], ["seg-b"], [], ["seg-a", "seg-b"]][i % 4],
            campaign_id=f"c-{i:02d}",
            actor=["ann", "bob", None][i % 3],
        )
        if i % 3 == 0:
            reg.resume(f"c-{i:02d}", actor="ann")
        if i % 3 == 1:
            reg.archive(f"c-{i:02d}", actor="bob")
    reg.archive_segment("seg-b", actor="carl")
    reg.edit("c-00", name="Renamed", actor="ann")


def all_history(reg: Registry) -> list:
    return sorted((e for c in reg.list() for e in reg.history(c.id)), key=lambda e: e.seq)


def pages(fetch, key):
    """Every page of a cursor-paged read, concatenated."""
    out, after = [], None
    for _ in range(1000):
        page = fetch(after)
        if not page:
            return out
        out.extend(page)
        after = key(page[-1])
    raise AssertionError("paging never ended")


CAMPAIGN_FILTERS = [
    {},
    {"states": [RUN, STOP]},
    {"states": ["archived"]},
    {"segment": "seg-a"},
    {"segment": "seg-b", "states": [ARCH]},
    {"text": "FRIDAY"},
    {"text": "c-0"},
    {"text": "ärchive"},  # non-ASCII letters compare exactly: no match for "Ä"
    {"text": "Ärchive"},
    {"text": "<script>"},
]


class TestFindCampaigns:
    """find_campaigns selects in the store what the reference predicate selects, by id."""

    @pytest.mark.parametrize("filters", CAMPAIGN_FILTERS, ids=repr)
    @pytest.mark.parametrize("limit", [1, 5, 50])
    def test_pages_match_reference(self, registry: Registry, filters, limit) -> None:
        populate(registry)
        _compare_campaigns(registry, filters, limit)

    def test_non_ascii_case_is_exact(self, registry: Registry) -> None:
        populate(registry)
        assert [] == registry.find_campaigns(text="ärchive")
        assert ["c-03", "c-08"] == [c.id for c in registry.find_campaigns(text="Ärchive")]

    def test_after_an_unknown_id_pages_from_there(self, registry: Registry) -> None:
        populate(registry)
        assert ["c-10", "c-11"] == [c.id for c in registry.find_campaigns(after="c-09z")]

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"states": ["nope"]}, InvalidValueError),
            ({"states": []}, InvalidValueError),
            ({"states": "archived"}, InvalidValueError),
            ({"limit": 0}, InvalidValueError),
            ({"limit": 1001}, InvalidValueError),
            ({"limit": True}, InvalidValueError),
            ({"text": ""}, InvalidValueError),
            ({"text": 5}, InvalidFieldError),
            ({"after": ""}, InvalidIdError),
            ({"segment": "a\x00"}, InvalidIdError),
            ({"segment": "missing"}, SegmentNotFoundError),
        ],
        ids=repr,
    )
    def test_bad_input_raises_typed(self, registry: Registry, kwargs, error) -> None:
        with pytest.raises(error):
            registry.find_campaigns(**kwargs)


HISTORY_FILTERS = [
    {},
    {"actor": "ann"},
    {"actor": "carl"},
    {"trigger": "archive"},
    {"trigger": "create", "actor": "bob"},
    {"campaign": "c-01"},
    {"campaign": "unknown"},
    {"trigger": "edit"},
]


class TestEventLog:
    """event_log pages the history of every campaign, filtered, in seq order either way."""

    @pytest.mark.parametrize("filters", HISTORY_FILTERS, ids=repr)
    @pytest.mark.parametrize("newest_first", [False, True])
    @pytest.mark.parametrize("limit", [1, 7, 1000])
    def test_pages_match_reference(self, registry: Registry, filters, newest_first, limit):
        populate(registry)
        _compare_history(registry, filters, newest_first, limit)

    def test_cascade_names_the_segment(self, registry: Registry) -> None:
        populate(registry)
        cascaded = registry.event_log(actor="carl")
        assert cascaded
        assert {"segment:seg-b"} == {e.cause for e in cascaded}

    def test_time_range(self, registry: Registry) -> None:
        populate(registry)
        entries = all_history(registry)
        mid = entries[len(entries) // 2].time
        before = registry.event_log(until=mid, limit=1000)
        since = registry.event_log(since=mid, limit=1000)
        assert entries == before + since
        assert all(e.time < mid for e in before)
        assert [] == registry.event_log(since=mid + 3600)

    def test_seqs_are_unique_so_paging_never_skips(self, registry: Registry) -> None:
        populate(registry)
        seqs = [e.seq for e in all_history(registry)]
        assert len(set(seqs)) == len(seqs)

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"trigger": "delete"}, InvalidValueError),
            ({"since": float("nan")}, InvalidValueError),
            ({"until": "yesterday"}, InvalidValueError),
            ({"after": -1}, InvalidValueError),
            ({"after": "5"}, InvalidValueError),
            ({"limit": 0}, InvalidValueError),
            ({"actor": 5}, InvalidFieldError),
            ({"newest_first": 1}, InvalidFieldError),
            ({"campaign": ""}, InvalidIdError),
        ],
        ids=repr,
    )
    def test_bad_input_raises_typed(self, registry: Registry, kwargs, error) -> None:
        with pytest.raises(error):
            registry.event_log(**kwargs)


class TestResultsMany:
    """results_many equals results() per id, in one read; unknown ids get empty results."""

    def test_matches_results(self, registry: Registry) -> None:
        populate(registry)
        registry.record_results(
            [
                Delivery(campaign_id="c-00", channel=Channel.EMAIL, count=3),
                Delivery(
                    campaign_id="c-01", channel=Channel.IN_APP, count=2,
                    kind=Emission.IN_APP_IMPRESSION,
                ),
            ]
        )  # fmt: skip
        ids = [f"c-{i:02d}" for i in range(12)]
        got = registry.results_many([*ids, "c-00", "nope"])
        assert {cid: registry.results(cid) for cid in ids} == {k: got[k] for k in ids}
        assert 0 == got["nope"].impressions
        assert {} == dict(got["nope"].delivered)


class TestTheCheckCatchesABrokenStore:
    """The paging comparison fails for a store that ignores the cursor or a filter."""

    def test_ignoring_after_is_caught(self, registry: Registry) -> None:
        populate(registry)
        store = registry.store
        real = store.find_campaigns

        def broken(q: CampaignQuery):
            return real(
                CampaignQuery(states=q.states, segment=q.segment, text=q.text, limit=q.limit)
            )

        store.find_campaigns = broken  # type: ignore[method-assign]
        with pytest.raises(AssertionError):
            _compare_campaigns(registry, {}, 5)

    def test_case_folding_non_ascii_is_caught(self, registry: Registry) -> None:
        populate(registry)
        store = registry.store
        real = store.find_campaigns

        def folding(q: CampaignQuery):
            return [
                c
                for c in real(CampaignQuery(states=q.states, after=q.after, limit=1000))
                if q.text is None or q.text.casefold() in (c.id + " " + c.name).casefold()
            ][: q.limit]

        store.find_campaigns = folding  # type: ignore[method-assign]
        with pytest.raises(AssertionError):
            _compare_campaigns(registry, {"text": "ärchive"}, 50)

    def test_wrong_history_order_is_caught(self, registry: Registry) -> None:
        populate(registry)
        store = registry.store
        real = store.query_history

        def ascending_always(q: HistoryQuery):
            entries = real(q)
            return sorted(entries, key=lambda e: e.seq)

        store.query_history = ascending_always  # type: ignore[method-assign]
        with pytest.raises(AssertionError):
            _compare_history(registry, {}, True, 1000)


def _compare_campaigns(registry: Registry, filters, limit) -> None:
    q = CampaignQuery(**filters, limit=limit)
    expected = [c for c in registry.list() if matches_campaign(q, c)]
    got = pages(
        lambda after: registry.find_campaigns(**filters, after=after, limit=limit),
        lambda c: c.id,
    )
    assert expected == got


def _compare_history(registry: Registry, filters, newest_first, limit) -> None:
    q = HistoryQuery(**filters, newest_first=newest_first)
    expected = [e for e in all_history(registry) if matches_history(q, e)]
    if newest_first:
        expected.reverse()
    got = pages(
        lambda after: registry.event_log(
            **filters, after=after, limit=limit, newest_first=newest_first
        ),
        lambda e: e.seq,
    )
    assert expected == got
