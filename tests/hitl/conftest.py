"""Fixtures for the approval tests: stores and savers per backend, a manual clock.

PostgreSQL tests use ``TRELLIS_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) and a fresh schema per test. They
skip, with the reason shown, when the server is unreachable, unless
``TRELLIS_REQUIRE_SERVICES=1`` turns that into a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from trellis.hitl.store import ApprovalStore
from trellis.hitl.store_memory import MemoryApprovalStore
from trellis.hitl.store_sqlite import SqliteApprovalStore
from trellis.persist.memory import MemorySaver
from trellis.persist.sqlite import SqliteSaver

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
DB_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


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
        return f"{self.url}{sep}schema={self.schema}"

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
