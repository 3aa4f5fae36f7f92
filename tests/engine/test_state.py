"""Thread state with a checkpointer: get_state, history, forks, update_state, delete,
rollback, config errors and pending writes after a failed step."""

from __future__ import annotations

import asyncio
import operator
import threading
import uuid
from collections import Counter
from datetime import datetime
from typing import Annotated, Any

import pytest
from tests.engine.conftest import two_writers_of_one_key
from typing_extensions import TypedDict

from trellis import END, START, Command, StateGraph, interrupt, once
from trellis.errors import (
    CheckpointNotFoundError,
    ConcurrentUpdateError,
    EmptyInputError,
    InvalidConfigError,
    InvalidUpdateError,
)
from trellis.persist.memory import MemorySaver


class S(TypedDict, total=False):
    a: str
    log: Annotated[list[str], operator.add]


def thread() -> dict[str, Any]:
    return {"configurable": {"thread_id": uuid.uuid4().hex}}


def at(config: dict[str, Any], checkpoint_id: str | None) -> dict[str, Any]:
    return {"configurable": {**config["configurable"], "checkpoint_id": checkpoint_id}}


def counting(calls: Counter[str], name: str) -> Any:
    def node(state: S) -> dict[str, Any]:
        calls[name] += 1
        return {"log": [name]}

    return node


def abc(calls: Counter[str] | None = None, **compile_options: Any) -> Any:
    calls = calls if calls is not None else Counter()
    builder = StateGraph(S)
    for name in ("a", "b", "c"):
        builder.add_node(name, counting(calls, name))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder.compile(checkpointer=MemorySaver(), **compile_options)


# -- get_state ----------------------------------------------------------------------


def test_update_as_an_unknown_node_names_the_nodes_there_are() -> None:
    graph, config = abc(), thread()
    graph.invoke({"a": "x"}, config)
    with pytest.raises(InvalidUpdateError, match=r"as_node='d'.*its nodes are 'a', 'b', 'c'"):
        graph.update_state(config, {"a": "y"}, as_node="d")
    assert graph.get_state(config).values["a"] == "x"


def test_a_bulk_update_as_an_unknown_node_names_its_superstep() -> None:
    graph, config = abc(), thread()
    graph.invoke({"a": "x"}, config)
    steps = [[({"a": "y"}, "a")], [({"a": "z"}, "zz")]]
    with pytest.raises(InvalidUpdateError, match=r"superstep 1: update_state\(as_node='zz'\)"):
        graph.bulk_update_state(config, steps)
    assert graph.get_state(config).values["a"] == "x"  # the first superstep is not kept


def test_get_state_after_a_finished_run() -> None:
    graph = abc()
    config = thread()
    graph.invoke({"a": "x"}, config)
    state = graph.get_state(config)
    assert state.values == {"a": "x", "log": ["a", "b", "c"]}
    assert state.next == () and state.tasks == ()
    assert state.metadata is not None
    assert state.metadata["source"] == "loop" and state.metadata["step"] == 3
    assert state.config["configurable"]["thread_id"] == config["configurable"]["thread_id"]
    assert state.config["configurable"]["checkpoint_id"]
    assert state.parent_config is not None
    assert (
        state.parent_config["configurable"]["checkpoint_id"]
        != state.config["configurable"]["checkpoint_id"]
    )
    assert datetime.fromisoformat(state.created_at or "").tzinfo is not None


def test_get_state_mid_run_shows_next_and_tasks() -> None:
    graph = abc(interrupt_before=["b"])
    config = thread()
    graph.invoke({"a": "x"}, config)
    state = graph.get_state(config)
    assert state.values == {"a": "x", "log": ["a"]}
    assert state.next == ("b",)
    assert [(t.name, t.interrupts, t.error) for t in state.tasks] == [("b", (), None)]


def test_get_state_of_an_unknown_thread_is_empty() -> None:
    state = abc().get_state(thread())
    assert state.values == {} and state.next == () and state.metadata is None


def test_get_state_of_a_given_checkpoint() -> None:
    graph = abc()
    config = thread()
    graph.invoke({"a": "x"}, config)
    history = list(graph.get_state_history(config))
    old = history[2]
    assert graph.get_state(old.config).values == old.values


# -- history ----------------------------------------------------------------------


def test_history_is_newest_first_one_checkpoint_per_step() -> None:
    graph = abc()
    config = thread()
    graph.invoke({"a": "x"}, config)
    history = list(graph.get_state_history(config))
    assert [h.metadata["step"] for h in history if h.metadata] == [3, 2, 1, 0, -1]
    assert [h.next for h in history] == [(), ("c",), ("b",), ("a",), ("__start__",)]
    assert [h.metadata["source"] for h in history if h.metadata] == [
        "loop", "loop", "loop", "loop", "input",
    ]  # fmt: skip
    # each checkpoint's parent is the next one down
    for newer, older in zip(history, history[1:], strict=False):
        assert newer.parent_config == older.config


