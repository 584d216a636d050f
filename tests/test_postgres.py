"""PostgreSQL-specific behaviour: lock order under races, schema creation, faults, errors.

The store's shared behaviour is covered by the contract and stateful suites (run with
``-k postgres``); this module covers what only a networked server can get wrong.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import struct
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from campaign_states import (
    Campaign,
    FakeClock,
    HistoryEntry,
    Outcome,
    Registry,
    SegmentState,
    State,
)
from campaign_states._stores.postgres import reader as pg_reader
from campaign_states._stores.postgres import schema as pg_schema
from campaign_states._stores.postgres import store as pg_store
from campaign_states._stores.postgres import tx as pg_tx
from campaign_states.exceptions import (
    CampaignArchivedError,
    CommitUnknownError,
    ConcurrentUpdateError,
    ForeignStoreError,
    InvalidSettingsError,
    SegmentArchivedError,
    StoreBusyError,
    StoreError,
    StoreReadOnlyError,
    StoreUnavailableError,
)
from campaign_states.stores import PostgresStore

pytestmark = pytest.mark.postgres

JOIN = 30.0  # seconds a helper thread may take before the test reports it stuck


# -- helpers ------------------------------------------------------------------------------


def with_options(dsn: str, **options: str) -> str:
    """``dsn`` (a postgresql:// URL) with extra libpq parameters; ``options`` are appended."""
    parts = urllib.parse.urlsplit(dsn)
    query = dict(urllib.parse.parse_qsl(parts.query))
    if "options" in options and query.get("options"):
        options["options"] = f"{query['options']} {options['options']}"
    query.update(options)
    return urllib.parse.urlunsplit(
        parts._replace(query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote))
    )


@pytest.fixture
def open_pg(pg_dsn: str) -> Iterator[Callable[..., PostgresStore]]:
    """Opens PostgresStores on this test's schema (fake clock: archives wait instantly)."""
    opened: list[PostgresStore] = []

    def make(dsn: str | None = None, **options: Any) -> PostgresStore:
        options.setdefault("clock", FakeClock())
        store = PostgresStore(dsn or pg_dsn, **options)
        opened.append(store)
        return store

    yield make
    for s in opened:
        s.close()


def running_on_archived(store: PostgresStore) -> list[str]:
    """The invariant's checker: running campaigns that target an archived segment."""
    archived = {s.id for s in store.list_segments() if s.state is SegmentState.ARCHIVED}
    return sorted(
        c.id for c in store.list_campaigns(State.ACTIVE_RUNNING, None) if c.segments & archived
    )


def wait_until_blocked(dsn: str, application_name: str) -> None:
    """Return once a session named ``application_name`` waits on a lock (fail after JOIN s)."""
    deadline = time.monotonic() + JOIN
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = %s AND wait_event_type = 'Lock'",
                (application_name,),
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.01)
    pytest.fail(f"{application_name} never waited on a lock")


