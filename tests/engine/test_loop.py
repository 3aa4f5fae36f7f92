"""Super-step semantics: snapshots, deterministic write order, routers, joins, triggers,
defer, Command, max_visits, fallbacks and recursion_limit."""

from __future__ import annotations

import operator
import threading
import time
from collections import Counter
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, Command, MemorySaver, Send, StateGraph
from trellis.errors import GraphRecursionError, InvalidConfigError, InvalidUpdateError, RoutingError


class S(TypedDict, total=False):
    a: str
    b: str
    n: int
    log: Annotated[list[str], operator.add]


def log(name: str, delay: float = 0.0) -> Any:
    def node(state: Any) -> dict[str, Any]:
        if delay:
            time.sleep(delay)
        return {"log": [name]}

    return node


def worker(arg: Any) -> dict[str, Any]:
    return {"log": [f"w:{arg}"]}


def graph_of(*names: str, edges: list[tuple[Any, str]] | None = None) -> StateGraph[Any, Any]:
    builder = StateGraph(S)
    for name in names:
        builder.add_node(name, log(name))
    for a, b in edges or []:
        builder.add_edge(a, b)
    return builder


# -- one snapshot per step ------------------------------------------------------


def test_parallel_siblings_read_the_same_snapshot() -> None:
    seen: dict[str, dict[str, Any]] = {}
    barrier = threading.Barrier(2, timeout=5)

    def make(name: str, key: str) -> Any:
        def node(state: S) -> dict[str, Any]:
            barrier.wait()  # both are running: neither has committed
            seen[name] = dict(state)
            return {key: name, "log": [name]}

        return node

    builder = StateGraph(S)
    builder.add_node("na", make("na", "a"))
    builder.add_node("nb", make("nb", "b"))
    builder.add_node("after", lambda s: seen.setdefault("after", dict(s)) and None)
    builder.add_edge(START, "na")
    builder.add_edge(START, "nb")
    builder.add_edge(["na", "nb"], "after")
    builder.compile().invoke({"log": ["i"]})
    assert seen["na"] == {"log": ["i"]}
    assert seen["nb"] == {"log": ["i"]}
    assert seen["after"] == {"a": "na", "b": "nb", "log": ["i", "na", "nb"]}


def test_node_mutating_its_input_does_not_leak_into_the_state() -> None:
    def mutate(state: dict[str, Any]) -> None:
        state["a"] = "mutated"

    builder = StateGraph(S)
    builder.add_node("m", mutate)
    builder.add_node("reader", lambda s: {"b": s.get("a", "absent")})
    builder.add_edge(START, "m")
    builder.add_edge("m", "reader")
    assert builder.compile().invoke({"n": 1})["b"] == "absent"


# -- write order ----------------------------------------------------------------


def test_pull_tasks_write_in_name_order_not_completion_order() -> None:
    builder = StateGraph(S)
    builder.add_node("c", log("c"))
    builder.add_node("b", log("b", 0.02))
    builder.add_node("a", log("a", 0.04))
    builder.add_node("z", log("z"))
    for name in ("c", "b", "a"):
        builder.add_edge(START, name)
        builder.add_edge(name, "z")
    assert builder.compile().invoke({})["log"] == ["a", "b", "c", "z"]


def test_sends_write_in_send_order_not_completion_order() -> None:
    def slow_worker(arg: int) -> dict[str, Any]:
        time.sleep(arg * 0.015)
        return {"log": [f"w{arg}"]}

    builder = StateGraph(S)
    builder.add_node("src", log("src"))
    builder.add_node("w", slow_worker)
    builder.add_edge(START, "src")
    builder.add_conditional_edges("src", lambda s: [Send("w", 3), Send("w", 1), Send("w", 2)])
    assert builder.compile().invoke({})["log"] == ["src", "w3", "w1", "w2"]


def test_pull_tasks_by_name_then_sends_in_send_order() -> None:
    builder = graph_of("src", "a", "b")
    builder.add_node("w", worker)
    builder.add_edge(START, "src")
    builder.add_conditional_edges("src", lambda s: [Send("w", "s2"), "b", Send("w", "s1"), "a"])
    assert builder.compile().invoke({})["log"] == ["src", "a", "b", "w:s2", "w:s1"]


def test_sends_from_two_nodes_follow_sender_name_order() -> None:
    builder = StateGraph(S)
    builder.add_node("q", log("q"))
    builder.add_node("p", log("p", 0.03))  # p finishes last but sorts first
    builder.add_node("w", worker)
    for sender in ("q", "p"):
        builder.add_edge(START, sender)
        builder.add_conditional_edges(
            sender, lambda s, x=sender: [Send("w", f"{x}1"), Send("w", f"{x}2")]
        )
    assert builder.compile().invoke({})["log"] == ["p", "q", "w:p1", "w:p2", "w:q1", "w:q2"]