def test_history_limit_before_and_filter() -> None:
    graph = abc()
    config = thread()
    graph.invoke({"a": "x"}, config)
    history = list(graph.get_state_history(config))
    assert list(graph.get_state_history(config, limit=2)) == history[:2]
    assert list(graph.get_state_history(config, before=history[1].config)) == history[2:]
    assert list(graph.get_state_history(config, before=history[1].config, limit=1)) == [history[2]]
    inputs = list(graph.get_state_history(config, filter={"source": "input"}))
    assert [h.metadata["step"] for h in inputs if h.metadata] == [-1]


async def test_aget_state_history_matches_get_state_history() -> None:
    graph = abc()
    config = thread()
    await graph.ainvoke({"a": "x"}, config)
    history = list(graph.get_state_history(config))

    async def listed(config: Any, **kwargs: Any) -> list[Any]:
        return [snap async for snap in graph.aget_state_history(config, **kwargs)]

    assert await listed(config) == history and len(history) > 2
    assert await listed(config, limit=2) == history[:2]
    assert await listed(config, before=history[1].config) == history[2:]
    assert await listed(history[1].config) == [history[1]]  # a config naming one lists it
    inputs = await listed(config, filter={"source": "input"})
    assert [h.metadata["step"] for h in inputs if h.metadata] == [-1]


def test_second_run_on_a_thread_continues_from_its_state() -> None:
    graph = abc()
    config = thread()
    graph.invoke({"a": "x"}, config)
    out = graph.invoke({"a": "y"}, config)
    assert out == {"a": "y", "log": ["a", "b", "c", "a", "b", "c"]}
    steps = [h.metadata["step"] for h in graph.get_state_history(config) if h.metadata]
    # As LangGraph: the second input checkpoint is step 4, its START step 5, nodes 6..8.
    assert steps[:6] == [8, 7, 6, 5, 4, 3]


# -- time travel --------------------------------------------------------------------


def test_forking_from_an_old_checkpoint_leaves_the_old_branch_intact() -> None:
    calls: Counter[str] = Counter()
    graph = abc(calls)
    config = thread()
    graph.invoke({"a": "x"}, config)
    before = list(graph.get_state_history(config))
    before_b = next(h for h in before if h.next == ("b",))
    out = graph.invoke(None, before_b.config)
    assert out == {"a": "x", "log": ["a", "b", "c"]}
    assert calls == Counter({"a": 1, "b": 2, "c": 2})
    after = list(graph.get_state_history(config))
    # every old checkpoint is still there, unchanged
    old_ids = {h.config["configurable"]["checkpoint_id"]: h.values for h in before}
    kept = {h.config["configurable"]["checkpoint_id"]: h.values for h in after}
    assert all(kept.get(cid) == values for cid, values in old_ids.items())
    # As LangGraph 1.2: a "fork" copy of the old checkpoint (one step later) starts
    # the branch, then the replayed steps b and c.
    assert len(after) == len(before) + 3
    head = graph.get_state(config)
    c_step = graph.get_state(head.parent_config or {})
    fork = graph.get_state(c_step.parent_config or {})
    assert (fork.metadata["source"], fork.metadata["step"]) == (
        "fork",
        before_b.metadata["step"] + 1,
    )
    assert (fork.values, fork.next) == (before_b.values, ("b",))
    assert fork.parent_config == before_b.config


def test_fork_with_new_values_via_update_state() -> None:
    graph = abc()
    config = thread()
    graph.invoke({"a": "x"}, config)
    before_b = next(h for h in graph.get_state_history(config) if h.next == ("b",))
    forked = graph.update_state(before_b.config, {"a": "edited"})
    assert graph.get_state(forked).next == ("b",)
    assert graph.invoke(None, forked) == {"a": "edited", "log": ["a", "b", "c"]}


# -- update_state ------------------------------------------------------------------


def test_update_state_without_as_node_keeps_what_runs_next() -> None:
    graph = abc(interrupt_before=["b"])
    config = thread()
    graph.invoke({"a": "x"}, config)
    new_config = graph.update_state(config, {"a": "edited", "log": ["manual"]})
    assert (
        new_config["configurable"]["checkpoint_id"]
        != graph.get_state(graph.get_state(config).parent_config or {}).config["configurable"][
            "checkpoint_id"
        ]
    )
    state = graph.get_state(config)
    assert state.values == {"a": "edited", "log": ["a", "manual"]}  # through the reducer
    assert state.next == ("b",)
    assert state.metadata is not None and state.metadata["source"] == "update"
    assert graph.invoke(None, config)["log"] == ["a", "manual", "b", "c"]


def test_update_state_as_node_decides_what_runs_next() -> None:
    graph = abc(interrupt_before=["b"])
    config = thread()
    graph.invoke({"a": "x"}, config)
    graph.update_state(config, {"log": ["as-b"]}, as_node="b")
    assert graph.get_state(config).next == ("c",)
    assert graph.invoke(None, config)["log"] == ["a", "as-b", "c"]


def test_update_state_as_end_and_unknown_node() -> None:
    graph = abc(interrupt_before=["b"])
    config = thread()
    graph.invoke({"a": "x"}, config)
    with pytest.raises(InvalidUpdateError, match="'ghost'"):
        graph.update_state(config, {"a": "y"}, as_node="ghost")
    graph.update_state(config, {"a": "done"}, as_node=END)
    assert graph.get_state(config).next == ()


