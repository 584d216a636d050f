"""Helpers the test modules import (``pythonpath = ["tests"]`` puts this on sys.path)."""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import pytest

from campaign_states import State

PG_DSN = os.environ.get("CAMPAIGN_STATES_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("CAMPAIGN_STATES_REQUIRE_PG") == "1"
REQUIRE_SPIN = os.environ.get("CAMPAIGN_STATES_REQUIRE_SPIN") == "1"
REQUIRE_GRAPHVIZ = os.environ.get("CAMPAIGN_STATES_REQUIRE_GRAPHVIZ") == "1"
REDIS_URL = os.environ.get("CAMPAIGN_STATES_REDIS_URL", "redis://127.0.0.1:6379/11")
REQUIRE_REDIS = os.environ.get("CAMPAIGN_STATES_REQUIRE_REDIS") == "1"

# Short names for the three campaign states, for the tests' tables of transitions.
RUN, STOP, ARCH = State.ACTIVE_RUNNING, State.ACTIVE_STOPPED, State.ARCHIVED


def _skip_unless(reason: str | None, *, required: bool, flag: str) -> None:
    """Skip the test for ``reason`` (``None``: nothing is missing), or fail it when the run
    set ``flag=1``: a CI job that must exercise a backend may not pass by skipping it."""
    if reason is None:
        return
    if required:
        pytest.fail(f"{flag}=1 but {reason}")
    pytest.skip(reason)


def _unreachable_reason(
    module: str, extra: str, where: str, probe: Callable[[Any], object], error: str
) -> str | None:
    """Why the server ``where`` cannot be used (its client ``module`` is missing, or
    ``probe(module)`` raises the module's ``error`` class), or ``None``."""
    try:
        lib = importlib.import_module(module)
    except ImportError:
        return f"{module} is not installed (pip install 'campaign-states[{extra}]')"
    try:
        probe(lib)
    except getattr(lib, error) as e:
        return f"no {where}: {e}"
    return None


@functools.cache  # one connection attempt per run, not one per test
def _pg_unreachable_reason() -> str | None:
    return _unreachable_reason(
        "psycopg",
        "postgres",
        f"PostgreSQL at CAMPAIGN_STATES_PG_DSN={PG_DSN}",
        lambda psycopg: psycopg.connect(PG_DSN, connect_timeout=3).close(),
        "Error",
    )


def require_postgres() -> None:
    """Skip (or, with CAMPAIGN_STATES_REQUIRE_PG=1, fail) when no PostgreSQL is reachable."""
    _skip_unless(_pg_unreachable_reason(), required=REQUIRE_PG, flag="CAMPAIGN_STATES_REQUIRE_PG")


def require_spin() -> None:
    """Skip (or, with CAMPAIGN_STATES_REQUIRE_SPIN=1, fail) when Spin or gcc is absent."""
    missing = [tool for tool in ("spin", "gcc") if shutil.which(tool) is None]
    reason = f"{' and '.join(missing)} not installed (apt-get install spin gcc)"
    _skip_unless(
        reason if missing else None, required=REQUIRE_SPIN, flag="CAMPAIGN_STATES_REQUIRE_SPIN"
    )


def require_graphviz() -> None:
    """Skip (or, with CAMPAIGN_STATES_REQUIRE_GRAPHVIZ=1, fail) when Graphviz's `dot` is absent.

    Only rendering SVG needs the binary; the DOT and Mermaid text, and `diagram --check` (which
    compares the SVG's recorded source hash), do not, so only the tests that render call this.
    """
    reason = "Graphviz's `dot` is not on PATH (apt-get install graphviz)"
    _skip_unless(
        None if shutil.which("dot") else reason,
        required=REQUIRE_GRAPHVIZ,
        flag="CAMPAIGN_STATES_REQUIRE_GRAPHVIZ",
    )


@functools.cache  # one connection attempt per run, not one per test
def _redis_unreachable_reason() -> str | None:
    return _unreachable_reason(
        "redis",
        "celery",
        f"Redis at CAMPAIGN_STATES_REDIS_URL={REDIS_URL}",
        lambda redis: redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping(),
        "RedisError",
    )


def require_redis() -> None:
    """Skip (or, with CAMPAIGN_STATES_REQUIRE_REDIS=1, fail) when no Redis is reachable."""
    _skip_unless(
        _redis_unreachable_reason(), required=REQUIRE_REDIS, flag="CAMPAIGN_STATES_REQUIRE_REDIS"
    )


def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    """Whether ``predicate()`` comes true within ``timeout`` seconds, polled every 5 ms.

    The timeout only bounds a wait for something that must happen (or, asserted false, must
    not happen in that time); no test asserts on how long it took.
    """
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= end:
            return False
        time.sleep(0.005)
    return True


class Delegating:
    """Wraps a store, transaction or reader and forwards every attribute it does not define.

    The tests' deliberately broken or spying stores subclass it and override the one call
    they change, so each fake states only its difference from the real thing.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
