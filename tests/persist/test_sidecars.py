"""Deleting a thread deletes what lives beside its checkpoints: approvals and run events."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from typing_extensions import TypedDict

from trellis import START, Approval, ReviewQueue, SqliteSaver, StateGraph
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
