"""`DeliveryGate.filter` never raises, and its fast paths read what the key reads."""

from __future__ import annotations

import builtins
import logging
import operator
from collections.abc import Iterator
from typing import Any

import pytest
from race.faults import make_registry

from campaign_states import FakeClock
from delivery_gate import DecisionCounter, DeliveryGate, Reason, _filter


@pytest.fixture
def gate() -> Iterator[DeliveryGate]:
    reg = make_registry("memory", None, FakeClock())
    for cid in ("c-1", "c-2"):
        reg.create_campaign(name="c", channels={"email"}, campaign_id=cid)
        reg.resume(cid)
    reg.create_campaign(name="stopped", channels={"email"}, campaign_id="c-stopped")
    g = DeliveryGate(reg, background_refresh=False)
    yield g
    g.close()


@pytest.fixture(params=["fast", "observed"])
def any_gate(request: pytest.FixtureRequest, gate: DeliveryGate) -> DeliveryGate:
    """The gate on its fast path, and with an ``on_decision`` hook (the per-item path)."""
    if request.param == "observed":
        gate._on_decision = lambda *args: None
    return gate


def _raising_after(items: list[Any], n: int) -> Iterator[Any]:
    yield from items[:n]
    raise RuntimeError("queue connection lost")


def never_raises(gate: DeliveryGate, batch: object, **kwargs: Any) -> tuple[list[Any], list[Any]]:
    """filter(batch) must return a pair of lists, whatever ``batch`` is."""
    try:
        result = gate.filter(batch, **kwargs)  # type: ignore[arg-type]
    except Exception as e:
        raise AssertionError(f"filter({batch!r}) raised {e!r}") from e
    admitted, denied = result
    assert (list, list) == (type(admitted), type(denied))
    return result


class TestUndecidableBatches:
    """A batch that is not iterable is denied as one item: ``([], [batch])``."""

    @pytest.mark.parametrize("batch", [None, 5, 3.5, object()])
    def test_not_iterable_is_denied_whole(self, any_gate: DeliveryGate, batch: object):
        assert ([], [batch]) == never_raises(any_gate, batch)

    def test_not_iterable_with_a_key(self, gate: DeliveryGate):
        assert ([], [None]) == never_raises(gate, None, key=operator.itemgetter(0, 1))

    def test_iter_raising_is_denied_whole(self, gate: DeliveryGate):
        class Refuses:
            def __iter__(self) -> Iterator[Any]:
                raise OSError("closed")

        batch = Refuses()
        assert ([], [batch]) == never_raises(gate, batch)

    def test_the_denial_is_observed(self):
        reg = make_registry("memory", None, FakeClock())
        counter = DecisionCounter()
        with DeliveryGate(reg, on_decision=counter, background_refresh=False) as gate:
            assert ([], [None]) == never_raises(gate, None)
        assert {Reason.INVALID_REQUEST: 1} == dict(counter.counts())

    def test_the_denial_is_logged(self, gate: DeliveryGate, caplog: pytest.LogCaptureFixture):
        with caplog.at_level(logging.WARNING, logger="delivery_gate"):
            never_raises(gate, None)
        assert "not iterable" in caplog.text

    def test_broken_variant_is_caught(self, gate: DeliveryGate, monkeypatch: pytest.MonkeyPatch):
        """The check fails on a filter that iterates the batch unguarded, as before the fix."""
        monkeypatch.setattr("delivery_gate._gate.read_batch", list)
        with pytest.raises(AssertionError, match="raised TypeError"):
            never_raises(gate, None)


