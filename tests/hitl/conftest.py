"""Fixtures for the approval tests: stores and savers per backend, a manual clock.

PostgreSQL tests use ``TRELLIS_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) and a fresh schema per test. They
skip, with the reason shown, when the server is unreachable, unless
``TRELLIS_REQUIRE_SERVICES=1`` turns that into a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from trellis.hitl.store import ApprovalStore
from trellis.hitl.store_memory import MemoryApprovalStore
from trellis.hitl.store_sqlite import SqliteApprovalStore
from trellis.persist.memory import MemorySaver
from trellis.persist.sqlite import SqliteSaver

PG_URL = os.environ.get("TRELLIS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("TRELLIS_REQUIRE_SERVICES") == "1"
BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
DB_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _pg_problem() -> str | None:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
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
    """A fresh schema name, dropped after the test."""
    import psycopg

    schema = f"trellis_hitl_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


class Backend:
    """Opens stores and savers over one database (file, schema, or memory)."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.path = tmp_path / "runs.db"
        self.url = ""
        self.schema = "public"
        self.opened: list[Any] = []
        self._memory_saver: MemorySaver | None = None
        if kind == "postgres":
            self.url = request.getfixturevalue("pg_url")
            self.schema = request.getfixturevalue("pg_schema")

    @property
    def db(self) -> str:
        """What ``--db`` / ``open_store`` take for this database (the test schema in the URL)."""
        if self.kind != "postgres":
            return str(self.path)
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}options=-csearch_path%3D{self.schema}"

    def store(self) -> ApprovalStore:
        """A new store (own connection) over this backend's database."""
        if self.kind == "memory":
            return MemoryApprovalStore()
        if self.kind == "sqlite":
            store: ApprovalStore = SqliteApprovalStore(self.path)
        else:
            from trellis.hitl.store_postgres import PostgresApprovalStore

            store = PostgresApprovalStore(self.url, schema=self.schema)
        self.opened.append(store)
        return store

    def saver(self) -> Any:
        """A checkpointer over this database; memory savers are shared in the test."""
        if self.kind == "memory":
            if self._memory_saver is None:
                self._memory_saver = MemorySaver()
            return self._memory_saver
        if self.kind == "sqlite":
            saver: Any = SqliteSaver.from_path(self.path)
        else:
            from trellis.persist.postgres import PostgresSaver

            saver = PostgresSaver.from_conn_string(self.url, schema=self.schema, pool_size=4)
        self.opened.append(saver)
        return saver

    def close(self) -> None:
        for thing in reversed(self.opened):
            thing.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path, request)
    yield b
    b.close()


@pytest.fixture(params=DB_BACKENDS)
def db_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path, request)
    yield b
    b.close()


@pytest.fixture
def make_store(backend: Backend) -> Callable[[], ApprovalStore]:
    return backend.store
