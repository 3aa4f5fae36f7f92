"""``stream_mode="messages"`` as LangGraph 1.2 streams it: the tokens of the chat
models a node calls (with its config or without), the messages a node returns that
were not streamed yet, never the messages it was given, in sync and async runs,
next to other modes and from subgraphs."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")

from langchain_core.language_models.fake_chat_models import (
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig

_KEYS = ("langgraph_node", "langgraph_step", "langgraph_triggers", "langgraph_path")
_KEYS += ("ls_provider", "ls_model_type", "user")


def _api(lib: str) -> dict[str, Any]:
    if lib == "langgraph":
        from langgraph.graph import END, START, StateGraph
        from langgraph.graph.message import add_messages
        from langgraph.types import Send
    else:
        from trellis import END, START, Send, StateGraph, add_messages
    return {"END": END, "START": START, "StateGraph": StateGraph, "add_messages": add_messages,
            "Send": Send}  # fmt: skip


def _model(*replies: str, tags: list[str] | None = None) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(r) for r in replies]), tags=tags)


def _state(api: dict[str, Any]) -> Any:
    return TypedDict("State", {"messages": Annotated[list, api["add_messages"]]})  # type: ignore[operator]


def _chat(api: dict[str, Any]) -> Any:
    """Two nodes: one calls its model without its config and adds a message of its
    own; the next passes its config and returns the model's reply with the input."""
    model = _model("hello there friend", "second reply")

    def ask(state: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"]), AIMessage("made by the node")]}

    def again(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        return {"messages": [*state["messages"], model.invoke(state["messages"], config)]}

    b = api["StateGraph"](_state(api))
    b.add_node("ask", ask)
    b.add_node("again", again)
    b.add_edge(api["START"], "ask")
    b.add_edge("ask", "again")
    b.add_edge("again", api["END"])
    return b.compile()


def _silent(api: dict[str, Any]) -> Any:
    """A model tagged ``nostream``: no tokens, but its reply as the node returns it."""
    model = _model("quiet words here", tags=["nostream"])

    return _one_node(api, lambda state: {"messages": [model.invoke(state["messages"])]})


def _one_node(api: dict[str, Any], ask: Any) -> Any:
    b = api["StateGraph"](_state(api))
    b.add_node("ask", ask)
    b.add_edge(api["START"], "ask")
    return b.compile()


def _streamed(api: dict[str, Any]) -> Any:
    """A node that streams its model itself and returns the joined chunks."""
    model = _model("one two three")

    def ask(state: dict[str, Any]) -> dict[str, Any]:
        chunks = list(model.stream(state["messages"]))
        reply = chunks[0]
        for chunk in chunks[1:]:
            reply = reply + chunk
        return {"messages": [AIMessage(reply.content, id=reply.id)]}

    return _one_node(api, ask)


def _nested(api: dict[str, Any]) -> Any:
    """A subgraph node whose inner node calls a model without its config."""
    model = _model("inner reply words")

    def inner(state: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    sb = api["StateGraph"](_state(api))
    sb.add_node("inner", inner)
    sb.add_edge(api["START"], "inner")
    b = api["StateGraph"](_state(api))
    b.add_node("sub", sb.compile())
    b.add_edge(api["START"], "sub")
    return b.compile()


def _bound(api: dict[str, Any]) -> Any:
    """A bound model called with the node's config, as agents call tools-bound models:
    LangChain merges that config with its config context, which holds it too."""
    model = _model("bound reply")

    def ask(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        return {"messages": [model.bind(stop=None).invoke(state["messages"], config)]}

    return _one_node(api, ask)


def _relay(api: dict[str, Any]) -> Any:
    """A node that invokes another compiled graph itself, with its own config."""
    inner = _one_node(api, lambda s: {"messages": [_model("inner words").invoke(s["messages"])]})

    def ask(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        return {"messages": inner.invoke({"messages": state["messages"]}, config)["messages"]}

    return _one_node(api, ask)


PROGRAMS = {"chat": _chat, "silent": _silent, "streamed": _streamed, "nested": _nested,
            "bound": _bound, "relay": _relay}  # fmt: skip


def _shape(chunks: list[Any], subgraphs: bool = False) -> list[Any]:
    """Chunks with message ids numbered by first appearance and chosen metadata."""
    ids: dict[str, int] = {}
    out = []
    for chunk in chunks:
        ns: Any = None
        if subgraphs:
            ns, chunk = chunk[0], chunk[1]
            ns = tuple(part.split(":")[0] for part in ns)
        mode = None
        if isinstance(chunk, tuple) and len(chunk) == 2 and isinstance(chunk[0], str):
            mode, chunk = chunk
        if mode not in (None, "messages"):
            out.append((ns, mode, chunk))
            continue
        message, metadata = chunk
        number = ids.setdefault(message.id, len(ids))
        meta = {k: metadata[k] for k in _KEYS if k in metadata}
        out.append((ns, type(message).__name__, message.content, number, meta))
    return out


_INPUT = {"messages": [HumanMessage("hi", id="h1")]}
_CONFIG = {"metadata": {"user": "u"}}


@pytest.mark.parametrize("program", sorted(PROGRAMS))
@pytest.mark.parametrize("subgraphs", [False, True])
def test_messages_stream_as_langgraph(program: str, subgraphs: bool) -> None:
    if program == "relay" and subgraphs:
        pytest.skip("a graph a node invokes itself runs on its own in Trellis (README)")
    got = {}
    for lib in ("langgraph", "trellis"):
        graph = PROGRAMS[program](_api(lib))
        chunks = graph.stream(_INPUT, _CONFIG, stream_mode="messages", subgraphs=subgraphs)
        got[lib] = _shape(list(chunks), subgraphs)
    assert got["trellis"] == got["langgraph"]
    assert got["trellis"]  # something was streamed


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_async_messages_stream_as_langgraph(program: str) -> None:
    async def stream(lib: str) -> list[Any]:
        graph = PROGRAMS[program](_api(lib))
        return [c async for c in graph.astream(_INPUT, _CONFIG, stream_mode="messages")]

    got = {lib: _shape(asyncio.run(stream(lib))) for lib in ("langgraph", "trellis")}
    assert got["trellis"] == got["langgraph"]


def test_messages_come_before_their_nodes_update_as_langgraph() -> None:
    got = {}
    for lib in ("langgraph", "trellis"):
        graph = _chat(_api(lib))
        chunks = graph.stream(_INPUT, _CONFIG, stream_mode=["updates", "messages"])
        got[lib] = [(mode, chunk if mode == "messages" else list(chunk)) for mode, chunk in chunks]
        got[lib] = [("updates", c) if m == "updates" else _shape([(m, c)])[0] for m, c in got[lib]]
    assert got["trellis"] == got["langgraph"]


def test_an_input_message_without_an_id_is_not_streamed_back() -> None:
    got = {}
    for lib in ("langgraph", "trellis"):
        graph = _chat(_api(lib))
        chunks = graph.stream({"messages": [HumanMessage("hi")]}, _CONFIG, stream_mode="messages")
        got[lib] = _shape(list(chunks))
    assert got["trellis"] == got["langgraph"]
    assert all(shape[1] != "HumanMessage" for shape in got["trellis"])


@pytest.mark.parametrize("subgraphs", [False, True])
def test_a_callers_callback_manager_streams_as_langgraph(subgraphs: bool) -> None:
    from langchain_core.callbacks import BaseCallbackHandler, CallbackManager

    got = {}
    for lib in ("langgraph", "trellis"):
        graph = _nested(_api(lib))
        config = {**_CONFIG, "callbacks": CallbackManager([BaseCallbackHandler()])}
        chunks = graph.stream(_INPUT, config, stream_mode="messages", subgraphs=subgraphs)
        got[lib] = _shape(list(chunks), subgraphs=subgraphs)
    assert got["trellis"] == got["langgraph"]
