"""Fixtures for the saver tests: one ``saver`` per backend, and a thread builder.

PostgreSQL tests use ``TRELLIS_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) and a fresh schema per test. They
are skipped, with the reason shown, when the server is unreachable, unless
``TRELLIS_REQUIRE_SERVICES=1`` makes that a failure.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from trellis.persist.base import (
    Checkpoint,
    CheckpointTuple,
    PendingWrite,
    Put,
    new_checkpoint_id,
)
from trellis.persist.events import event_log_for
from trellis.persist.memory import MemorySaver
from trellis.persist.sqlite import SqliteSaver

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class Backend:
    """Makes savers over one store and reaches into it to corrupt bytes."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.path = tmp_path / "checkpoints.db"
        self.made: list[Any] = []
        self.memory: MemorySaver | None = None
        if kind == "postgres":
            self.url = request.getfixturevalue("pg_url")
            self.schema = request.getfixturevalue("pg_schema")

    def make(self, **kwargs: Any) -> Any:
        """A saver; memory savers share one store unless ``fresh=True``."""
        fresh = kwargs.pop("fresh", False)
        if self.kind == "memory":
            if self.memory is None or fresh or kwargs:
                saver = MemorySaver(**kwargs)
                self.memory = self.memory or saver
                return saver
            return self.memory
        if self.kind == "sqlite":
            saver = SqliteSaver.from_path(self.path, **kwargs)
        else:
            from trellis.persist.postgres import PostgresSaver

            saver = PostgresSaver.from_conn_string(
                self.url, schema=self.schema, pool_size=4, **kwargs
            )
        self.made.append(saver)
        return saver

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run SQL straight against the store (tests only)."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.path, isolation_level=None) as conn:
                return conn.execute(sql, params).fetchall()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{self.schema}"')
            cur = conn.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    def corrupt(self, saver: Any, thread_id: str, what: str = "blobs") -> None:
        """Overwrite the stored bytes of one thread's channel blobs (or checkpoint state)."""
        junk = b"\xc1\xc1 not msgpack"
        if self.kind == "memory":
            for (tid, _), ns in saver._data.items():
                if tid != thread_id:
                    continue
                if what == "blobs":
                    ns.blobs = {k: dataclasses.replace(b, data=junk) for k, b in ns.blobs.items()}
                else:
                    ns.checkpoints = {
                        k: dataclasses.replace(c, state=junk) for k, c in ns.checkpoints.items()
                    }
            return
        table, column = (
            ("trellis_blobs", "data") if what == "blobs" else ("trellis_checkpoints", "state")
        )
        self.execute(
            f"UPDATE {table} SET {column} = ? WHERE tid IN "
            "(SELECT tid FROM trellis_threads WHERE thread_id = ?)",
            (junk, thread_id),
        )

    def close(self) -> None:
        for saver in self.made:
            saver.close()
            event_log_for(saver).close()  # a traced run's history has its own connection


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path, request)
    yield b
    b.close()


@pytest.fixture
def saver(backend: Backend) -> Any:
    return backend.make()


