"""batch, abatch and their as-completed forms: every input once, each result by its index."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from tests.engine.test_streaming import S, chain

from trellis import START, StateGraph
from trellis.persist.memory import MemorySaver


def _echo_graph() -> Any:
    def node(state: S) -> dict[str, Any]:
        return {"a": state["a"] + "!"}

    builder = StateGraph(S)
    builder.add_node("n", node)
    builder.add_edge(START, "n")
    return builder.compile()


def test_batch_keeps_input_order() -> None:
    graph = _echo_graph()
    assert graph.batch([{"a": "1"}, {"a": "2"}, {"a": "3"}]) == [
        {"a": "1!", "log": []},
        {"a": "2!", "log": []},
        {"a": "3!", "log": []},
    ]


def test_batch_raises_or_returns_exceptions() -> None:
    graph = _echo_graph()
    with pytest.raises(KeyError):
        graph.batch([{"a": "1"}, {}])
    out = graph.batch([{"a": "1"}, {}, {"a": "3"}], return_exceptions=True)
    assert out[0] == {"a": "1!", "log": []} and out[2] == {"a": "3!", "log": []}
    assert isinstance(out[1], KeyError)


async def test_abatch_keeps_input_order_and_returns_exceptions() -> None:
    async def node(state: S) -> dict[str, Any]:
        await asyncio.sleep(0.01 * (3 - int(state["a"])))  # the last input finishes first
        return {"a": state["a"] + "!"}

    builder = StateGraph(S)
    builder.add_node("n", node)
    builder.add_edge(START, "n")
    graph = builder.compile()
    assert [r["a"] for r in await graph.abatch([{"a": "1"}, {"a": "2"}, {"a": "3"}])] == [
        "1!",
        "2!",
        "3!",
    ]
    out = await graph.abatch([{"a": "1"}, {}], return_exceptions=True)
    assert out[0]["a"] == "1!" and isinstance(out[1], KeyError)
    with pytest.raises(KeyError):
        await graph.abatch([{"a": "1"}, {}])


def test_batch_with_one_config_per_input() -> None:
    graph = chain("x", checkpointer=MemorySaver())
    threads = [uuid.uuid4().hex, uuid.uuid4().hex]
    configs = [{"configurable": {"thread_id": t}} for t in threads]
    graph.batch([{"a": "1"}, {"a": "2"}], configs)
    assert [graph.get_state(c).values["a"] for c in configs] == ["1", "2"]
    with pytest.raises(ValueError, match="2 inputs"):
        graph.batch([{"a": "1"}, {"a": "2"}], configs[:1])


def test_batch_as_completed_yields_every_result_with_its_index() -> None:
    graph = _echo_graph()
    out = dict(graph.batch_as_completed([{"a": "1"}, {}, {"a": "3"}], return_exceptions=True))
    assert sorted(out) == [0, 1, 2]
    assert out[0] == {"a": "1!", "log": []} and out[2] == {"a": "3!", "log": []}
    assert isinstance(out[1], KeyError)
    with pytest.raises(KeyError):
        list(graph.batch_as_completed([{"a": "1"}, {}]))


def _gated_graph(gate: asyncio.Event, cancelled: list[str]) -> Any:
    """Input "slow" waits for ``gate``; any other finishes at once."""

    async def node(state: S) -> dict[str, Any]:
        if state["a"] == "slow":
            try:
                await gate.wait()
            except asyncio.CancelledError:
                cancelled.append(state["a"])
                raise
        return {"a": state["a"] + "!"}

    builder = StateGraph(S)
    builder.add_node("n", node)
    builder.add_edge(START, "n")
    return builder.compile()


async def test_abatch_as_completed_yields_in_the_order_runs_finish() -> None:
    gate, cancelled = asyncio.Event(), []
    graph = _gated_graph(gate, cancelled)
    seen = []
    async for i, out in graph.abatch_as_completed(
        [{"a": "slow"}, {"a": "fast"}, {}], return_exceptions=True
    ):
        seen.append((i, out if isinstance(out, dict) else type(out).__name__))
        gate.set()  # the slow run may finish only after another was yielded
    assert seen[0][0] != 0 and seen[-1] == (0, {"a": "slow!", "log": []})
    assert sorted(seen[:2]) == [(1, {"a": "fast!", "log": []}), (2, "KeyError")]
    assert cancelled == []


async def test_abatch_as_completed_cancels_the_rest_when_the_reader_stops() -> None:
    gate, cancelled = asyncio.Event(), []
    graph = _gated_graph(gate, cancelled)
    results = graph.abatch_as_completed([{"a": "slow"}, {"a": "fast"}])
    async for i, _ in results:
        assert i == 1
        break
    await results.aclose()  # type: ignore[attr-defined]
    assert cancelled == ["slow"]


async def test_abatch_as_completed_raises_the_first_error_and_cancels_the_rest() -> None:
    gate, cancelled = asyncio.Event(), []
    graph = _gated_graph(gate, cancelled)
    with pytest.raises(KeyError):
        async for _ in graph.abatch_as_completed([{"a": "slow"}, {}]):
            pass
    assert cancelled == ["slow"]