def test_update_state_rejects_unknown_keys() -> None:
    graph = abc()
    config = thread()
    graph.invoke({"a": "x"}, config)
    with pytest.raises(InvalidUpdateError, match="'nope'"):
        graph.update_state(config, {"nope": 1})


# -- delete_thread and rollback ---------------------------------------------------------


def test_delete_thread_forgets_everything() -> None:
    graph = abc()
    config, other = thread(), thread()
    graph.invoke({"a": "x"}, config)
    graph.invoke({"a": "y"}, other)
    graph.delete_thread(config["configurable"]["thread_id"])
    assert graph.get_state(config).values == {}
    assert list(graph.get_state_history(config)) == []
    assert graph.get_state(other).values["a"] == "y"


def test_rollback_returns_the_checkpoint_before_that_node_ran() -> None:
    calls: Counter[str] = Counter()
    graph = abc(calls)
    config = thread()
    graph.invoke({"a": "x"}, config)
    target = graph.rollback(config, to_node="b")
    state = graph.get_state(target)
    assert state.next == ("b",) and state.values["log"] == ["a"]
    assert graph.invoke(None, target)["log"] == ["a", "b", "c"]
    assert calls["b"] == 2 and calls["a"] == 1
    with pytest.raises(CheckpointNotFoundError, match="ghost"):
        graph.rollback(config, to_node="ghost")


# -- config errors -----------------------------------------------------------------


def test_a_checkpointer_needs_a_thread_id() -> None:
    graph = abc()
    for call in (
        lambda: graph.invoke({"a": "x"}),
        lambda: graph.invoke({"a": "x"}, {"configurable": {}}),
        lambda: graph.get_state({"configurable": {}}),
        lambda: list(graph.stream({"a": "x"}, {"recursion_limit": 5})),
    ):
        with pytest.raises(InvalidConfigError, match="graph 'LangGraph' .*thread_id"):
            call()


def test_state_methods_without_a_checkpointer() -> None:
    builder = StateGraph(S)
    builder.add_node("a", lambda s: None)
    builder.add_edge(START, "a")
    graph = builder.compile(name="intake")
    with pytest.raises(InvalidConfigError, match="graph 'intake' has no checkpointer"):
        graph.get_state(thread())
    with pytest.raises(InvalidConfigError, match="thread 't': graph 'intake' has no checkpointer"):
        graph.delete_thread("t")


def test_unknown_checkpoint_id() -> None:
    graph = abc()
    config = thread()
    graph.invoke({"a": "x"}, config)
    bogus = at(config, "0" * 32)
    with pytest.raises(CheckpointNotFoundError):
        graph.invoke(None, bogus)
    with pytest.raises(CheckpointNotFoundError):
        graph.get_state(bogus)
    with pytest.raises(LookupError):  # also the builtin
        graph.invoke({"a": "y"}, bogus)


def test_invoke_none_on_an_unknown_thread() -> None:
    with pytest.raises(EmptyInputError):
        abc().invoke(None, thread())


def test_invoke_none_without_a_checkpointer() -> None:
    builder = StateGraph(S)
    builder.add_node("a", lambda s: None)
    builder.add_edge(START, "a")
    with pytest.raises(EmptyInputError):
        builder.compile().invoke(None)


# -- pending writes ---------------------------------------------------------------------


def test_failed_task_is_rerun_alone_and_finished_siblings_keep_their_writes() -> None:
    calls: Counter[str] = Counter()
    flaky_fails = [True]
    ok_started = threading.Event()

    def flaky(state: S) -> dict[str, Any]:
        calls["flaky"] += 1
        if flaky_fails[0]:
            # Fail only once the sibling is running: a running sibling always finishes.
            assert ok_started.wait(5)
            raise ConnectionError("down")
        return {"log": ["flaky"]}

    def ok(state: S) -> dict[str, Any]:
        ok_started.set()
        calls["ok"] += 1
        return {"log": ["ok"]}

    builder = StateGraph(S)
    builder.add_node("ok", ok)
    builder.add_node("flaky", flaky)
    builder.add_node("join", counting(calls, "join"))
    builder.add_edge(START, "ok")
    builder.add_edge(START, "flaky")
    builder.add_edge(["ok", "flaky"], "join")
    graph = builder.compile(checkpointer=MemorySaver())
    config = thread()
    with pytest.raises(ConnectionError):
        graph.invoke({"a": "x"}, config)
    state = graph.get_state(config)
    assert set(state.next) >= {"flaky"}
    errors = {t.name: t.error for t in state.tasks}
    assert errors["ok"] is None and errors["flaky"] is not None
    flaky_fails[0] = False
    out = graph.invoke(None, config)
    assert out["log"] == ["flaky", "ok", "join"]  # name order, as if nothing failed
    assert calls == Counter({"ok": 1, "flaky": 2, "join": 1})


