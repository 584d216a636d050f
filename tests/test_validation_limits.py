"""Bad text refused at validation on every store: lone surrogates, NUL, oversize; bad results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from campaign_states import Channel, Delivery, Emission, Registry, State, open_registry
from campaign_states._validation import ACTOR_LIMIT, CONTENT_LIMIT, NAME_LIMIT
from campaign_states.exceptions import (
    InvalidChannelError,
    InvalidIdError,
    InvalidSettingsError,
    InvalidTextError,
    InvalidValueError,
    TextTooLongError,
)
from delivery_gate import DeliveryGate, Reason

SURROGATES = ["\ud800", "a\udcffb", "x\udfff"]


def _state_of(registry: Registry) -> tuple[object, ...]:
    """Everything a refused call must leave as it was."""
    return (
        [(c.id, c.name, c.content, c.version) for c in registry.list()],
        [(s.id, s.name) for s in registry.segments()],
        [len(registry.history(c.id)) for c in registry.list()],
        [registry.results(c.id) for c in registry.list()],
    )


@pytest.fixture
def running(registry: Registry) -> str:
    registry.create_segment("seg")
    registry.create_campaign(name="n", channels=["email", "in_app"], campaign_id="c")
    registry.resume("c")
    return "c"


class TestSurrogatesAndNul:
    """Lone surrogates and NUL are typed errors before any store sees them (every store)."""

    @pytest.mark.parametrize("bad", SURROGATES)
    def test_ids(self, registry, running, bad):
        before = _state_of(registry)
        for call in (
            lambda: registry.create_campaign(name="n", channels=["email"], campaign_id=bad),
            lambda: registry.create_segment(bad),
            lambda: registry.get(bad),
            lambda: registry.archive(bad),
            lambda: registry.archive_many(["c", bad]),
            lambda: registry.edit("c", segments=[bad]),
            lambda: Delivery(campaign_id=bad, channel="email"),
        ):
            with pytest.raises(InvalidIdError):
                call()
        assert before == _state_of(registry)

    @pytest.mark.parametrize("bad", [*SURROGATES, "nul\x00inside", "\x00"])
    def test_text(self, registry, running, bad):
        before = _state_of(registry)
        for call in (
            lambda: registry.create_campaign(name=bad, channels=["email"]),
            lambda: registry.create_campaign(name="n", content=bad, channels=["email"]),
            lambda: registry.create_campaign(name="n", channels=["email"], actor=bad),
            lambda: registry.create_segment("s2", name=bad),
            lambda: registry.edit("c", name=bad),
            lambda: registry.edit("c", content=bad),
            lambda: registry.archive("c", actor=bad),
            lambda: registry.stop_many(["c"], actor=bad),
            lambda: registry.archive_segment("seg", actor=bad),
        ):
            with pytest.raises(InvalidTextError):
                call()
        assert before == _state_of(registry)
        assert State.ACTIVE_RUNNING is registry.get("c").state

    def test_ordinary_text_is_kept(self, registry):
        """Newlines, tabs, emoji and non-Latin scripts are content, not errors."""
        text = "Hello\n\tWorld 👋 Привет 你好 \u200b"
        c = registry.create_campaign(name="Ünïcode 👋", content=text, channels=["email"])
        assert text == registry.get(c.id).content

    @pytest.mark.parametrize("bad", ["\ud800", "a\udcffb", "c\x00"])
    def test_gate_denies_invalid_request(self, registry, running, bad):
        with DeliveryGate(registry, background_refresh=False) as gate:
            assert Reason.INVALID_REQUEST is gate.check(bad, "email").reason
            assert gate.check("c", "email").admitted

    def test_broken_variant_is_caught(self, tmp_path, monkeypatch):
        """Without the surrogate rule, SQLite raises a raw UnicodeEncodeError: the typed
        check above is what stands between a caller and that."""
        from campaign_states import _validation

        monkeypatch.setattr(_validation, "_UNSTORABLE", _validation.re.compile("\x00").search)
        with (
            open_registry(f"sqlite:///{tmp_path / 'x.db'}") as reg,
            pytest.raises(UnicodeEncodeError),
        ):
            reg.create_campaign(name="\ud800", channels=["email"])


class TestLimits:
    """Size limits: documented defaults, configurable, checked before any store work."""

    def test_defaults(self):
        assert (200, 128 * 1024, 254) == (NAME_LIMIT, CONTENT_LIMIT, ACTOR_LIMIT)
        reg = open_registry()
        assert (NAME_LIMIT, CONTENT_LIMIT, ACTOR_LIMIT) == (
            reg.name_limit,
            reg.content_limit,
            reg.actor_limit,
        )

    def test_at_the_limit_is_accepted(self, registry):
        c = registry.create_campaign(
            name="n" * NAME_LIMIT,
            content="x" * CONTENT_LIMIT,
            channels=["email"],
            actor="a" * ACTOR_LIMIT,
        )
        assert CONTENT_LIMIT == len(registry.get(c.id).content)

    @pytest.mark.parametrize(
        ("field", "value", "option"),
        [
            ("name", "n" * (NAME_LIMIT + 1), "name_limit"),
            # Bytes, not characters: 2 bytes each in UTF-8.
            ("content", "é" * (CONTENT_LIMIT // 2 + 1), "content_limit"),
            ("actor", "a" * (ACTOR_LIMIT + 1), "actor_limit"),
        ],
    )
    def test_over_the_limit_is_refused(self, registry, running, field, value, option):
        before = _state_of(registry)
        kwargs = {"name": "n", "channels": ["email"], field: value}
        with pytest.raises(TextTooLongError) as info:
            registry.create_campaign(**kwargs)
        assert (field, option) == (info.value.field, info.value.option)
        assert option in str(info.value)
        if field != "actor":
            with pytest.raises(TextTooLongError):
                registry.edit("c", **{field: value})
        assert before == _state_of(registry)

    def test_configurable(self, tmp_path):
        reg = open_registry(
            f"sqlite:///{tmp_path / 'x.db'}", name_limit=5, content_limit=10, actor_limit=3
        )
        try:
            reg.create_campaign(name="12345", content="0123456789", channels=["sms"], actor="abc")
            with pytest.raises(TextTooLongError, match="name_limit"):
                reg.create_campaign(name="123456", channels=["sms"])
            with pytest.raises(TextTooLongError, match="content_limit"):
                reg.create_campaign(name="n", content="é" * 6, channels=["sms"])
            with pytest.raises(TextTooLongError, match="name_limit"):
                reg.create_segment("s", name="123456")
            with pytest.raises(TextTooLongError, match="actor_limit"):
                reg.create_campaign(name="n", channels=["sms"], actor="abcd")
        finally:
            reg.close()

    @pytest.mark.parametrize("bad", [0, -1, True, 1.5, "10", None])
    def test_bad_limits_are_refused_before_the_store_opens(self, tmp_path, bad):
        path = tmp_path / "never.db"
        for option in ("name_limit", "content_limit", "actor_limit"):
            with pytest.raises(InvalidSettingsError, match=option):
                open_registry(f"sqlite:///{path}", **{option: bad})
        assert not path.exists()

    def test_refused_before_any_store_work(self, registry, monkeypatch):
        """A 400 MB content never reaches the store: the check runs before the write."""

        def no_write():
            raise AssertionError("the store was asked to write")

        monkeypatch.setattr(registry.store, "write", no_write)
        with pytest.raises(TextTooLongError):
            registry.create_campaign(name="n", content="x" * (400 * 2**20), channels=["email"])


class TestRecordResults:
    """record_results refuses what the gate calls INVALID_REQUEST; nothing is recorded."""

    def test_channel_the_campaign_does_not_have(self, registry, running):
        with pytest.raises(InvalidChannelError, match="does not deliver on sms"):
            registry.record_results(
                [
                    Delivery(campaign_id="c", channel="email"),
                    Delivery(campaign_id="c", channel="sms"),
                ]
            )
        assert 0 == registry.results("c").total

    def test_impression_on_another_channel(self, registry, running):
        with pytest.raises(InvalidValueError, match="in_app channel only"):
            registry.record_results(
                [Delivery(campaign_id="c", channel="email", kind=Emission.IN_APP_IMPRESSION)]
            )
        assert 0 == registry.results("c").total

    def test_valid_deliveries_are_recorded(self, registry, running):
        registry.record_results(
            [
                Delivery(campaign_id="c", channel=Channel.EMAIL, count=2),
                Delivery(campaign_id="c", channel="in_app", kind=Emission.IN_APP_IMPRESSION),
                Delivery(campaign_id="c", channel="in_app"),
            ]
        )
        assert 4 == registry.results("c").total

    def test_the_gate_agrees(self, registry, running):
        """What the registry refuses, the gate denies as INVALID_REQUEST or not enabled."""
        with DeliveryGate(registry, background_refresh=False) as gate:
            assert (
                Reason.INVALID_REQUEST
                is gate.check("c", "email", Emission.IN_APP_IMPRESSION).reason
            )
            assert Reason.CHANNEL_NOT_ENABLED is gate.check("c", "sms").reason


class TestCli:
    """Bytes that are not UTF-8 on the command line: a clear error, exit 2, no traceback."""

    def test_non_utf8_argv(self, tmp_path: Path):
        url = f"sqlite:///{tmp_path / 'c.db'}"
        open_registry(url).close()
        for args in ([b"show", b"\xff"], [b"create", b"\xff", b"-c", b"email"]):
            done = subprocess.run(
                [sys.executable.encode(), b"-m", b"campaign_states.cli", b"--store",
                 url.encode(), *args],
                capture_output=True, check=False, timeout=60,
                env={**os.environ, "PYTHONUTF8": "1"},
            )  # fmt: skip
            stderr = done.stderr.decode("utf-8", "replace")
            assert 2 == done.returncode, stderr
            assert "Traceback" not in stderr
            assert 1 == len(stderr.strip().splitlines()), stderr
            assert "surrogate" in stderr
