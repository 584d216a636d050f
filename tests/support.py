"""Helpers the test modules import (``pythonpath = ["tests"]`` puts this on sys.path)."""

from __future__ import annotations

import os

import pytest

PG_DSN = os.environ.get("CAMPAIGN_STATES_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("CAMPAIGN_STATES_REQUIRE_PG") == "1"

_PG_REASON: list[str | None] = []


def _pg_unreachable_reason() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'campaign-states[postgres]')"
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3):
            return None
    except psycopg.Error as e:
        return f"no PostgreSQL at CAMPAIGN_STATES_PG_DSN={PG_DSN}: {e}"


def require_postgres() -> None:
    """Skip (or, with CAMPAIGN_STATES_REQUIRE_PG=1, fail) when no PostgreSQL is reachable."""
    if not _PG_REASON:
        _PG_REASON.append(_pg_unreachable_reason())
    reason = _PG_REASON[0]
    if reason is None:
        return
    if REQUIRE_PG:
        pytest.fail(f"CAMPAIGN_STATES_REQUIRE_PG=1 but {reason}")
    pytest.skip(reason)


REQUIRE_SPIN = os.environ.get("CAMPAIGN_STATES_REQUIRE_SPIN") == "1"


def require_spin() -> None:
    """Skip (or, with CAMPAIGN_STATES_REQUIRE_SPIN=1, fail) when Spin or gcc is absent."""
    import shutil

    missing = [tool for tool in ("spin", "gcc") if shutil.which(tool) is None]
    if not missing:
        return
    reason = f"{' and '.join(missing)} not installed (apt-get install spin gcc)"
    if REQUIRE_SPIN:
        pytest.fail(f"CAMPAIGN_STATES_REQUIRE_SPIN=1 but {reason}")
    pytest.skip(reason)


REQUIRE_GRAPHVIZ = os.environ.get("CAMPAIGN_STATES_REQUIRE_GRAPHVIZ") == "1"


def require_graphviz() -> None:
    """Skip (or, with CAMPAIGN_STATES_REQUIRE_GRAPHVIZ=1, fail) when Graphviz's `dot` is absent.

    Only rendering SVG needs the binary; the DOT and Mermaid text, and `diagram --check` (which
    compares the SVG's recorded source hash), do not, so only the tests that render call this.
    """
    import shutil

    if shutil.which("dot") is not None:
        return
    reason = "Graphviz's `dot` is not on PATH (apt-get install graphviz)"
    if REQUIRE_GRAPHVIZ:
        pytest.fail(f"CAMPAIGN_STATES_REQUIRE_GRAPHVIZ=1 but {reason}")
    pytest.skip(reason)


REDIS_URL = os.environ.get("CAMPAIGN_STATES_REDIS_URL", "redis://127.0.0.1:6379/11")
REQUIRE_REDIS = os.environ.get("CAMPAIGN_STATES_REQUIRE_REDIS") == "1"

_REDIS_REASON: list[str | None] = []


def _redis_unreachable_reason() -> str | None:
    try:
        import redis
    except ImportError:
        return "redis is not installed (pip install 'campaign-states[celery]')"
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        return None
    except redis.RedisError as e:
        return f"no Redis at CAMPAIGN_STATES_REDIS_URL={REDIS_URL}: {e}"


def require_redis() -> None:
    """Skip (or, with CAMPAIGN_STATES_REQUIRE_REDIS=1, fail) when no Redis is reachable."""
    if not _REDIS_REASON:
        _REDIS_REASON.append(_redis_unreachable_reason())
    reason = _REDIS_REASON[0]
    if reason is None:
        return
    if REQUIRE_REDIS:
        pytest.fail(f"CAMPAIGN_STATES_REQUIRE_REDIS=1 but {reason}")
    pytest.skip(reason)
