"""Paging `Registry.list` and `campaign-states list` at 1,000,000 campaigns on SQLite.

Figures: one page (50) at the start, in the middle and at the end of the id range; the
`count` behind the CLI's "N more" footer (whole table, and from the middle); the CLI's
default `list` end to end, in process. The baseline, measured in the same run: one
`get()` by id (one primary-key lookup and one record decoded).
"""

from __future__ import annotations

import os
import tempfile
import time
import timeit
from pathlib import Path

from click.testing import CliRunner

from bench._shared import insert_campaigns
from campaign_states import Campaign, Channel, Registry, State
from campaign_states.cli import app
from campaign_states.stores import SQLiteStore

N = int(os.environ.get("BENCH_LIST_N", "1000000"))


def _fill(path: Path, n: int) -> Registry:
    reg = Registry(SQLiteStore(path))
    chans = frozenset({Channel.EMAIL, Channel.PUSH})
    insert_campaigns(
        reg,
        n,
        lambda i, seq: Campaign(
            id=f"c-{i:09d}",
            name=f"campaign {i}",
            channels=chans,
            # A tenth archived: the CLI hides them by default, so it skips some per page.
            state=State.ARCHIVED if i % 10 == 0 else State.ACTIVE_RUNNING,
            seq=seq,
        ),
    )
    return reg


def _best(stmt: str, env: dict[str, object], number: int = 20, repeat: int = 5) -> float:
    """Best per-call time in ms."""
    return min(timeit.repeat(stmt, globals=env, number=number, repeat=repeat)) / number * 1e3


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "list.db"
        t = time.perf_counter()
        reg = _fill(db, N)
        print(f"filled {N:,} campaigns in {time.perf_counter() - t:.1f} s")
        mid, last = f"c-{N // 2:09d}", f"c-{N - 60:09d}"
        env: dict[str, object] = {"reg": reg, "mid": mid, "last": last}
        base = _best("reg.get(mid)", env, number=200)
        rows = [
            ("get() by id (baseline)", base),
            ("list(limit=50), first page", _best("reg.list(limit=50)", env)),
            ("list(limit=50, after=middle id)", _best("reg.list(limit=50, after=mid)", env)),
            ("list(limit=50, after=near the end)", _best("reg.list(limit=50, after=last)", env)),
            (
                "list(state=running, limit=50, after=middle)",
                _best("reg.list(state='active_running', limit=50, after=mid)", env),
            ),
            ("count() of all", _best("reg.count()", env, number=3, repeat=3)),
            ("count(after=middle id)", _best("reg.count(after=mid)", env, number=3, repeat=3)),
            (
                "count(state=archived) (the footer's second count)",
                _best("reg.count(state='archived')", env, number=3, repeat=3),
            ),
        ]
        reg.close()
        runner = CliRunner()
        url = f"sqlite:///{db}"

        def cli(*args: str) -> None:
            result = runner.invoke(app(), ["--store", url, "list", *args])
            assert result.exit_code == 0, result.output

        env["cli"] = cli
        rows.append(("`campaign-states list` (50 rows + footer)", _best("cli()", env, 3, 3)))
        rows.append(
            ("`campaign-states list --after middle`", _best("cli('--after', mid)", env, 3, 3))
        )
        for what, ms in rows:
            print(f"  {what:52s} {ms:8.2f} ms  ({ms / base:8.1f}x get)")
