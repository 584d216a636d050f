"""The SQLite store: settings, two processes racing on one file, and every fault typed."""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import time
from pathlib import Path
from queue import Empty

import core_workers
import pytest

from campaign_states import FakeClock, Registry, State, open_registry
from campaign_states.exceptions import (
    CampaignArchivedError,
    ForeignStoreError,
    InvalidSettingsError,
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreReadOnlyError,
    StoreUnavailableError,
)
from campaign_states.stores import SQLiteStore

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "campaigns.db")


class _closing:
    """A registry on the file, on a fake clock (archives do not really wait), closed after."""

    def __init__(self, path: str, **options):
        self.reg = Registry(SQLiteStore(path, clock=FakeClock(), **options))

    def __enter__(self) -> Registry:
        return self.reg

    def __exit__(self, *exc):
        self.reg.close()


def make(path: str, ids: list[str]) -> None:
    with _closing(path) as reg:
        for cid in ids:
            reg.create_campaign(name=cid, channels=["email"], campaign_id=cid)


def history_triggers(path: str, cid: str) -> list[str]:
    with _closing(path) as reg:
        return [e.trigger for e in reg.history(cid)]


class TestSettings:
    """A store file is WAL, durable, busy-waiting, versioned and marked as ours."""

    def test_pragmas(self, db):
        store = SQLiteStore(db, busy_timeout=2.5)
        conn = store._conn
        assert ("wal", 2, 2500) == (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA synchronous").fetchone()[0],  # 2 = FULL
            conn.execute("PRAGMA busy_timeout").fetchone()[0],
        )
        store.close()
        raw = sqlite3.connect(db)
        assert (0x43537431, 1) == (
            raw.execute("PRAGMA application_id").fetchone()[0],
            raw.execute("PRAGMA user_version").fetchone()[0],
        )
        raw.close()

    def test_every_write_begins_immediate(self, db):
        statements: list[str] = []
        with _closing(db) as reg:
            reg.store._conn.set_trace_callback(statements.append)
            reg.create_campaign(name="x", channels=["sms"], campaign_id="c")
            reg.resume("c")
            reg.archive_many(["c"])
        begins = [s for s in statements if s.startswith("BEGIN")]
        assert ["BEGIN IMMEDIATE"] * 3 == begins

    @pytest.mark.parametrize(
        "options",
        [{"busy_timeout": -1}, {"busy_timeout": float("nan")}, {"readonly": "yes"}],
    )
    def test_bad_options(self, db, options):
        with pytest.raises(InvalidSettingsError):
            SQLiteStore(db, **options)
        assert not os.path.exists(db)

    @pytest.mark.parametrize("path", ["", 5, None])
    def test_bad_path(self, path):
        with pytest.raises(InvalidSettingsError):
            SQLiteStore(path)

    def test_odd_characters_in_path(self, tmp_path):
        path = tmp_path / "we?ird #name%20.db"
        with _closing(str(path)) as reg:
            reg.create_segment("s")
        assert path.exists()
        store = SQLiteStore(path)
        reopened = open_registry(store.url)
        store.close()
        assert ["s"] == [s.id for s in reopened.segments()]
        reopened.close()


def run_race(db: str, triggers: tuple[str, str], ids: list[str], *, broken: bool = False):
    """Two spawned processes fire their trigger on the same campaigns at the same time."""
    barrier = SPAWN.Barrier(2)
    queue = SPAWN.Queue()
    # Each process goes through the ids in its own shuffled order, so that which one
    # reaches a campaign first varies from campaign to campaign.
    orders = tuple(random.Random(seed).sample(ids, len(ids)) for seed in (1, 2))
    procs = [
        SPAWN.Process(
            target=core_workers.race,
            args=(db, trig, order),
            kwargs={"barrier": barrier, "broken": broken, "queue": queue, "index": i},
        )
        for i, (trig, order) in enumerate(zip(triggers, orders, strict=True))
    ]
    for p in procs:
        p.start()
    results: dict[int, list] = {}
    deadline = time.monotonic() + 120
    while len(results) < len(procs):
        try:
            i, out = queue.get(timeout=0.5)
        except Empty:
            died = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            assert not died, f"a racing process died (exit codes {died})"
            assert time.monotonic() < deadline, "the race did not finish in 120 s"
            continue
        results[i] = out
    for p in procs:
        p.join(timeout=30)
        assert 0 == p.exitcode
    return (
        dict(zip(orders[0], results[0], strict=True)),
        dict(zip(orders[1], results[1], strict=True)),
    )


def check_same_trigger(db: str, ids: list[str], a: dict, b: dict) -> None:
    """Both archived every campaign: exactly one won each, the other saw it done."""
    for cid in ids:
        assert {("changed", None), ("unchanged", None)} == {a[cid], b[cid]}, cid
        assert ["create", "archive"] == history_triggers(db, cid)


