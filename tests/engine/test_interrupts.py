"""interrupt() and Command(resume=...), breakpoints (interrupt_before/after)."""

from __future__ import annotations

import asyncio
import operator
import uuid
from collections import Counter
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, Command, Interrupt, RunnableConfig, Send, StateGraph
from trellis.engine.interrupts import interrupt
from trellis.errors import (
    EmptyInputError,
    GraphRecursionError,
    InterruptError,
    InvalidConfigError,
    RoutingError,
)
from trellis.persist.memory import MemorySaver


class S(TypedDict, total=False):
    a: str
    answers: Annotated[list[Any], operator.add]
    log: Annotated[list[str], operator.add]


def thread() -> dict[str, Any]:
    return {"configurable": {"thread_id": uuid.uuid4().hex}}


def log(name: str) -> Any:
    return lambda state: {"log": [name]}


def build(nodes: dict[str, Any], edges: list[tuple[str, str]], **compile_options: Any) -> Any:
    builder = StateGraph(S)
    for name, fn in nodes.items():
        builder.add_node(name, fn)
    for a, b in edges:
        builder.add_edge(a, b)
    compile_options.setdefault("checkpointer", MemorySaver())
    return builder.compile(**compile_options)


def asker(calls: Counter[str], name: str, *questions: str) -> Any:
    def node(state: S) -> dict[str, Any]:
        calls[name] += 1
        got = [interrupt(q) for q in questions]
        return {"answers": got, "log": [name]}

    return node


# -- a single interrupt ---------------------------------------------------------------


def test_interrupt_returns_the_state_with_interrupts_then_resume_answers_it() -> None:
    calls: Counter[str] = Counter()
    graph = build(
        {"pre": log("pre"), "ask": asker(calls, "ask", "approve?"), "post": log("post")},
        [(START, "pre"), ("pre", "ask"), ("ask", "post")],
    )
    config = thread()
    first = graph.invoke({"a": "x"}, config)
    assert first["a"] == "x" and first["log"] == ["pre"]
    [pending] = first["__interrupt__"]
    assert isinstance(pending, Interrupt) and pending.value == "approve?" and pending.id
    final = graph.invoke(Command(resume="yes"), config)
    assert final == {"a": "x", "answers": ["yes"], "log": ["pre", "ask", "post"]}
    assert calls["ask"] == 2  # the node re-ran from its start
    assert "__interrupt__" not in final


def test_stream_reports_the_interrupt_as_an_update() -> None:
    graph = build({"ask": asker(Counter(), "ask", "q")}, [(START, "ask")])
    chunks = list(graph.stream({"a": "x"}, thread(), stream_mode="updates"))
    assert len(chunks) == 1
    [(key, value)] = chunks[0].items()
    assert key == "__interrupt__" and [i.value for i in value] == ["q"]


def test_two_interrupts_in_one_node_are_resumed_in_order() -> None:
    calls: Counter[str] = Counter()
    graph = build({"ask": asker(calls, "ask", "first?", "second?")}, [(START, "ask")])
    config = thread()
    assert [i.value for i in graph.invoke({"a": "x"}, config)["__interrupt__"]] == ["first?"]
    second = graph.invoke(Command(resume=1), config)
    assert [i.value for i in second["__interrupt__"]] == ["second?"]
    final = graph.invoke(Command(resume=2), config)
    assert final["answers"] == [1, 2]
    assert calls["ask"] == 3


def test_parallel_interrupts_resume_with_an_id_map() -> None:
    calls: Counter[str] = Counter()
    graph = build(
        {"left": asker(calls, "left", "L?"), "right": asker(calls, "right", "R?")},
        [(START, "left"), (START, "right")],
    )
    config = thread()
    pending = graph.invoke({"a": "x"}, config)["__interrupt__"]
    by_value = {i.value: i.id for i in pending}
    assert set(by_value) == {"L?", "R?"} and len(set(by_value.values())) == 2
    final = graph.invoke(Command(resume={by_value["L?"]: "l", by_value["R?"]: "r"}), config)
    assert final["answers"] == ["l", "r"] and final["log"] == ["left", "right"]


