"""Fixtures for the durability tests: real savers, and a harness that runs and kills workers.

``saver_factory`` is parametrized over memory, SQLite and PostgreSQL (in-process
tests); ``durable_saver_factory`` over SQLite and PostgreSQL only (crash tests:
a memory saver dies with its process). ``crash`` runs ``_crash_worker.py`` as a
real subprocess, waits for it to reach a barrier file, and SIGKILLs it.

PostgreSQL: ``TRELLIS_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``), a fresh schema per test, dropped
afterwards. Unreachable: the test is skipped with the reason shown, unless
``TRELLIS_REQUIRE_SERVICES=1`` makes that a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typing_extensions import TypedDict

from trellis.persist.memory import MemorySaver
from trellis.persist.sqlite import SqliteSaver

WORKER = Path(__file__).with_name("_crash_worker.py")
DEADLINE = 30.0  # seconds a worker may take to reach a barrier or to finish; never hit when green


class SaverFactory:
    """Makes savers over one store, in this process or (as argv) in a worker.

    Memory savers share one store per test: ``make()`` twice is one database,
    as two SQLite savers over one file are.
    """

    def __init__(self, kind: str, tmp_path: Path, url: str | None = None) -> None:
        self.kind = kind
        self.path = tmp_path / "checkpoints.db"
        self.url = url
        self.schema = f"trellis_engine_{uuid.uuid4().hex[:12]}" if kind == "postgres" else None
        self.made: list[Any] = []
        self._memory: MemorySaver | None = None

    def __repr__(self) -> str:
        return f"SaverFactory({self.kind})"

    def make(self) -> Any:
        if self.kind == "memory":
            if self._memory is None:
                self._memory = MemorySaver()
            return self._memory
        if self.kind == "sqlite":
            saver: Any = SqliteSaver.from_path(self.path)
        else:
            from trellis.persist.postgres import PostgresSaver

            assert self.url is not None and self.schema is not None
            saver = PostgresSaver.from_conn_string(self.url, schema=self.schema, pool_size=2)
            saver.setup()
        self.made.append(saver)
        return saver

    def worker_args(self) -> list[str]:
        """How ``_crash_worker.py`` opens the same store."""
        if self.kind == "sqlite":
            return ["--backend", "sqlite", "--target", str(self.path)]
        if self.kind == "postgres":
            assert self.url is not None and self.schema is not None
            return ["--backend", "postgres", "--target", self.url, "--schema", self.schema]
        raise ValueError("a memory saver cannot be shared with another process")

    def close(self) -> None:
        for saver in self.made:
            saver.close()
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def _factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SaverFactory]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    factory = SaverFactory(request.param, tmp_path, url)
    yield factory
    factory.close()


_PG = pytest.param("postgres", marks=pytest.mark.postgres)


@pytest.fixture(params=["memory", "sqlite", _PG])
def saver_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SaverFactory]:
    """A real saver of each kind (in-process tests)."""
    yield from _factory(request, tmp_path)


@pytest.fixture(params=["sqlite", _PG])
def durable_saver_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SaverFactory]:
    """A saver that outlives its process (crash tests)."""
    yield from _factory(request, tmp_path)


@pytest.fixture
def thread_id() -> str:
    return f"t-{uuid.uuid4().hex}"


# -- the crash harness -------------------------------------------------------------


class Crash:
    """Runs ``_crash_worker.py`` scenarios against one store and one ledger directory.

    >>> crash.kill_at("chain", "E")          # start, wait until inside E, SIGKILL
    >>> out = crash.run("chain", action="resume")
    >>> crash.ledger()                        # every node body execution, in order
    """

    def __init__(self, factory: SaverFactory, directory: Path, thread: str) -> None:
        self.factory = factory
        self.dir = directory
        self.thread = thread
        self.dir.mkdir(parents=True, exist_ok=True)
        self.live: list[subprocess.Popen[bytes]] = []
        self._n = 0

    def _argv(self, scenario: str, action: str, block: str | None, extra: list[str]) -> list[str]:
        argv = [sys.executable, str(WORKER), *self.factory.worker_args()]
        argv += ["--thread", self.thread, "--scenario", scenario, "--dir", str(self.dir)]
        argv += ["--action", action, *extra]
        if block is not None:
            argv += ["--block", block]
        return argv

    def _spawn(self, argv: list[str]) -> tuple[subprocess.Popen[bytes], Path, Path]:
        self._n += 1
        out = self.dir / f"worker-{self._n}.out"
        err = self.dir / f"worker-{self._n}.err"
        with out.open("wb") as fout, err.open("wb") as ferr:
            proc = subprocess.Popen(argv, stdout=fout, stderr=ferr)
        self.live.append(proc)
        return proc, out, err

    def run(self, scenario: str, action: str = "run", *extra: str) -> dict[str, Any]:
        """Run a worker to the end; its JSON report (``ok``, ``result`` or ``error_type``...)."""
        proc, out, err = self._spawn(self._argv(scenario, action, None, list(extra)))
        try:
            proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"worker {scenario}/{action} did not finish: {err.read_text()[-2000:]}")
        text = out.read_text().strip()
        if proc.returncode not in (0, 1) or not text:
            pytest.fail(
                f"worker {scenario}/{action} exited {proc.returncode}: {err.read_text()[-3000:]}"
            )
        report: dict[str, Any] = json.loads(text.splitlines()[-1])
        return report

    def kill_at(
        self,
        scenario: str,
        barrier: str,
        *extra: str,
        action: str = "run",
        also: Callable[[], bool] | None = None,
    ) -> None:
        """Start a worker that blocks at ``barrier``; SIGKILL it once it is there.

        ``also``: a further condition to wait for (polled) before the kill.
        """
        marker = self.dir / f"at-{barrier}"
        marker.unlink(missing_ok=True)
        proc, _, err = self._spawn(self._argv(scenario, action, barrier, list(extra)))
        deadline = time.monotonic() + DEADLINE
        while not (marker.exists() and (also is None or also())):
            if proc.poll() is not None:
                pytest.fail(
                    f"worker {scenario} exited ({proc.returncode}) before reaching {barrier!r}: "
                    f"{err.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"worker {scenario} never reached {barrier!r}")
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(DEADLINE) == -signal.SIGKILL

    def ledger(self) -> list[dict[str, Any]]:
        """Every side effect the workers recorded, in order."""
        path = self.dir / "ledger.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.ledger() if e["event"] == event]

    def count(self, event: str) -> int:
        return len(self.events(event))

    def stop(self) -> None:
        for proc in self.live:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def crash(durable_saver_factory: SaverFactory, tmp_path: Path, thread_id: str) -> Iterator[Crash]:
    harness = Crash(durable_saver_factory, tmp_path / "crash", thread_id)
    yield harness
    harness.stop()


@pytest.fixture(scope="session")
def scenarios() -> ModuleType:
    """``_crash_worker.py`` imported in-process: the same graphs, for uninterrupted runs."""
    spec = importlib.util.spec_from_file_location("trellis_crash_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class OneKey(TypedDict, total=False):
    v: str


def two_writers_of_one_key(*, asking: bool = False, checkpointer: Any = None) -> Any:
    """START -> x and y in parallel, both writing ``v``, which has no reducer (and,
    ``asking``, a third node that waits on ``interrupt("q")`` and writes ``v`` too)."""
    from trellis import START, StateGraph, interrupt

    builder = StateGraph(OneKey)
    builder.add_node("x", lambda s: {"v": "x"})
    builder.add_node("y", lambda s: {"v": "y"})
    if asking:
        builder.add_node("ask", lambda s: {"v": interrupt("q")})
    for name in ("x", "y", "ask") if asking else ("x", "y"):
        builder.add_edge(START, name)
    return builder.compile(checkpointer=checkpointer)
