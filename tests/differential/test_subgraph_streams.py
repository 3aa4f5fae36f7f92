"""A subgraph with an output schema, streamed with ``subgraphs=True``: what it hands
its parent is what LangGraph 1.2 hands it, as without ``subgraphs=True``."""

import asyncio
import operator
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


class Parent(TypedDict):
    q: str
    log: Annotated[list[str], operator.add]
    ans: str


class SubIn(TypedDict):
    q: str
    log: Annotated[list[str], operator.add]


class SubOut(TypedDict):
    ans: str


class SubAll(TypedDict):
    q: str
    log: Annotated[list[str], operator.add]
    ans: str


def _run(engine: str, subgraphs: bool, is_async: bool) -> list[Any]:
    if engine == "langgraph":
        from langgraph.graph import START, StateGraph
    else:
        from trellis import START, StateGraph

    sub = StateGraph(SubAll, input_schema=SubIn, output_schema=SubOut)
    sub.add_node("s1", lambda s: {"q": s["q"].upper(), "log": ["s1"], "ans": s["q"] + "!"})
    sub.add_edge(START, "s1")
    g = StateGraph(Parent)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("sub", sub.compile())
    g.add_edge(START, "a")
    g.add_edge("a", "sub")
    graph = g.compile()
    inp = {"q": "hi", "log": [], "ans": ""}
    modes = ["values", "updates"]

    async def collect() -> list[Any]:
        return [c async for c in graph.astream(inp, stream_mode=modes, subgraphs=subgraphs)]

    chunks = (
        asyncio.run(collect())
        if is_async
        else list(graph.stream(inp, stream_mode=modes, subgraphs=subgraphs))
    )
    # The parent's own chunks; the subgraph's are listed as differing in the README.
    return [c[1:] if subgraphs else c for c in chunks if not subgraphs or c[0] == ()]


@pytest.mark.parametrize("subgraphs", [False, True])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_subgraph_hands_its_parent_its_output_schema(subgraphs: bool, is_async: bool) -> None:
    reference = _run("langgraph", subgraphs, is_async)
    assert reference[-1] == ("values", {"q": "hi", "log": ["a"], "ans": "hi!"})
    assert _run("trellis", subgraphs, is_async) == reference


class Asked(TypedDict, total=False):
    q: str
    ans: str


class AskedAll(TypedDict, total=False):
    q: str
    ans: str
    secret: str


def _chunks(engine: str) -> list[Any]:
    """Every chunk, the subgraph's too (by namespace depth), of a run that the subgraph
    pauses and of its resume: the subgraph's show its output schema, never ``secret``."""
    if engine == "langgraph":
        from langgraph.checkpoint.memory import InMemorySaver as Saver
        from langgraph.graph import START, StateGraph
        from langgraph.types import Command, interrupt
    else:
        from trellis import START, Command, StateGraph, interrupt
        from trellis import MemorySaver as Saver

    sub = StateGraph(AskedAll, output_schema=SubOut)
    sub.add_node("ask", lambda s: {"secret": interrupt("ok?")})
    sub.add_node("say", lambda s: {"ans": s["q"] + s["secret"]})
    sub.add_edge(START, "ask")
    sub.add_edge("ask", "say")
    g = StateGraph(Asked)
    g.add_node("sub", sub.compile())
    g.add_edge(START, "sub")
    graph = g.compile(checkpointer=Saver())
    cfg = {"configurable": {"thread_id": "t"}}

    def norm(item: Any) -> Any:
        namespace, mode, chunk = item
        if isinstance(chunk, dict) and "__interrupt__" in chunk:
            chunk = {**chunk, "__interrupt__": [i.value for i in chunk["__interrupt__"]]}
        return len(namespace), mode, chunk

    modes = ["values", "updates"]
    first = graph.stream({"q": "hi"}, cfg, stream_mode=modes, subgraphs=True)
    resumed = graph.stream(Command(resume="!"), cfg, stream_mode=modes, subgraphs=True)
    return [[norm(c) for c in first], [norm(c) for c in resumed]]


def test_a_subgraphs_own_chunks_show_its_output_schema() -> None:
    reference = _chunks("langgraph")
    assert (1, "values", {"ans": "hi!"}) in reference[1]
    assert _chunks("trellis") == reference