def test_send_and_static_edge_to_the_same_node_run_it_twice_pull_first() -> None:
    builder = graph_of("src")
    builder.add_node("w", lambda s: {"log": [f"w:{s.get('a') if isinstance(s, dict) else s}"]})
    builder.add_edge(START, "src")
    builder.add_edge("src", "w")
    builder.add_conditional_edges("src", lambda s: [Send("w", "s")])
    assert builder.compile().invoke({})["log"] == ["src", "w:None", "w:s"]


# -- routers ------------------------------------------------------------------


def test_router_sees_the_snapshot_plus_its_own_node_writes_only() -> None:
    seen: dict[str, dict[str, Any]] = {}

    def router_of(name: str) -> Any:
        def route(state: S) -> str:
            seen[name] = dict(state)
            return END

        return route

    builder = StateGraph(S)
    builder.add_node("na", lambda s: {"a": "A"})
    builder.add_node("nb", lambda s: {"b": "B"})
    for name in ("na", "nb"):
        builder.add_edge(START, name)
        builder.add_conditional_edges(name, router_of(name))
    builder.compile().invoke({"log": ["i"]})
    assert seen == {"na": {"a": "A", "log": ["i"]}, "nb": {"b": "B", "log": ["i"]}}


def test_router_list_runs_all_next_step_in_name_order() -> None:
    builder = graph_of("s", "x", "y", edges=[(START, "s")])
    builder.add_conditional_edges("s", lambda s: ["y", "x"])
    assert builder.compile().invoke({})["log"] == ["s", "x", "y"]


def test_router_with_reducer_view_applies_own_append() -> None:
    seen: list[Any] = []
    builder = graph_of("s", edges=[(START, "s")])
    builder.add_conditional_edges("s", lambda st: seen.append(list(st["log"])) or END)
    builder.compile().invoke({"log": ["i"]})
    assert seen == [["i", "s"]]


# -- joins and triggers ---------------------------------------------------------------


def test_node_triggered_twice_in_one_step_runs_once() -> None:
    builder = graph_of("a", "b", "c", edges=[(START, "a"), (START, "b"), ("a", "c"), ("b", "c")])
    assert builder.compile().invoke({})["log"] == ["a", "b", "c"]


def test_edge_and_router_to_the_same_node_in_one_step_run_it_once() -> None:
    builder = graph_of("a", "b", "c", edges=[(START, "a"), (START, "b"), ("a", "c")])
    builder.add_conditional_edges("b", lambda s: "c")
    assert builder.compile().invoke({})["log"] == ["a", "b", "c"]


def test_plain_edges_finishing_in_different_steps_run_the_target_twice() -> None:
    builder = graph_of(
        "a",
        "b1",
        "b",
        "c",
        edges=[(START, "a"), (START, "b1"), ("b1", "b"), ("a", "c"), ("b", "c")],
    )
    assert builder.compile().invoke({})["log"] == ["a", "b1", "b", "c", "c"]


def test_join_across_steps_runs_once_after_the_last_source() -> None:
    builder = graph_of("a", "b1", "b", "c", edges=[(START, "a"), (START, "b1"), ("b1", "b")])
    builder.add_edge(["a", "b"], "c")
    updates = [next(iter(c)) for c in builder.compile().stream({})]
    assert updates == ["a", "b1", "b", "c"]


def test_deferred_node_runs_once_when_nothing_else_is_left() -> None:
    builder = StateGraph(S)
    for name in ("a", "b1", "b"):
        builder.add_node(name, log(name))
    builder.add_node("c", log("c"), defer=True)
    for a, b in [(START, "a"), (START, "b1"), ("b1", "b"), ("a", "c"), ("b", "c")]:
        builder.add_edge(a, b)
    assert builder.compile().invoke({})["log"] == ["a", "b1", "b", "c"]


# -- Command --------------------------------------------------------------------


def test_command_goto_and_static_edges_are_both_followed() -> None:
    builder = graph_of("x", "y")
    builder.add_node(
        "cmd", lambda s: Command(update={"log": ["cmd"]}, goto="x"), destinations=["x"]
    )
    builder.add_edge(START, "cmd")
    builder.add_edge("cmd", "y")
    assert builder.compile().invoke({})["log"] == ["cmd", "x", "y"]