async def test_failed_task_is_rerun_alone_async() -> None:
    calls: Counter[str] = Counter()
    flaky_fails = [True]

    ok_done = asyncio.Event()

    async def flaky(state: S) -> dict[str, Any]:
        calls["flaky"] += 1
        if flaky_fails[0]:
            await ok_done.wait()  # the sibling has finished (async siblings still running
            raise ConnectionError("down")  # at a failure are cancelled, as in LangGraph)
        return {"log": ["flaky"]}

    async def ok(state: S) -> dict[str, Any]:
        calls["ok"] += 1
        ok_done.set()
        return {"log": ["ok"]}

    builder = StateGraph(S)
    builder.add_node("ok", ok)
    builder.add_node("flaky", flaky)
    builder.add_edge(START, "ok")
    builder.add_edge(START, "flaky")
    graph = builder.compile(checkpointer=MemorySaver())
    config = thread()
    with pytest.raises(ConnectionError):
        await graph.ainvoke({"a": "x"}, config)
    flaky_fails[0] = False
    out = await graph.ainvoke(None, config)
    assert out["log"] == ["flaky", "ok"]
    assert calls == Counter({"ok": 1, "flaky": 2})


async def test_async_state_methods() -> None:
    graph = abc(interrupt_before=["b"])
    config = thread()
    await graph.ainvoke({"a": "x"}, config)
    state = await graph.aget_state(config)
    assert state.next == ("b",)
    await graph.aupdate_state(config, {"a": "async-edit"})
    assert (await graph.aget_state(config)).values["a"] == "async-edit"
    assert (await graph.ainvoke(None, config))["log"] == ["a", "b", "c"]


def _failed_step_graph() -> tuple[Any, dict[str, Any]]:
    """A parallel step where ``ok`` finishes and ``flaky`` fails (once ``ok`` is running)."""
    ok_started = threading.Event()

    def flaky(state: S) -> None:
        assert ok_started.wait(5)
        raise ConnectionError("down")

    def ok(state: S) -> dict[str, Any]:
        ok_started.set()
        return {"log": ["ok"]}

    builder = StateGraph(S)
    builder.add_node("ok", ok)
    builder.add_node("flaky", flaky)
    builder.add_edge(START, "ok")
    builder.add_edge(START, "flaky")
    graph = builder.compile(checkpointer=MemorySaver())
    config = thread()
    with pytest.raises(ConnectionError):
        graph.invoke({"a": "x"}, config)
    return graph, config


def test_next_lists_only_the_tasks_still_to_run_after_a_failure() -> None:
    graph, config = _failed_step_graph()
    state = graph.get_state(config)
    assert sorted(t.name for t in state.tasks) == ["flaky", "ok"]
    assert state.next == ("flaky",)


def test_finished_task_result_is_shown_after_a_failure() -> None:
    graph, config = _failed_step_graph()
    results = {t.name: t.result for t in graph.get_state(config).tasks}
    assert results == {"ok": {"log": ["ok"]}, "flaky": None}


def _routed_graph() -> Any:
    builder = StateGraph(S)
    for name in ("x", "y", "z"):
        builder.add_node(name, counting(Counter(), name))
    builder.add_edge(START, "x")
    builder.add_conditional_edges("x", lambda s: "z" if s.get("a") == "go-z" else "y", ["y", "z"])
    return builder.compile(checkpointer=MemorySaver(), interrupt_before=["y", "z"])


def test_update_state_as_node_runs_that_nodes_router() -> None:
    graph = _routed_graph()
    config = thread()
    graph.invoke({"a": "no"}, config)
    assert graph.get_state(config).next == ("y",)
    graph.update_state(config, {"a": "go-z"}, as_node="x")
    assert graph.get_state(config).next == ("z",)


def test_command_as_input_on_a_new_thread_updates_and_goes() -> None:
    builder = StateGraph(S)
    builder.add_node("x", counting(Counter(), "x"))
    builder.add_node("y", counting(Counter(), "y"))
    builder.add_edge(START, "x")
    builder.add_edge("x", "y")
    graph = builder.compile(checkpointer=MemorySaver())
    out = graph.invoke(Command(update={"a": "cmd"}, goto="y"), thread())
    # step 1: x (from START) and y (the goto) together; step 2: y again, after x
    assert out == {"a": "cmd", "log": ["x", "y", "y"]}


def test_command_as_input_on_a_thread_with_a_checkpoint_does_not_start_over() -> None:
    """As LangGraph: the update is applied and only the goto runs; START's edges
    (and its routers) fire for a thread's first input only."""
    runs: Counter[str] = Counter()
    builder = StateGraph(S)
    builder.add_node("x", counting(runs, "x"))
    builder.add_node("y", counting(runs, "y"))
    builder.add_conditional_edges(START, lambda s: "x", ["x"])
    builder.add_edge("x", "y")
    graph = builder.compile(checkpointer=MemorySaver())
    config = thread()
    graph.invoke({"a": "first"}, config)
    assert graph.invoke(Command(update={"a": "cmd"}, goto="y"), config) == {
        "a": "cmd",
        "log": ["x", "y", "y"],
    }
    assert graph.invoke(Command(update={"a": "only"}), config)["a"] == "only"
    assert runs == Counter({"x": 1, "y": 2})