class Pause:
    """Stops one named thread right after a `_Tx` method returns, until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, method: str, thread: str) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        real = getattr(pg_store._Tx, method)

        def paused(tx: Any, *args: Any) -> Any:
            out = real(tx, *args)
            if threading.current_thread().name == thread and not self.reached.is_set():
                self.reached.set()
                self.release.wait(JOIN)
            return out

        monkeypatch.setattr(pg_store._Tx, method, paused)


class Worker(threading.Thread):
    """Runs one call in a named thread and keeps its result or error."""

    def __init__(self, name: str, call: Callable[[], object]) -> None:
        super().__init__(name=name, daemon=True)
        self.call = call
        self.result: object = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as e:
            self.error = e

    def finish(self) -> object:
        self.join(JOIN)
        assert not self.is_alive(), f"{self.name} is stuck"
        return self.result


class Race:
    """An archiver and a writer registry on this test's schema, each on sessions of its own
    name, and the one interleaving the choreographed races play (`interleave`)."""

    def __init__(
        self, open_pg: Callable[..., PostgresStore], dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.dsn, self.monkeypatch = dsn, monkeypatch
        self.archiver_name, self.writer_name = f"archiver-{tag}", f"writer-{tag}"
        self.archiver, self.writer = (
            Registry(open_pg(with_options(dsn, application_name=n)))
            for n in (self.archiver_name, self.writer_name)
        )

    def setup_campaign(self, *, running: bool, segments: list[str]) -> None:
        self.writer.create_segment("s")
        self.writer.create_segment("t")
        self.writer.create_campaign(
            campaign_id="c", name="c", channels=["email"], segments=segments
        )
        if running:
            self.writer.resume("c")

    def interleave(
        self,
        pause_after: str,
        first: tuple[str, Callable[[], object]],
        second: tuple[str, Callable[[], object]],
        *,
        second_waits: bool = True,
    ) -> tuple[Worker, Worker]:
        """Run ``first`` until its `_Tx.<pause_after>` returns, then start ``second``; both
        are (thread name, call). With ``second_waits``, ``second`` must wait on a lock until
        ``first`` goes on; without, it runs to its end before ``first`` goes on. Returns both,
        finished, ``first`` first."""
        (first_name, first_call), (second_name, second_call) = first, second
        pause = Pause(self.monkeypatch, pause_after, first_name)
        one = Worker(first_name, first_call)
        assert pause.reached.wait(JOIN)
        two = Worker(second_name, second_call)
        if second_waits:
            # The thread named "archiver" works on the archiver's sessions, any other
            # thread on the writer's: that is the session that must be seen waiting.
            archiving = second_name == "archiver"
            wait_until_blocked(self.dsn, self.archiver_name if archiving else self.writer_name)
        else:
            two.finish()
        pause.release.set()
        one.finish()
        two.finish()
        return one, two


# -- the invariant under races -----------------------------------------------------------


class TestSegmentArchiveRace:
    """A segment archive racing a resume or a retarget never leaves a campaign running on it."""

    @pytest.fixture
    def race(
        self,
        open_pg: Callable[..., PostgresStore],
        pg_dsn: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> Race:
        return Race(open_pg, pg_dsn, monkeypatch)

    def test_resume_first_then_archive_cascades_to_it(self, race: Race) -> None:
        """A resume holding the campaign makes the archive wait, which then archives it."""
        race.setup_campaign(running=False, segments=["s"])
        resume, archive = race.interleave(
            "segments",
            ("resumer", lambda: race.writer.resume("c")),
            ("archiver", lambda: race.archiver.archive_segment("s")),
        )
        assert (None, None) == (resume.error, archive.error)
        assert State.ARCHIVED is race.writer.get("c").state
        assert [] == running_on_archived(race.archiver.store)  # type: ignore[arg-type]

    def test_archive_first_then_resume_is_refused(self, race: Race) -> None:
        """An archive holding the campaign makes the resume wait, which then refuses."""
        race.setup_campaign(running=False, segments=["s"])
        _, resume = race.interleave(
            "_lock_targeting",
            ("archiver", lambda: race.archiver.archive_segment("s")),
            ("resumer", lambda: race.writer.resume("c")),
        )
        assert isinstance(resume.error, CampaignArchivedError)
        assert [] == running_on_archived(race.archiver.store)  # type: ignore[arg-type]

    def test_retarget_during_archive_is_cascaded(self, race: Race) -> None:
        """A running campaign edited onto the segment mid-archive is archived with it."""
        race.setup_campaign(running=True, segments=["t"])
        # The archive finds no campaign on "s" yet; it waits for the editor's FOR SHARE.
        edit, archive = race.interleave(
            "segments",
            ("editor", lambda: race.writer.edit("c", segments=["s", "t"])),
            ("archiver", lambda: race.archiver.archive_segment("s")),
        )
        assert (None, None) == (edit.error, archive.error)
        assert ("c",) == archive.result.campaign_ids  # type: ignore[attr-defined]
        assert [] == running_on_archived(race.archiver.store)  # type: ignore[arg-type]

    def test_checker_catches_a_store_without_segment_locks(
        self, race: Race, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Broken variant: plain reads of segments let the retarget race break the invariant."""

        class UnlockedTx(pg_tx._Tx):
            def segments(self, ids: Any) -> Any:
                rows = self._c.execute(
                    "SELECT id, name, state, version, seq FROM cs_segments "
                    "WHERE id = ANY(%s::text[])",
                    (list(ids),),
                ).fetchall()
                return {r[0]: pg_tx.segment_from_row(r) for r in rows}

        # Before the set-up and the pause: every transaction from here on is unlocked
        # (the module looks `_Tx` up at each write), and the pause wraps UnlockedTx's read.
        monkeypatch.setattr(pg_store, "_Tx", UnlockedTx)
        race.setup_campaign(running=True, segments=["t"])
        race.interleave(
            "segments",
            ("editor", lambda: race.writer.edit("c", segments=["s", "t"])),
            ("archiver", lambda: race.archiver.archive_segment("s")),
            second_waits=False,
        )
        assert ["c"] == running_on_archived(race.archiver.store)  # type: ignore[arg-type]

    def test_free_running_rounds_keep_the_invariant(self, race: Race) -> None:
        """Unchoreographed: archive vs resume and archive vs retarget, many rounds."""
        archiver, writer = race.archiver, race.writer
        for i in range(12):
            seg, other = f"s{i}", f"t{i}"
            writer.create_segment(seg)
            writer.create_segment(other)
            writer.create_campaign(campaign_id=f"r{i}", name="r", channels=["sms"], segments=[seg])
            writer.create_campaign(
                campaign_id=f"e{i}", name="e", channels=["sms"], segments=[other]
            )
            writer.resume(f"e{i}")
            start = threading.Barrier(3)

            def go(
                call: Callable[[], object], start: threading.Barrier = start
            ) -> Callable[[], object]:
                def run() -> object:
                    start.wait(JOIN)
                    return call()

                return run

            workers = [
                Worker("archiver", go(lambda s=seg: archiver.archive_segment(s))),
                Worker("resumer", go(lambda i=i: writer.resume(f"r{i}"))),
                Worker(
                    "editor", go(lambda i=i, s=seg, o=other: writer.edit(f"e{i}", segments=[s, o]))
                ),
            ]
            for w in workers:
                w.finish()
            errors = [w.error for w in workers if w.error is not None]
            assert all(
                isinstance(e, SegmentArchivedError | CampaignArchivedError) for e in errors
            ), errors
            assert [] == running_on_archived(archiver.store)  # type: ignore[arg-type]


