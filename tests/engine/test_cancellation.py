"""Cancelling an async run, and nodes that raise ``asyncio.CancelledError`` themselves."""

from __future__ import annotations

import asyncio
import operator
import time
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, MemorySaver, StateGraph
from trellis.errors import NodeCancelledError


class S(TypedDict):
    log: Annotated[list[str], operator.add]


def _config(thread: str) -> Any:
    return {"configurable": {"thread_id": thread}}


async def test_cancelling_a_run_cancels_the_nodes_still_running() -> None:
    """Else a sibling finished after the cancel, and ran again on resume."""
    effects: list[str] = []

    async def fast(state: S) -> S:
        effects.append("fast")
        return {"log": ["fast"]}

    async def slow(state: S) -> S:
        await asyncio.sleep(0.3)
        effects.append("slow")
        return {"log": ["slow"]}

    async def join(state: S) -> S:
        effects.append("join")
        return {"log": ["join"]}

    builder = StateGraph(S)
    for name, fn in (("fast", fast), ("slow", slow), ("join", join)):
        builder.add_node(name, fn)
    builder.add_edge(START, "fast")
    builder.add_edge(START, "slow")
    builder.add_edge(["fast", "slow"], "join")
    builder.add_edge("join", END)
    graph = builder.compile(checkpointer=MemorySaver())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(graph.ainvoke({"log": []}, _config("c")), 0.1)
    await asyncio.sleep(0.4)  # long enough for the sibling to finish, had it kept running
    assert effects == ["fast"]
    assert await graph.ainvoke(None, _config("c")) == {"log": ["fast", "slow", "join"]}
    assert effects == ["fast", "slow", "join"]


@pytest.mark.parametrize("parallel", [False, True], ids=["lone", "parallel"])
async def test_a_node_raising_cancelled_error_fails_like_any_error(parallel: bool) -> None:
    async def bad(state: S) -> S:
        raise asyncio.CancelledError

    async def good(state: S) -> S:
        return {"log": ["good"]}

    builder = StateGraph(S)
    builder.add_node("bad", bad)
    builder.add_node("after", good)
    builder.add_edge(START, "bad")
    if parallel:
        builder.add_node("good", good)
        builder.add_edge(START, "good")
        builder.add_edge(["bad", "good"], "after")
    else:
        builder.add_edge("bad", "after")
    graph = builder.compile(checkpointer=MemorySaver())
    with pytest.raises(NodeCancelledError, match="node 'bad' raised asyncio.CancelledError"):
        await graph.ainvoke({"log": []}, _config("t"))
    snapshot = await graph.aget_state(_config("t"))
    # The step failed, so "after" never ran. A sibling that finished first shows its
    # own write, as in LangGraph; one still running was cancelled and runs again.
    assert (snapshot.values["log"], snapshot.next) in [
        ([], ("bad", "good") if parallel else ("bad",)),
        (["good"], ("bad",)),
    ]
    (failed,) = [t for t in snapshot.tasks if t.name == "bad"]
    assert failed.error is not None and failed.error["type"] == "NodeCancelledError"


async def test_a_failure_under_ainvoke_keeps_a_sync_siblings_work() -> None:
    # A sync node runs in a worker thread no cancel can stop: it finishes anyway.
    # Its writes are kept, as invoke keeps them, so resuming does not run it twice.
    calls: list[str] = []
    down = [True]

    def fast(state: S) -> dict[str, Any]:
        if down.pop() if down else False:
            raise RuntimeError("boom")
        return {"log": ["fast"]}

    def slow(state: S) -> dict[str, Any]:
        calls.append("slow")
        time.sleep(0.2)
        return {"log": ["slow"]}

    b = StateGraph(S)
    b.add_node("fast", fast)
    b.add_node("slow", slow)
    b.add_edge(START, "fast")
    b.add_edge(START, "slow")
    graph = b.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(RuntimeError, match="boom"):
        await graph.ainvoke({"log": []}, config)
    state = await graph.aget_state(config)
    assert (state.next, state.values) == (("fast",), {"log": ["slow"]})
    assert (await graph.ainvoke(None, config))["log"] == ["fast", "slow"]
    assert calls == ["slow"]