class TestIteratorRaisingPartWay:
    """Items read before the iterator raised are decided; nothing more is read; no raise."""

    def test_items_read_are_decided(self, any_gate: DeliveryGate):
        items = [("c-1", "email"), ("c-stopped", "email"), ("c-2", "email"), ("c-1", "sms")]
        result = never_raises(any_gate, _raising_after(items, 3))
        assert ([("c-1", "email"), ("c-2", "email")], [("c-stopped", "email")]) == result

    def test_raising_at_once_decides_nothing(self, any_gate: DeliveryGate):
        assert ([], []) == never_raises(any_gate, _raising_after([("c-1", "email")], 0))

    def test_with_a_key(self, gate: DeliveryGate):
        items = [{"campaign_id": "c-1", "channel": "email"}] * 2
        key = operator.itemgetter("campaign_id", "channel")
        assert (items[:1], []) == never_raises(gate, _raising_after(items, 1), key=key)

    def test_the_error_is_logged(self, gate: DeliveryGate, caplog: pytest.LogCaptureFixture):
        with caplog.at_level(logging.WARNING, logger="delivery_gate"):
            never_raises(gate, _raising_after([("c-1", "email")], 1))
        assert "raised after 1 items" in caplog.text
        assert "queue connection lost" in caplog.text

    def test_broken_variant_is_caught(self, gate: DeliveryGate, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setattr("delivery_gate._gate.read_batch", list)
        with pytest.raises(AssertionError, match="raised RuntimeError"):
            never_raises(gate, _raising_after([("c-1", "email")], 1))


class TestBadItemsAndKeys:
    """Items or keys that give no (campaign_id, channel) pair are denied, never raised."""

    @pytest.mark.parametrize(
        "batch",
        [
            [None, 5, "ab", ("c-1",), ("c-1", "email", "x"), (["unhashable"], "email")],
            "a string batch",
            {"c-1": "email"},
        ],
    )
    def test_odd_items(self, any_gate: DeliveryGate, batch: object):
        admitted, _ = never_raises(any_gate, batch)
        assert all(a in (("c-1", "email", "x"),) for a in admitted)  # itemgetter(0, 1) reads it

    @pytest.mark.parametrize("key", ["campaign_id", 5, lambda m: 1 / 0, operator.attrgetter("x")])
    def test_bad_keys(self, any_gate: DeliveryGate, key: object):
        items = [("c-1", "email")]
        assert ([], items) == never_raises(any_gate, items, key=key)


# "campaign_id" with a FULLWIDTH LATIN SMALL LETTER C (U+FF43) for its first letter.
FULLWIDTH_CID = "\uff43ampaign_id"


class _Odd:
    """An item whose fullwidth-named attribute differs from its NFKC-normalised one."""

    def __init__(self, plain: str, fullwidth: str) -> None:
        self.campaign_id = plain
        setattr(self, FULLWIDTH_CID, fullwidth)
        self.channel = "email"


class TestFastPathReadsWhatTheKeyReads:
    """Every key shape decides each item as ``check(*key(item))`` does."""

    # Source code normalises the fullwidth name to "campaign_id"; attrgetter does not.
    FULLWIDTH = operator.attrgetter(FULLWIDTH_CID, "channel")

    def test_nfkc_identifier(self, gate: DeliveryGate):
        admitted_one, denied_one = _Odd("c-stopped", "c-1"), _Odd("c-1", "c-stopped")
        batch = [admitted_one, denied_one]
        assert ([admitted_one], [denied_one]) == gate.filter(batch, key=self.FULLWIDTH)

    @pytest.mark.parametrize(
        "key",
        [
            None,
            operator.itemgetter(0, 1),
            operator.itemgetter(1, 0),
            operator.attrgetter("campaign_id", "channel"),
            operator.attrgetter("channel", "campaign_id"),
            operator.itemgetter("campaign_id", "channel"),
            operator.itemgetter("cid", "ch"),
            FULLWIDTH,
        ],
    )
    def test_every_shape_matches_check(self, gate: DeliveryGate, key: Any):
        class Item(dict):  # type: ignore[type-arg]
            """Readable by index, by key and by attribute, each giving its own answer."""

            def __init__(self, cid: str, ch: str) -> None:
                super().__init__(campaign_id=cid, channel=ch, cid=ch, ch=cid)
                self.campaign_id, self.channel = ch, cid
                setattr(self, FULLWIDTH_CID, cid)
                self._pair = (cid, ch)

            def __getitem__(self, k: Any) -> Any:
                return self._pair[k] if isinstance(k, int) else super().__getitem__(k)

        cids = ["c-1", "c-2", "c-stopped", "nope", "email"]
        chans = ["email", "sms", "c-1"]
        batch = [Item(c, h) for c in cids for h in chans]
        read = key or operator.itemgetter(0, 1)
        expected = (
            [m for m in batch if gate.check(*read(m)).admitted],
            [m for m in batch if not gate.check(*read(m)).admitted],
        )
        assert expected == gate.filter(batch, key=key)

    def test_no_source_is_compiled(self, monkeypatch: pytest.MonkeyPatch):
        calls: list[str] = []
        real_exec, real_compile = builtins.exec, builtins.compile

        def spy_exec(*args: Any, **kwargs: Any) -> Any:
            calls.append("exec")
            return real_exec(*args, **kwargs)

        def spy_compile(*args: Any, **kwargs: Any) -> Any:
            calls.append("compile")
            return real_compile(*args, **kwargs)

        monkeypatch.setattr(builtins, "exec", spy_exec)
        monkeypatch.setattr(builtins, "compile", spy_compile)
        for key in (operator.attrgetter("a_new_name", "another"), operator.itemgetter(7, 8)):
            _filter.split_function(key)
        monkeypatch.undo()
        assert [] == calls