def test_an_edit_while_a_node_waits_keeps_its_answers_and_once_results() -> None:
    charges: list[int] = []

    def pay(state: S) -> dict[str, Any]:
        receipt = once("charge", lambda: charges.append(42) or f"receipt-{len(charges)}")
        first, second = interrupt("amount?"), interrupt("address?")
        return {"log": [f"{receipt} {first} {second}"]}

    builder = StateGraph(S)
    builder.add_node("pay", pay)
    builder.add_edge(START, "pay")
    graph = builder.compile(checkpointer=MemorySaver())
    config = thread()
    graph.invoke({"a": "x"}, config)
    graph.invoke(Command(resume="amount-ok"), config)
    graph.update_state(config, {"a": "edited"})  # the node keeps waiting on "address?"
    out = graph.invoke(Command(resume="address-ok"), config)
    assert out["log"] == ["receipt-1 amount-ok address-ok"]
    assert charges == [42]


@pytest.mark.filterwarnings("ignore:node\\(s\\) not reachable")
def test_command_on_a_thread_with_tasks_to_run_continues_them() -> None:
    """As LangGraph: after a failure (or at a breakpoint, or waiting in interrupt()),
    a Command without resume applies its update and carries on with the step."""
    broken = [True]

    def flaky(state: S) -> dict[str, Any]:
        if broken[0] and state.get("a") != "fixed":
            raise ConnectionError("down")
        return {"log": ["flaky"]}

    builder = StateGraph(S)
    builder.add_node("first", counting(Counter(), "first"))
    builder.add_node("flaky", flaky)
    builder.add_node("last", counting(Counter(), "last"))
    for a, b in [(START, "first"), ("first", "flaky"), ("flaky", "last")]:
        builder.add_edge(a, b)
    graph = builder.compile(checkpointer=MemorySaver())
    config = thread()
    with pytest.raises(ConnectionError):
        graph.invoke({"a": "x"}, config)
    out = graph.invoke(Command(update={"a": "fixed"}), config)
    assert out == {"a": "fixed", "log": ["first", "flaky", "last"]}

    asking = StateGraph(S)
    asking.add_node("ask", lambda s: {"log": [f"ask:{interrupt('ok?')}"]})
    asking.add_node("side", counting(Counter(), "side"))
    asking.add_edge(START, "ask")
    waiting = asking.compile(checkpointer=MemorySaver())
    config = thread()
    waiting.invoke({"a": "x"}, config)
    paused = waiting.invoke(Command(update={"a": "y"}, goto="side"), config)
    assert paused["log"] == ["side"] and paused["__interrupt__"]  # ask still waits
    # one step: its writes merge in task order (as LangGraph's), ask before side
    assert waiting.invoke(Command(resume="R"), config)["log"] == ["ask:R", "side"]


def test_run_metadata_is_recorded_and_filterable() -> None:
    graph = abc()
    config = thread()
    graph.invoke({"a": "x"}, {**config, "metadata": {"user": "ada"}})
    graph.invoke({"a": "y"}, {**config, "metadata": {"user": "bob"}})
    by_ada = list(graph.get_state_history(config, filter={"user": "ada"}))
    assert len(by_ada) == 5 and all(h.metadata and h.metadata["user"] == "ada" for h in by_ada)
    assert len(list(graph.get_state_history(config, filter={"user": "bob"}))) == 5


def test_configurable_scalars_are_recorded_and_filterable_as_langgraph() -> None:
    graph = abc()
    config = thread()
    run = {"configurable": {**config["configurable"], "user_id": "u7", "tries": 2, "obj": []}}
    graph.invoke({"a": "x"}, {**run, "metadata": {"user_id": "from-metadata"}})
    history = list(graph.get_state_history(config))
    assert all(h.metadata and h.metadata["tries"] == 2 for h in history)
    assert {h.metadata["user_id"] for h in history if h.metadata} == {"from-metadata"}
    assert not any("thread_id" in h.metadata or "obj" in h.metadata for h in history if h.metadata)
    assert len(list(graph.get_state_history(config, filter={"tries": 2}))) == len(history)


def test_history_of_a_config_naming_a_checkpoint_lists_that_checkpoint_only() -> None:
    """As LangGraph's savers list a config with a checkpoint_id."""
    graph = abc()
    config = thread()
    graph.invoke({"a": "x"}, config)
    snaps = list(graph.get_state_history(config))
    middle = snaps[2]
    assert [h.config for h in graph.get_state_history(middle.config)] == [middle.config]
    assert list(graph.get_state_history(middle.config, filter={"source": "input"})) == []
    assert list(graph.get_state_history(middle.config, before=snaps[3].config)) == []
    assert graph.rollback(middle.config, to_node="a") == snaps[-2].config  # the whole thread
    # ... also when with_config bound the checkpoint id (bound once, not again under it).
    bound = graph.with_config(
        configurable={"checkpoint_id": middle.config["configurable"]["checkpoint_id"]}
    )
    assert bound.rollback(config, to_node="a") == snaps[-2].config


def test_new_input_on_an_old_checkpoint_forks_from_its_values() -> None:
    graph = abc()
    config = thread()
    graph.invoke({"a": "x"}, config)
    after_a = next(h for h in graph.get_state_history(config) if h.next == ("b",))
    out = graph.invoke({"a": "fork"}, after_a.config)
    assert out == {"a": "fork", "log": ["a", "a", "b", "c"]}
    assert graph.get_state(config).values == out
    assert graph.get_state(after_a.config).values == {"a": "x", "log": ["a"]}


