"""``StateSnapshot`` and ``StateTask`` are named tuples with LangGraph 1.2's fields, so
code that indexes, unpacks or ``_asdict()``s a snapshot ports unchanged."""

from typing import Any

import pytest
from tests.differential.programs import paused_at_ask

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


def _shape(engine: str) -> dict[str, Any]:
    graph, config = paused_at_ask(engine)
    snapshot = graph.get_state(config)
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
    assert _shape("trellis") == _shape("langgraph")
