"""The two LangGraph-API engines behind one namespace, plus saver adapters.

Shapes are written once against ``api(engine)``: the same builder code runs
on LangGraph and on Trellis by swapping the namespace, as a user porting a
program would swap imports. Trellis is imported lazily, and a missing name
raises ``NotBuilt`` so its cells read "n/a (not built)".

>>> g = api("langgraph").StateGraph(MyState)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

from benchmarks.harness import NotBuilt, Unavailable

LANGGRAPH_NAMES = ("StateGraph", "START", "END", "Send", "Command", "interrupt")
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


def api(engine: str) -> Any:
    """The LangGraph-compatible names of ``engine`` ("langgraph" or "trellis")."""
    if engine == "langgraph":
        import langgraph.graph as lg_graph
        import langgraph.types as lg_types
        from langgraph.checkpoint.memory import InMemorySaver

        return SimpleNamespace(
            StateGraph=lg_graph.StateGraph,
            START=lg_graph.START,
            END=lg_graph.END,
            Send=lg_types.Send,
            Command=lg_types.Command,
            interrupt=lg_types.interrupt,
            InMemorySaver=InMemorySaver,
        )
    if engine == "trellis":
        try:
            import trellis
        except ImportError as exc:
            raise NotBuilt(str(exc)) from exc
        missing = [n for n in LANGGRAPH_NAMES if not hasattr(trellis, n)]
        if "StateGraph" in missing:
            raise NotBuilt("trellis.StateGraph")
        return _Strict(trellis)
    raise Unavailable(f"{engine} has no LangGraph API")


class _Strict:
    """Attribute access on the trellis module that says NotBuilt when a name is absent."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        try:
            return getattr(self._module, name)
        except AttributeError as exc:
            raise NotBuilt(f"trellis.{name}") from exc


def run_config(thread_id: str | None = None, limit: int = 100_000) -> dict[str, Any]:
    """A config with a raised recursion limit (LangGraph's default of 25 ends a 100-node chain)."""
    config: dict[str, Any] = {"recursion_limit": limit}
    if thread_id is not None:
        config["configurable"] = {"thread_id": thread_id}
    return config


def durability_kwargs(engine: str, compiled: Any) -> dict[str, Any]:
    """``durability="sync"`` where the engine accepts it: a checkpoint per step, awaited."""
    if engine == "langgraph":
        return {"durability": "sync"}
    params = inspect.signature(compiled.invoke).parameters.values()
    if any(p.name == "durability" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return {"durability": "sync"}
    return {}


@contextlib.contextmanager
def memory_saver(engine: str) -> Iterator[Any]:
    """An in-memory checkpointer of ``engine``."""
    if engine == "langgraph":
        from langgraph.checkpoint.memory import InMemorySaver

        yield InMemorySaver()
        return
    mod = api(engine)
    try:
        cls = mod.InMemorySaver
    except NotBuilt:
        cls = mod.MemorySaver
    yield cls()


def _check_level(level: str) -> str:
    level = level.upper()
    if level not in SYNCHRONOUS_LEVELS:
        raise ValueError(f"PRAGMA synchronous must be one of {SYNCHRONOUS_LEVELS}, got {level!r}")
    return level


def synchronous_of(saver: Any) -> str:
    """The PRAGMA synchronous a saver's connection really uses, when it exposes one."""
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    for attr in ("conn", "_conn", "connection", "_connection"):
        conn = getattr(saver, attr, None)
        if isinstance(conn, sqlite3.Connection):
            row = conn.execute("PRAGMA synchronous").fetchone()
            return names.get(int(row[0]), str(row[0]))
    return "unknown"


@contextlib.contextmanager
def sqlite_saver(engine: str, path: Path, synchronous: str) -> Iterator[Any]:
    """A SQLite checkpointer on a file, WAL mode, PRAGMA synchronous=``synchronous``.

    LangGraph's saver never sets synchronous itself, so it is set explicitly on
    its connection (after ``setup()``, which switches the file to WAL).
    """
    level = _check_level(synchronous)
    with contextlib.ExitStack() as stack:
        if engine == "langgraph":
            from langgraph.checkpoint.sqlite import SqliteSaver

            conn = sqlite3.connect(str(path), check_same_thread=False)
            stack.callback(conn.close)
            saver = SqliteSaver(conn)
            saver.setup()
            conn.execute(f"PRAGMA synchronous={level}")
            conn.commit()
        else:
            cls = api(engine).SqliteSaver
            kwargs = _accepted(cls, synchronous=level)
            factory = getattr(cls, "from_path", None) or getattr(cls, "from_conn_string", None)
            made = factory(str(path), **kwargs) if factory else cls(str(path), **kwargs)
            saver = stack.enter_context(made) if hasattr(made, "__enter__") else made
            if hasattr(saver, "close") and not hasattr(made, "__enter__"):
                stack.callback(saver.close)
            if hasattr(saver, "setup"):
                saver.setup()
        yield saver


def _accepted(fn: Any, **kwargs: Any) -> dict[str, Any]:
    """The subset of ``kwargs`` that ``fn`` (or its ``from_conn_string``) declares."""
    target = getattr(fn, "from_conn_string", fn)
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[tuple[str, str]]:
    """A fresh schema for one benchmark; yields its name and a URL whose
    search_path points at it (LangGraph's saver uses the search path, Trellis's
    takes the schema by name).

    The schema is dropped afterwards, so nothing is left in the shared database.
    """
    try:
        import psycopg
    except ImportError as exc:
        raise Unavailable("psycopg not installed") from exc
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        raise Unavailable("postgres unreachable") from exc
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            sep = "&" if "?" in url else "?"
            yield schema, f"{url}{sep}options={quote(f'-c search_path={schema}')}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def postgres_saver(engine: str, url: str, schema: str) -> Iterator[Any]:
    """A Postgres checkpointer of ``engine`` on ``url`` whose tables ``setup()`` creates
    in ``schema``."""
    with contextlib.ExitStack() as stack:
        if engine == "langgraph":
            import psycopg
            from langgraph.checkpoint.postgres import PostgresSaver
            from psycopg.rows import dict_row

            conn = psycopg.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
            stack.callback(conn.close)
            saver: Any = PostgresSaver(conn)
        else:
            cls = api(engine).PostgresSaver
            factory = getattr(cls, "from_conn_string", None)
            made = factory(url, schema=schema) if factory else cls(url, schema=schema)
            saver = stack.enter_context(made) if hasattr(made, "__enter__") else made
            if hasattr(saver, "close") and not hasattr(made, "__enter__"):
                stack.callback(saver.close)
        saver.setup()
        yield saver