class TestBulk:
    """Bulk writes go through one statement (or COPY) and stay all-or-nothing."""

    def test_bulk_paths(self, open_pg: Callable[..., PostgresStore]) -> None:
        """resume_many above the COPY threshold, then a set-form archive_many: all of them
        moved, with history and in the gates' change feed."""
        store = open_pg()
        reg = Registry(store)
        ids = [f"c{i:05d}" for i in range(pg_tx._COPY_THRESHOLD + 5)]
        with store.write() as tx:  # one transaction, straight through the store protocol
            first = tx.next_seq(len(ids))
            for k, cid in enumerate(ids):
                c = Campaign(id=cid, name=cid, channels=["push"], seq=first + k)
                tx.insert_campaign(c, ())
                tx.append_history(
                    [
                        HistoryEntry(
                            campaign_id=cid,
                            trigger="create",
                            from_state=None,
                            to_state=c.state,
                            actor=None,
                            cause=None,
                            time=0.0,
                            seq=c.seq,
                            version=1,
                        )
                    ]
                )
        with contextlib.closing(store.open_reader()) as reader:
            before = reader.gate_rows_since(0).seq
            assert ids == reg.resume_many(ids).ids(Outcome.CHANGED)  # records, via COPY
            assert {State.ACTIVE_RUNNING} == {c.state for c in reg.list()}
            middle = reader.gate_rows_since(before)
            assert set(ids) == {r[0] for r in middle.rows}
            assert ids == reg.archive_many(ids).ids(Outcome.CHANGED)  # set form
            assert {State.ARCHIVED} == {c.state for c in reg.list()}
            assert ["create", "resume", "archive"] == [h.trigger for h in reg.history(ids[-1])]
            assert set(ids) == {r[0] for r in reader.gate_rows_since(middle.seq).rows}

    def test_failed_compare_and_set_rolls_back_everything(
        self, open_pg: Callable[..., PostgresStore]
    ) -> None:
        """A stale version anywhere in a bulk update aborts the whole transaction."""
        store = open_pg()
        reg = Registry(store)
        for cid in ("a", "b"):
            reg.create_campaign(campaign_id=cid, name=cid, channels=["sms"])
        a, b = reg.get("a"), reg.get("b")
        with pytest.raises(ConcurrentUpdateError), store.write() as tx:
            tx.update_campaigns(
                [
                    attrs.evolve(a, name="A", version=a.version + 1),
                    attrs.evolve(b, name="B", version=b.version + 5),
                ]
            )
        assert ("a", "b") == (reg.get("a").name, reg.get("b").name)