class TestTwoProcessRace:
    """Two processes racing on one file: one wins each campaign, the other re-evaluates."""

    def test_same_trigger(self, db):
        ids = [f"c{i:03d}" for i in range(100)]
        make(db, ids)
        a, b = run_race(db, ("archive", "archive"), ids)
        check_same_trigger(db, ids, a, b)
        with _closing(db) as reg:
            assert {2} == {c.version for c in reg.list()}

    def test_conflicting_triggers(self, db):
        ids = [f"c{i:03d}" for i in range(100)]
        make(db, ids)
        resumed, archived = run_race(db, ("resume", "archive"), ids)
        with _closing(db) as reg:
            for cid in ids:
                c = reg.get(cid)
                history = [e.trigger for e in reg.history(cid)]
                assert State.ARCHIVED == c.state
                assert len(history) == c.version
                if resumed[cid] == ("changed", None):
                    # Resume went first; the archive then archived a running campaign.
                    assert (["create", "resume", "archive"], ("changed", None)) == (
                        history, archived[cid]
                    )  # fmt: skip
                else:
                    # The archive went first; the resume re-read and was refused.
                    assert (["create", "archive"], ("refused", "CampaignArchivedError")) == (
                        history, resumed[cid]
                    )  # fmt: skip
        with sqlite3.connect(db) as raw:
            assert "ok" == raw.execute("PRAGMA integrity_check").fetchone()[0]

    def test_checker_catches_a_deferred_begin(self, db):
        # With a deferred BEGIN, a transaction that read before the other committed cannot
        # write (SQLITE_BUSY_SNAPSHOT, busy_timeout ignored): calls fail that must not.
        ids = [f"c{i:03d}" for i in range(150)]
        make(db, ids)
        a, b = run_race(db, ("archive", "archive"), ids, broken=True)
        with pytest.raises(AssertionError):
            check_same_trigger(db, ids, a, b)


class TestBusy:
    """A write lock held past busy_timeout is a StoreBusyError, and nothing changes."""

    def test_lock_held(self, db):
        make(db, ["c"])
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with _closing(db, busy_timeout=0.05) as reg:
                with pytest.raises(StoreBusyError, match="busy_timeout"):
                    reg.archive("c")
                # Reads still work (WAL), and see nothing changed.
                assert State.ACTIVE_STOPPED == reg.get("c").state
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        with _closing(db) as reg:
            assert ["create"] == [e.trigger for e in reg.history("c")]
            assert State.ARCHIVED == reg.archive("c").campaign.state


class TestDiskFull:
    """A write past the file size limit is a StoreFullError; the file stays consistent."""

    def test_file_size_limit(self, db):
        make(db, ["small"])
        limit = os.path.getsize(db) + 64 * 1024
        with SPAWN.Pool(1) as pool:
            name, message = pool.apply(core_workers.write_past_file_limit, (db, limit, 1 << 20))
        assert "StoreFullError" == name, message
        assert "free space" in message.lower()
        with sqlite3.connect(db) as raw:
            assert "ok" == raw.execute("PRAGMA integrity_check").fetchone()[0]
        with _closing(db) as reg:
            assert ["small"] == [c.id for c in reg.list()]
            assert State.ARCHIVED == reg.archive("small").campaign.state

    def test_error_type(self):
        assert issubclass(StoreFullError, StoreError)


class TestReadOnly:
    """A mode=ro store reads, refuses writes with StoreReadOnlyError, and allows no-ops."""

    def test_mode_ro(self, db):
        make(db, ["c"])
        with _closing(db) as reg:
            reg.archive("c")
        ro = open_registry(f"sqlite:///{db}?mode=ro", clock=FakeClock())
        try:
            assert State.ARCHIVED == ro.get("c").state
            assert 2 == len(ro.history("c"))
            assert not ro.archive("c").changed  # a no-op needs no write
            with pytest.raises(StoreReadOnlyError, match="read-only"):
                ro.unarchive("c")
            with pytest.raises(StoreReadOnlyError):
                ro.create_segment("s")
            with pytest.raises(CampaignArchivedError):
                ro.edit("c", name="x")
            assert ro.url.endswith("?mode=ro")
        finally:
            ro.close()
        with _closing(db) as reg:
            assert State.ARCHIVED == reg.get("c").state

    def test_missing_file(self, tmp_path):
        with pytest.raises(StoreUnavailableError):
            SQLiteStore(tmp_path / "absent.db", readonly=True)

    def test_unknown_url_option(self, db):
        with pytest.raises(InvalidSettingsError):
            open_registry(f"sqlite:///{db}?mode=rw&cache=x")


class TestClosed:
    """Using a closed store is a StoreUnavailableError, not a sqlite3 error."""

    def test_closed(self, db):
        reg = Registry(SQLiteStore(db, clock=FakeClock()))
        reg.close()
        with pytest.raises(StoreUnavailableError, match="closed"):
            reg.list()
        with pytest.raises(StoreUnavailableError, match="closed"):
            reg.create_segment("s")


class TestCorruptAndForeign:
    """Damaged and foreign files are refused with clear, typed errors and left alone."""

    def test_not_a_database(self, db):
        Path(db).write_bytes(b"this is not an sqlite file" * 200)
        with pytest.raises(StoreCorruptError, match="backup"):
            SQLiteStore(db)
        assert b"this is not" == Path(db).read_bytes()[:11]

    def test_damaged_pages(self, db):
        make(db, [f"c{i}" for i in range(200)])
        data = bytearray(Path(db).read_bytes())
        page = 4096
        for offset in range(2 * page, len(data), page):
            data[offset : offset + 64] = b"\xff" * 64
        Path(db).write_bytes(bytes(data))
        reg = Registry(SQLiteStore(db))  # the header page is intact: the file opens
        try:
            with pytest.raises(StoreCorruptError, match="backup"):
                reg.list()
        finally:
            reg.close()

    def test_foreign_file(self, db):
        with sqlite3.connect(db) as raw:
            raw.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
        with pytest.raises(ForeignStoreError, match="not a campaign-states store"):
            SQLiteStore(db)
        with sqlite3.connect(db) as raw:
            assert [("invoices",)] == raw.execute("SELECT name FROM sqlite_master").fetchall()

    def test_newer_schema(self, db):
        make(db, [])
        with sqlite3.connect(db) as raw:
            raw.execute("PRAGMA user_version = 99")
        with pytest.raises(ForeignStoreError, match="upgrade"):
            SQLiteStore(db)
        assert issubclass(ForeignStoreError, StoreCorruptError)