def test_partial_id_map_answers_one_and_the_other_asks_again_with_the_same_id() -> None:
    calls: Counter[str] = Counter()
    graph = build(
        {"left": asker(calls, "left", "L?"), "right": asker(calls, "right", "R?")},
        [(START, "left"), (START, "right")],
    )
    config = thread()
    pending = {i.value: i.id for i in graph.invoke({"a": "x"}, config)["__interrupt__"]}
    again = graph.invoke(Command(resume={pending["L?"]: "l"}), config)
    assert [(i.value, i.id) for i in again["__interrupt__"]] == [("R?", pending["R?"])]
    final = graph.invoke(Command(resume={pending["R?"]: "r"}), config)
    assert final["answers"] == ["l", "r"]
    assert calls["left"] == 2  # answered once, not re-run after its answer was kept


@pytest.mark.filterwarnings("ignore:node\\(s\\) not reachable")
def test_resume_with_goto_runs_the_targets_beside_the_resumed_node() -> None:
    """As LangGraph: ``goto`` of a resuming Command joins the resumed step."""
    calls: Counter[str] = Counter()
    graph = build(
        {"ask": asker(calls, "ask", "ok?"), "after": log("after"), "side": log("side")},
        [(START, "ask"), ("ask", "after")],
    )
    config = thread()
    graph.invoke({"a": "x"}, config)
    out = graph.invoke(Command(resume="yes", goto=["side", Send("side", {"a": "y"})]), config)
    assert out["log"] == ["ask", "side", "side", "after"]
    steps = [h.next for h in graph.get_state_history(config)]
    assert steps[:2] == [(), ("after",)]  # ask and both sides ran in one step
    graph.invoke({"a": "again"}, config)
    with pytest.raises(RoutingError, match=r"Command\(resume=\.\.\.\) for thread .*'nowhere'"):
        graph.invoke(Command(resume="yes", goto="nowhere"), config)


def test_a_resume_goto_survives_the_step_stopping_again() -> None:
    """The resumed node asks a second question: the goto target, which finished,
    is kept (not run again) and its write lands when the step commits."""
    calls: Counter[str] = Counter()

    def side(state: S) -> dict[str, Any]:
        calls["side"] += 1
        return {"log": ["side"]}

    builder = StateGraph(S)
    builder.add_node("ask", asker(calls, "ask", "one?", "two?"))
    builder.add_node("side", side)
    builder.add_edge(START, "ask")
    builder.add_conditional_edges("ask", lambda s: END, [END, "side"])  # side: by goto only
    graph = builder.compile(checkpointer=MemorySaver())
    config = thread()
    graph.invoke({"a": "x"}, config)
    paused = graph.invoke(Command(resume="A", goto="side"), config)
    assert [i.value for i in paused["__interrupt__"]] == ["two?"]
    out = graph.invoke(Command(resume="B"), config)
    assert out["log"] == ["ask", "side"] and out["answers"] == ["A", "B"]
    assert calls["side"] == 1


def test_bare_resume_with_several_pending_is_an_error() -> None:
    graph = build(
        {"left": asker(Counter(), "left", "L?"), "right": asker(Counter(), "right", "R?")},
        [(START, "left"), (START, "right")],
    )
    config = thread()
    graph.invoke({"a": "x"}, config)
    tid = config["configurable"]["thread_id"]
    with pytest.raises(InterruptError, match=f"thread '{tid}' has 2 interrupts pending"):
        graph.invoke(Command(resume="yes"), config)


def test_unknown_interrupt_id_is_an_error_naming_it() -> None:
    graph = build({"ask": asker(Counter(), "ask", "q")}, [(START, "ask")])
    config = thread()
    graph.invoke({"a": "x"}, config)
    bogus = uuid.uuid4().hex
    with pytest.raises(InterruptError, match=bogus):
        graph.invoke(Command(resume={bogus: "v"}), config)


def test_resume_on_a_thread_without_a_pending_interrupt_is_an_error() -> None:
    graph = build({"x": log("x")}, [(START, "x")])
    config = thread()
    graph.invoke({"a": "x"}, config)
    with pytest.raises(InterruptError, match="no pending interrupt"):
        graph.invoke(Command(resume="late"), config)


def test_resume_on_an_unknown_thread_is_an_empty_input_error() -> None:
    graph = build({"x": log("x")}, [(START, "x")])
    with pytest.raises(EmptyInputError):
        graph.invoke(Command(resume="v"), thread())


