"""The operator CLI, through click's test runner, on a real SQLite file.

Archive and stop return once the registered gates acknowledged (none here: at once).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from campaign_states import State, open_registry
from campaign_states.cli import app


def empty_store(tmp_path: Path) -> str:
    """The URL of an empty store: commands other than the creating ones refuse a missing one."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    open_registry(url).close()
    return url


url = pytest.fixture(name="url")(empty_store)


@pytest.fixture
def cs(url: str):
    """Run ``campaign-states --store URL ...`` in-process."""

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(app(), ["--store", url, *args], input=input, env=env)

    return run


def as_json(result: Result):
    assert 0 == result.exit_code, result.output
    return json.loads(result.stdout)


def listed_ids(result: Result) -> list[str]:
    """The ids `list --json` printed."""
    return [c["id"] for c in as_json(result)["campaigns"]]


def one_line_error(result: Result) -> str:
    """The error message, after checking it is one line and no traceback."""
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert 1 == len(lines), result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.fixture
def running(cs) -> str:
    """A segment ``seg-vip`` and a running campaign ``c-1`` on email and in_app targeting it."""
    assert 0 == cs("segment", "create", "seg-vip", "--name", "VIP").exit_code
    assert (
        0
        == cs(
            "create", "Black Friday", "-c", "email", "-c", "in_app", "-s", "seg-vip", "--id", "c-1"
        ).exit_code
    )
    assert 0 == cs("resume", "c-1").exit_code
    return "c-1"


class TestStoreSelection:
    """The store is --store, else CAMPAIGN_STATES_URL, else campaigns.db in the working dir."""

    def test_env_var_names_the_store(self, tmp_path: Path):
        db = tmp_path / "env.db"
        result = CliRunner().invoke(
            app(),
            ["create", "x", "-c", "sms", "--id", "c-env"],
            env={"CAMPAIGN_STATES_URL": f"sqlite:///{db}"},
        )
        assert 0 == result.exit_code, result.output
        with open_registry(f"sqlite:///{db}") as reg:
            assert "c-env" == reg.get("c-env").id

    def test_default_is_campaigns_db_in_the_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("CAMPAIGN_STATES_URL", raising=False)
        result = CliRunner().invoke(app(), ["create", "x", "-c", "sms", "--id", "c-default"])
        assert 0 == result.exit_code, result.output
        assert (tmp_path / "campaigns.db").exists()

    def test_bad_url_is_a_usage_error(self):
        result = CliRunner().invoke(app(), ["--store", "mysql://x", "list"])
        assert 2 == result.exit_code
        assert "Unknown store URL" in one_line_error(result)


class TestCreateAndList:
    """create makes a stopped campaign; list filters and hides archived ones by default."""

    def test_create_json(self, cs):
        cs("segment", "create", "seg-a")
        got = as_json(
            cs(
                "create",
                "Promo",
                "-c",
                "push",
                "-s",
                "seg-a",
                "--content",
                "Hi",
                "--id",
                "c-9",
                "--json",
            )
        )
        assert {
            "id": "c-9",
            "name": "Promo",
            "state": "active_stopped",
            "channels": ["push"],
            "segments": ["seg-a"],
            "content": "Hi",
        } == {k: got[k] for k in ("id", "name", "state", "channels", "segments", "content")}

    def test_create_prints_the_id(self, cs):
        result = cs("create", "Promo", "-c", "sms")
        assert 0 == result.exit_code
        assert "Created campaign c-" in result.stdout

    def test_unknown_channel_is_a_usage_error(self, cs):
        result = cs("create", "Promo", "-c", "fax")
        assert 2 == result.exit_code
        assert "'fax' is not one of" in result.stderr

    def test_unknown_segment_is_refused(self, cs):
        result = cs("create", "Promo", "-c", "sms", "-s", "nope")
        assert 1 == result.exit_code
        assert "Segment 'nope' does not exist: create it first." in one_line_error(result)

    def test_list_filters(self, cs, running):
        cs("create", "Other", "-c", "sms", "--id", "c-2")
        assert ["c-1", "c-2"] == listed_ids(cs("list", "--json"))
        assert ["c-2"] == listed_ids(cs("list", "--state", "active_stopped", "--json"))
        assert ["c-1"] == listed_ids(cs("list", "--segment", "seg-vip", "--json"))

    def test_archived_hidden_unless_asked(self, cs, running):
        assert 0 == cs("archive", running).exit_code
        assert [] == listed_ids(cs("list", "--json"))
        assert ["c-1"] == listed_ids(cs("list", "--archived", "--json"))
        assert ["c-1"] == listed_ids(cs("list", "--state", "archived", "--json"))
        assert "--archived shows them" in cs("list").stdout

    def test_table_shows_names_verbatim(self, cs):
        """Rich markup in user data is printed as typed, not interpreted."""
        cs("create", "[red]Sale[/red]", "-c", "sms", "--id", "c-m")
        assert "[red]Sale[/red]" in cs("list").stdout


