"""``stream_mode="tasks"`` / ``"debug"`` report how a task stopped, as LangGraph does.

A task that raised or asked a question has a result chunk too: its error, or its
interrupts. Run on both engines and compared, ids aside (each engine has its own).
"""

import operator
from types import SimpleNamespace
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


class S(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def langgraph_api() -> SimpleNamespace:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import START, StateGraph
    from langgraph.types import interrupt

    return SimpleNamespace(
        StateGraph=StateGraph, START=START, interrupt=interrupt, Saver=InMemorySaver
    )


def trellis_api() -> SimpleNamespace:
    from trellis import START, MemorySaver, StateGraph, interrupt

    return SimpleNamespace(
        StateGraph=StateGraph, START=START, interrupt=interrupt, Saver=MemorySaver
    )


def results(api: SimpleNamespace, how: str, mode: str) -> list[Any]:
    def boom(state: S) -> dict[str, Any]:
        raise ValueError("x")

    def ask(state: S) -> dict[str, Any]:
        return {"log": [api.interrupt("q?")]}

    b = api.StateGraph(S)
    b.add_node("n", boom if how == "error" else ask)
    b.add_edge(api.START, "n")
    graph = b.compile(checkpointer=api.Saver())
    seen = []
    try:
        for chunk in graph.stream(
            {"log": []}, {"configurable": {"thread_id": "t"}}, stream_mode=mode
        ):
            payload = chunk["payload"] if mode == "debug" else chunk
            if "result" in payload:
                error = payload["error"]
                asked = [i["value"] for i in payload["interrupts"]]
                seen.append((payload["name"], repr(error), payload["result"], asked))
    except ValueError:
        pass
    return seen


@pytest.mark.parametrize("mode", ["tasks", "debug"])
@pytest.mark.parametrize("how", ["error", "interrupt"])
def test_a_stopped_task_has_a_result_chunk_as_in_langgraph(how: str, mode: str) -> None:
    expected = results(langgraph_api(), how, mode)
    assert expected, "LangGraph reports it"
    assert results(trellis_api(), how, mode) == expected