def test_interrupt_without_a_checkpointer_is_an_error() -> None:
    graph = build({"ask": asker(Counter(), "ask", "q")}, [(START, "ask")], checkpointer=None)
    with pytest.raises(InterruptError, match="checkpointer"):
        graph.invoke({"a": "x"})
    with pytest.raises(InterruptError, match="checkpointer"):
        graph.invoke(Command(resume="v"))


def test_interrupt_outside_a_node_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="inside a running node"):
        interrupt("q")


def test_a_consumed_resume_value_never_answers_a_later_interrupt() -> None:
    calls: Counter[str] = Counter()

    def loop_back(state: S) -> str:
        return "ask" if len(state["answers"]) < 2 else END

    builder = StateGraph(S)
    builder.add_node("ask", asker(calls, "ask", "again?"))
    builder.add_node("other", asker(calls, "other", "other?"))
    builder.add_edge(START, "ask")
    builder.add_conditional_edges("ask", loop_back, ["ask", END])
    builder.add_edge("ask", "other")
    graph = builder.compile(checkpointer=MemorySaver())
    config = thread()
    graph.invoke({"a": "x"}, config)
    second = graph.invoke(Command(resume="v1"), config)
    # The next step runs ask (looping) and other: both must ask, neither sees "v1".
    assert sorted(i.value for i in second["__interrupt__"]) == ["again?", "other?"]
    assert second["answers"] == ["v1"]


async def test_async_interrupt_and_resume() -> None:
    async def ask(state: S) -> dict[str, Any]:
        return {"answers": [interrupt("async?")]}

    graph = build({"ask": ask}, [(START, "ask")])
    config = thread()
    first = await graph.ainvoke({"a": "x"}, config)
    assert [i.value for i in first["__interrupt__"]] == ["async?"]
    assert (await graph.ainvoke(Command(resume="ok"), config))["answers"] == ["ok"]


def test_resume_value_may_be_a_dict_with_one_pending() -> None:
    graph = build({"ask": asker(Counter(), "ask", "edit?")}, [(START, "ask")])
    config = thread()
    graph.invoke({"a": "x"}, config)
    out = graph.invoke(Command(resume={"approved": True, "note": "ok"}), config)
    assert out["answers"] == [{"approved": True, "note": "ok"}]


def test_pending_interrupts_show_in_get_state() -> None:
    graph = build({"ask": asker(Counter(), "ask", "q")}, [(START, "ask")])
    config = thread()
    pending = graph.invoke({"a": "x"}, config)["__interrupt__"]
    state = graph.get_state(config)
    assert state.next == ("ask",)
    assert [t.name for t in state.tasks] == ["ask"]
    assert list(state.tasks[0].interrupts) == pending
    assert list(state.interrupts) == pending


# -- breakpoints ----------------------------------------------------------------------


def _abc(**compile_options: Any) -> Any:
    return build(
        {"a": log("a"), "b": log("b"), "c": log("c")},
        [(START, "a"), ("a", "b"), ("b", "c")],
        **compile_options,
    )


def test_interrupt_before_at_compile() -> None:
    graph = _abc(interrupt_before=["b"])
    config = thread()
    assert graph.invoke({"a": "x"}, config)["log"] == ["a"]
    assert graph.get_state(config).next == ("b",)
    assert graph.invoke(None, config)["log"] == ["a", "b", "c"]
    assert graph.get_state(config).next == ()


def test_interrupt_after_at_compile() -> None:
    graph = _abc(interrupt_after=["b"])
    config = thread()
    assert graph.invoke({"a": "x"}, config)["log"] == ["a", "b"]
    assert graph.get_state(config).next == ("c",)
    assert graph.invoke(None, config)["log"] == ["a", "b", "c"]


def test_breakpoints_per_call() -> None:
    graph = _abc()
    config = thread()
    assert graph.invoke({"a": "x"}, config, interrupt_before=["c"])["log"] == ["a", "b"]
    assert graph.invoke(None, config)["log"] == ["a", "b", "c"]
    config = thread()
    assert graph.invoke({"a": "x"}, config, interrupt_after=["a"])["log"] == ["a"]
    assert graph.invoke(None, config, interrupt_after=["b"])["log"] == ["a", "b"]
    assert graph.invoke(None, config)["log"] == ["a", "b", "c"]


