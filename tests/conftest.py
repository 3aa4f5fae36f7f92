"""What every test directory shares: the PostgreSQL test server.

Tests that need PostgreSQL use the ``pg_url`` fixture (URL from
``TRELLIS_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``)
and, for isolation, ``pg_schema``: a fresh schema dropped after the test. Without a
reachable server they are skipped with the reason shown, unless
``TRELLIS_REQUIRE_SERVICES=1`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_URL = os.environ.get("TRELLIS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("TRELLIS_REQUIRE_SERVICES") == "1"


def _pg_problem() -> str | None:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - the postgres extra installs it
        return f"psycopg is not installed: {exc}"
    try:
        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_URL} is unreachable: {exc}"
    return None


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The test server's URL; skips (or fails under TRELLIS_REQUIRE_SERVICES=1) without it."""
    problem = _pg_problem()
    if problem is not None:
        if REQUIRE_SERVICES:
            pytest.fail(f"TRELLIS_REQUIRE_SERVICES=1 but {problem}")
        pytest.skip(problem)
    return PG_URL


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh, empty schema name, dropped after the test."""
    import psycopg

    schema = f"trellis_test_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def graph_apis() -> dict[str, object]:
    """The graph-building modules to compare: Trellis's, and LangGraph's when installed
    (each has StateGraph, START and END)."""
    import trellis

    apis: dict[str, object] = {"trellis": trellis}
    try:
        import langgraph.graph
    except ImportError:
        return apis
    apis["langgraph"] = langgraph.graph
    return apis
