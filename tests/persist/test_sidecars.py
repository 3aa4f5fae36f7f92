"""Deleting a thread deletes what lives beside its checkpoints: approvals and run events."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typing_extensions import TypedDict

from trellis import START, Approval, ApprovalPolicy, ReviewQueue, SqliteSaver, StateGraph
from trellis.hitl.store import store_for
from trellis.hitl.store_memory import MemoryApprovalStore
from trellis.persist.events import MemoryEventLog, event_log_for, open_event_log


class S(TypedDict, total=False):
    n: int


def _waiting_threads(saver: Any, *threads: str) -> Any:
    """A gated, traced graph over ``saver``, with ``threads`` each waiting at the gate
    (so each has an approval request and run history)."""
    builder = StateGraph(S)
    builder.add_node("delete", lambda s: {"n": 1}, approval=Approval(risk="high"))
    builder.add_edge(START, "delete")
    graph = builder.compile(checkpointer=saver, trace=True)
    for thread in threads:
        graph.invoke({"n": 0}, {"configurable": {"thread_id": thread}})
    return graph


def test_deleting_a_thread_deletes_its_approvals_and_events(saver: Any) -> None:
    """Runs on every backend (the ``saver`` fixture)."""
    graph = _waiting_threads(saver, "gone", "kept")
    queue = ReviewQueue(saver)
    assert sorted(r.thread_id for r in queue.pending()) == ["gone", "kept"]
    graph.delete_thread("gone")
    assert [r.thread_id for r in queue.pending()] == ["kept"]
    assert queue.history("gone") == []
    assert event_log_for(saver).list("gone") == []
    assert event_log_for(saver).list("kept") != []


@pytest.mark.parametrize("call", ["prune", "aprune"])
async def test_pruning_a_whole_thread_deletes_its_approvals_and_events(
    saver: Any, call: str
) -> None:
    """Runs on every backend: a thread prune removes whole goes as if deleted."""
    graph = _waiting_threads(saver, "gone", "waiting")
    queue = ReviewQueue(graph=graph)
    (request,) = [r for r in queue.pending() if r.thread_id == "gone"]
    queue.approve(request.id, reviewer="alice")  # its run finishes: nothing waits on "gone"
    log = event_log_for(saver)
    assert queue.history("gone") != [] and log.list("gone") != []
    later = time.time() + 3600
    try:
        if call == "prune":
            assert saver.prune(ttl=60, now=later) > 0
        else:
            assert await saver.aprune(ttl=60, now=later) > 0
        assert saver.get_tuple("gone") is None
        assert queue.history("gone") == []
        assert log.list("gone") == []
        assert [r.thread_id for r in queue.pending()] == ["waiting"]  # waiting: never pruned
        assert log.list("waiting") != []
    finally:
        if hasattr(saver, "aclose"):  # an async pool belongs to this test's loop
            await saver.aclose()


def test_approvals_and_history_open_the_database_the_saver_names(tmp_path: Path) -> None:
    class AuditedSaver(SqliteSaver):  # a user's subclass is still a SQLite saver
        pass

    path = tmp_path / "runs.db"
    saver = AuditedSaver.from_path(path)
    assert saver.database is not None and saver.database.kind == "sqlite"
    builder = StateGraph(S)
    builder.add_node("delete", lambda s: {"n": 1}, approval=Approval(risk="high"))
    builder.add_edge(START, "delete")
    builder.compile(checkpointer=saver, trace=True).invoke(
        {"n": 0}, {"configurable": {"thread_id": "t1"}}
    )
    # Another process opening the same file sees the request and the run's events.
    reopened = SqliteSaver.from_path(path)
    assert [r.thread_id for r in ReviewQueue(reopened).pending()] == ["t1"]
    assert open_event_log(str(path)).list("t1") != []


def test_an_in_memory_sqlite_saver_keeps_its_sidecars_in_memory() -> None:
    saver = SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False))
    assert saver.database is None
    assert isinstance(event_log_for(saver), MemoryEventLog)


@pytest.mark.postgres
def test_postgres_sidecars_connect_as_the_saver_does(pg_url: str, pg_schema: str) -> None:
    """Connection arguments given to the saver's pool (here the database name, left
    out of the conninfo) reach the approval and run-history stores: their rows land
    in the saver's database, not in a default one."""
    psycopg = pytest.importorskip("psycopg")
    psycopg_pool = pytest.importorskip("psycopg_pool")
    from trellis.persist.postgres import PostgresSaver

    parts = psycopg.conninfo.conninfo_to_dict(pg_url)
    dbname = parts.pop("dbname")
    kwargs = {"dbname": dbname, "autocommit": True}
    pool = psycopg_pool.ConnectionPool(
        psycopg.conninfo.make_conninfo(**parts), kwargs=kwargs, open=True
    )
    try:
        saver = PostgresSaver(pool, schema=pg_schema)
        builder = StateGraph(S)
        builder.add_node("delete", lambda s: {"n": 1}, approval=Approval(risk="high"))
        builder.add_edge(START, "delete")
        graph = builder.compile(checkpointer=saver, trace=True)
        graph.invoke({"n": 0}, {"configurable": {"thread_id": "t1"}})
        with psycopg.connect(pg_url) as conn:
            requests = conn.execute(
                f'SELECT thread_id FROM "{pg_schema}".trellis_approval_requests'
            ).fetchall()
            events = conn.execute(
                f'SELECT count(*) FROM "{pg_schema}".trellis_events WHERE thread_id = %s', ("t1",)
            ).fetchone()
        assert requests == [("t1",)]
        assert events is not None and events[0] > 0
        # Their own connections, like the saver's, never prepare statements
        # (persist.base.own_connection_kwargs says why).
        assert event_log_for(saver)._connection().prepare_threshold is None
        with store_for(saver)._pool.connection() as conn:
            assert conn.prepare_threshold is None
    finally:
        pool.close()


