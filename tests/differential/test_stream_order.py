"""Within one task, the order of its chunks across stream modes, as in LangGraph 1.2."""

import asyncio
from typing import Any, TypedDict

import pytest
from tests.differential.programs import paused_at_ask

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


class S(TypedDict):
    x: int


def _kinds(engine: str, modes: list[str]) -> list[tuple[str, str]]:
    if engine == "langgraph":
        from langgraph.graph import START, StateGraph
    else:
        from trellis import START, StateGraph

    g = StateGraph(S)
    g.add_node("a", lambda s: {"x": s["x"] + 1})
    g.add_node("b", lambda s: {"x": s["x"] + 1})
    g.add_edge(START, "a")
    g.add_edge("a", "b")

    def kind(chunk: Any) -> str:
        payload = chunk.get("payload", chunk) if isinstance(chunk, dict) else chunk
        if "result" in payload:
            return "result"
        return "start" if "input" in payload else "update" if "type" not in chunk else "other"

    return [(mode, kind(c)) for mode, c in g.compile().stream({"x": 0}, stream_mode=modes)]


@pytest.mark.parametrize("modes", [["updates", "tasks"], ["updates", "debug"]], ids=str)
def test_a_tasks_update_comes_before_its_result(modes: list[str]) -> None:
    reference = _kinds("langgraph", modes)
    assert ("updates", "update") in reference
    assert _kinds("trellis", modes) == reference


def _checkpoints(engine: str) -> list[tuple[int, list[str], list[str]]]:
    import operator
    from typing import Annotated

    if engine == "langgraph":
        from langgraph.checkpoint.memory import InMemorySaver as Saver
        from langgraph.graph import START, StateGraph
        from langgraph.types import Send
    else:
        from trellis import START, Send, StateGraph
        from trellis import MemorySaver as Saver

    class Log(TypedDict):
        log: Annotated[list[str], operator.add]

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("w", lambda s: {"log": ["w"]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", s), Send("w", s)])
    graph = g.compile(checkpointer=Saver())
    cfg = {"configurable": {"thread_id": "t"}}
    return [
        (c["metadata"]["step"], c["next"], [t["name"] for t in c["tasks"]])
        for c in graph.stream({"log": []}, cfg, stream_mode="checkpoints")
    ]


def test_a_checkpoint_chunk_lists_its_sends_in_next() -> None:
    reference = _checkpoints("langgraph")
    assert (1, ["w", "w"], ["w", "w"]) in reference
    assert _checkpoints("trellis") == reference


def _resumed(engine: str) -> tuple[list[Any], list[Any]]:
    if engine == "langgraph":
        from langgraph.types import Command
    else:
        from trellis import Command

    graph, cfg = paused_at_ask(engine)

    def seen(inp: Any) -> list[Any]:
        chunks = graph.stream(inp, cfg, stream_mode="checkpoints")
        return [(c["metadata"]["step"], c["next"], c["values"]) for c in chunks]

    return seen(Command(resume=5)), seen(None)  # then again, on the finished thread


def test_a_resumed_runs_checkpoint_stream_starts_where_it_resumes() -> None:
    reference = _resumed("langgraph")
    assert reference[0][0][:2] == (1, ["ask"])
    assert _resumed("trellis") == reference


def _after_last(engine: str, modes: list[str], *, is_async: bool) -> list[Any]:
    """interrupt_after on the node that ends the run: nothing is left to pause before."""
    if engine == "langgraph":
        from langgraph.checkpoint.memory import InMemorySaver as Saver
        from langgraph.graph import START, StateGraph
    else:
        from trellis import START, StateGraph
        from trellis import MemorySaver as Saver

    g = StateGraph(S)
    g.add_node("a", lambda s: {"x": 1})
    g.add_node("b", lambda s: {"x": 2})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    graph = g.compile(checkpointer=Saver(), interrupt_after=["b"])
    cfg = {"configurable": {"thread_id": "t"}}
    if not is_async:
        chunks = list(graph.stream({"x": 0}, cfg, stream_mode=modes))
    else:

        async def collect() -> list[Any]:
            return [c async for c in graph.astream({"x": 0}, cfg, stream_mode=modes)]

        chunks = asyncio.run(collect())
    return [*chunks, graph.get_state(cfg).next, graph.invoke(None, cfg)]


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize("modes", [["updates"], ["values"], ["updates", "values"]])
def test_interrupt_after_the_last_node_marks_the_pause_as_langgraph(
    modes: list[str], is_async: bool
) -> None:
    reference = _after_last("langgraph", modes, is_async=is_async)
    assert _after_last("trellis", modes, is_async=is_async) == reference