# -- schema ------------------------------------------------------------------------------


def _open_in_process(dsn: str, start: float) -> str:
    """Child process: open the store at ``start`` (a shared instant), report the outcome."""
    time.sleep(max(0.0, start - time.time()))
    try:
        PostgresStore(dsn).close()
    except Exception as e:  # reported to the parent, which asserts on it
        return f"{type(e).__name__}: {e}"
    return "ok"


class TestSchema:
    """The schema is created once, on first use, even when many processes start together."""

    def test_reopen_keeps_data_and_version(
        self, open_pg: Callable[..., PostgresStore], pg_dsn: str
    ) -> None:
        """Opening again neither recreates nor changes anything; the version is recorded."""
        Registry(open_pg()).create_segment("s")
        assert ["s"] == [s.id for s in open_pg().list_segments()]
        with psycopg.connect(pg_dsn) as conn:
            assert [("campaign-states", 1)] == conn.execute(
                "SELECT application, version FROM cs_schema"
            ).fetchall()

    def test_processes_racing_to_create(self, pg_dsn: str) -> None:
        """Six processes opening a new schema at the same instant all succeed."""
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(6) as pool:
            start = time.time() + 1.5  # after every child has imported
            outcomes = pool.starmap(_open_in_process, [(pg_dsn, start)] * 6)
        assert ["ok"] * 6 == outcomes

    @pytest.mark.parametrize("locked", [True, False], ids=["advisory-lock", "broken-no-lock"])
    def test_interleaved_creators(
        self, pg_dsn: str, monkeypatch: pytest.MonkeyPatch, locked: bool
    ) -> None:
        """Two creators that both saw no schema: the lock makes the second skip creating.

        The broken variant (no advisory lock) shows the same interleaving fails.
        """
        gate = threading.Barrier(2)
        seen: dict[str, int] = {}
        real = pg_schema._has_table

        def has_table(conn: Any, table: str) -> bool:
            out = real(conn, table)
            me = threading.current_thread().name
            if table == "cs_schema":
                seen[me] = seen.get(me, 0) + 1
                # With the lock, meet after the first check (both saw nothing); without
                # it, meet after the re-check, so both go on to create.
                if seen[me] == (1 if locked else 2):
                    gate.wait(JOIN)
            return out

        monkeypatch.setattr(pg_schema, "_has_table", has_table)
        if not locked:
            monkeypatch.setattr(pg_schema, "_LOCK_SCHEMA", "SELECT 1")
            monkeypatch.setattr(pg_schema, "_UNLOCK_SCHEMA", "SELECT 1")
        workers = [Worker(f"creator-{i}", lambda: PostgresStore(pg_dsn).close()) for i in range(2)]
        for w in workers:
            w.finish()
        failures = [w.error for w in workers if w.error is not None]
        if locked:
            assert [] == failures
        else:
            assert 1 == len(failures)
            assert isinstance(failures[0], StoreError)

    def test_newer_schema_is_refused(
        self, open_pg: Callable[..., PostgresStore], pg_dsn: str
    ) -> None:
        """A store written by a newer release is refused with what to do."""
        open_pg()
        with psycopg.connect(pg_dsn) as conn:
            conn.execute("UPDATE cs_schema SET version = 99")
        with pytest.raises(ForeignStoreError, match="upgrade campaign-states"):
            PostgresStore(pg_dsn)

    def test_foreign_tables_are_refused(self, pg_dsn: str) -> None:
        """Tables of the same names without our version row are not adopted."""
        with psycopg.connect(pg_dsn) as conn:
            conn.execute("CREATE TABLE cs_campaigns (x int)")
        with pytest.raises(ForeignStoreError, match="another schema"):
            PostgresStore(pg_dsn)
        with psycopg.connect(pg_dsn) as conn:
            conn.execute("CREATE TABLE cs_schema (application text, version int)")
            conn.execute("INSERT INTO cs_schema VALUES ('someone-else', 1)")
        with pytest.raises(ForeignStoreError, match="someone-else"):
            PostgresStore(pg_dsn)

    def test_history_is_append_only(
        self, open_pg: Callable[..., PostgresStore], pg_dsn: str
    ) -> None:
        """The server itself refuses to edit or delete history rows."""
        Registry(open_pg()).create_campaign(campaign_id="c", name="c", channels=["sms"])
        with psycopg.connect(pg_dsn) as conn:
            for stmt in (
                "UPDATE cs_history SET actor = 'x'",
                "DELETE FROM cs_history",
                "TRUNCATE cs_history",
            ):
                with pytest.raises(psycopg.errors.RaiseException), conn.transaction():
                    conn.execute(stmt)  # type: ignore[arg-type]


