"""Stream modes and their shapes, sync and async; batch and abatch."""

from __future__ import annotations

import asyncio
import operator
import uuid
from datetime import datetime
from typing import Annotated, Any

import pytest
from tests.engine.conftest import two_writers_of_one_key
from typing_extensions import TypedDict

from trellis import END, START, Send, StateGraph, get_stream_writer
from trellis.persist.memory import MemorySaver


class S(TypedDict, total=False):
    a: str
    log: Annotated[list[str], operator.add]


def log(name: str) -> Any:
    return lambda state: {"log": [name]}


def chain(*names: str, **compile_options: Any) -> Any:
    builder = StateGraph(S)
    for name in names:
        builder.add_node(name, log(name))
    builder.add_edge(START, names[0])
    for a, b in zip(names, names[1:], strict=False):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    return builder.compile(**compile_options)


def parallel() -> Any:
    builder = StateGraph(S)
    builder.add_node("a", log("a"))
    builder.add_node("b", log("b"))
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    return builder.compile()


async def collect(aiter: Any) -> list[Any]:
    return [chunk async for chunk in aiter]


# -- values and updates ---------------------------------------------------------


def test_values_stream_input_then_one_chunk_per_writing_step() -> None:
    chunks = list(chain("x", "y").stream({"a": "in"}, stream_mode="values"))
    assert chunks == [
        {"a": "in", "log": []},
        {"a": "in", "log": ["x"]},
        {"a": "in", "log": ["x", "y"]},
    ]


def test_values_stream_skips_empty_input_and_steps_that_wrote_nothing() -> None:
    builder = StateGraph(S)
    builder.add_node("x", lambda s: None)
    builder.add_node("y", log("y"))
    builder.add_edge(START, "x")
    builder.add_edge("x", "y")
    assert list(builder.compile().stream({}, stream_mode="values")) == [{"log": ["y"]}]


def test_values_stream_parallel_step_is_one_chunk() -> None:
    assert list(parallel().stream({}, stream_mode="values")) == [{"log": ["a", "b"]}]


def test_updates_is_the_default_mode_one_dict_per_task() -> None:
    builder = StateGraph(S)
    builder.add_node("x", log("x"))
    builder.add_node("none", lambda s: None)
    builder.add_node("empty", lambda s: {})
    builder.add_edge(START, "x")
    builder.add_edge("x", "none")
    builder.add_edge("none", "empty")
    assert list(builder.compile().stream({"a": "in"})) == [
        {"x": {"log": ["x"]}},
        {"none": None},
        {"empty": None},
    ]


def test_updates_for_parallel_tasks_and_sends_are_keyed_by_node() -> None:
    builder = StateGraph(S)
    builder.add_node("src", log("src"))
    builder.add_node("w", lambda arg: {"log": [arg]})
    builder.add_edge(START, "src")
    builder.add_conditional_edges("src", lambda s: [Send("w", "w1"), Send("w", "w2")])
    assert list(builder.compile().stream({})) == [
        {"src": {"log": ["src"]}},
        {"w": {"log": ["w1"]}},
        {"w": {"log": ["w2"]}},
    ]


def test_list_of_modes_gives_pairs_updates_before_the_steps_values() -> None:
    chunks = list(parallel().stream({"a": "in"}, stream_mode=["updates", "values"]))
    assert chunks == [
        ("values", {"a": "in", "log": []}),
        ("updates", {"a": {"log": ["a"]}}),
        ("updates", {"b": {"log": ["b"]}}),
        ("values", {"a": "in", "log": ["a", "b"]}),
    ]


def test_one_element_list_of_modes_still_gives_pairs() -> None:
    assert list(chain("x").stream({}, stream_mode=["updates"])) == [
        ("updates", {"x": {"log": ["x"]}})
    ]


def test_unknown_stream_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="nonsense"):
        list(chain("x").stream({}, stream_mode="nonsense"))


# -- custom -------------------------------------------------------------------------


def _custom_graph() -> Any:
    def via_getter(state: S) -> dict[str, Any]:
        get_stream_writer()({"k": 1})
        return {"a": "z"}

    def via_param(state: S, writer: Any) -> None:
        writer("hello")

    builder = StateGraph(S)
    builder.add_node("cw", via_getter)
    builder.add_node("cw2", via_param)
    builder.add_edge(START, "cw")
    builder.add_edge("cw", "cw2")
    return builder.compile()


def test_custom_stream_from_get_stream_writer_and_writer_param() -> None:
    assert list(_custom_graph().stream({}, stream_mode="custom")) == [{"k": 1}, "hello"]


def test_custom_chunks_come_before_their_nodes_update() -> None:
    chunks = list(_custom_graph().stream({}, stream_mode=["custom", "updates"]))
    assert chunks == [
        ("custom", {"k": 1}),
        ("updates", {"cw": {"a": "z"}}),
        ("custom", "hello"),
        ("updates", {"cw2": None}),
    ]