async def test_two_runs_racing_on_one_thread_one_fails_nothing_overwritten() -> None:
    gate = asyncio.Event()

    async def slow(state: S) -> dict[str, Any]:
        await gate.wait()  # both runs are in flight before either commits
        return {"log": [state["a"]]}

    builder = StateGraph(S)
    builder.add_node("slow", slow)
    builder.add_edge(START, "slow")
    graph = builder.compile(checkpointer=MemorySaver())
    config = thread()

    async def release() -> None:
        await asyncio.sleep(0.02)
        gate.set()

    first, second, _ = await asyncio.gather(
        graph.ainvoke({"a": "1"}, config),
        graph.ainvoke({"a": "2"}, config),
        release(),
        return_exceptions=True,
    )
    outcomes = [first, second]
    errors = [o for o in outcomes if isinstance(o, ConcurrentUpdateError)]
    results = [o for o in outcomes if isinstance(o, dict)]
    assert len(errors) == 1 and len(results) == 1, outcomes
    assert graph.get_state(config).values == results[0]


def test_live_state_and_records_of_a_step_that_stopped_on_an_interrupt() -> None:
    """As LangGraph 1.2: the latest state (and the run's result) shows what the
    finished sibling wrote and lists only what is still to run; the same
    checkpoint read by id, or in the history, is the record of the step."""
    from trellis import interrupt

    class Log(TypedDict, total=False):
        log: Annotated[list[str], operator.add]

    builder = StateGraph(Log)
    builder.add_node("ok", lambda s: {"log": ["ok"]})
    builder.add_node("ask", lambda s: {"log": [f"ask:{interrupt('q')}"]})
    builder.add_edge(START, "ok")
    builder.add_edge(START, "ask")
    graph = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "live"}}
    result = graph.invoke({"log": []}, config)
    assert result["log"] == ["ok"] and [i.value for i in result["__interrupt__"]] == ["q"]
    latest = graph.get_state(config)
    assert (latest.values, latest.next) == ({"log": ["ok"]}, ("ask",))
    assert [i.value for i in latest.interrupts] == ["q"]
    record = graph.get_state(latest.config)
    assert (record.values, sorted(record.next)) == ({"log": []}, ["ask", "ok"])
    assert next(iter(graph.get_state_history(config))).next == record.next
    assert graph.invoke(Command(resume="y"), config)["log"] == ["ask:y", "ok"]


def test_time_travel_reruns_the_whole_step_and_asks_again() -> None:
    """A run from a past checkpoint re-runs that step's tasks, parallel ones too
    (not the writes recorded for them the first time), and an interrupt it meets
    waits on the new branch, so a plain resume of the thread answers it there."""
    from trellis import interrupt

    class Log(TypedDict, total=False):
        log: Annotated[list[str], operator.add]

    calls: Counter[str] = Counter()

    def node(name: str) -> Any:
        def run(state: Log) -> dict[str, Any]:
            calls[name] += 1
            answer = interrupt(f"{name}?") if name == "y" else ""
            return {"log": [name + answer]}

        return run

    builder = StateGraph(Log)
    for name in ("a", "x", "y", "z"):
        builder.add_node(name, node(name))
    builder.add_edge(START, "a")
    builder.add_edge("a", "x")
    builder.add_edge("a", "y")
    builder.add_edge(["x", "y"], "z")
    graph = builder.compile(checkpointer=MemorySaver())
    config = thread()
    graph.invoke({"log": []}, config)
    assert graph.invoke(Command(resume="1"), config)["log"] == ["a", "x", "y1", "z"]
    before_xy = next(h for h in graph.get_state_history(config) if set(h.next) == {"x", "y"})
    calls.clear()
    paused = graph.invoke(None, before_xy.config)
    assert [i.value for i in paused["__interrupt__"]] == ["y?"]  # asked again, not "1"
    assert calls == Counter({"x": 1, "y": 1})
    assert graph.get_state(config).metadata["source"] == "fork"  # the branch's head
    assert graph.invoke(Command(resume="2"), config)["log"] == ["a", "x", "y2", "z"]


def _routed(saver: Any) -> Any:
    """n0 routes to "big" when a > 5, else to "ask", which waits on interrupt()."""
    from trellis import interrupt

    class Routed(TypedDict, total=False):
        a: int
        log: Annotated[list[str], operator.add]

    builder = StateGraph(Routed)
    builder.add_node("n0", lambda s: {"log": ["n0"]})
    builder.add_node("ask", lambda s: {"log": [f"ask:{interrupt('ok?')}"]})
    builder.add_node("big", lambda s: {"log": ["big"]})
    builder.add_edge(START, "n0")
    builder.add_conditional_edges("n0", lambda s: "big" if s["a"] > 5 else "ask", ["big", "ask"])
    return builder.compile(checkpointer=saver)


