"""Deleting a thread deletes what lives beside its checkpoints: approvals and run events."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typing_extensions import TypedDict

from trellis import START, Approval, ApprovalPolicy, ReviewQueue, SqliteSaver, StateGraph
from trellis.hitl.store_memory import MemoryApprovalStore
from trellis.persist.events import MemoryEventLog, event_log_for, open_event_log


class S(TypedDict, total=False):
    n: int


def test_deleting_a_thread_deletes_its_approvals_and_events(saver: Any) -> None:
    """Runs on every backend (the ``saver`` fixture)."""
    builder = StateGraph(S)
    builder.add_node("delete", lambda s: {"n": 1}, approval=Approval(risk="high"))
    builder.add_edge(START, "delete")
    graph = builder.compile(checkpointer=saver, trace=True)
    for thread in ("gone", "kept"):
        graph.invoke({"n": 0}, {"configurable": {"thread_id": thread}})
    queue = ReviewQueue(saver)
    assert sorted(r.thread_id for r in queue.pending()) == ["gone", "kept"]
    graph.delete_thread("gone")
    assert [r.thread_id for r in queue.pending()] == ["kept"]
    assert queue.history("gone") == []
    assert event_log_for(saver).list("gone") == []
    assert event_log_for(saver).list("kept") != []


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


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_saver_that_never_opened_the_sidecars_still_deletes_their_rows(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """An admin process deleting a thread has no review queue or event log open."""
    runner, admin = _second_saver(kind, tmp_path, request)
    builder = StateGraph(S)
    builder.add_node("delete", lambda s: {"n": 1}, approval=Approval(risk="high"))
    builder.add_edge(START, "delete")
    graph = builder.compile(checkpointer=runner, trace=True)
    graph.invoke({"n": 0}, {"configurable": {"thread_id": "gone"}})
    admin.delete_thread("gone")
    assert ReviewQueue(runner).pending() == []
    assert ReviewQueue(runner).history("gone") == []
    assert event_log_for(runner).list("gone") == []
    runner.close()
    admin.close()


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
