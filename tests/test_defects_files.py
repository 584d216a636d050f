"""A restored or deleted SQLite file: gates deny and reload, registries refuse, the CLI refuses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from campaign_states import FakeClock, Registry, open_registry
from campaign_states.cli import app as cli
from campaign_states.exceptions import StoreNotFoundError, StoreReplacedError
from campaign_states.stores import SQLiteStore
from delivery_gate import DeliveryGate, Reason


def _registry(path: Path) -> Registry:
    # A fake clock: archives do not wait out the lease; the gate reads the same clock.
    return Registry(SQLiteStore(path, clock=FakeClock()))


def _backup(src: Path, dest: Path) -> None:
    # What an operator's backup is: a consistent copy of the file (sqlite3 .backup).
    import sqlite3

    with sqlite3.connect(src) as a, sqlite3.connect(dest) as b:
        a.backup(b)
    a.close()
    b.close()


@pytest.fixture
def live(tmp_path: Path):
    """A store with 'c' running, a backup of it taken, and a gate on the live file."""
    path = tmp_path / "campaigns.db"
    reg = _registry(path)
    reg.create_campaign(name="c", channels=["email"], campaign_id="c")
    reg.resume("c")
    _backup(path, tmp_path / "backup.db")
    # Later changes on the live file, lost by a restore: 'c' is edited (version 3 > 2).
    reg.edit("c", name="renamed")
    gate = DeliveryGate(reg, background_refresh=False)
    assert gate.check("c", "email").admitted
    yield path, reg, gate
    gate.close()
    reg.close()


def _restore(backup: Path, path: Path) -> None:
    """``mv backup.db campaigns.db``, with the old file's ``-wal``/``-shm`` moved aside.

    Left in place, SQLite would pair the old file's WAL with the restored file (it cannot
    tell them apart: sqlite.org/howtocorrupt.html), and a new connection would read pages
    of the old file: the README's restore procedure removes them.
    """
    os.replace(backup, path)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _archive_elsewhere(path: Path, cid: str) -> None:
    """Archive on whatever file the path names now, as the CLI in another process would."""
    other = _registry(path)
    try:
        other.archive(cid)
    finally:
        other.close()


class TestRestoredFile:
    """A backup moved over the live file: the gate stops trusting its old view, then reloads."""

    def test_gate_denies_then_follows_the_restored_file(self, live, tmp_path):
        """After `mv backup.db campaigns.db` and an archive on it, the gate never admits."""
        path, _reg, gate = live
        _restore(tmp_path / "backup.db", path)
        _archive_elsewhere(path, "c")  # version 3 in the restored file: equal to the old view's
        assert not gate.refresh()
        d = gate.check("c", "email")
        assert (False, Reason.STORE_UNAVAILABLE) == (d.admitted, d.reason)
        assert "replaced" in (gate.status().last_error or "")
        # The next refresh opens the file the path names now and loads it whole.
        assert gate.refresh()
        d = gate.check("c", "email")
        assert (False, Reason.ARCHIVED) == (d.admitted, d.reason)
        assert gate.status().last_error is None

    def test_a_full_reload_forgets_newer_versions_of_the_old_file(self, live, tmp_path):
        """Versions in a restored file are not comparable: a lower one still replaces the row."""
        path, reg, gate = live
        reg.stop("c")  # version 4 on the old file: the gate holds 'c' stopped, version 4
        assert not gate.check("c", "email").admitted
        _restore(tmp_path / "backup.db", path)  # the backup has 'c' running, version 2
        gate.refresh()
        assert gate.refresh()
        d = gate.check("c", "email")
        assert (True, 2) == (d.admitted, d.version)

    def test_registry_refuses_to_write_to_the_replaced_file(self, live, tmp_path):
        """A write through a registry opened before the restore raises, naming the path."""
        path, reg, _gate = live
        _restore(tmp_path / "backup.db", path)
        with pytest.raises(StoreReplacedError, match="replaced") as info:
            reg.archive("c")
        assert str(path) in str(info.value)
        # Nothing was written to either file.
        fresh = _registry(path)
        try:
            assert "active_running" == fresh.get("c").state.value
        finally:
            fresh.close()

    def test_broken_variant_without_the_check_keeps_admitting(self, live, tmp_path, monkeypatch):
        """Without the identity check (the old behaviour) the gate admits after the archive."""
        from campaign_states._stores.sqlite import reader as _sqlite

        monkeypatch.setattr(_sqlite.SQLiteReader, "check_file", lambda self: None)
        path, _reg, gate = live
        _restore(tmp_path / "backup.db", path)
        _archive_elsewhere(path, "c")
        assert gate.refresh()
        assert gate.check("c", "email").admitted  # the hole this file's tests close


class TestAnotherProcess:
    """The issue's scenario: the archive comes from the CLI, in another process."""

    def test_cli_archive_on_the_restored_file(self, live, tmp_path):
        path, _reg, gate = live
        _restore(tmp_path / "backup.db", path)
        done = subprocess.run(
            [sys.executable, "-m", "campaign_states.cli", "--store", f"sqlite:///{path}",
             "archive", "c"],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert 0 == done.returncode, done.stderr
        gate.refresh()
        assert not gate.check("c", "email").admitted
        gate.refresh()
        d = gate.check("c", "email")
        assert (False, Reason.ARCHIVED) == (d.admitted, d.reason)


class TestRestoredInPlace:
    """A backup copied into the live file (``sqlite3 live.db ".restore backup.db"``)."""

    def test_sequence_going_back_makes_the_gate_reload(self, live, tmp_path):
        """Same inode, older content: the sequence went back, so the gate reloads it whole."""
        import sqlite3

        path, _reg, gate = live
        with sqlite3.connect(tmp_path / "backup.db") as src, sqlite3.connect(path) as dst:
            src.backup(dst)  # the backup API: takes the write lock, other readers see a commit
        src.close()
        dst.close()
        assert not gate.refresh()
        d = gate.check("c", "email")
        assert (False, Reason.STORE_UNAVAILABLE) == (d.admitted, d.reason)
        assert "went back" in (gate.status().last_error or "")
        assert gate.refresh()
        assert (True, 2) == (gate.check("c", "email").admitted, gate.check("c", "email").version)
        _archive_elsewhere(path, "c")  # version 3, sequence 3: equal to the old view's
        assert gate.refresh()
        assert not gate.check("c", "email").admitted

    def test_broken_variant_without_the_sequence_check_misses_the_archive(
        self, live, tmp_path, monkeypatch
    ):
        """Without the check, the delta from the old sequence never sees the archive."""
        import sqlite3

        from delivery_gate import _refresh

        monkeypatch.setattr(_refresh.Refresher, "_start_reload", lambda self: None)
        path, _reg, gate = live
        with sqlite3.connect(tmp_path / "backup.db") as src, sqlite3.connect(path) as dst:
            src.backup(dst)
        src.close()
        dst.close()
        gate.refresh()
        _archive_elsewhere(path, "c")
        gate.refresh()
        assert gate.check("c", "email").admitted


class TestDeletedFile:
    """The live file deleted: gates deny, nothing recreates it, it comes back when restored."""

    def test_gate_denies_until_a_store_is_back(self, live, tmp_path):
        path, _reg, gate = live
        os.unlink(path)
        assert not gate.refresh()
        d = gate.check("c", "email")
        assert (False, Reason.STORE_UNAVAILABLE) == (d.admitted, d.reason)
        assert "deleted" in (gate.status().last_error or "")
        assert not gate.refresh()  # the reader must not create an empty store there
        assert not path.exists()
        assert not gate.check("c", "email").admitted
        shutil.copy(tmp_path / "backup.db", path)
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        assert gate.refresh()
        assert gate.check("c", "email").admitted

    def test_registry_refuses_to_write_to_the_deleted_file(self, live):
        path, reg, _gate = live
        os.unlink(path)
        with pytest.raises(StoreReplacedError, match="deleted"):
            reg.create_campaign(name="d", channels=["email"])
        assert not path.exists()


class TestCreateOption:
    """``open_registry(url, create=False)`` refuses a missing file instead of making one."""

    def test_missing_file_is_refused(self, tmp_path):
        path = tmp_path / "none.db"
        with pytest.raises(StoreNotFoundError, match="no store at"):
            open_registry(f"sqlite:///{path}", create=False)
        assert not path.exists()

    def test_empty_file_is_refused(self, tmp_path):
        path = tmp_path / "empty.db"
        path.touch()
        with pytest.raises(StoreNotFoundError):
            open_registry(f"sqlite:///{path}", create=False)
        assert 0 == path.stat().st_size

    def test_existing_store_opens(self, tmp_path):
        path = tmp_path / "c.db"
        open_registry(f"sqlite:///{path}").close()
        open_registry(f"sqlite:///{path}", create=False).close()

    def test_default_still_creates(self, tmp_path):
        path = tmp_path / "new.db"
        open_registry(f"sqlite:///{path}").close()
        assert path.exists()


class TestCliMissingStore:
    """Commands that read or change refuse a missing store; the ones that create make it."""

    @pytest.mark.parametrize(
        "args",
        [
            ["show", "c"],
            ["list"],
            ["archive", "c"],
            ["history", "c"],
            ["segment", "list"],
            ["gate", "check", "c", "-c", "email"],
        ],
    )
    def test_refused_with_exit_2(self, tmp_path, args):
        path = tmp_path / "campaigns.db"
        result = CliRunner().invoke(cli(), ["--store", f"sqlite:///{path}", *args])
        assert 2 == result.exit_code, result.output
        assert f"no store at {path}" in result.output
        assert "Traceback" not in result.output
        assert not path.exists()

    def test_create_makes_the_store(self, tmp_path):
        path = tmp_path / "campaigns.db"
        runner = CliRunner()
        url = f"sqlite:///{path}"
        result = runner.invoke(cli(), ["--store", url, "create", "n", "-c", "email"])
        assert 0 == result.exit_code, result.output
        result = runner.invoke(cli(), ["--store", url, "segment", "create", "s"])
        assert 0 == result.exit_code, result.output
        assert path.exists()