# -- errors ------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestErrors:
    """psycopg never reaches a caller: every failure is a typed StoreError."""

    def test_unreachable_server(self) -> None:
        """Nothing listening on the port: StoreUnavailableError naming the server."""
        port = closed_port()
        with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}") as info:
            PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/test", connect_timeout=2)
        assert isinstance(info.value.__cause__, psycopg.Error)

    def test_bad_url(self) -> None:
        """A malformed URL is a settings error, not a connection error."""
        with pytest.raises(InvalidSettingsError, match="Bad PostgreSQL URL"):
            PostgresStore("postgresql://x@127.0.0.1:5432/test?nonsense_option=1")

    def test_read_only_session(self, open_pg: Callable[..., PostgresStore], pg_dsn: str) -> None:
        """A read-only server or session: reads work, writes raise StoreReadOnlyError."""
        Registry(open_pg()).create_campaign(campaign_id="c", name="c", channels=["sms"])
        ro = Registry(open_pg(with_options(pg_dsn, options="-cdefault_transaction_read_only=on")))
        assert State.ACTIVE_STOPPED is ro.get("c").state
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            ro.resume("c")
        assert State.ACTIVE_STOPPED is ro.get("c").state

    def test_lock_timeout_is_busy(self, open_pg: Callable[..., PostgresStore], pg_dsn: str) -> None:
        """A row held by another session past busy_timeout: StoreBusyError, nothing changed."""
        reg = Registry(open_pg(busy_timeout=0.2))
        reg.create_campaign(campaign_id="c", name="c", channels=["sms"])
        with psycopg.connect(pg_dsn) as holder:
            holder.execute("SELECT 1 FROM cs_campaigns WHERE id = 'c' FOR UPDATE")
            with pytest.raises(StoreBusyError, match="busy_timeout"):
                reg.archive("c")
        assert State.ACTIVE_STOPPED is reg.get("c").state

    def test_session_killed_mid_transaction(
        self, open_pg: Callable[..., PostgresStore], pg_dsn: str
    ) -> None:
        """A write whose session dies before COMMIT: StoreUnavailableError, nothing saved."""
        store = open_pg()
        reg = Registry(store)
        reg.create_campaign(campaign_id="c", name="c", channels=["sms"])

        def doomed_write() -> None:
            with store.write() as tx:
                tx.campaigns(["c"])
                kill(pg_dsn, tx._c.info.backend_pid)
                tx.next_seq(1)

        with pytest.raises(StoreUnavailableError):
            doomed_write()
        assert 1 == reg.get("c").version  # and the pool replaced the dead connection

    def test_deadlock_is_a_concurrent_update(self, open_pg: Callable[..., PostgresStore]) -> None:
        """Two transactions locking in opposite orders: one is told to retry, typed."""
        store = open_pg()
        reg = Registry(store)
        for cid in ("a", "b"):
            reg.create_campaign(campaign_id=cid, name=cid, channels=["sms"])
        both = threading.Barrier(2)

        def lock(first: str, second: str) -> None:
            with store.write() as tx:
                tx.campaigns([first])
                both.wait(JOIN)
                tx.campaigns([second])

        workers = [Worker("ab", lambda: lock("a", "b")), Worker("ba", lambda: lock("b", "a"))]
        for w in workers:
            w.finish()
        errors = sorted(type(w.error).__name__ for w in workers if w.error is not None)
        assert ["ConcurrentUpdateError"] == errors

    def test_server_side_kill_during_read(
        self, open_pg: Callable[..., PostgresStore], pg_dsn: str
    ) -> None:
        """A reader whose session is killed reports it typed, then reconnects by itself."""
        store = open_pg()
        with contextlib.closing(store.open_reader()) as reader:
            token = reader.version_token()
            assert reader._conn is not None
            kill(pg_dsn, reader._conn.info.backend_pid)
            with pytest.raises(StoreUnavailableError):
                reader.version_token()
            assert token == reader.version_token()


