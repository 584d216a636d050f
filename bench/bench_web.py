"""The operator console: list page server time at 100,000 campaigns, and a bulk archive of
1,000 from the console.

``python -m bench web`` (PostgreSQL at ``CAMPAIGN_STATES_PG_DSN``, default the local test
server, in a schema of its own dropped at the end; skipped, saying so, when unreachable).

Server time is measured inside the process, around the ASGI app (from the request's
arrival to its last body byte), through every middleware (sessions, CSRF, headers), with
Starlette's TestClient as the client. Ratios are against baselines measured in the same
run: the store query the page makes (``Registry.find_campaigns``) and ``/healthz`` (the
framework's floor).

(a) list page p50, default filter (Active: a third of the campaigns are archived), page
    1 and a page deep in the list, Status "Archived", a segment filter, a name search
    (target: <= 50 ms on SQLite and PostgreSQL);
(b) bulk archive of 1,000 selected campaigns posted from the console: the request's time,
    split into the commit wait (the guarantee's price) and the work (target: <= 1 s of
    work plus the wait), against ``archive_many`` of 1,000 called directly.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from bench._shared import insert_campaigns
from campaign_states import Campaign, Channel, Registry, State, open_registry
from campaign_states.web import create_app

N = 100_000
N_SEGMENTS = 10
N_BULK = 1_000
REPEAT = 40
TOKEN = "bench-token-0123456789"
DSN = os.environ.get("CAMPAIGN_STATES_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def fill(reg: Registry) -> None:
    """N campaigns in one transaction: a third each running, stopped, archived; each
    targets one of N_SEGMENTS segments; one create entry each in history."""
    segs = [f"seg-{k}" for k in range(N_SEGMENTS)]
    for s in segs:
        reg.create_segment(s, name=f"Segment {s}")
    states = [State.ACTIVE_RUNNING, State.ACTIVE_STOPPED, State.ARCHIVED]
    insert_campaigns(
        reg,
        N,
        lambda i, seq: Campaign(
            id=f"c-{i:06d}",
            name=f"Campaign {i} {'spring' if i % 97 == 0 else 'promo'}",
            channels=[Channel.EMAIL],
            state=states[i % 3],
            seq=seq,
            segments=[segs[i % N_SEGMENTS]],
        ),
        history=True,
        actor="bench",
    )


class Timed:
    """Wraps an ASGI app and records each request's server time."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state
        self.last = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        start = time.perf_counter()

        async def timed_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.last = time.perf_counter() - start

        await self.app(scope, receive, timed_send)


def p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def server_p50(client: TestClient, timed: Timed, path: str) -> float:
    out = []
    for _ in range(REPEAT):
        r = client.get(path)
        assert r.status_code == 200, (path, r.status_code)
        out.append(timed.last)
    return p50(out)


def call_p50(fn: Callable[[], object]) -> float:
    out = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return p50(out)


def run(label: str, url: str) -> None:
    reg = open_registry(url)
    t = time.perf_counter()
    fill(reg)
    print(f"{label}: {N:,} campaigns filled in {time.perf_counter() - t:.1f} s")
    timed = Timed(create_app(reg, token=TOKEN, wait_inline=60.0))
    with TestClient(timed, follow_redirects=False) as client:
        client.get(f"/?token={TOKEN}")
        floor = server_p50(client, timed, "/healthz")
        active = frozenset({State.ACTIVE_RUNNING, State.ACTIVE_STOPPED})
        mid = "c-050000"
        cases = [
            ("page 1, Active", "/campaigns", {"states": active}),
            ("deep page, Active", f"/campaigns?after={mid}", {"states": active, "after": mid}),
            ("Status Archived", "/campaigns?status=archived", {"states": {State.ARCHIVED}}),
            ("segment filter", "/campaigns?segment=seg-3", {"states": active, "segment": "seg-3"}),
            ("search 'spring'", "/campaigns?q=spring", {"states": active, "text": "spring"}),
        ]
        print(f"  /healthz floor p50 {floor:.2f} ms")
        for name, path, query in cases:
            page = server_p50(client, timed, path)
            store = call_p50(lambda q=query: reg.find_campaigns(**q, limit=50))
            print(
                f"  (a) {name:20s} page p50 {page:6.2f} ms  (target <= 50)  "
                f"store query {store:6.2f} ms  page/query {page / store:4.1f}x"
            )

        # (b) bulk archive of 1,000 selected, from the console.
        ids = [f"c-{i:06d}" for i in range(0, 3 * N_BULK, 3)]  # running ones
        page = client.get("/campaigns").text
        csrf = re.search(r'name="csrftoken" value="([^"]+)"', page)
        assert csrf is not None
        wait = reg.lease_settings().commit_wait() if reg.store.needs_commit_wait else 0.0
        t = time.perf_counter()
        r = client.post("/bulk", data={"csrftoken": csrf.group(1), "trigger": "archive", "id": ids})
        total = time.perf_counter() - t
        assert r.status_code == 303, r.text[:300]
        done = client.get(r.headers["location"]).text
        assert f"{N_BULK} changed" in done, done[:500]
        direct_ids = [f"c-{i:06d}" for i in range(1, 3 * N_BULK, 3)]  # stopped ones
        t = time.perf_counter()
        reg.archive_many(direct_ids)
        direct = time.perf_counter() - t
        print(
            f"  (b) bulk archive of {N_BULK:,} from the console: {total:.3f} s = work "
            f"{total - wait:.3f} s (target <= 1 s) + commit wait {wait:.3f} s; "
            f"archive_many direct {direct:.3f} s (work {direct - wait:.3f} s), "
            f"console/direct work {(total - wait) / max(direct - wait, 1e-6):.2f}x"
        )
    reg.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        run("SQLite", f"sqlite:///{Path(tmp) / 'campaigns.db'}")
    try:
        from bench.bench_postgres import fresh_schema
    except ImportError as e:
        print(f"PostgreSQL: skipped ({e})")
        return
    try:
        with fresh_schema() as dsn:
            run("PostgreSQL", dsn)
    except Exception as e:  # no server: say so instead of failing the whole bench run
        if "connect" not in str(e).lower():
            raise
        print(f"PostgreSQL: skipped (no server at {DSN}: {e})")


if __name__ == "__main__":
    main()
