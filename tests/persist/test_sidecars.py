"""Deleting a thread deletes what lives beside its checkpoints: approvals and run events."""

from __future__ import annotations

from typing import Any

from typing_extensions import TypedDict

from trellis import START, Approval, ReviewQueue, StateGraph
from trellis.persist.events import event_log_for


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