def kill(dsn: str, pid: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


# -- a COMMIT whose outcome is unknown ---------------------------------------------------


class CommitCutter:
    """A TCP proxy in front of PostgreSQL that can cut the link at the next COMMIT.

    ``arm("before")`` drops the COMMIT itself (the server rolls back); ``arm("after")``
    forwards it and drops the server's reply (the change is saved). Either way the client
    sees the connection die during COMMIT.
    """

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.mode: str | None = None
        self.refusing = False  # close new connections at once (a server that is gone)
        self.cuts = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, mode: str) -> None:
        self.mode = mode

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                if self.refusing:
                    client.close()
                    continue
                server = socket.create_connection(self.upstream)
                link = {"drop_reply": False}
                threading.Thread(
                    target=self._client_to_server, args=(client, server, link), daemon=True
                ).start()
                threading.Thread(
                    target=self._server_to_client, args=(server, client, link), daemon=True
                ).start()

    def _take(self) -> str | None:
        with self._lock:
            mode, self.mode = self.mode, None
            if mode:
                self.cuts += 1
            return mode

    def _client_to_server(
        self, client: socket.socket, server: socket.socket, link: dict[str, bool]
    ) -> None:
        buf = b""
        started = False
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                buf += data
                out = b""
                while True:
                    if not started:  # the startup packet: length, no type byte
                        if len(buf) < 4 or len(buf) < struct.unpack("!I", buf[:4])[0]:
                            break
                        n = struct.unpack("!I", buf[:4])[0]
                        started = True
                    else:
                        if len(buf) < 5 or len(buf) < 1 + struct.unpack("!I", buf[1:5])[0]:
                            break
                        n = 1 + struct.unpack("!I", buf[1:5])[0]
                        if self._is_commit(buf[:n]) and self.mode:
                            mode = self._take()
                            if mode == "before":
                                _cut(client, server)
                                return
                            link["drop_reply"] = True
                    out += buf[:n]
                    buf = buf[n:]
                if out:
                    server.sendall(out)
        _cut(client, server)

    @staticmethod
    def _is_commit(msg: bytes) -> bool:
        kind, body = msg[:1], msg[5:]
        if kind == b"Q":
            query = body.split(b"\0", 1)[0]
        elif kind == b"P":  # Parse: statement name, then the query
            query = body.split(b"\0", 2)[1]
        else:
            return False
        return query.strip().upper() == b"COMMIT"

    def _server_to_client(
        self, server: socket.socket, client: socket.socket, link: dict[str, bool]
    ) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if link["drop_reply"]:
                    # The server answered the COMMIT: it is durable. Drop the answer.
                    _cut(client, server)
                    return
                client.sendall(data)
        _cut(client, server)


