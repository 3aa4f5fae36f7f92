"""Corners where the engine's pieces meet: nesting, resume, retries, streams."""

from __future__ import annotations

import operator
import threading
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, Command, MemorySaver, RetryPolicy, Send, StateGraph, interrupt
from trellis.errors import InvalidConfigError
from trellis.observe import MemorySink


class Out(TypedDict):
    out: Annotated[list[int], operator.add]


def _fan(node: Any, width: int) -> Any:
    builder = StateGraph(Out)
    builder.add_node("w", node)
    builder.add_conditional_edges(START, lambda s: [Send("w", {}) for _ in range(width)])
    return builder.compile()


def test_parallel_steps_nested_in_parallel_steps_do_not_exhaust_the_pool() -> None:
    from trellis.engine import drivers

    inner = _fan(lambda s: {"out": [1]}, 2)
    outer = _fan(lambda s: inner.invoke({"out": []}), drivers._WORKERS + 2)
    done: list[Any] = []
    runner = threading.Thread(target=lambda: done.append(outer.invoke({"out": []})), daemon=True)
    runner.start()
    runner.join(20)
    assert done and len(done[0]["out"]) == 2 * (drivers._WORKERS + 2)


class X(TypedDict, total=False):
    x: int
    note: str
    a: str
    b: str
    answer: str


def test_on_error_and_fallbacks_may_end_the_run() -> None:
    def boom(state: X) -> dict[str, Any]:
        raise RuntimeError("x")

    builder = StateGraph(X)
    builder.add_node("a", boom, on_error=END)
    builder.add_node("after", lambda s: {"x": 99})
    builder.add_edge(START, "a")
    builder.add_edge("a", "after")
    out = builder.compile().invoke({"x": 0})
    assert out["x"] == 0 and out["errors"][0]["node"] == "a"

    looping = StateGraph(X)
    looping.add_node("step", lambda s: {"x": s["x"] + 1}, max_visits=2, fallback=END)
    looping.add_edge(START, "step")
    looping.add_edge("step", "step")
    assert looping.compile().invoke({"x": 0}) == {"x": 2}


def test_a_resume_update_survives_a_second_interrupt() -> None:
    def ask(state: X) -> dict[str, Any]:
        return {"a": interrupt("first?"), "b": interrupt("second?")}

    builder = StateGraph(X)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    graph = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"note": ""}, config)
    graph.invoke(Command(resume="1", update={"note": "from reviewer"}), config)
    assert graph.get_state(config).values["note"] == "from reviewer"
    assert graph.invoke(Command(resume="2"), config) == {
        "note": "from reviewer",
        "a": "1",
        "b": "2",
    }


def test_a_retried_node_does_not_ask_its_question_again() -> None:
    calls: list[str] = []

    def ask(state: X) -> dict[str, Any]:
        answer = interrupt("approve?")
        calls.append(answer)
        if len(calls) == 1:
            raise ConnectionError("flaky")  # transient: retried
        return {"answer": answer}

    builder = StateGraph(X)
    builder.add_node("ask", ask, retry_policy=RetryPolicy(initial_interval=0, jitter=False))
    builder.add_edge(START, "ask")
    graph = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"answer": ""}, config)
    assert graph.invoke(Command(resume="yes"), config) == {"answer": "yes"}
    assert calls == ["yes", "yes"]


@pytest.mark.parametrize("option", ["plain", "on_error", "error_handler"])
def test_a_subgraph_steering_its_parent_is_no_failure(option: str) -> None:
    undone: list[str] = []
    extra: dict[str, Any] = {
        "plain": {},
        "on_error": {"on_error": "err"},
        "error_handler": {"error_handler": lambda s: {"x": -2}},
    }[option]
    sub = StateGraph(X)
    sub.add_node("prep", lambda s: {"x": 5}, compensate=lambda s: undone.append("prep"))
    sub.add_node(
        "hop", lambda s: Command(graph=Command.PARENT, goto="done", update={"x": 10}), **extra
    )
    if option == "on_error":
        sub.add_node("err", lambda s: {"x": -1})
    sub.add_edge(START, "prep")
    sub.add_edge("prep", "hop")
    parent = StateGraph(X)
    parent.add_node("sub", sub.compile(), destinations=("done",))
    parent.add_node("done", lambda s: {"x": s["x"] + 1})
    parent.add_edge(START, "sub")
    assert parent.compile().invoke({"x": 0}) == {"x": 11}
    assert undone == []


