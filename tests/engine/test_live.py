"""Live chunks: a node's custom writes and chat-model tokens reach the caller while
the node still runs, as LangGraph streams them. Each test's node waits for the
caller to have seen its first chunk, so it can only finish if streaming is live
(a stream that held the chunks to the step's end would make it time out)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, StateGraph, get_stream_writer

WAIT = 5.0  # seconds a node waits for the caller; never reached when streaming is live


class S(TypedDict, total=False):
    n: int
    said: str


def _graph(*nodes: tuple[str, Any]) -> Any:
    b = StateGraph(S)
    prev = START
    for name, fn in nodes:
        b.add_node(name, fn)
        b.add_edge(prev, name)
        prev = name
    b.add_edge(prev, END)
    return b.compile()


def test_a_custom_chunk_reaches_the_caller_while_its_node_runs() -> None:
    seen = threading.Event()

    def talk(state: S) -> S:
        get_stream_writer()("first")
        return {"said": "live" if seen.wait(WAIT) else "held"}

    stream = _graph(("talk", talk)).stream({"n": 0}, stream_mode=["custom", "values"])
    chunks = []
    for mode, chunk in stream:
        chunks.append((mode, chunk))
        if chunk == "first":
            seen.set()
    assert ("custom", "first") in chunks
    assert chunks[-1] == ("values", {"n": 0, "said": "live"})


@pytest.mark.parametrize("node_kind", ["async", "sync"])
def test_an_async_stream_is_live_for_async_and_sync_nodes(node_kind: str) -> None:
    async def main() -> list[Any]:
        seen = asyncio.Event()
        crossed = threading.Event()  # a sync node runs in a worker thread

        async def atalk(state: S) -> S:
            get_stream_writer()("first")
            try:
                await asyncio.wait_for(seen.wait(), WAIT)
            except TimeoutError:
                return {"said": "held"}
            return {"said": "live"}

        def talk(state: S) -> S:
            get_stream_writer()("first")
            return {"said": "live" if crossed.wait(WAIT) else "held"}

        graph = _graph(("talk", atalk if node_kind == "async" else talk))
        chunks = []
        async for chunk in graph.astream({"n": 0}, stream_mode=["custom", "values"]):
            chunks.append(chunk)
            if chunk == ("custom", "first"):
                seen.set()
                crossed.set()
        return chunks

    chunks = asyncio.run(main())
    assert chunks[-1] == ("values", {"n": 0, "said": "live"})


def test_chat_model_tokens_reach_the_caller_while_its_node_runs() -> None:
    lc = pytest.importorskip("langchain_core.language_models.fake_chat_models")
    from langchain_core.messages import AIMessage

    model = lc.GenericFakeChatModel(messages=iter([AIMessage("some tokens")]))
    seen = threading.Event()

    def ask(state: S) -> S:
        reply = model.invoke("hi")
        return {"said": f"{reply.content}: {'live' if seen.wait(WAIT) else 'held'}"}

    stream = _graph(("ask", ask)).stream({"n": 0}, stream_mode=["messages", "values"])
    last = None
    for mode, chunk in stream:
        if mode == "messages":
            seen.set()
        last = chunk
    assert last == {"n": 0, "said": "some tokens: live"}


def test_a_caller_that_stops_reading_waits_for_the_node_and_no_step_follows() -> None:
    finished, later = threading.Event(), threading.Event()

    def talk(state: S) -> S:
        get_stream_writer()("first")
        threading.Event().wait(0.1)  # still running when the caller stops
        finished.set()
        return {"n": 1}

    stream = _graph(("talk", talk), ("later", lambda s: later.set() or {})).stream(
        {"n": 0}, stream_mode="custom"
    )
    assert next(stream) == "first"
    stream.close()
    assert finished.is_set()  # close() returned only once the node had ended
    assert not later.is_set()


def test_a_node_that_fails_after_a_live_chunk_fails_the_stream_after_it() -> None:
    def talk(state: S) -> S:
        get_stream_writer()("first")
        raise ValueError("boom")

    got = []
    with pytest.raises(ValueError, match="boom"):
        for chunk in _graph(("talk", talk)).stream({"n": 0}, stream_mode="custom"):
            got.append(chunk)
    assert got == ["first"]


def test_a_run_that_streams_no_node_chunks_runs_its_nodes_in_the_callers_thread() -> None:
    threads = []

    def where(state: S) -> S:
        threads.append(threading.get_ident())
        return {}

    list(_graph(("where", where)).stream({"n": 0}, stream_mode="updates"))
    list(_graph(("where", where)).stream({"n": 0}, stream_mode="custom"))
    assert threads[0] == threading.get_ident() != threads[1]


def test_an_async_caller_that_stops_reading_cancels_the_node() -> None:
    async def main() -> list[str]:
        seen: list[str] = []

        async def talk(state: S) -> S:
            get_stream_writer()("first")
            try:
                await asyncio.sleep(WAIT)
            except asyncio.CancelledError:
                seen.append("node cancelled")
                raise
            return {}

        stream = _graph(("talk", talk)).astream({"n": 0}, stream_mode="custom")
        assert await stream.__anext__() == "first"
        await stream.aclose()
        seen.append("aclose returned")
        return seen

    assert asyncio.run(main()) == ["node cancelled", "aclose returned"]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_subgraphs_chunks_reach_the_caller_while_the_parent_node_runs(use_async: bool) -> None:
    seen = threading.Event()
    child = _graph(
        ("first", lambda s: {"n": 1}),
        ("second", lambda s: {"said": "live" if seen.wait(WAIT) else "held"}),
    )
    builder = StateGraph(S)
    builder.add_node("sub", child)
    builder.add_edge(START, "sub")
    graph = builder.compile()

    def look(chunk: Any) -> None:
        namespace, (mode, data) = chunk[0], chunk[1:]
        if namespace and mode == "updates" and "first" in data:
            seen.set()

    async def astream() -> list[Any]:
        out = []
        async for chunk in graph.astream(
            {"n": 0}, stream_mode=["updates", "values"], subgraphs=True
        ):
            look(chunk)
            out.append(chunk)
        return out

    if use_async:
        chunks = asyncio.run(astream())
    else:
        chunks = []
        for chunk in graph.stream({"n": 0}, stream_mode=["updates", "values"], subgraphs=True):
            look(chunk)
            chunks.append(chunk)
    assert chunks[-1] == ((), "values", {"n": 1, "said": "live"})


def test_a_live_stream_hands_out_only_the_modes_asked_for() -> None:
    """subgraphs=True makes a stream live: a node's custom write must still stay out."""

    def talk(state: S) -> S:
        get_stream_writer()("not asked for")
        return {"n": 1}

    graph = _graph(("talk", talk))
    assert list(graph.stream({"n": 0}, stream_mode="values", subgraphs=True)) == [
        ((), {"n": 0}),
        ((), {"n": 1}),
    ]
