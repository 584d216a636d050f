"""No password in any repr, URL, error or CLI message; libpq key=value strings accepted."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from click.testing import CliRunner

from campaign_states import open_registry, open_store
from campaign_states._secrets import looks_like_conninfo, mask_secrets
from campaign_states.cli import app
from campaign_states.exceptions import CampaignStateError, InvalidSettingsError
from delivery_gate import DeliveryGate

SECRET = "s3cr3t-PW"


def _conninfo(dsn: str, password: str = SECRET) -> str:
    """The fixture's DSN as a libpq key=value string, with a password added."""
    import psycopg.conninfo

    parts = psycopg.conninfo.conninfo_to_dict(dsn)
    parts["password"] = password
    return psycopg.conninfo.make_conninfo(**parts)


def _with_password(dsn: str) -> str:
    # postgresql://postgres@host... -> postgresql://postgres:SECRET@host... (trust auth: the
    # server ignores it, so the store really opens).
    scheme, rest = dsn.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{SECRET}@{host}"


class TestMask:
    """The masking rules follow libpq's parsing of URLs and key=value strings."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("postgresql://u:pw@host/db", "postgresql://u:***@host/db"),
            ("postgres://:pw@h", "postgres://:***@h"),
            ("postgresql://u@h/db", "postgresql://u@h/db"),
            ("postgresql://u:p:w?#x@h/db", "postgresql://u:***@h/db"),
            ("postgresql://u:pw@[::1/x", "postgresql://u:***@[::1/x"),
            ("postgresql://h/db?password=pw&sslmode=require", "postgresql://h/db?password=***&sslmode=require"),
            ("postgresql://h/db?sslmode=require&sslpassword=k", "postgresql://h/db?sslmode=require&sslpassword=***"),
            ("host=a password=pw dbname=x", "host=a password=*** dbname=x"),
            ("host=a password = 'p w\\' x' dbname=x", "host=a password = *** dbname=x"),
            ("password='unterminated", "password=***"),
            ("sslpassword=k host=x", "sslpassword=*** host=x"),
            ("host=x oauth_client_secret=k", "host=x oauth_client_secret=***"),
            ("memory://", "memory://"),
            ("sqlite:///a:b@c.db", "sqlite:///a:b@c.db"),
        ],
    )  # fmt: skip
    def test_masked(self, text, expected):
        assert expected == mask_secrets(text)

    def test_conninfo_is_recognised(self):
        assert looks_like_conninfo("host=db dbname=app")
        assert looks_like_conninfo("  dbname = app")
        assert not looks_like_conninfo("postgresql://h/db?x=1")
        assert not looks_like_conninfo("campaigns.db")

    def test_broken_variant_is_caught(self, monkeypatch):
        """The grep below would catch a store that showed its real URL."""
        from campaign_states import _secrets

        monkeypatch.setattr(_secrets, "_USERINFO", _secrets.re.compile(r"(?!x)x"))
        assert SECRET in _secrets.mask_secrets(f"postgresql://u:{SECRET}@h/db")


def _bad_urls() -> list[str]:
    return [
        f"postgresql://u:{SECRET}@[::1/x",
        f"postgresql://u:{SECRET}@127.0.0.1:5432/db?bogus=1",
        f"host=127.0.0.1 password={SECRET} bogus",
        f"host=127.0.0.1 password='{SECRET}",
        f"host=127.0.0.1 password={SECRET} secret-part",
        f"nosuch://u:{SECRET}@h/db",
        f"sqlite://u:{SECRET}@h/db",
        f"sqlite:///x.db?password={SECRET}",
    ]


class TestErrors:
    """A malformed URL is an InvalidSettingsError that never echoes the password."""

    @pytest.mark.parametrize("url", _bad_urls())
    def test_open_store(self, url):
        pytest.importorskip("psycopg")
        with pytest.raises(InvalidSettingsError) as info:
            open_store(url)
        assert SECRET not in str(info.value)
        assert SECRET not in repr(info.value)

    @pytest.mark.parametrize("url", _bad_urls())
    def test_cli_exit_2_no_traceback_no_password(self, url):
        pytest.importorskip("psycopg")
        result = CliRunner().invoke(app(), ["--store", url, "list"])
        assert 2 == result.exit_code, result.output
        assert "Traceback" not in result.output
        assert SECRET not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)

    def test_cli_in_a_real_process(self):
        """The installed entry point, as an operator runs it: stderr holds no password."""
        pytest.importorskip("psycopg")
        done = subprocess.run(
            [sys.executable, "-m", "campaign_states.cli", "--store",
             f"postgresql://u:{SECRET}@[::1/x", "list"],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert 2 == done.returncode
        assert "Traceback" not in done.stderr
        assert SECRET not in done.stdout + done.stderr
        assert "postgresql://u:***@[::1/x" in done.stderr

    def test_unreachable_server(self):
        """A connection error names the host and port, never the password."""
        pytest.importorskip("psycopg")
        with pytest.raises(CampaignStateError) as info:
            open_store(f"postgresql://u:{SECRET}@127.0.0.1:1/db", connect_timeout=2)
        assert SECRET not in str(info.value)


class TestLiveStore:
    """A store opened with a password: every repr, URL and log line shows it masked."""

    @pytest.fixture(params=["url", "conninfo"])
    def url(self, request, pg_dsn):
        return _with_password(pg_dsn) if request.param == "url" else _conninfo(pg_dsn)

    def test_everything_shown_is_masked(self, url, caplog):
        caplog.set_level(logging.DEBUG)
        gate = DeliveryGate.open(url, background_refresh=False)
        try:
            reg = gate.registry
            reg.create_campaign(name="n", channels=["email"], campaign_id="c")
            reg.resume("c")
            assert gate.refresh()
            assert gate.check("c", "email").admitted
            shown = [
                repr(gate), str(gate), reg.url, repr(reg), repr(reg.store), str(reg.store),
                reg.store.url, repr(gate.status()), repr(gate.check("c", "email")),
            ]  # fmt: skip
            for text in shown:
                assert SECRET not in text, text
            assert "***" in reg.url
            assert "***" in repr(gate)
        finally:
            gate.close()
        assert SECRET not in caplog.text

    def test_conninfo_is_accepted(self, pg_dsn):
        """The README's key=value form opens the same store as the URL."""
        with open_registry(_conninfo(pg_dsn)) as reg:
            reg.create_segment("s")
        with open_registry(pg_dsn) as reg:
            assert ["s"] == [s.id for s in reg.segments()]

    def test_cli_with_a_password(self, url):
        runner = CliRunner()
        created = runner.invoke(app(), ["--store", url, "create", "n", "-c", "email"])
        assert 0 == created.exit_code, created.output
        for args in (["list"], ["show", "nope"], ["archive", "nope"], ["list", "--json"]):
            result = runner.invoke(app(), ["--store", url, *args])
            assert SECRET not in result.output, (args, result.output)