def test_command_goto_end_does_not_cancel_static_edges() -> None:
    builder = graph_of("y")
    builder.add_node("cmd", lambda s: Command(goto=END))
    builder.add_edge(START, "cmd")
    builder.add_edge("cmd", "y")
    assert builder.compile().invoke({})["log"] == ["y"]


def test_command_goto_sends_keep_send_order() -> None:
    builder = StateGraph(S)
    builder.add_node("w", worker)
    builder.add_node(
        "cg",
        lambda s: Command(update={"log": ["cg"]}, goto=[Send("w", "c2"), Send("w", "c1")]),
        destinations=["w"],
    )
    builder.add_edge(START, "cg")
    assert builder.compile().invoke({})["log"] == ["cg", "w:c2", "w:c1"]


def test_list_of_commands_from_one_node_merge() -> None:
    builder = graph_of("y")
    builder.add_node(
        "cmd",
        lambda s: [Command(update={"log": ["c1"]}), Command(goto="y", update={"a": "set"})],
        destinations=["y"],
    )
    builder.add_edge(START, "cmd")
    assert builder.compile().invoke({}) == {"a": "set", "log": ["c1", "y"]}


# -- max_visits and fallbacks -----------------------------------------------------


def _looping(**options: Any) -> StateGraph[Any, Any]:
    builder = StateGraph(S)
    builder.add_node("loop", lambda s: {"n": s.get("n", 0) + 1, "log": ["loop"]}, **options)
    if "fallback" in options:
        builder.add_node("done", log("done"))
    builder.add_edge(START, "loop")
    builder.add_edge("loop", "loop")
    return builder


def test_max_visits_goes_to_the_fallback() -> None:
    out = _looping(max_visits=3, fallback="done").compile().invoke({})
    assert out["log"] == ["loop", "loop", "loop", "done"]
    assert out["n"] == 3


def test_max_visits_without_fallback_raises_naming_the_node() -> None:
    graph = _looping(max_visits=2).compile()
    with pytest.raises(GraphRecursionError, match="'loop'") as info:
        graph.invoke({})
    assert "max_visits=2" in str(info.value)


def test_max_visits_counts_per_run() -> None:
    graph = _looping(max_visits=2, fallback="done").compile()
    assert graph.invoke({})["log"] == ["loop", "loop", "done"]
    assert graph.invoke({})["log"] == ["loop", "loop", "done"]


@pytest.mark.parametrize("result", [None, "nowhere", ["x", "nowhere"]])
def test_conditional_fallback_for_none_and_unknown_names(result: Any) -> None:
    builder = graph_of("s", "x", "fb", edges=[(START, "s")])
    builder.add_conditional_edges("s", lambda st: result, fallback="fb")
    out = builder.compile().invoke({})["log"]
    assert out[0] == "s" and "fb" in out


@pytest.mark.parametrize("result", [None, "nowhere"])
def test_router_without_fallback_naming_no_node_is_an_error(result: Any) -> None:
    builder = graph_of("s", "x", edges=[(START, "s")])
    builder.add_conditional_edges("s", lambda st: result)
    with pytest.raises(RoutingError, match="'s'"):
        builder.compile().invoke({})


# -- recursion_limit ------------------------------------------------------------------


def _chain() -> Any:
    return graph_of("x", "y", edges=[(START, "x"), ("x", "y")]).compile()


@pytest.mark.parametrize(("limit", "ran"), [(1, ["x"]), (2, ["x", "y"])])
def test_recursion_limit_counts_like_langgraph(limit: int, ran: list[str]) -> None:
    chunks: list[Any] = []
    with pytest.raises(GraphRecursionError, match=f"Recursion limit of {limit} reached"):
        for chunk in _chain().stream({}, {"recursion_limit": limit}):
            chunks.append(chunk)
    assert [next(iter(c)) for c in chunks] == ran


def test_recursion_limit_one_more_than_the_steps_is_enough() -> None:
    assert _chain().invoke({}, {"recursion_limit": 3})["log"] == ["x", "y"]


def _spinner(calls: Counter[str]) -> StateGraph[Any, Any]:
    """A node that loops to itself for good, counting its runs in ``calls``."""

    def spin(state: S) -> dict[str, Any]:
        calls["spin"] += 1
        return {}

    builder = StateGraph(S)
    builder.add_node("spin", spin)
    builder.add_edge(START, "spin")
    builder.add_edge("spin", "spin")
    return builder


