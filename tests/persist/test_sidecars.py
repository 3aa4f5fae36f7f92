"""Deleting a thread deletes what lives beside its checkpoints: approvals and run events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typing_extensions import TypedDict

from trellis import START, Approval, MemorySaver, ReviewQueue, SqliteSaver, StateGraph
from trellis.persist.events import event_log_for


class S(TypedDict, total=False):
    n: int


def _saver(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    if kind == "memory":
        return MemorySaver()
    if kind == "sqlite":
        return SqliteSaver.from_path(tmp_path / "runs.db")
    from trellis.persist.postgres import PostgresSaver

    saver = PostgresSaver.from_conn_string(
        request.getfixturevalue("pg_url"), schema=request.getfixturevalue("pg_schema")
    )
    saver.setup()
    request.addfinalizer(saver.close)
    request.addfinalizer(lambda: event_log_for(saver).close())  # type: ignore[attr-defined]
    return saver


@pytest.mark.parametrize(
    "kind", ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_deleting_a_thread_deletes_its_approvals_and_events(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    saver = _saver(kind, tmp_path, request)
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
