"""stream_mode="messages" beyond what LangGraph's differential tests show: a node's
retries, the caller's own callbacks, parallel nodes, and runs that do not ask."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, RetryPolicy, Send, StateGraph, add_messages, get_stream_writer
from trellis.errors import InvalidConfigError

pytest.importorskip("langchain_core", reason="stream_mode='messages' needs langchain-core")

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk


class Chat(TypedDict, total=False):
    messages: Annotated[list[Any], add_messages]
    topic: str


def _model(*replies: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(r) for r in replies]))


def _graph(node: Any, **kwargs: Any) -> Any:
    b = StateGraph(Chat)
    b.add_node("ask", node, **kwargs)
    b.add_edge(START, "ask")
    b.add_edge("ask", END)
    return b.compile()


def _texts(chunks: Any) -> list[str]:
    return [message.content for message, _ in chunks]


def test_a_retried_node_streams_each_attempt_as_it_comes() -> None:
    model = _model("lost words", "kept words")
    attempts = []

    def ask(state: Chat) -> Chat:
        reply = model.invoke(state["messages"])
        attempts.append(reply.content)
        if len(attempts) == 1:
            raise ConnectionError("flaky upstream")
        return {"messages": [reply]}

    graph = _graph(ask, retry_policy=RetryPolicy(max_attempts=2, initial_interval=0))
    chunks = list(graph.stream({"messages": [("user", "hi")]}, stream_mode="messages"))
    assert attempts == ["lost words", "kept words"]
    assert _texts(chunks) == ["lost", " ", "words", "kept", " ", "words"]
    assert all(isinstance(m, AIMessageChunk) for m, _ in chunks)


def test_the_callers_own_callbacks_still_hear_the_model() -> None:
    heard: list[str] = []

    class Listener(BaseCallbackHandler):
        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            heard.append(token)

    model = _model("a b")
    graph = _graph(lambda s, config: {"messages": [model.invoke(s["messages"], config)]})
    config = {"callbacks": [Listener()]}
    chunks = list(graph.stream({"messages": [("user", "hi")]}, config, stream_mode="messages"))
    assert _texts(chunks) == ["a", " ", "b"]
    assert heard == ["a", " ", "b"]


def test_parallel_nodes_stream_each_their_own_messages_in_order() -> None:
    models = {"x": _model("x1 x2"), "y": _model("y1 y2")}

    def fan(state: Chat) -> list[Send]:
        return [Send("ask", {"topic": t}) for t in ("x", "y")]

    def ask(state: Chat) -> Chat:
        return {"messages": [models[state["topic"]].invoke("go")]}

    b = StateGraph(Chat)
    b.add_node("ask", ask)
    b.add_conditional_edges(START, fan, ["ask"])
    graph = b.compile()
    chunks = list(graph.stream({"messages": []}, stream_mode="messages"))
    assert _texts(chunks) == ["x1", " ", "x2", "y1", " ", "y2"]
    ids = [m.id for m, _ in chunks]
    assert len(set(ids[:3])) == 1 and len(set(ids[3:])) == 1 and ids[0] != ids[3]
    assert {meta["langgraph_node"] for _, meta in chunks} == {"ask"}


def test_a_node_sees_no_messages_handler_when_the_run_does_not_stream_them() -> None:
    seen: list[Any] = []

    def ask(state: Chat, config: Any) -> Chat:
        seen.append(config.get("callbacks"))
        return {}

    graph = _graph(ask)
    list(graph.stream({"messages": []}, stream_mode="updates"))
    list(graph.stream({"messages": []}, stream_mode="messages"))
    assert seen[0] is None
    assert [type(h).__name__ for h in seen[1].handlers] == ["MessagesHandler"]


def test_messages_mode_without_langchain_is_a_named_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "langchain_core" else real(name, *a),
    )
    graph = _graph(lambda s: {})
    with pytest.raises(InvalidConfigError, match="pip install langchain-core"):
        list(graph.stream({"messages": []}, stream_mode="messages"))


def test_an_attempt_abandoned_at_its_timeout_streams_no_more() -> None:
    calls: list[int] = []

    def ask(state: Chat) -> Chat:
        calls.append(1)
        if len(calls) == 1:  # past the timeout; its thread runs on beside the retry
            time.sleep(0.7)
            get_stream_writer()("stale custom")
            _model("stale tokens").invoke(state["messages"])
            return {}
        reply = _model("fresh").invoke(state["messages"])
        time.sleep(0.35)  # the abandoned attempt speaks meanwhile
        return {"messages": [reply]}

    graph = _graph(ask, timeout=0.5, retry_policy=RetryPolicy(max_attempts=2, initial_interval=0))
    chunks = list(graph.stream({"messages": [("user", "hi")]}, stream_mode=["messages", "custom"]))
    assert [(mode, c[0].content if mode == "messages" else c) for mode, c in chunks] == [
        ("messages", "fresh")
    ]


def test_a_graph_ainvoked_inside_a_streaming_node_keeps_its_tokens_to_itself() -> None:
    """Its lone async node takes the fast path of ainvoke: it must be muted there too."""
    model = _model("inner words")

    async def inner_node(state: Chat) -> Chat:
        return {"messages": [await model.ainvoke(state["messages"])]}

    inner = _graph(inner_node)

    async def outer(state: Chat) -> Chat:
        return {"messages": (await inner.ainvoke({"messages": state["messages"]}))["messages"]}

    async def run() -> list[Any]:
        graph = _graph(outer)
        stream = graph.astream({"messages": [("user", "hi")]}, stream_mode="messages")
        return [chunk async for chunk in stream]

    chunks = asyncio.run(run())
    assert [(type(m).__name__, m.content) for m, _ in chunks] == [("AIMessage", "inner words")]