def test_a_node_error_keeps_its_own_context() -> None:
    def node(state: X) -> dict[str, Any]:
        try:
            {}["missing"]
        except KeyError:
            raise ValueError("wrapped") from None
        return {}

    builder = StateGraph(X)
    builder.add_node("n", node)
    builder.add_edge(START, "n")
    with pytest.raises(ValueError) as caught:
        builder.compile().invoke({"x": 0})
    assert isinstance(caught.value.__context__, KeyError)


def test_a_star_breakpoint_does_not_fire_when_nothing_is_left() -> None:
    builder = StateGraph(X)
    builder.add_node("a", lambda s: {"x": 1})
    builder.add_edge(START, "a")
    graph = builder.compile(checkpointer=MemorySaver(), interrupt_before="*")
    config = {"configurable": {"thread_id": "t"}}
    assert list(graph.stream({"x": 0}, config)) == [{"__interrupt__": ()}]
    assert list(graph.stream(None, config)) == [{"a": {"x": 1}}]


def test_closing_an_event_stream_early_ends_the_run_as_cancelled() -> None:
    sink = MemorySink()
    builder = StateGraph(X)
    builder.add_sequence([("a", lambda s: {"x": 1}), ("b", lambda s: {"x": 2})])
    builder.add_edge(START, "a")
    stream = builder.compile(observers=[sink]).stream({"x": 0}, stream_mode=["updates", "events"])
    next(stream)
    stream.close()
    assert sink.events[-1].kind == "run_end" and sink.events[-1].status == "cancelled"


def test_an_unknown_durability_is_refused() -> None:
    builder = StateGraph(X)
    builder.add_node("a", lambda s: {"x": 1})
    builder.add_edge(START, "a")
    graph = builder.compile(checkpointer=MemorySaver())
    with pytest.raises(InvalidConfigError, match="'exti'"):
        graph.invoke({"x": 0}, {"configurable": {"thread_id": "t"}}, durability="exti")


def test_a_breaker_opening_is_an_event_of_the_run() -> None:
    from trellis import CircuitBreaker

    def down(state: X) -> dict[str, Any]:
        raise ConnectionError("down")

    sink = MemorySink()
    breaker = CircuitBreaker(f"svc-{id(sink)}", failure_threshold=1, recovery_timeout=60)
    builder = StateGraph(X)
    builder.add_node("call", down, circuit=breaker)
    builder.add_edge(START, "call")
    with pytest.raises(ConnectionError):
        builder.compile(observers=[sink]).invoke({"x": 0})
    [moved] = [e for e in sink.events if e.kind == "circuit_state"]
    assert moved.node == "call" and moved.data["from"] == "closed" and moved.data["to"] == "open"


def test_a_long_run_keeps_its_span_ids_well_formed_and_distinct() -> None:
    # Past the first 1024 spans of a run the ids are formatted, not looked up.
    sink = MemorySink()
    builder = StateGraph(X)
    builder.add_node("a", lambda s: {"x": s["x"] + 1})
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", lambda s: "a" if s["x"] < 600 else END)
    assert builder.compile(observers=[sink]).invoke({"x": 0}, {"recursion_limit": 700}) == {
        "x": 600
    }
    [run] = [e for e in sink.events if e.kind == "run_start"]
    ids = {e.span_id for e in sink.events if e.kind in ("step_start", "task_start")}
    assert len(ids) == 1 + 2 * 600  # the input step has no task span
    hex_digits = set("0123456789abcdef")
    assert all(len(i) == 16 and set(i) <= hex_digits for i in ids)
    assert all(i.startswith(run.span_id[:8]) for i in ids)


def test_a_sink_added_after_a_run_receives_the_next_runs_events() -> None:
    first, later = MemorySink(), MemorySink()
    builder = StateGraph(X)
    builder.add_node("a", lambda s: {"x": 1})
    builder.add_edge(START, "a")
    graph = builder.compile(observers=[first])
    graph.invoke({"x": 0})
    graph.sinks.append(later)  # the routes worked out for the first run are redone
    graph.invoke({"x": 0})
    assert [e.kind for e in later.events] == [e.kind for e in first.events][: len(later.events)]
    assert later.events and later.events[0].kind == "run_start"


def test_a_sink_that_wants_no_kinds_gets_no_events() -> None:
    class Declares:  # routes by its declared kinds alone, filters nothing itself
        def __init__(self, kinds: frozenset[str]) -> None:
            self.kinds, self.got = kinds, []

        def __call__(self, event: Any) -> None:
            self.got.append(event.kind)

    none, some = Declares(frozenset()), Declares(frozenset({"task_end"}))
    builder = StateGraph(X)
    builder.add_node("a", lambda s: {"x": 1})
    builder.add_edge(START, "a")
    builder.compile(observers=[none, some]).invoke({"x": 0})
    assert none.got == []
    assert some.got == ["task_end"]