def test_update_state_without_as_node_counts_as_the_last_node_as_langgraph() -> None:
    """The update is written as by n0, the node whose step made the checkpoint, so
    n0's router sees it: the run goes to "big" and the question is dropped."""
    graph = _routed(MemorySaver())
    config = thread()
    graph.invoke({"a": 1}, config)
    assert graph.get_state(config).next == ("ask",)
    graph.update_state(config, {"a": 10})
    state = graph.get_state(config)
    assert (state.next, state.interrupts) == (("big",), ())
    assert graph.invoke(None, config) == {"a": 10, "log": ["n0", "big"]}


def test_update_state_keeps_a_question_whose_node_is_routed_to_again() -> None:
    graph = _routed(MemorySaver())
    config = thread()
    graph.invoke({"a": 1}, config)
    graph.update_state(config, {"a": 2})  # n0's router still picks "ask"
    assert [i.value for i in graph.get_state(config).interrupts] == ["ok?"]
    assert graph.invoke(Command(resume="y"), config)["log"] == ["n0", "ask:y"]


def test_update_state_on_the_input_checkpoint_or_as_start_runs_the_first_node() -> None:
    graph = abc()
    config = thread()
    graph.invoke({"a": "x"}, config)
    first = list(graph.get_state_history(config))[-1]
    assert first.next == ("__start__",)
    forked = graph.update_state(first.config, {"a": "u"})
    assert graph.get_state(forked).next == ("a",)
    assert graph.invoke(None, forked)["log"] == ["a", "b", "c"]
    graph.update_state(config, {"a": "again"}, as_node=START)
    assert graph.get_state(config).next == ("a",)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_update_state_seeds_a_new_thread_as_its_input(mode: str) -> None:
    # As LangGraph: with no checkpoint yet, the update is the input; the run starts
    # from it at the next invoke(None).
    graph = abc()
    config = thread()
    if mode == "sync":
        graph.update_state(config, {"a": "seed"})
    else:
        asyncio.run(graph.aupdate_state(config, {"a": "seed"}))
    assert graph.get_state(config).next == ("a",)
    out = graph.invoke(None, config)
    assert out["a"] == "seed" and out["log"] == ["a", "b", "c"]


def test_update_state_after_a_parallel_step_changes_the_state_only() -> None:
    """No single node made the checkpoint (LangGraph calls this ambiguous and asks
    for as_node): the update leaves what runs next as it was."""

    class Log(TypedDict, total=False):
        log: Annotated[list[str], operator.add]

    builder = StateGraph(Log)
    for name in ("x", "y", "z"):
        builder.add_node(name, lambda s, name=name: {"log": [name]})
    builder.add_edge(START, "x")
    builder.add_edge(START, "y")
    builder.add_edge(["x", "y"], "z")
    graph = builder.compile(checkpointer=MemorySaver(), interrupt_before=["z"])
    config = thread()
    graph.invoke({"log": []}, config)
    graph.update_state(config, {"log": ["edited"]})
    assert graph.get_state(config).next == ("z",)
    assert graph.invoke(None, config)["log"] == ["x", "y", "edited", "z"]


def test_a_step_whose_writes_conflict_has_no_latest_state_as_langgraph() -> None:
    """Two nodes of one step wrote a key that keeps one value: the run fails, and
    the latest state (which would show those writes) raises the same error."""

    graph = two_writers_of_one_key(checkpointer=MemorySaver())
    config = thread()
    with pytest.raises(InvalidUpdateError, match="'v'"):
        graph.invoke({"v": "in"}, config)
    with pytest.raises(InvalidUpdateError, match="'v'"):
        graph.get_state(config)
    past = next(iter(graph.get_state_history(config)))  # the record still reads
    assert past.values == {"v": "in"} and sorted(past.next) == ["x", "y"]


def test_snapshots_list_a_steps_sends_before_its_nodes_as_langgraph() -> None:
    from trellis import Send, interrupt

    class Fan(TypedDict, total=False):
        log: Annotated[list[str], operator.add]

    builder = StateGraph(Fan)
    builder.add_node("fan", lambda s: {"log": ["fan"]})
    builder.add_node("w", lambda s: {"log": [f"w{s['log'][-1]}"]})
    builder.add_node("ask", lambda s: {"log": [interrupt("q")]})
    builder.add_edge(START, "fan")
    builder.add_conditional_edges("fan", lambda s: [Send("w", {"log": ["1"]}), "ask"], ["w", "ask"])
    graph = builder.compile(checkpointer=MemorySaver())
    config = thread()
    graph.invoke({"log": []}, config)
    record = graph.get_state(graph.get_state(config).config)
    assert [t.name for t in record.tasks] == ["w", "ask"] and record.next == ("w", "ask")


def test_update_state_as_a_pending_node_keeps_a_met_joins_target() -> None:
    """a and b met the join into c; updating as d (pending too) keeps c scheduled and
    adds what d leads to, as LangGraph does."""

    class Log(TypedDict, total=False):
        log: Annotated[list[str], operator.add]

    builder = StateGraph(Log)
    for name in "abcde":
        builder.add_node(name, lambda s, name=name: {"log": [name]})
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    builder.add_edge(["a", "b"], "c")
    builder.add_edge("a", "d")
    builder.add_edge("d", "e")
    graph = builder.compile(checkpointer=MemorySaver())
    config = thread()
    graph.invoke({"log": []}, config)
    past = next(h for h in graph.get_state_history(config) if set(h.next) == {"c", "d"})
    updated = graph.update_state(past.config, {"log": ["U"]}, as_node="d")
    assert sorted(graph.get_state(updated).next) == ["c", "e"]
    assert graph.invoke(None, updated)["log"] == ["a", "b", "U", "c", "e"]