class TestShowAndHistory:
    """show gives state, channels, segments, results and recent history; history lists all."""

    def test_show_json(self, cs, running):
        got = as_json(cs("show", running, "--json"))
        assert "active_running" == got["state"]
        assert [{"id": "seg-vip", "name": "VIP", "state": "active", "version": 1}] == got[
            "segments"
        ]
        assert {"delivered": {}, "impressions": 0, "total": 0} == got["results"]
        assert ["create", "resume"] == [h["trigger"] for h in got["history"]]

    def test_show_table(self, cs, running):
        out = cs("show", running).stdout
        assert "active_running" in out
        assert "seg-vip (active)" in out

    def test_history_records_actor(self, cs, running):
        cs("--actor", "ops@example.com", "stop", running)
        entries = as_json(cs("history", running, "--json"))
        assert [
            ("create", None, "active_stopped"),
            ("resume", "active_stopped", "active_running"),
            ("stop", "active_running", "active_stopped"),
        ] == [(h["trigger"], h["from"], h["to"]) for h in entries]
        assert "ops@example.com" == entries[-1]["actor"]
        assert 1 == len(as_json(cs("history", running, "--limit", "1", "--json")))

    def test_not_found(self, cs):
        result = cs("show", "nope")
        assert 1 == result.exit_code
        assert "Error: Campaign 'nope' does not exist." == one_line_error(result)

    @pytest.mark.parametrize("bad", ["", "x" * 200, "bad\x07id", " padded"])
    def test_malformed_id_is_a_usage_error(self, cs, bad):
        result = cs("history", bad)
        assert 2 == result.exit_code
        assert "campaign id" in one_line_error(result)


class TestTriggers:
    """archive, unarchive, stop, resume: one id prints a line, several a per-id table."""

    def test_archive_then_retry_then_refused_resume(self, cs, running):
        first = cs("archive", running)
        assert 0 == first.exit_code
        assert "Archived c-1 (active_running -> archived)" in first.stdout
        assert "no gate admits it" in first.stdout
        again = cs("archive", running)
        assert (0, "c-1 is already archived: nothing to do.\n") == (again.exit_code, again.stdout)
        refused = cs("resume", running)
        assert 1 == refused.exit_code
        assert "unarchive it before you resume it" in one_line_error(refused)
        unarchived = as_json(cs("unarchive", running, "--json"))["outcomes"]["c-1"]
        assert ("archived", "active_stopped") == (unarchived["from"], unarchived["state"])

    def test_bulk_reports_each_id_and_exits_1_on_a_miss(self, cs, running):
        cs("create", "Two", "-c", "sms", "--id", "c-2")
        result = cs("resume", "c-1", "c-2", "c-2", "nope", "--json")
        assert 1 == result.exit_code
        got = json.loads(result.stdout)["outcomes"]
        assert {"c-1": "unchanged", "c-2": "changed", "nope": "not_found"} == {
            k: v["outcome"] for k, v in got.items()
        }
        assert "1 of 3 campaign(s) could not be resumed" in one_line_error(result)

    def test_bulk_table(self, cs, running):
        result = cs("stop", "c-1", "nope")
        assert 1 == result.exit_code
        assert "no such campaign" in result.stdout
        assert "1 changed, 1 not found" in result.stdout

    def test_refused_reason_in_table(self, cs, running):
        cs("create", "Two", "-c", "sms", "--id", "c-2")
        cs("archive", "c-2")
        result = cs("resume", "c-1", "c-2")
        assert 1 == result.exit_code
        assert "unarchive it before you resume it" in result.stdout
        assert "1 unchanged, 1 refused" in result.stdout

    def test_bulk_all_good_exits_0(self, cs):
        cs("create", "One", "-c", "sms", "--id", "c-1")
        cs("create", "Two", "-c", "sms", "--id", "c-2")
        result = cs("resume", "c-1", "c-2")
        assert 0 == result.exit_code
        assert "2 changed" in result.stdout