def test_stream_writer_outside_a_node_discards() -> None:
    get_stream_writer()("nobody listens")  # must not raise


def test_custom_writes_are_ignored_when_not_streamed() -> None:
    assert _custom_graph().invoke({}) == {"a": "z", "log": []}


# -- debug ----------------------------------------------------------------------


def test_debug_stream_task_and_task_result_shapes() -> None:
    chunks = list(chain("x").stream({"a": "in"}, stream_mode="debug"))
    assert [c["type"] for c in chunks] == ["task", "task_result"]
    task, result = chunks
    assert task["step"] == 1 and result["step"] == 1
    datetime.fromisoformat(task["timestamp"])
    assert task["payload"]["name"] == "x"
    assert task["payload"]["input"] == {"a": "in", "log": []}
    assert task["payload"]["triggers"] == ("branch:to:x",)
    assert result["payload"]["id"] == task["payload"]["id"]
    assert result["payload"]["result"] == {"log": ["x"]}
    assert result["payload"]["error"] is None
    assert result["payload"]["interrupts"] == []


# -- async twins --------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode", ["values", "updates", "custom", ["updates", "values"], ["custom", "updates"]]
)
async def test_astream_gives_the_same_chunks_as_stream(mode: Any) -> None:
    graph = _custom_graph()
    assert await collect(graph.astream({"a": "in"}, stream_mode=mode)) == list(
        graph.stream({"a": "in"}, stream_mode=mode)
    )


async def test_astream_with_async_nodes_writes_custom() -> None:
    async def node(state: S, writer: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        writer("async custom")
        get_stream_writer()("via getter")
        return {"a": "done"}

    builder = StateGraph(S)
    builder.add_node("n", node)
    builder.add_edge(START, "n")
    chunks = await collect(builder.compile().astream({}, stream_mode=["custom", "values"]))
    assert chunks == [
        ("custom", "async custom"),
        ("custom", "via getter"),
        ("values", {"a": "done", "log": []}),
    ]


def _failing_step() -> Any:
    def bad(state: S, writer: Any) -> dict[str, Any]:
        writer("half done")
        raise RuntimeError("upstream down")

    builder = StateGraph(S)
    builder.add_node("good", lambda s: {"log": ["good"]})
    builder.add_node("bad", bad)
    builder.add_edge(START, "good")
    builder.add_edge(START, "bad")
    return builder.compile()


def test_a_failing_step_streams_what_it_produced_before_the_error() -> None:
    """As LangGraph: the finished sibling's update and the failed node's custom
    chunks come out, then the error."""
    seen: list[Any] = []
    with pytest.raises(RuntimeError, match="upstream down"):
        for chunk in _failing_step().stream({}, stream_mode=["updates", "custom"]):
            seen.append(chunk)
    assert seen == [("custom", "half done"), ("updates", {"good": {"log": ["good"]}})]


async def test_a_failing_async_step_streams_the_failed_nodes_custom_chunks() -> None:
    seen: list[Any] = []
    with pytest.raises(RuntimeError, match="upstream down"):
        async for chunk in _failing_step().astream({}, stream_mode="custom"):
            seen.append(chunk)
    assert seen == ["half done"]


def test_invoke_with_a_stream_mode_returns_every_chunk() -> None:
    """As LangGraph: only ``"values"`` (the default) returns the final state."""
    graph = chain("x", "y")
    assert graph.invoke({}, stream_mode="updates") == [{"x": {"log": ["x"]}}, {"y": {"log": ["y"]}}]
    both = graph.invoke({}, stream_mode=["updates", "values"])
    assert both[-1] == ("values", {"log": ["x", "y"]}) and len(both) == 4


async def test_ainvoke_with_a_stream_mode_returns_every_chunk() -> None:
    chunks = await chain("x", "y").ainvoke({}, stream_mode="updates")
    assert chunks == [{"x": {"log": ["x"]}}, {"y": {"log": ["y"]}}]


def test_debug_stream_with_a_checkpointer_has_checkpoint_events() -> None:
    graph = chain("x", checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    chunks = list(graph.stream({"a": "in"}, config, stream_mode="debug"))
    assert [c["type"] for c in chunks] == [
        "checkpoint",
        "checkpoint",
        "task",
        "task_result",
        "checkpoint",
    ]


# -- a step that stops on interrupts ---------------------------------------------


def _sibling_and_question() -> Any:
    """START -> (a, ask) in parallel; ask streams a chunk, then interrupts."""
    from trellis import interrupt

    def ask(state: S) -> dict[str, Any]:
        get_stream_writer()("thinking")
        return {"log": [f"ask:{interrupt('ok?')}"]}

    builder = StateGraph(S)
    builder.add_node("a", log("a"))
    builder.add_node("ask", ask)
    builder.add_edge(START, "a")
    builder.add_edge(START, "ask")
    return builder.compile(checkpointer=MemorySaver())


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_step_that_stops_on_an_interrupt_streams_what_ran_first(use_async: bool) -> None:
    """As LangGraph, which streams live: the finished sibling's update and the
    interrupted node's custom chunk come before the interrupt, not only on resume."""
    graph = _sibling_and_question()
    config = {"configurable": {"thread_id": f"stop-{use_async}"}}
    modes = ["updates", "custom"]
    if use_async:
        chunks = asyncio.run(collect(graph.astream({"log": []}, config, stream_mode=modes)))
    else:
        chunks = list(graph.stream({"log": []}, config, stream_mode=modes))
    # The custom chunk is live, so it may come before or after the sibling's update.
    first = sorted(chunks[:2], key=repr)
    assert first == [("custom", "thinking"), ("updates", {"a": {"log": ["a"]}})]
    assert len(chunks) == 3 and chunks[-1][0] == "updates"
    assert "__interrupt__" in chunks[-1][1]
    latest = graph.get_state(config)  # the sibling's write shows; "ask" is still to run
    assert latest.values["log"] == ["a"] and latest.next == ("ask",)


def test_a_subgraph_that_interrupts_streams_its_chunks_first() -> None:
    from trellis import interrupt

    child = StateGraph(S)
    child.add_node("inner", log("inner"))
    child.add_node("ask", lambda s: {"a": interrupt("ok?")})
    child.add_edge(START, "inner")
    child.add_edge("inner", "ask")
    builder = StateGraph(S)
    builder.add_node("sub", child.compile())
    builder.add_edge(START, "sub")
    graph = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "sub-stop"}}
    chunks = list(graph.stream({"log": []}, config, stream_mode="updates", subgraphs=True))
    namespaces = [ns[0].split(":")[0] if ns else "" for ns, _ in chunks]
    assert namespaces == ["sub", "sub", ""]  # the child's update and stop, then the parent's
    assert chunks[0][1] == {"inner": {"log": ["inner"]}}
    assert "__interrupt__" in chunks[1][1] and "__interrupt__" in chunks[2][1]