def test_a_step_that_interrupts_with_conflicting_finished_writes_fails_at_once() -> None:
    graph = two_writers_of_one_key(asking=True, checkpointer=MemorySaver())
    config = thread()
    with pytest.raises(InvalidUpdateError, match="'v'"):  # as LangGraph, not on resume
        graph.invoke({"v": "in"}, config)
    record = graph.get_state(next(iter(graph.get_state_history(config))).config)
    assert [i.value for i in record.interrupts] == ["q"]  # what ran is kept all the same


def test_an_integer_thread_id_is_the_same_thread_on_every_saver(saver_factory: Any) -> None:
    """LangGraph's tutorials write {"thread_id": 1}; every saver keys it as "1"."""
    builder = StateGraph(S)
    builder.add_node("step", lambda s: {"log": ["step"]})
    builder.add_edge(START, "step")
    saver = saver_factory.make()
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": 1}}
    assert graph.invoke({"a": "x"}, config) == {"a": "x", "log": ["step"]}
    assert graph.invoke(None, config) == {"a": "x", "log": ["step"]}  # found again
    assert graph.invoke({"a": "y"}, config) == {"a": "y", "log": ["step", "step"]}
    assert graph.get_state({"configurable": {"thread_id": "1"}}).values["a"] == "y"
    assert [t.thread_id for t in saver.threads()] == ["1"]


@pytest.mark.parametrize("thread_id", ["a\x00b", "a\ud800b"], ids=["NUL", "surrogate"])
def test_a_thread_id_no_backend_can_store_is_refused_by_name(
    saver_factory: Any, thread_id: str
) -> None:
    builder = StateGraph(S)
    builder.add_node("step", lambda s: {"log": ["step"]})
    builder.add_edge(START, "step")
    saver = saver_factory.make()
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": thread_id}}
    for call in (lambda: graph.invoke({"a": "x"}, config), lambda: graph.get_state(config)):
        with pytest.raises(InvalidConfigError, match="thread_id .* NUL character or an unpaired"):
            call()
    assert list(saver.threads()) == []


def test_any_thread_id_runs_a_graph_without_a_checkpointer() -> None:
    """Nothing is stored, so nothing is refused (as LangGraph)."""
    builder = StateGraph(S)
    builder.add_node("step", lambda s: {"log": ["step"]})
    builder.add_edge(START, "step")
    config = {"configurable": {"thread_id": "a\x00b"}}
    assert builder.compile().invoke({"a": "x"}, config) == {"a": "x", "log": ["step"]}


def test_an_update_of_a_new_thread_is_step_0_as_in_langgraph() -> None:
    app = abc()
    cfg = thread()
    app.update_state(cfg, {"log": ["x"]}, as_node="a")
    app.update_state(cfg, {"log": ["y"]}, as_node="b")
    assert [h.metadata["step"] for h in app.get_state_history(cfg)] == [1, 0]
    assert app.invoke(None, cfg)["log"] == ["x", "y", "c"]


def test_bulk_update_state_saves_every_superstep_or_none(saver_factory: Any) -> None:
    builder = StateGraph(S)
    for name in ("a", "b", "c"):
        builder.add_node(name, counting(Counter(), name))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("a", "c")
    app = builder.compile(checkpointer=saver_factory.make())
    cfg = thread()
    app.invoke({"log": []}, cfg)
    before = [h.config for h in app.get_state_history(cfg)]
    bad = [
        [({"log": ["A"]}, "a", None)],
        [({"a": "from b"}, "b", None), ({"a": "from c"}, "c", None)],  # one value, two writers
    ]
    with pytest.raises(InvalidUpdateError, match="'a'"):
        app.bulk_update_state(cfg, bad)
    assert [h.config for h in app.get_state_history(cfg)] == before

    done = app.bulk_update_state(cfg, [bad[0], [({"log": ["B"]}, "b"), ({"a": "x"}, "c")]])
    history = list(app.get_state_history(cfg))
    assert history[0].config == done and len(history) == len(before) + 2
    assert history[0].values == {"log": ["a", "b", "c", "A", "B"], "a": "x"}
    assert history[1].values["log"][-1] == "A" and history[1].next == ("b", "c")
    assert [h.metadata["source"] for h in history[:2]] == ["update", "update"]


def test_an_update_that_starts_a_thread_holds_every_keys_default() -> None:
    builder = StateGraph(S)
    builder.add_node("count", lambda s: {"log": [f"count:{len(s['log'])}"]})
    builder.add_edge(START, "count")
    app = builder.compile(checkpointer=MemorySaver())
    cfg = thread()
    app.update_state(cfg, {"a": "seeded"})
    assert app.get_state(cfg).values == {"a": "seeded", "log": []}
    assert app.invoke(None, cfg) == {"a": "seeded", "log": ["count:0"]}
