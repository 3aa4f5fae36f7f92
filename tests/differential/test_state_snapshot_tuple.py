"""``StateSnapshot`` and ``StateTask`` are named tuples with LangGraph 1.2's fields, so
code that indexes, unpacks or ``_asdict()``s a snapshot ports unchanged."""

from typing import Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


class S(TypedDict, total=False):
    n: int


def _paused(lib: str) -> Any:
    """A thread stopped at interrupt() in node ``ask``, after ``a`` ran."""
    if lib == "langgraph":
        from langgraph.checkpoint.memory import InMemorySaver as Saver
        from langgraph.graph import START, StateGraph
        from langgraph.types import interrupt
    else:
        from trellis import START, StateGraph, interrupt  # type: ignore[assignment]
        from trellis import MemorySaver as Saver  # type: ignore[assignment]

    g = StateGraph(S)
    g.add_node("a", lambda s: {"n": 1})
    g.add_node("ask", lambda s: {"n": interrupt("how many?")})
    g.add_edge(START, "a")
    g.add_edge("a", "ask")
    graph = g.compile(checkpointer=Saver())
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"n": 0}, config)
    return graph.get_state(config)


def _shape(snapshot: Any) -> dict[str, Any]:
    values, next_nodes, *_ = snapshot  # unpacking, as a tuple
    (task,) = snapshot.tasks
    return {
        "fields": snapshot._fields,
        "task_fields": task._fields,
        "indexed": (snapshot[0], snapshot[1], task[1]),
        "unpacked": (values, next_nodes),
        "asdict_keys": list(snapshot._asdict()),
        "task_interrupt_values": [i.value for i in task._asdict()["interrupts"]],
        "replaced": snapshot._replace(next=()).next,
    }


def test_a_snapshot_indexes_unpacks_and_converts_as_langgraphs() -> None:
    assert _shape(_paused("trellis")) == _shape(_paused("langgraph"))