def test_each_task_that_stops_streams_its_own_interrupt_chunk() -> None:
    from trellis import interrupt

    builder = StateGraph(S)
    builder.add_node("x", lambda s: {"log": [interrupt("qx")]})
    builder.add_node("y", lambda s: {"log": [interrupt("qy")]})
    builder.add_edge(START, "x")
    builder.add_edge(START, "y")
    graph = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "two-stops"}}
    chunks = list(graph.stream({"log": []}, config, stream_mode=["updates", "values"]))
    stops = [[i.value for i in c["__interrupt__"]] for m, c in chunks if m == "updates"]
    assert stops == [["qx"], ["qy"]]  # as LangGraph: one chunk per task, not one for all
    assert [m for m, _ in chunks] == ["values", "updates", "values", "updates", "values"]


def test_updates_stream_before_a_conflict_is_raised() -> None:
    from trellis.errors import InvalidUpdateError

    graph = two_writers_of_one_key()
    chunks: list[Any] = []
    with pytest.raises(InvalidUpdateError):
        for chunk in graph.stream({"v": "in"}, stream_mode="updates"):
            chunks.append(chunk)
    assert chunks == [{"x": {"v": "x"}}, {"y": {"v": "y"}}]  # as LangGraph, then the error


def test_tasks_and_checkpoints_modes_show_the_debug_chunks_payloads() -> None:
    """LangGraph's "tasks" and "checkpoints" stream modes: parts of "debug"."""
    builder = StateGraph(S)
    builder.add_node("a", lambda s: {"log": ["a"]})
    builder.add_edge(START, "a")
    graph = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    started, finished = graph.stream({"log": []}, config, stream_mode="tasks")
    assert (started["name"], started["input"], started["triggers"]) == (
        "a",
        {"log": []},
        ("branch:to:a",),
    )
    assert finished == {
        "id": started["id"],
        "name": "a",
        "error": None,
        "result": {"log": ["a"]},
        "interrupts": [],
    }

    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    chunks = list(graph.stream({"log": ["x"]}, config, stream_mode=["checkpoints", "updates"]))
    saved = [c for mode, c in chunks if mode == "checkpoints"]
    assert [c["next"] for c in saved] == [["__start__"], ["a"], []]
    assert [[t["name"] for t in c["tasks"]] for c in saved] == [["__start__"], ["a"], []]
    assert saved[1]["tasks"][0]["id"] == graph.get_state(saved[1]["config"]).tasks[0].id
    assert ("updates", {"a": {"log": ["a"]}}) in chunks
    assert not any(mode == "debug" for mode, _ in chunks)  # asked for views only


async def test_tasks_mode_streams_async_too() -> None:
    chunks = [c async for c in chain("x", "y").astream({}, stream_mode="tasks")]
    assert [(c["name"], "result" in c) for c in chunks] == [
        ("x", False), ("x", True), ("y", False), ("y", True)
    ]  # fmt: skip