class TestEdit:
    """edit changes fields, refuses archived campaigns, and needs something to change."""

    def test_edit(self, cs, running):
        got = as_json(
            cs("edit", running, "--name", "Cyber Monday", "-c", "push", "--no-segments", "--json")
        )
        assert ("Cyber Monday", ["push"], []) == (got["name"], got["channels"], got["segments"])

    def test_nothing_to_change_is_usage(self, cs, running):
        assert 2 == cs("edit", running).exit_code

    def test_archived_is_read_only(self, cs, running):
        cs("archive", running)
        result = cs("edit", running, "--content", "x")
        assert 1 == result.exit_code
        assert "is archived: unarchive it before you edit it." in one_line_error(result)


class TestSegments:
    """segment archive previews its cascade, asks first, and archives atomically."""

    def test_dry_run_lists_and_changes_nothing(self, cs, running):
        got = as_json(cs("segment", "archive", "seg-vip", "--dry-run", "--json"))
        assert ["c-1"] == [c["id"] for c in got["campaigns"]]
        out = cs("segment", "archive", "seg-vip", "--dry-run").stdout
        assert "would archive 1 campaign(s)" in out
        assert "c-1" in out
        assert "active" == as_json(cs("segment", "show", "seg-vip", "--json"))["state"]
        assert "active_running" == as_json(cs("show", running, "--json"))["state"]

    def test_declined_confirmation_changes_nothing(self, cs, running):
        result = cs("segment", "archive", "seg-vip", input="n\n")
        assert 1 == result.exit_code
        assert "c-1" in result.stdout
        assert "active_running" == as_json(cs("show", running, "--json"))["state"]

    def test_confirmed_archive_cascades_then_restore(self, cs, running):
        result = cs("segment", "archive", "seg-vip", input="y\n")
        assert 0 == result.exit_code, result.output
        assert "Archived segment seg-vip and 1 campaign(s)" in result.stdout
        shown = as_json(cs("segment", "show", "seg-vip", "--json"))
        assert ("archived", ["archived"]) == (
            shown["state"],
            [c["state"] for c in shown["campaigns"]],
        )
        assert "segment:seg-vip" == as_json(cs("history", running, "--json"))[-1]["cause"]
        # Unarchived alone, the campaign stays archived; --restore-campaigns brings it back.
        restored = as_json(cs("segment", "unarchive", "seg-vip", "--restore-campaigns", "--json"))
        assert ["c-1"] == restored["restored"]
        assert "active_stopped" == as_json(cs("show", running, "--json"))["state"]

    def test_resume_refused_while_segment_archived(self, cs, running, url):
        cs("stop", running)
        with open_registry(url) as reg:
            reg.archive_segment("seg-vip")
            reg.unarchive(running)
            assert State.ACTIVE_STOPPED == reg.get(running).state
        result = cs("resume", running)
        assert 1 == result.exit_code
        assert "targets archived segment(s) 'seg-vip'" in one_line_error(result)

    def test_list_and_yes(self, cs):
        cs("segment", "create", "seg-empty")
        assert ["seg-empty"] == [s["id"] for s in as_json(cs("segment", "list", "--json"))]
        result = cs("segment", "archive", "seg-empty", "--yes")
        assert 0 == result.exit_code
        assert "no campaign" in result.stdout

    def test_unknown_segment(self, cs):
        result = cs("segment", "show", "nope")
        assert 1 == result.exit_code
        assert "Segment 'nope' does not exist" in one_line_error(result)