class History:
    """Writes checkpoints of one thread the way the engine does, and remembers them.

    >>> h = History(saver, "t1")
    >>> first = h.put(set={"n": 1}, append={"log": ["a"]})
    """

    def __init__(self, saver: Any, thread_id: str | None = None, ns: str = "") -> None:
        self.saver = saver
        self.thread_id = thread_id or f"t-{uuid.uuid4().hex[:10]}"
        self.ns = ns
        self.head: str | None = None
        self.checkpoints: dict[str, Checkpoint] = {}
        self.metadata: dict[str, dict[str, Any]] = {}

    def make(
        self,
        *,
        set: Mapping[str, Any] | None = None,
        append: Mapping[str, list[Any]] | None = None,
        parent: str | None | bool = True,
        created_at: float | None = None,
    ) -> Checkpoint:
        parent_id = self.head if parent is True else (parent or None)
        base = self.checkpoints[parent_id] if parent_id else None
        values = dict(base.values) if base else {}
        versions = dict(base.versions) if base else {}
        cid = new_checkpoint_id()
        appends: dict[str, list[Any]] = {}
        for k, v in (set or {}).items():
            values[k], versions[k] = v, cid
        for k, items in (append or {}).items():
            values[k] = list(values.get(k, [])) + list(items)
            versions[k], appends[k] = cid, list(items)
        return Checkpoint(
            id=cid,
            parent_id=parent_id,
            step=base.step + 1 if base else -1,
            created_at=time.time() if created_at is None else created_at,
            values=values,
            versions=versions,
            appends=appends,
            pending={"nodes": sorted(values), "visits": {"a": 1}},
            fingerprint="fp-1",
        )

    def _record(self, ck: Checkpoint, metadata: dict[str, Any]) -> str:
        self.checkpoints[ck.id] = ck
        self.metadata[ck.id] = metadata
        self.head = ck.id
        return ck.id

    def put(
        self,
        *,
        metadata: Mapping[str, Any] | None = None,
        writes: Sequence[PendingWrite] = (),
        expected_head: str | None | bool = True,
        **kwargs: Any,
    ) -> str:
        ck = self.make(**kwargs)
        md = dict(metadata) if metadata is not None else {"source": "loop", "step": ck.step}
        exp = self.head if expected_head is True else (expected_head or None)
        self.saver.put(
            self.thread_id, ck, md, expected_head=exp, checkpoint_ns=self.ns, writes=writes
        )
        return self._record(ck, md)

    def put_many(self, *changes: Mapping[str, Any], asynchronous: bool = False) -> Any:
        """Put one checkpoint per ``changes`` entry (``make`` keywords), each the child
        of the one before, with one ``put_many``; returns the ids (or, with
        ``asynchronous``, an awaitable of them). Nothing is recorded until it succeeds."""
        expected, head, made = self.head, self.head, []
        for change in changes:
            ck = self.make(**change)
            self.checkpoints[ck.id], self.head = ck, ck.id  # so the next one builds on it
            made.append(ck)
        for ck in made:
            del self.checkpoints[ck.id]
        self.head = head
        puts = [Put(ck, {"source": "loop", "step": ck.step}) for ck in made]

        def record() -> list[str]:
            return [self._record(p.checkpoint, dict(p.metadata)) for p in puts]

        if asynchronous:

            async def run() -> list[str]:
                await self.saver.aput_many(
                    self.thread_id, puts, expected_head=expected, checkpoint_ns=self.ns
                )
                return record()

            return run()
        self.saver.put_many(self.thread_id, puts, expected_head=expected, checkpoint_ns=self.ns)
        return record()

    async def aput(
        self,
        *,
        metadata: Mapping[str, Any] | None = None,
        writes: Sequence[PendingWrite] = (),
        **kwargs: Any,
    ) -> str:
        ck = self.make(**kwargs)
        md = dict(metadata) if metadata is not None else {"source": "loop", "step": ck.step}
        await self.saver.aput(
            self.thread_id, ck, md, expected_head=self.head, checkpoint_ns=self.ns, writes=writes
        )
        return self._record(ck, md)

    def check(self, got: CheckpointTuple | None, cid: str | None = None) -> None:
        """Assert ``got`` is exactly what was put as ``cid`` (default: the head)."""
        want = self.checkpoints[cid or self.head or ""]
        assert got is not None
        assert got.thread_id == self.thread_id and got.checkpoint_ns == self.ns
        c = got.checkpoint
        assert c.id == want.id and c.parent_id == want.parent_id and c.step == want.step
        assert c.values == want.values
        assert c.versions == want.versions
        assert c.pending == want.pending and c.fingerprint == want.fingerprint
        assert c.created_at == pytest.approx(want.created_at)
        assert got.metadata == self.metadata[want.id]


@pytest.fixture
def history(saver: Any) -> Callable[..., History]:
    """``history()`` -> a History on the test's saver (fresh thread id each call)."""
    return lambda *args, **kwargs: History(saver, *args, **kwargs)