def _cut(*socks: socket.socket) -> None:
    """Close both ends now: shutdown() sends FIN even while another thread is in recv()."""
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()


@pytest.fixture
def cutter(pg_dsn: str) -> Iterator[tuple[CommitCutter, str]]:
    params = conninfo_to_dict(pg_dsn)
    proxy = CommitCutter(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    dsn = make_conninfo(
        pg_dsn, host="127.0.0.1", port=str(proxy.port), sslmode="disable", gssencmode="disable"
    )
    yield proxy, dsn
    proxy.close()


class TestUnknownCommit:
    """A link lost during COMMIT raises CommitUnknownError; retrying the archive is safe."""

    @pytest.mark.parametrize(("mode", "saved"), [("before", False), ("after", True)])
    def test_retry_after_unknown_commit(
        self,
        open_pg: Callable[..., PostgresStore],
        cutter: tuple[CommitCutter, str],
        mode: str,
        saved: bool,
    ) -> None:
        """Whether or not the COMMIT landed, the retry leaves one archive in the history."""
        proxy, dsn = cutter
        reg = Registry(open_pg(dsn))
        reg.create_campaign(campaign_id="c", name="c", channels=["sms"])
        reg.resume("c")
        proxy.arm(mode)
        with pytest.raises(CommitUnknownError, match="Retrying the same call is safe"):
            reg.archive("c")
        assert 1 == proxy.cuts
        assert (State.ARCHIVED if saved else State.ACTIVE_RUNNING) is reg.get("c").state
        retry = reg.archive("c")
        assert (not saved, State.ARCHIVED) == (retry.changed, retry.campaign.state)
        assert 1 == [h.trigger for h in reg.history("c")].count("archive")


# -- LISTEN/NOTIFY -----------------------------------------------------------------------


class TestNotify:
    """A reader's wait() wakes on a commit, and survives losing its listener connection."""

    def wakes_on_commit(self, reader: pg_reader.PostgresReader, reg: Registry, cid: str) -> bool:
        waiter = Worker("waiter", lambda: reader.wait(JOIN * 2))
        time.sleep(0.2)  # let it start listening (if it is early, the wake is merely late)
        reg.create_campaign(campaign_id=cid, name=cid, channels=["sms"])
        waiter.join(JOIN)
        return not waiter.is_alive()

    def test_wait_returns_when_something_commits(
        self, open_pg: Callable[..., PostgresStore]
    ) -> None:
        """A commit wakes a waiting reader long before its timeout."""
        store = open_pg()
        with contextlib.closing(store.open_reader()) as reader:
            reader.wait(0)  # connects the listener (returns at once)
            assert self.wakes_on_commit(reader, Registry(store), "c1")

    def test_listener_reconnects_after_termination(
        self, open_pg: Callable[..., PostgresStore], pg_dsn: str
    ) -> None:
        """pg_terminate_backend on the listener: wait() returns, reconnects, wakes again."""
        store = open_pg()
        with contextlib.closing(store.open_reader()) as reader:
            reader.wait(0)
            assert reader._conn is not None
            old_pid = reader._conn.info.backend_pid
            kill(pg_dsn, old_pid)
            reader.wait(JOIN)  # notices the dead link and returns
            reader.wait(JOIN)  # reconnects and returns at once (notifications were lost)
            assert reader._conn is not None
            assert old_pid != reader._conn.info.backend_pid
            assert self.wakes_on_commit(reader, Registry(store), "c2")

    def test_other_schemas_do_not_wake(
        self, open_pg: Callable[..., PostgresStore], pg_dsn: str
    ) -> None:
        """Notifications carry the schema: another store's commits are ignored."""
        store = open_pg()
        reader = store.open_reader()
        other = f"cs_test_other_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {other}")  # type: ignore[arg-type]
        try:
            reader.wait(0)
            elsewhere = PostgresStore(with_options(pg_dsn, options=f"-csearch_path={other}"))
            try:
                Registry(elsewhere).create_segment("x")  # its NOTIFY reaches our listener
                # Only a lower bound on time: a wait that ignored the other schema's
                # notification sleeps its whole timeout.
                started = time.monotonic()
                reader.wait(0.5)
                assert time.monotonic() - started >= 0.5
            finally:
                elsewhere.close()
        finally:
            reader.close()
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {other} CASCADE")  # type: ignore[arg-type]