class TestStoreErrors:
    """A broken store is a one-line message, never a traceback."""

    def test_file_that_is_not_a_database(self, tmp_path: Path):
        db = tmp_path / "junk.db"
        db.write_bytes(b"this is not a database" * 200)
        result = CliRunner().invoke(app(), ["--store", f"sqlite:///{db}", "list"])
        assert 1 == result.exit_code
        one_line_error(result)

    def test_foreign_sqlite_database(self, tmp_path: Path):
        db = tmp_path / "other.db"
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE campaigns (x)")
        result = CliRunner().invoke(app(), ["--store", f"sqlite:///{db}", "list"])
        assert 1 == result.exit_code
        one_line_error(result)


class TestGateCheck:
    """gate check prints the gate's decision and reason: exit 0 admitted, 1 denied."""

    def test_running_is_admitted(self, cs, running):
        got = as_json(cs("gate", "check", running, "--channel", "email", "--json"))
        expected = {
            "campaign_id": "c-1",
            "channel": "email",
            "kind": "message",
            "admitted": True,
            "reason": "running",
            "version": 2,
        }
        assert expected == got
        out = cs("gate", "check", running, "-c", "email").stdout
        assert "admitted: running" in out

    def test_impression(self, cs, running):
        got = as_json(cs("gate", "check", running, "-c", "in_app", "--impression", "--json"))
        assert ("in_app_impression", True) == (got["kind"], got["admitted"])

    @pytest.mark.parametrize(
        ("campaign", "channel", "reason"),
        [
            ("c-1", "sms", "channel_not_enabled"),
            ("c-2", "sms", "stopped"),
            ("nope", "sms", "unknown_campaign"),
        ],
    )
    def test_denials(self, cs, running, campaign, channel, reason):
        cs("create", "Stopped", "-c", "sms", "--id", "c-2")
        result = cs("gate", "check", campaign, "-c", channel, "--json")
        assert (1, reason, False) == (
            result.exit_code,
            json.loads(result.stdout)["reason"],
            json.loads(result.stdout)["admitted"],
        )
        assert f"denied: {reason}" in cs("gate", "check", campaign, "-c", channel).stdout

    def test_archived_is_denied(self, cs, running):
        cs("archive", running)
        result = cs("gate", "check", running, "-c", "email")
        assert 1 == result.exit_code
        assert "denied: archived" in result.stdout

    def test_unknown_channel_is_usage(self, cs, running):
        assert 2 == cs("gate", "check", running, "-c", "fax").exit_code


class TestUnreachableStores:
    """Unreachable or read-only stores are one-line messages with exit 1."""

    def test_postgres_down(self):
        result = CliRunner().invoke(app(), ["--store", "postgresql://nobody@127.0.0.1:1/x", "list"])
        assert 1 == result.exit_code
        assert "cannot be reached" in one_line_error(result)

    def test_read_only_store_refuses_writes(self, cs, url):
        cs("create", "x", "-c", "sms", "--id", "c-1")
        result = CliRunner().invoke(
            app(), ["--store", f"{url}?mode=ro", "edit", "c-1", "--name", "y"]
        )
        assert 1 == result.exit_code
        assert "read-only" in one_line_error(result)
        listed = CliRunner().invoke(app(), ["--store", f"{url}?mode=ro", "list", "--json"])
        assert ["c-1"] == listed_ids(listed)
