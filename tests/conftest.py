"""Shared fixtures: one parametrized store fixture for every backend, Hypothesis profiles."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from support import PG_DSN, require_postgres

from campaign_states import FakeClock, Registry
from campaign_states.stores import MemoryStore, SQLiteStore

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile(
    "ci", max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A DSN whose search_path is a fresh schema of its own, dropped afterwards."""
    require_postgres()
    import psycopg

    schema = f"cs_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_DSN else "?"
    try:
        yield f"{PG_DSN}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


StoreFactory = Callable[..., object]

STORE_KINDS = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., object]]:
    """A factory that opens (or reopens) the same store of this test's kind."""
    opened: list[object] = []
    dsn = request.getfixturevalue("pg_dsn") if store_kind == "postgres" else None
    shared_memory: list[MemoryStore] = []

    def make(**options: object) -> object:
        if store_kind == "memory":
            # "Reopening" a memory store returns the same one: it lives in this process.
            if not shared_memory:
                shared_memory.append(MemoryStore(**options))  # type: ignore[arg-type]
            return shared_memory[0]
        if store_kind == "sqlite":
            store = SQLiteStore(tmp_path / "campaigns.db", **options)  # type: ignore[arg-type]
        else:
            from campaign_states.stores import PostgresStore

            store = PostgresStore(dsn, **options)
        opened.append(store)
        return store

    yield make
    for s in opened:
        s.close()  # type: ignore[attr-defined]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry(make_store: Callable[..., object], clock: FakeClock) -> Registry:
    """A registry on a fresh store of each kind, on a fake clock (archives wait instantly)."""
    return Registry(make_store(clock=clock))  # type: ignore[arg-type]