class TestReader:
    """The reader sees commits through one counter row and reads deltas in one snapshot."""

    def test_token_and_delta(self, open_pg: Callable[..., PostgresStore]) -> None:
        """The token moves on every commit; the delta holds exactly what changed."""
        store = open_pg()
        reg = Registry(store)
        with contextlib.closing(store.open_reader()) as reader:
            reg.create_segment("s")
            reg.create_campaign(campaign_id="a", name="a", channels=["sms"], segments=["s"])
            reg.create_campaign(campaign_id="b", name="b", channels=["sms"])
            token, base = reader.version_token(), reader.gate_rows_since(0)
            assert {"a", "b"} == {r[0] for r in base.rows}
            assert token == base.seq
            reg.archive_segment("s")
            assert token != reader.version_token()
            delta = reader.gate_rows_since(base.seq)
            assert (["a"], ["s"]) == (
                [r[0] for r in delta.rows],
                [s.id for s in delta.segments],
            )

    def test_gate_rows_match_records(self, open_pg: Callable[..., PostgresStore]) -> None:
        """The rows describe the stored records exactly (one path: the gate reads rows)."""
        store = open_pg()
        reg = Registry(store)
        reg.create_segment("s")
        reg.create_campaign(campaign_id="a", name="a", channels=["sms", "push"], segments=["s"])
        reg.create_campaign(campaign_id="b", name="b", channels=["email"])
        with contextlib.closing(store.open_reader()) as reader:
            base = reader.gate_rows_since(0).seq
            reg.archive_segment("s")
            rows = reader.gate_rows_since(base)
            records = [reg.get(r[0]) for r in rows.rows]
            assert (store.get_segment("s"),) == tuple(rows.segments)
            assert [
                (c.id, c.state, c.channels, c.segments, c.version, c.archive_cause) for c in records
            ] == [
                (r[0], rows.state(r[1]), rows.channels(r[2]), rows.segment_ids(r[3]), r[4], r[5])
                for r in rows.rows
            ]
            assert ["a"] == [c.id for c in records]

    def test_lease_settings_are_persisted_and_bump_the_token(
        self, open_pg: Callable[..., PostgresStore]
    ) -> None:
        """Network defaults on a new store; a change is visible to readers as a change."""
        store = open_pg()
        assert pg_schema.DEFAULT_LEASE == store.lease_settings()
        with contextlib.closing(store.open_reader()) as reader:
            token = reader.version_token()
            new = pg_schema.LeaseSettings(lease=2.0, grace=0.05, refresh=0.5)
            store.set_lease_settings(new)
            assert token != reader.version_token()
            assert new == reader.gate_rows_since(0).lease == open_pg().lease_settings()