@pytest.mark.parametrize("option", ["interrupt_before", "interrupt_after"])
def test_a_breakpoint_on_an_unknown_node_is_refused_at_compile(option: str) -> None:
    builder = StateGraph(S)
    builder.add_node("approve", log("approve"))
    builder.add_edge(START, "approve")
    with pytest.raises(InvalidConfigError, match=f"{option} names unknown node.*'aprove'"):
        builder.compile(checkpointer=MemorySaver(), **{option: ["aprove"]})


def test_interrupt_before_star_stops_before_every_step() -> None:
    graph = _abc(interrupt_before="*")
    config = thread()
    seen = [graph.invoke({"a": "x"}, config).get("log")]
    for _ in range(3):
        seen.append(graph.invoke(None, config).get("log"))
    assert seen == [[], ["a"], ["a", "b"], ["a", "b", "c"]]


@pytest.mark.parametrize("before", [["b"], "*"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_deferred_node_paused_before_runs_when_resumed(before: Any, mode: str) -> None:
    builder = StateGraph(S)
    builder.add_node("a", log("a"))
    builder.add_node("b", log("b"), defer=True)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    graph = builder.compile(checkpointer=MemorySaver(), interrupt_before=before)
    config = thread()

    def run(value: Any) -> Any:
        return (
            graph.invoke(value, config)
            if mode == "sync"
            else asyncio.run(graph.ainvoke(value, config))
        )

    run({"a": "x"})
    if before == "*":  # it also stops before a
        assert graph.get_state(config).next == ("a",)
        run(None)
    assert graph.get_state(config).next == ("b",)
    assert run(None)["log"] == ["a", "b"]
    assert graph.get_state(config).next == ()


def test_a_sibling_that_finished_is_not_rerun_on_resume() -> None:
    calls: Counter[str] = Counter()

    def quiet(state: S) -> dict[str, Any]:
        calls["quiet"] += 1
        return {"log": ["quiet"]}

    graph = build(
        {"ask": asker(calls, "ask", "q"), "quiet": quiet, "after": log("after")},
        [(START, "ask"), (START, "quiet"), ("ask", "after")],
    )
    config = thread()
    graph.invoke({"a": "x"}, config)
    final = graph.invoke(Command(resume="v"), config)
    assert final["log"] == ["ask", "quiet", "after"]
    assert calls == Counter({"ask": 2, "quiet": 1})


def test_resume_command_with_an_update_applies_it() -> None:
    graph = build({"ask": asker(Counter(), "ask", "q")}, [(START, "ask")])
    config = thread()
    graph.invoke({"a": "x"}, config)
    out = graph.invoke(Command(resume="r", update={"a": "upd"}), config)
    assert out == {"a": "upd", "answers": ["r"], "log": ["ask"]}


def test_interrupts_inside_send_tasks_resume_by_id() -> None:
    def work(arg: str) -> dict[str, Any]:
        return {"log": [f"{arg}:{interrupt(arg)}"]}

    builder = StateGraph(S)
    builder.add_node("src", log("src"))
    builder.add_node("w", work)
    builder.add_edge(START, "src")
    builder.add_conditional_edges("src", lambda s: [Send("w", "s1"), Send("w", "s2")])
    graph = builder.compile(checkpointer=MemorySaver())
    config = thread()
    pending = graph.invoke({"a": "x"}, config)["__interrupt__"]
    assert [i.value for i in pending] == ["s1", "s2"]
    assert [t.name for t in graph.get_state(config).tasks] == ["w", "w"]
    out = graph.invoke(Command(resume={i.id: i.value.upper() for i in pending}), config)
    assert out["log"] == ["src", "s1:S1", "s2:S2"]


def test_snapshot_task_id_is_the_running_tasks_id() -> None:
    seen: list[str] = []

    def ask(state: S, config: RunnableConfig) -> dict[str, Any]:
        seen.append(config["configurable"]["task_id"])
        return {"answers": [interrupt("q")]}

    graph = build({"ask": ask}, [(START, "ask")])
    config = thread()
    graph.invoke({"a": "x"}, config)
    graph.invoke(Command(resume="r"), config)
    assert seen[0] == seen[1]  # stable across the resume
    assert graph.get_state(graph.rollback(config, to_node="ask")).tasks[0].id == seen[0]


def test_join_waiting_across_an_interrupt() -> None:
    def gated(state: S) -> dict[str, Any]:
        return {"log": ["b:" + interrupt("q")]}

    builder = StateGraph(S)
    for name in ("a1", "b1", "c"):
        builder.add_node(name, log(name))
    builder.add_node("bb", gated)
    builder.add_edge(START, "a1")
    builder.add_edge(START, "b1")
    builder.add_edge("b1", "bb")
    builder.add_edge(["a1", "bb"], "c")
    graph = builder.compile(checkpointer=MemorySaver())
    config = thread()
    graph.invoke({"a": "x"}, config)
    assert graph.invoke(Command(resume="r"), config)["log"] == ["a1", "b1", "b:r", "c"]


# -- streams around interrupts (LangGraph 1.2 shapes) ------------------------------------


def _pre_ask_post() -> Any:
    return build(
        {"pre": log("pre"), "ask": asker(Counter(), "ask", "q"), "post": log("post")},
        [(START, "pre"), ("pre", "ask"), ("ask", "post")],
    )


def test_updates_stream_around_an_interrupt_and_its_resume() -> None:
    graph = _pre_ask_post()
    config = thread()
    first = list(graph.stream({"a": "x"}, config, stream_mode="updates"))
    assert first[0] == {"pre": {"log": ["pre"]}}
    assert [i.value for i in first[1]["__interrupt__"]] == ["q"]
    assert list(graph.stream(Command(resume="r"), config, stream_mode="updates")) == [
        {"ask": {"answers": ["r"], "log": ["ask"]}},
        {"post": {"log": ["post"]}},
    ]


def test_a_resumed_step_marks_the_updates_it_replays_as_cached() -> None:
    """A sibling that finished before the interrupt is not run again; its update is
    streamed again with LangGraph's ``"__metadata__": {"cached": True}``."""
    calls: Counter[str] = Counter()

    def counted(state: S) -> dict[str, Any]:
        calls["a"] += 1
        return {"log": ["a"]}

    graph = build(
        {"a": counted, "ask": asker(Counter(), "ask", "q"), "post": log("post")},
        [(START, "a"), (START, "ask"), ("ask", "post")],
    )
    config = thread()
    first = list(graph.stream({"a": "x"}, config, stream_mode="updates"))
    assert first[0] == {"a": {"log": ["a"]}}
    assert list(graph.stream(Command(resume="r"), config, stream_mode="updates")) == [
        {"a": {"log": ["a"]}, "__metadata__": {"cached": True}},
        {"ask": {"answers": ["r"], "log": ["ask"]}},
        {"post": {"log": ["post"]}},
    ]
    assert calls["a"] == 1


def test_values_stream_ends_with_the_interrupt() -> None:
    chunks = list(_pre_ask_post().stream({"a": "x"}, thread(), stream_mode="values"))
    assert [i.value for i in chunks[-1]["__interrupt__"]] == ["q"]
    assert chunks[-1]["log"] == ["pre"]


def test_values_stream_on_resume_starts_with_the_saved_state() -> None:
    graph = _pre_ask_post()
    config = thread()
    graph.invoke({"a": "x"}, config)
    chunks = list(graph.stream(Command(resume="r"), config, stream_mode="values"))
    assert chunks[0] == {"a": "x", "answers": [], "log": ["pre"]}


def test_updates_stream_reports_a_breakpoint() -> None:
    graph = _abc(interrupt_before=["b"])
    chunks = list(graph.stream({"a": "x"}, thread(), stream_mode="updates"))
    assert chunks == [{"a": {"log": ["a"]}}, {"__interrupt__": ()}]


@pytest.mark.parametrize("options", [{"interrupt_before": ["b"]}, {"interrupt_after": ["a"]}])
async def test_both_breakpoints_stream_the_pause(options: dict[str, Any]) -> None:
    graph = _abc(**options)
    expected = [{"a": {"log": ["a"]}}, {"__interrupt__": ()}]
    assert list(graph.stream({"a": "x"}, thread(), stream_mode="updates")) == expected
    chunks = [c async for c in graph.astream({"a": "x"}, thread(), stream_mode="updates")]
    assert chunks == expected


def test_the_recursion_limit_wins_over_a_breakpoint() -> None:
    """As LangGraph: a run out of steps fails even where a breakpoint would pause it."""
    graph = _abc(interrupt_before=["c"])
    with pytest.raises(GraphRecursionError, match="still scheduled: 'c'"):
        graph.invoke({"a": "x"}, {**thread(), "recursion_limit": 2})


def _deferred(**compile_options: Any) -> Any:
    builder = StateGraph(S)
    for name in ("a", "b1", "b"):
        builder.add_node(name, log(name))
    builder.add_node("c", log("c"), defer=True)
    for a, b in [(START, "a"), (START, "b1"), ("b1", "b"), ("a", "c"), ("b", "c")]:
        builder.add_edge(a, b)
    return builder.compile(checkpointer=MemorySaver(), **compile_options)


def test_interrupt_before_a_deferred_node_stops_when_it_is_about_to_run() -> None:
    graph = _deferred(interrupt_before=["c"])
    config = thread()
    assert graph.invoke({"a": "x"}, config)["log"] == ["a", "b1", "b"]
    assert graph.get_state(config).next == ("c",)


def test_next_does_not_list_a_deferred_node_early() -> None:
    graph = _deferred(interrupt_after=["a"])
    config = thread()
    assert graph.invoke({"a": "x"}, config)["log"] == ["a", "b1"]
    assert graph.get_state(config).next == ("b",)


def test_deferred_node_runs_after_resuming_from_a_breakpoint() -> None:
    graph = _deferred(interrupt_after=["a"])
    config = thread()
    graph.invoke({"a": "x"}, config)
    assert graph.invoke(None, config)["log"] == ["a", "b1", "b", "c"]
    assert graph.get_state(config).next == ()


def test_interrupt_and_resume_with_exit_durability() -> None:
    def ask(state: S) -> dict[str, Any]:
        return {"log": ["ask:" + interrupt("q")]}

    graph = build({"x": log("x"), "ask": ask}, [(START, "x"), ("x", "ask")])
    config = thread()
    first = graph.invoke({"a": "in"}, config, durability="exit")
    assert [i.value for i in first["__interrupt__"]] == ["q"]
    assert graph.get_state(config).next == ("ask",)
    out = graph.invoke(Command(resume="R"), config, durability="exit")
    assert out == {"a": "in", "answers": [], "log": ["x", "ask:R"]}


def test_resume_after_editing_the_state_of_an_interrupted_thread() -> None:
    def ask(state: S) -> dict[str, Any]:
        return {"log": [state["a"] + ":" + interrupt("q")]}

    graph = build({"ask": ask}, [(START, "ask")])
    config = thread()
    graph.invoke({"a": "x"}, config)
    graph.update_state(config, {"a": "edited"})
    assert graph.get_state(config).next == ("ask",)
    assert graph.invoke(Command(resume="R"), config)["log"] == ["edited:R"]


def test_a_breakpoint_before_a_deferred_node_stops_when_it_is_released() -> None:
    class Log(TypedDict):
        log: Annotated[list[str], operator.add]

    def node(name: str) -> Any:
        return lambda state: {"log": [name]}

    builder = StateGraph(Log)
    for name in "abc":
        builder.add_node(name, node(name))
    builder.add_node("d", node("d"), defer=True)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    builder.add_edge("a", "d")  # d waits until b -> c is done
    builder.add_edge("b", "c")
    graph = builder.compile(checkpointer=MemorySaver(), interrupt_before=["d"])
    config = {"configurable": {"thread_id": "t"}}
    assert graph.invoke({"log": []}, config)["log"] == ["a", "b", "c"]
    assert graph.get_state(config).next == ("d",)
    assert graph.invoke(None, config)["log"] == ["a", "b", "c", "d"]


def test_interrupt_after_pauses_before_a_held_deferred_node() -> None:
    # As LangGraph 1.2: the deferred node is what runs next, so the run stops after
    # "c" (and says so once), and resuming runs "d".
    builder = StateGraph(S)
    for name in "abcd":
        builder.add_node(name, lambda s, name=name: {"log": [name]}, defer=name == "d")
    builder.add_edge(START, "a")
    builder.add_edge("a", "c")
    builder.add_edge(START, "b")
    builder.add_edge("b", "d")
    graph = builder.compile(checkpointer=MemorySaver(), interrupt_after=["c"])
    config = thread()
    chunks = list(graph.stream({"log": []}, config))
    assert chunks[-2:] == [{"c": {"log": ["c"]}}, {"__interrupt__": ()}]
    assert graph.get_state(config).next == ("d",)
    assert list(graph.stream(None, config)) == [{"d": {"log": ["d"]}}]