def _second_saver(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """Two savers over one database: the second has never opened a sidecar store."""
    if kind == "sqlite":
        return SqliteSaver.from_path(tmp_path / "runs.db"), SqliteSaver.from_path(
            tmp_path / "runs.db"
        )
    from trellis.persist.postgres import PostgresSaver

    url, schema = request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema")
    return (
        PostgresSaver.from_conn_string(url, schema=schema, pool_size=1),
        PostgresSaver.from_conn_string(url, schema=schema, pool_size=1),
    )


def _wait_at_gate(saver: Any, thread: str) -> None:
    """A traced run of a gated node, waiting for its approval on ``thread``."""
    builder = StateGraph(S)
    builder.add_node("delete", lambda s: {"n": 1}, approval=Approval(risk="high"))
    builder.add_edge(START, "delete")
    graph = builder.compile(checkpointer=saver, trace=True)
    graph.invoke({"n": 0}, {"configurable": {"thread_id": thread}})


def test_deleting_a_thread_deletes_its_requests_in_the_policys_own_store(
    tmp_path: Path,
) -> None:
    store = MemoryApprovalStore()
    builder = StateGraph(S)
    builder.add_node("delete", lambda s: {"n": 1}, approval=Approval(risk="high"))
    builder.add_edge(START, "delete")
    graph = builder.compile(
        checkpointer=SqliteSaver.from_path(tmp_path / "runs.db"),
        approval_policy=ApprovalPolicy(store=store),
    )
    graph.invoke({"n": 0}, {"configurable": {"thread_id": "t"}})
    queue = ReviewQueue(graph=graph)  # finds the requests where the graph keeps them
    (request,) = queue.pending()
    queue.approve(request.id, reviewer="alice")
    assert graph.get_state({"configurable": {"thread_id": "t"}}).values == {"n": 1}
    graph.delete_thread("t")
    assert store.history("t") == []


@pytest.mark.parametrize("how", ["delete_thread", "prune"])
def test_the_saver_deleting_a_thread_reaches_the_policys_own_store(
    tmp_path: Path, how: str
) -> None:
    # Not through the graph: the saver itself (a retention job), in the process
    # whose runs used the policy's store.
    store = MemoryApprovalStore()
    saver = SqliteSaver.from_path(tmp_path / "runs.db")
    builder = StateGraph(S)
    builder.add_node("delete", lambda s: {"n": 1}, approval=Approval(risk="high"))
    builder.add_edge(START, "delete")
    graph = builder.compile(checkpointer=saver, approval_policy=ApprovalPolicy(store=store))
    for thread in ("t", "kept"):
        graph.invoke({"n": 0}, {"configurable": {"thread_id": thread}})
    queue = ReviewQueue(graph=graph)
    done = next(r for r in queue.pending() if r.thread_id == "t")
    queue.approve(done.id, reviewer="alice")
    if how == "delete_thread":
        saver.delete_thread("t")
    else:  # "kept" waits at its gate, so only "t" goes
        assert saver.prune(ttl=0, now=time.time() + 1) > 0
    assert store.history("t") == []
    assert [r.thread_id for r in queue.pending()] == ["kept"]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.parametrize("deleter", ["another saver", "an admin process"])
def test_a_saver_that_never_opened_the_sidecars_still_deletes_their_rows(
    kind: str, deleter: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Whoever deletes the thread (here another saver over the database, or a
    process that imports nothing but a saver) has no review queue or event log open."""
    runner, admin = _second_saver(kind, tmp_path, request)
    _wait_at_gate(runner, "gone")
    if deleter == "another saver":
        admin.delete_thread("gone")
    else:
        if kind == "sqlite":
            path = str(tmp_path / "runs.db")
            opens = f"from trellis import SqliteSaver\ns = SqliteSaver.from_path({path!r})"
        else:
            url, schema = request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema")
            opens = (
                "from trellis.persist.postgres import PostgresSaver\n"
                f"s = PostgresSaver.from_conn_string({url!r}, schema={schema!r})"
            )
        script = f"import sys\n{opens}\nassert 'trellis.hitl' not in sys.modules\n"
        done = subprocess.run(
            [sys.executable, "-c", script + "s.delete_thread('gone')\n"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    assert ReviewQueue(runner).pending() == []
    assert ReviewQueue(runner).history("gone") == []
    assert event_log_for(runner).list("gone") == []
    runner.close()
    admin.close()


def test_deleting_a_thread_creates_no_sidecar_tables(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    builder = StateGraph(S)
    builder.add_node("plain", lambda s: {"n": 1})
    builder.add_edge(START, "plain")
    saver = SqliteSaver.from_path(path)
    builder.compile(checkpointer=saver).invoke({"n": 0}, {"configurable": {"thread_id": "t"}})
    saver.delete_thread("t")
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert not {t for t in tables if t.startswith(("trellis_approval", "trellis_events"))}
