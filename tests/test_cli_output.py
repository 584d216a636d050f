"""What the CLI prints: control characters neutralised, one JSON shape per command, pages.

Archive and stop wait out the SQLite store's lease (about 0.55 s each): few of them here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner, Result
from test_cli import empty_store

from campaign_states import Campaign, Channel, State, open_registry
from campaign_states.cli import _base, _render, app

# What a terminal would obey: C0 (but the newline ending each line), DEL, C1, and the
# bidirectional overrides/isolates.
RAW_CONTROL = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)

EVIL_NAME = "\x1b[31mRED\x1b]0;pwned\x07\u202eevil"
EVIL_ACTOR = "\x1b[2Jops\x9b"
EVIL_CONTENT = "line1\nline2\x1b[5m"
EVIL_SEGMENT_NAME = "\x1b[1mVIP\x1b[0m"

Run = Callable[..., Result]


url = pytest.fixture(name="url")(empty_store)  # an empty store


@pytest.fixture
def cs(url: str) -> Run:
    def run(*args: str) -> Result:
        return CliRunner().invoke(app(), ["--store", url, "--actor", EVIL_ACTOR, *args])

    return run


def no_raw_controls(result: Result) -> str:
    """stdout and stderr hold no character a terminal would interpret; returns stdout."""
    for stream in (result.stdout, result.stderr):
        found = RAW_CONTROL.search(stream)
        assert found is None, f"raw {found.group()!r} printed: {stream!r}"
    return result.stdout


@pytest.fixture
def evil(cs: Run) -> str:
    """A segment and a running campaign whose name, content and actor hold escapes."""
    assert 0 == cs("segment", "create", "seg-1", "--name", EVIL_SEGMENT_NAME).exit_code
    made = cs(
        "create", EVIL_NAME, "-c", "email", "-s", "seg-1", "--content", EVIL_CONTENT, "--id", "c-1"
    )
    assert 0 == made.exit_code, made.output
    assert 0 == cs("resume", "c-1").exit_code
    return "c-1"


class TestControlCharacters:
    """Every command prints control characters from stored data as visible escapes."""

    COMMANDS: ClassVar[list[tuple[str, ...]]] = [
        ("list",),
        ("list", "--limit", "1"),
        ("show", "c-1"),
        ("history", "c-1"),
        ("segment", "list"),
        ("segment", "show", "seg-1"),
        ("segment", "archive", "seg-1", "--dry-run"),
        ("gate", "check", "c-1", "-c", "email"),
        ("stop", "c-1", "c-nope"),
        ("edit", "c-1", "--name", EVIL_NAME + "2"),
        ("create", EVIL_NAME, "-c", "sms"),
    ]

    @pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
    def test_nothing_raw(self, cs: Run, evil: str, args: tuple[str, ...]):
        result = cs(*args)
        assert result.exit_code in (0, 1), result.output
        no_raw_controls(result)

    def test_shown_as_escapes(self, cs: Run, evil: str):
        out = no_raw_controls(cs("show", "c-1"))
        assert "\\x1b[31mRED\\x1b]0;pwned\\x07\\u202eevil" in out
        assert "line1\\nline2\\x1b[5m" in out
        history = no_raw_controls(cs("history", "c-1"))
        assert "\\x1b[2Jops\\x9b" in history.replace("\n", "").replace(" ", "")

    def test_markup_is_not_interpreted(self, cs: Run):
        cs("create", "[red]x[/red]", "-c", "sms", "--id", "c-m")
        assert "[red]x[/red]" in cs("show", "c-m").stdout
        assert "No campaigns after ~[bold]z." in cs("list", "--after", "~[bold]z").stdout

    def test_error_messages(self, cs: Run, evil: str):
        """click echoes a bad option value; our errors may quote user input: both escaped."""
        for args in (
            ("list", "--state", "\x1b[31m"),
            ("show", "c-1\x1b"),
            ("list", "--after", "\x1b]0;x"),
        ):
            no_raw_controls(cs(*args))

    def test_json_escapes_them_itself(self, cs: Run, evil: str):
        result = cs("show", "c-1", "--json")
        no_raw_controls(result)
        assert EVIL_NAME == json.loads(result.stdout)["name"]  # the data, unchanged

    def test_broken_variant_is_caught(self, cs: Run, evil: str, monkeypatch: pytest.MonkeyPatch):
        """With `safe` a no-op (rich's markup escaping only), the check finds raw escapes."""
        monkeypatch.setattr(_render, "safe", str)
        with pytest.raises(AssertionError, match="raw"):
            no_raw_controls(cs("show", "c-1"))

    def test_safe(self):
        assert "a\\x1bb\\x9b\\u202e\\n\\t" == _render.safe("a\x1bb\x9b\u202e\n\t")
        assert "été 日本 ok" == _render.safe("été 日本 ok")


def keys(result: Result, exit_code: int = 0) -> set[str]:
    assert exit_code == result.exit_code, result.output
    return set(json.loads(result.stdout))


OUTCOME_KEYS = {"outcome", "from", "state", "reason"}
CAMPAIGN_KEYS = {
    "id",
    "name",
    "state",
    "channels",
    "segments",
    "content",
    "version",
    "archive_cause",
    "created_at",
}


class TestJsonShapes:
    """Each command's --json has one shape, lowercase values, and errors are JSON too."""

    def test_campaign_commands(self, cs: Run, evil: str):
        assert CAMPAIGN_KEYS == keys(cs("create", "x", "-c", "sms", "--id", "c-2", "--json"))
        assert CAMPAIGN_KEYS == keys(cs("edit", "c-2", "--name", "y", "--json"))
        assert CAMPAIGN_KEYS | {"results", "history"} == keys(cs("show", "c-1", "--json"))
        assert {"campaigns", "more", "next_after"} == keys(cs("list", "--json"))
        history = json.loads(cs("history", "c-1", "--json").stdout)
        assert {"seq", "time", "trigger", "from", "to", "actor", "cause", "version"} == set(
            history[0]
        )

    def test_one_id_and_several_have_one_shape(self, cs: Run, evil: str):
        cs("create", "x", "-c", "sms", "--id", "c-2")
        one = json.loads(cs("resume", "c-2", "--json").stdout)
        many = json.loads(cs("resume", "c-1", "c-2", "--json").stdout)
        assert {"outcomes", "seconds"} == set(one) == set(many)
        assert OUTCOME_KEYS == set(one["outcomes"]["c-2"]) == set(many["outcomes"]["c-1"])
        assert ("changed", "active_stopped", "active_running") == (
            one["outcomes"]["c-2"]["outcome"],
            one["outcomes"]["c-2"]["from"],
            one["outcomes"]["c-2"]["state"],
        )
        assert "unchanged" == many["outcomes"]["c-1"]["outcome"]

    def test_segment_commands(self, cs: Run, evil: str):
        assert {"id", "name", "state", "version"} == keys(
            cs("segment", "create", "seg-2", "--json")
        )
        assert {"id", "name", "state", "version", "campaigns"} == keys(
            cs("segment", "show", "seg-1", "--json")
        )
        listed = json.loads(cs("segment", "list", "--json").stdout)
        assert [{"id", "name", "state", "version"}] * 2 == [set(s) for s in listed]
        archive_keys = {"segment", "dry_run", "changed", "campaigns", "seconds"}
        dry = json.loads(cs("segment", "archive", "seg-1", "--dry-run", "--json").stdout)
        done = json.loads(cs("segment", "archive", "seg-1", "--yes", "--json").stdout)
        assert archive_keys == set(dry) == set(done)
        assert (True, False, None) == (dry["dry_run"], dry["changed"], dry["seconds"])
        assert (False, True) == (done["dry_run"], done["changed"])
        assert (
            ["c-1"] == [c["id"] for c in dry["campaigns"]] == [c["id"] for c in done["campaigns"]]
        )
        assert "archived" == done["campaigns"][0]["state"]
        assert {"segment", "changed", "restored"} == keys(
            cs("segment", "unarchive", "seg-1", "--json")
        )

    @pytest.mark.parametrize(
        ("campaign", "channel", "reason"),
        [
            ("c-1", "email", "running"),
            ("c-1", "sms", "channel_not_enabled"),
            ("nope", "email", "unknown_campaign"),
        ],
    )
    def test_gate_check_reason_is_lowercase(self, cs: Run, evil: str, campaign, channel, reason):
        result = cs("gate", "check", campaign, "-c", channel, "--json")
        got = json.loads(result.stdout)
        assert {"campaign_id", "channel", "kind", "admitted", "reason", "version"} == set(got)
        assert (reason, "message") == (got["reason"], got["kind"])
        assert f": {reason} (" in cs("gate", "check", campaign, "-c", channel).stdout

    def test_segment_archived_reason(self, cs: Run, evil: str):
        cs("segment", "archive", "seg-1", "--yes")
        got = json.loads(cs("gate", "check", "c-1", "-c", "email", "--json").stdout)
        assert "segment_archived" == got["reason"]


def json_error(result: Result, exit_code: int) -> dict[str, Any]:
    """stdout is one JSON document, an error object; the exit code is the usual one."""
    assert exit_code == result.exit_code, result.output
    got = json.loads(result.stdout)
    assert {"error"} == set(got), got
    assert {"type", "message", "exit_code"} == set(got["error"])
    assert exit_code == got["error"]["exit_code"]
    assert "Error: " in result.stderr  # still on stderr for people
    return dict(got["error"])


class TestJsonErrors:
    """Errors in --json mode are a JSON object on stdout, exit code unchanged."""

    def test_not_found(self, cs: Run):
        err = json_error(cs("show", "nope", "--json"), 1)
        assert ("CampaignNotFoundError", "Campaign 'nope' does not exist.") == (
            err["type"],
            err["message"],
        )

    def test_refused_transition(self, cs: Run, evil: str):
        cs("segment", "archive", "seg-1", "--yes")
        err = json_error(cs("resume", "c-1", "--json"), 1)
        assert err["type"].endswith("Error")

    def test_usage_errors(self, cs: Run):
        assert "UsageError" == json_error(cs("list", "--state", "bogus", "--json"), 2)["type"]
        assert "UsageError" == json_error(cs("list", "--json", "--all", "--limit", "3"), 2)["type"]
        assert "InvalidIdError" == json_error(cs("show", " x", "--json"), 2)["type"]

    def test_nested_group_prints_once(self, cs: Run):
        err = json_error(cs("segment", "show", "nope", "--json"), 1)
        assert "SegmentNotFoundError" == err["type"]

    def test_bulk_failure_is_one_document(self, cs: Run, evil: str):
        result = cs("stop", "c-1", "nope", "--json")
        assert 1 == result.exit_code
        got = json.loads(result.stdout)  # one document: the outcomes say what failed
        assert "not_found" == got["outcomes"]["nope"]["outcome"]

    def test_store_unreachable(self):
        result = CliRunner().invoke(
            app(), ["--store", "postgresql://nobody@127.0.0.1:1/x", "list", "--json"]
        )
        err = json_error(result, 1)
        assert ("StoreUnavailableError", True) == (
            err["type"],
            "cannot be reached" in err["message"],
        )

    def test_without_json_stdout_stays_empty(self, cs: Run):
        result = cs("show", "nope")
        assert (1, "") == (result.exit_code, result.stdout)

    def test_broken_variant_is_caught(self, cs: Run, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setattr(_base, "_json_mode", lambda ctx: False)
        with pytest.raises(json.JSONDecodeError):
            json_error(cs("show", "nope", "--json"), 1)


@pytest.fixture
def many(url: str) -> list[str]:
    """120 campaigns c-000..c-119, every tenth archived (written directly: fast)."""
    reg = open_registry(url)
    ids = [f"c-{i:03d}" for i in range(120)]
    with reg.store.write() as tx:
        first = tx.next_seq(len(ids))
        for i, cid in enumerate(ids):
            state = State.ARCHIVED if i % 10 == 0 else State.ACTIVE_STOPPED
            tx.insert_campaign(
                Campaign(
                    id=cid,
                    name=cid,
                    channels=frozenset({Channel.EMAIL}),
                    state=state,
                    seq=first + i,
                ),
                (),
            )
    reg.close()
    return ids


def rows(out: str) -> list[str]:
    return re.findall(r"\bc-\d{3}\b", out.split("more:", maxsplit=1)[0])


class TestListPages:
    """`list` prints 50 by default with a footer saying how many more and how to see them."""

    def test_default_page_and_footer(self, cs: Run, many: list[str]):
        visible = [c for i, c in enumerate(many) if i % 10]
        out = cs("list").stdout
        assert visible[:50] == sorted(set(rows(out)))
        assert f"{len(visible) - 50} more: --limit N, --after {visible[49]}, or --all" in out

    def test_after_and_limit(self, cs: Run, many: list[str]):
        out = cs("list", "--archived", "--limit", "7", "--after", "c-050").stdout
        assert many[51:58] == sorted(set(rows(out)))
        assert f"{120 - 58} more" in out

    def test_all(self, cs: Run, many: list[str]):
        out = cs("list", "--all", "--archived").stdout
        assert many == sorted(set(rows(out)))
        assert "more:" not in out

    def test_all_and_limit_exclude_each_other(self, cs: Run, many: list[str]):
        assert 2 == cs("list", "--all", "--limit", "5").exit_code

    def test_json_walk(self, cs: Run, many: list[str]):
        """Following next_after page by page gives every campaign once; more counts down."""
        seen: list[str] = []
        after: list[str] = []
        while True:
            got = json.loads(cs("list", "--archived", "--limit", "45", "--json", *after).stdout)
            seen += [c["id"] for c in got["campaigns"]]
            assert len(many) - len(seen) == got["more"]
            if got["next_after"] is None:
                break
            after = ["--after", got["next_after"]]
        assert many == seen

    def test_hidden_archived_are_not_counted(self, cs: Run, many: list[str]):
        got = json.loads(cs("list", "--limit", "100", "--json").stdout)
        assert (100, 8) == (len(got["campaigns"]), got["more"])  # 108 not archived
        assert all(c["state"] != "archived" for c in got["campaigns"])

    def test_state_filter_pages(self, cs: Run, many: list[str]):
        got = json.loads(cs("list", "--state", "archived", "--limit", "5", "--json").stdout)
        assert (["c-000", "c-010", "c-020", "c-030", "c-040"], 7, "c-040") == (
            [c["id"] for c in got["campaigns"]],
            got["more"],
            got["next_after"],
        )