def test_recursion_error_names_the_scheduled_nodes_and_counts_runs() -> None:
    calls: Counter[str] = Counter()
    with pytest.raises(GraphRecursionError, match="'spin'") as info:
        _spinner(calls).compile().invoke({}, {"recursion_limit": 5})
    assert calls["spin"] == 5
    assert isinstance(info.value, RecursionError) and isinstance(info.value, RuntimeError)


def test_a_run_resumed_after_a_recursion_error_counts_as_langgraph() -> None:
    # LangGraph 1.2: a new run spends a step on its input, a resumed one does not,
    # and the step after the checkpoint has recursion_limit + 1 left: limit + 2 steps.
    calls: Counter[str] = Counter()
    graph = _spinner(calls).compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "t"}, "recursion_limit": 4}
    with pytest.raises(GraphRecursionError):
        graph.invoke({}, config)
    assert calls["spin"] == 4
    with pytest.raises(GraphRecursionError):
        graph.invoke(None, config)
    assert calls["spin"] == 4 + 6


def test_default_recursion_limit_allows_long_runs() -> None:
    builder = StateGraph(S)
    builder.add_node("inc", lambda s: {"n": s["n"] + 1})
    builder.add_edge(START, "inc")
    builder.add_conditional_edges("inc", lambda s: "inc" if s["n"] < 300 else END)
    assert builder.compile().invoke({"n": 0})["n"] == 300


def test_invoke_returns_none_when_nothing_was_written() -> None:
    builder = StateGraph(S)
    builder.add_node("noop", lambda s: None)
    builder.add_edge(START, "noop")
    graph = builder.compile()
    assert graph.invoke({}) is None  # not {"log": []}: the zero values are not writes
    assert graph.invoke({"a": "in"}) == {"a": "in", "log": []}


def test_list_of_commands_writing_one_reducer_key_keeps_every_write() -> None:
    builder = StateGraph(S)
    builder.add_node(
        "cmd", lambda s: [Command(update={"log": ["c1"]}), Command(update={"log": ["c2"]})]
    )
    builder.add_edge(START, "cmd")
    assert builder.compile().invoke({})["log"] == ["c1", "c2"]


def test_update_pairs_are_writes_in_order_through_the_reducers() -> None:
    builder = StateGraph(S)
    builder.add_node(
        "cmd", lambda s: Command(update=[("log", ["x"]), ("a", "set"), ("log", ["y"])])
    )
    builder.add_edge(START, "cmd")
    assert builder.compile().invoke({}) == {"a": "set", "log": ["x", "y"]}


@pytest.mark.parametrize(
    ("update", "message"),
    [([("a", "1"), ("a", "2")], "twice in one step"), ([("a", "1", "extra")], "pairs")],
)
def test_bad_update_pairs_are_named_errors(update: list[Any], message: str) -> None:
    builder = StateGraph(S)
    builder.add_node("cmd", lambda s: Command(update=update))
    builder.add_edge(START, "cmd")
    with pytest.raises(InvalidUpdateError, match=message):
        builder.compile().invoke({})


def _fan_out(width: int, peak: list[int]) -> Any:
    """START -> w0..w{width-1}, each noting how many tasks run at that moment."""
    lock = threading.Lock()
    running = [0]

    def make(name: str) -> Any:
        def node(state: S) -> dict[str, Any]:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.01)
            with lock:
                running[0] -= 1
            return {"log": [name]}

        return node

    builder = StateGraph(S)
    for i in range(width):
        builder.add_node(f"w{i}", make(f"w{i}"))
        builder.add_edge(START, f"w{i}")
    return builder.compile()


@pytest.mark.parametrize("limit", [1, 2])
def test_max_concurrency_caps_a_steps_running_tasks(limit: int) -> None:
    peak = [0]
    out = _fan_out(6, peak).invoke({}, {"max_concurrency": limit})
    assert sorted(out["log"]) == [f"w{i}" for i in range(6)]
    assert 1 <= peak[0] <= limit


async def test_max_concurrency_caps_async_runs_too() -> None:
    import asyncio

    running, peak = [0], [0]

    async def node(state: S) -> dict[str, Any]:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.01)
        running[0] -= 1
        return {"log": ["w"]}

    builder = StateGraph(S)
    for i in range(6):
        builder.add_node(f"w{i}", node)
        builder.add_edge(START, f"w{i}")
    out = await builder.compile().ainvoke({}, {"max_concurrency": 2})
    assert len(out["log"]) == 6 and peak[0] == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_bad_max_concurrency_is_a_named_error(bad: Any) -> None:
    with pytest.raises(InvalidConfigError, match="max_concurrency"):
        _fan_out(2, [0]).invoke({}, {"max_concurrency": bad})
