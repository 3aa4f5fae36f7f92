"""LangChain Runnables as nodes, as LangGraph takes them: a chain, a lambda, named or not."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, StateGraph, add_messages

pytest.importorskip("langchain_core", reason="Runnables come from langchain-core")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda


class S(TypedDict, total=False):
    n: int
    seen: list[str]
    messages: Annotated[list[Any], add_messages]


def _node_name(state: S, config: RunnableConfig) -> S:
    return {"seen": [config["metadata"]["langgraph_node"]]}


def _build(api: Any) -> Any:
    """START -> inc (a named RunnableLambda, added without a name) -> chain -> END."""
    inc = RunnableLambda(lambda s: {"n": s["n"] + 1}, name="inc")
    chain = RunnableLambda(lambda s: {"n": s["n"] * 10}) | RunnableLambda(
        lambda s: {"n": s["n"] + 5}
    )
    b = api.StateGraph(S)
    b.add_node(inc)
    b.add_node("chain", chain)
    b.add_node("who", RunnableLambda(_node_name))
    b.add_edge(api.START, "inc")
    b.add_edge("inc", "chain")
    b.add_edge("chain", "who")
    b.add_edge("who", api.END)
    return b.compile()


def test_runnables_run_as_nodes_as_in_langgraph(graph_apis: dict[str, Any]) -> None:
    got = {}
    for lib, api in graph_apis.items():
        graph = _build(api)
        got[lib] = (
            graph.invoke({"n": 1}),
            list(graph.stream({"n": 1}, stream_mode="updates")),
            asyncio.run(graph.ainvoke({"n": 1})),
        )
    final = got["trellis"][0]
    assert (final["n"], final["seen"]) == (25, ["who"])
    assert got["trellis"][0] == got["trellis"][2]
    assert list(got["trellis"][1][0]) == ["inc"]
    if "langgraph" in got:
        assert got["trellis"] == got["langgraph"]


def test_a_model_chain_node_streams_its_tokens_under_the_nodes_name() -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage("from a chain")]))
    agent = (
        RunnableLambda(lambda s: s["messages"])
        | model
        | RunnableLambda(lambda reply: {"messages": [reply]})
    )
    b = StateGraph(S)
    b.add_node("agent", agent)
    b.add_edge(START, "agent")
    b.add_edge("agent", END)
    chunks = list(b.compile().stream({"messages": [("user", "hi")]}, stream_mode="messages"))
    assert "".join(m.content for m, _ in chunks) == "from a chain"
    assert {meta["langgraph_node"] for _, meta in chunks} == {"agent"}
