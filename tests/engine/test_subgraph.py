"""A compiled graph used as a node of another graph."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, Command, RetryPolicy, StateGraph
from trellis.engine.interrupts import interrupt
from trellis.errors import InvalidConfigError
from trellis.persist.memory import MemorySaver


class Parent(TypedDict, total=False):
    q: str
    answer: str
    log: Annotated[list[str], operator.add]


class Child(TypedDict, total=False):
    q: str
    answer: str
    inner: str  # private to the child


def _child(**nodes: Any) -> Any:
    builder = StateGraph(Child)
    names = list(nodes)
    for name, fn in nodes.items():
        builder.add_node(name, fn)
    builder.add_edge(START, names[0])
    for a, b in zip(names, names[1:], strict=False):
        builder.add_edge(a, b)
    return builder.compile()


def _parent(sub: Any, *, post: bool = True, **node_options: Any) -> Any:
    builder = StateGraph(Parent)
    builder.add_node("pre", lambda s: {"log": ["pre"]})
    builder.add_node("sub", sub, **node_options)
    builder.add_node("post", lambda s: {"log": ["post"]})
    builder.add_edge(START, "pre")
    builder.add_edge("pre", "sub")
    if post:
        builder.add_edge("sub", "post")
    return builder.compile()


def test_parent_receives_the_child_output_filtered_to_its_keys() -> None:
    child = _child(
        think=lambda s: {"inner": "thought about " + s["q"]},
        say=lambda s: {"answer": s["inner"].upper()},
    )
    graph = _parent(child)
    out = graph.invoke({"q": "tea"})
    assert out == {"q": "tea", "answer": "THOUGHT ABOUT TEA", "log": ["pre", "post"]}
    updates = list(graph.stream({"q": "tea"}))
    assert updates[1] == {"sub": {"q": "tea", "answer": "THOUGHT ABOUT TEA"}}


def test_child_sees_only_its_own_keys() -> None:
    seen: list[Any] = []
    child = _child(look=lambda s: seen.append(dict(s)))
    _parent(child).invoke({"q": "x", "log": ["in"]})
    assert seen == [{"q": "x"}]


def test_command_parent_from_inside_a_subgraph_steers_the_parent() -> None:
    def escalate(state: Child) -> Command[Any]:
        return Command(graph=Command.PARENT, goto="human", update={"answer": "escalated"})

    child = _child(escalate=escalate)
    builder = StateGraph(Parent)
    builder.add_node("sub", child, destinations=("human",))
    builder.add_node("human", lambda s: {"log": ["human saw " + s["answer"]]})
    builder.add_edge(START, "sub")
    out = builder.compile().invoke({"q": "refund"})
    assert out == {"q": "refund", "answer": "escalated", "log": ["human saw escalated"]}


async def test_async_subgraph_via_ainvoke() -> None:
    async def think(state: Child) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"answer": state["q"] + "!"}

    graph = _parent(_child(think=think))
    out = await graph.ainvoke({"q": "hi"})
    assert out == {"q": "hi", "answer": "hi!", "log": ["pre", "post"]}


async def test_command_parent_from_an_async_subgraph() -> None:
    async def escalate(state: Child) -> Command[Any]:
        return Command(graph=Command.PARENT, goto="human", update={"answer": "async"})

    builder = StateGraph(Parent)
    builder.add_node("sub", _child(escalate=escalate), destinations=("human",))
    builder.add_node("human", lambda s: {"log": ["human:" + s["answer"]]})
    builder.add_edge(START, "sub")
    out = await builder.compile().ainvoke({"q": "x"})
    assert out["log"] == ["human:async"]


def test_shared_reducer_key_receives_the_childs_whole_list_as_langgraph_does() -> None:
    class Shared(TypedDict, total=False):
        log: Annotated[list[str], operator.add]

    inner = StateGraph(Shared)
    inner.add_node("s1", lambda s: {"log": ["s1"]})
    inner.add_edge(START, "s1")
    builder = StateGraph(Shared)
    builder.add_node("sub", inner.compile())
    builder.add_edge(START, "sub")
    builder.add_edge("sub", END)
    assert builder.compile().invoke({"log": ["in"]})["log"] == ["in", "in", "s1"]


def test_nested_subgraphs() -> None:
    innermost = _child(deep=lambda s: {"answer": "deep:" + s["q"]})
    middle = StateGraph(Child)
    middle.add_node("innermost", innermost)
    middle.add_edge(START, "innermost")
    out = _parent(middle.compile()).invoke({"q": "z"})
    assert out["answer"] == "deep:z"


def test_interrupt_inside_a_subgraph_uses_the_parents_checkpointer() -> None:
    def ask(state: Child) -> dict[str, Any]:
        return {"answer": interrupt("approve?")}

    builder = StateGraph(Parent)
    builder.add_node("sub", _child(ask=ask))
    builder.add_edge(START, "sub")
    graph = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "sub-interrupt"}}
    first = graph.invoke({"q": "x"}, config)
    assert [i.value for i in first["__interrupt__"]] == ["approve?"]
    assert graph.invoke(Command(resume="yes"), config)["answer"] == "yes"


def test_stream_with_subgraphs_yields_namespaced_chunks() -> None:
    child = _child(say=lambda s: {"answer": s["q"] + "!"})
    builder = StateGraph(Parent)
    builder.add_node("sub", child)
    builder.add_edge(START, "sub")
    chunks = list(builder.compile().stream({"q": "x"}, stream_mode="updates", subgraphs=True))
    assert [ns for ns, _ in chunks][1:] == [()]
    inner_ns, inner = chunks[0]
    assert len(inner_ns) == 1 and inner_ns[0].startswith("sub:")
    assert inner == {"say": {"answer": "x!"}}
    assert chunks[1][1] == {"sub": {"q": "x", "answer": "x!"}}


def test_stream_with_subgraphs_and_several_modes_names_the_mode_too() -> None:
    child = _child(say=lambda s: {"answer": s["q"] + "!"})
    builder = StateGraph(Parent)
    builder.add_node("sub", child)
    builder.add_edge(START, "sub")
    items = list(
        builder.compile().stream({"q": "x"}, stream_mode=["updates", "values"], subgraphs=True)
    )
    inner = [(mode, chunk) for ns, mode, chunk in items if ns]
    outer = [(mode, chunk) for ns, mode, chunk in items if not ns]
    assert ("updates", {"say": {"answer": "x!"}}) in inner
    assert outer[-1][0] == "values" and outer[-1][1]["answer"] == "x!"


class Logged(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def _paused_parent(saver: Any, **breakpoints: Any) -> Any:
    """pre -> sub (a -> b, with ``breakpoints``) -> post, the sub inheriting ``saver``."""
    child = StateGraph(Logged)
    child.add_node("a", lambda s: {"log": ["a"]})
    child.add_node("b", lambda s: {"log": ["b"]})
    child.add_edge(START, "a")
    child.add_edge("a", "b")
    builder = StateGraph(Logged)
    builder.add_node("pre", lambda s: {"log": ["pre"]})
    builder.add_node("sub", child.compile(**breakpoints))
    builder.add_node("post", lambda s: {"log": ["post"]})
    builder.add_edge(START, "pre")
    builder.add_edge("pre", "sub")
    builder.add_edge("sub", "post")
    return builder.compile(checkpointer=saver)


# LangGraph's result for this program: the child starts from the parent's log and
# its whole log is added to the parent's (so "pre" twice).
_FINISHED = ["pre", "pre", "a", "b", "post"]


def test_a_subgraph_breakpoint_pauses_the_parent_until_it_continues() -> None:
    graph = _paused_parent(MemorySaver(), interrupt_before=["b"])
    config = {"configurable": {"thread_id": "sub-breakpoint"}}
    first = graph.invoke({"log": []}, config)
    assert first["log"] == ["pre"]  # as LangGraph: the parent waits in "sub"
    (stop,) = first["__interrupt__"]  # unlike LangGraph, which reports none
    assert stop.value == {"breakpoint": True, "subgraph": "sub", "next": ["b"]}
    assert graph.get_state(config).next == ("sub",)
    assert graph.invoke(None, config)["log"] == _FINISHED


def test_a_subgraph_breakpoint_continues_on_a_resume_value_too() -> None:
    graph = _paused_parent(MemorySaver(), interrupt_after=["a"])
    config = {"configurable": {"thread_id": "sub-breakpoint-after"}}
    assert graph.invoke({"log": []}, config)["__interrupt__"]
    assert graph.invoke(Command(resume="go on"), config)["log"] == _FINISHED


def test_a_subgraph_breakpoint_survives_a_restart(tmp_path: Any) -> None:
    from trellis.persist.sqlite import SqliteSaver

    config = {"configurable": {"thread_id": "sub-breakpoint-restart"}}
    with SqliteSaver.from_path(tmp_path / "t.db") as saver:
        assert _paused_parent(saver, interrupt_before=["b"]).invoke({"log": []}, config)
    with SqliteSaver.from_path(tmp_path / "t.db") as saver:
        graph = _paused_parent(saver, interrupt_before=["b"])  # a new process, say
        assert graph.get_state(config).next == ("sub",)
        assert graph.invoke(None, config)["log"] == _FINISHED


def test_a_subgraph_breakpoint_pauses_async_and_streamed_runs() -> None:
    graph = _paused_parent(MemorySaver(), interrupt_before=["b"])
    config = {"configurable": {"thread_id": "sub-breakpoint-async"}}
    first = asyncio.run(graph.ainvoke({"log": []}, config))
    assert first["log"] == ["pre"] and first["__interrupt__"]
    assert asyncio.run(graph.ainvoke(None, config))["log"] == _FINISHED
    config = {"configurable": {"thread_id": "sub-breakpoint-stream"}}
    chunks = list(graph.stream({"log": []}, config, stream_mode="updates", subgraphs=True))
    assert chunks[-1][1]["__interrupt__"] and graph.get_state(config).next == ("sub",)
    list(graph.stream(None, config, stream_mode="updates", subgraphs=True))
    assert graph.get_state(config).values["log"] == _FINISHED


class Log(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def _counting_child(**compile_options: Any) -> Any:
    child = StateGraph(Log)
    child.add_node("i", lambda s: {"log": [f"i{len(s['log'])}"]})
    child.add_edge(START, "i")
    return child.compile(**compile_options)


def test_a_subgraph_compiled_with_checkpointer_true_keeps_its_state_across_runs() -> None:
    """As LangGraph: the child's own thread carries over between parent runs."""
    parent = StateGraph(Log)
    parent.add_node("sub", _counting_child(checkpointer=True))
    parent.add_edge(START, "sub")
    graph = parent.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    assert graph.invoke({"log": ["x"]}, config) == {"log": ["x", "x", "i1"]}
    second = graph.invoke({"log": ["y"]}, config)["log"]
    # the child saw its old state [x, i1] plus the parent's [x, x, i1, y]
    assert second == ["x", "x", "i1", "y", "x", "i1", "x", "x", "i1", "y", "i6"]


def test_checkpointer_true_needs_a_parent_with_a_checkpointer() -> None:
    child = _counting_child(checkpointer=True)
    parent = StateGraph(Log)
    parent.add_node("sub", child)
    parent.add_edge(START, "sub")
    with pytest.raises(InvalidConfigError, match="'sub'.*parent has none"):
        parent.compile().invoke({"log": []})
    with pytest.raises(InvalidConfigError, match="checkpointer=True"):
        child.invoke({"log": []}, {"configurable": {"thread_id": "t"}})


def _waiting_in_a_subgraph() -> tuple[Any, dict[str, Any]]:
    """A parent whose subgraph ran ``prep`` and waits in ``ask``."""
    builder = StateGraph(Parent)
    builder.add_node(
        "sub",
        _child(
            prep=lambda s: {"inner": "prepped"},
            ask=lambda s: {"answer": f"{interrupt('ok?')} after {s.get('inner')}"},
        ),
    )
    builder.add_edge(START, "sub")
    graph = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "waiting"}}
    graph.invoke({"q": "x"}, config)
    return graph, config


def test_get_state_reads_a_subgraphs_namespace() -> None:
    graph, config = _waiting_in_a_subgraph()
    (task,) = graph.get_state(config).tasks
    assert task.state["configurable"]["checkpoint_ns"].startswith("sub:")
    inside = graph.get_state(task.state)
    assert (inside.values["inner"], inside.next) == ("prepped", ("ask",))
    assert (
        inside.config["configurable"]["checkpoint_ns"]
        == task.state["configurable"]["checkpoint_ns"]
    )
    (nested,) = graph.get_state(config, subgraphs=True).tasks
    assert nested.state.values == inside.values and nested.state.next == ("ask",)
    steps = [h.next for h in graph.get_state_history(task.state)]
    assert steps[:2] == [("ask",), ("prep",)]


async def test_aget_state_reads_a_subgraphs_namespace_too() -> None:
    graph, config = _waiting_in_a_subgraph()
    (nested,) = (await graph.aget_state(config, subgraphs=True)).tasks
    assert nested.state.next == ("ask",)
    assert (await graph.aget_state(nested.state.config)).values["inner"] == "prepped"


def test_update_state_in_a_subgraphs_namespace_reaches_the_subgraph() -> None:
    graph, config = _waiting_in_a_subgraph()
    (task,) = graph.get_state(config).tasks
    graph.update_state(task.state, {"inner": "edited"})
    assert "answer" not in graph.get_state(config).values  # the parent is untouched
    assert graph.invoke(Command(resume="yes"), config)["answer"] == "yes after edited"


def test_a_namespace_naming_no_subgraph_is_a_named_error() -> None:
    graph, config = _waiting_in_a_subgraph()
    bad = {"configurable": {"thread_id": "waiting", "checkpoint_ns": "nope:123"}}
    with pytest.raises(InvalidConfigError, match="no subgraph node 'nope'"):
        graph.get_state(bad)


def test_a_persistent_subgraph_streams_the_namespace_its_state_is_under() -> None:
    child = StateGraph(Log)
    child.add_node("s1", lambda s: {"log": ["s1"]})
    child.add_node("ask", lambda s: {"log": [interrupt("ok?")]})
    child.add_edge(START, "s1")
    child.add_edge("s1", "ask")
    parent = StateGraph(Log)
    parent.add_node("sub", child.compile(checkpointer=True))
    parent.add_edge(START, "sub")
    graph = parent.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "p"}}
    chunks = list(graph.stream({"log": []}, config, stream_mode="updates", subgraphs=True))
    (namespace,) = {ns for ns, _ in chunks if ns}
    assert namespace == ("sub",)
    inside = graph.get_state({"configurable": {"thread_id": "p", "checkpoint_ns": "sub"}})
    assert (inside.values["log"], inside.next) == (["s1"], ("ask",))


@pytest.mark.parametrize("how", ["resume", "retry"])
def test_a_subgraph_that_failed_carries_on_from_its_failed_step(how: str) -> None:
    """Resumed (invoke(None)) or retried, it does not start over from its input."""
    calls: list[str] = []

    def s1(state: Log) -> Log:
        calls.append("s1")
        return {"log": ["s1"]}

    def s2(state: Log) -> Log:
        calls.append("s2")
        if calls.count("s2") == 1:
            raise ConnectionError("flaky")
        return {"log": ["s2"]}

    inner = StateGraph(Log)
    inner.add_node("s1", s1)
    inner.add_node("s2", s2)
    inner.add_edge(START, "s1")
    inner.add_edge("s1", "s2")
    outer = StateGraph(Log)
    retry = RetryPolicy(initial_interval=0.001, jitter=False) if how == "retry" else None
    outer.add_node("sub", inner.compile(), retry_policy=retry)
    outer.add_edge(START, "sub")
    graph = outer.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    if how == "resume":
        with pytest.raises(ConnectionError):
            graph.invoke({"log": []}, config)
        out = graph.invoke(None, config)
    else:
        out = graph.invoke({"log": []}, config)
    assert out == {"log": ["s1", "s2"]}
    assert calls == ["s1", "s2", "s2"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_finished_subgraph_is_not_run_again_when_its_parent_task_is(
    saver_factory: Any, mode: str
) -> None:
    # The router after the subgraph node fails once (as a crash between the
    # subgraph's last save and the parent's would): the parent task runs again,
    # and the subgraph it finished gives its output back rather than re-running.
    from trellis import once

    charges: list[str] = []

    def charge(state: Log) -> dict[str, Any]:
        once("charge", lambda: charges.append("charged"))
        return {"log": ["charge"]}

    inner = StateGraph(Log)
    inner.add_node("charge", charge)
    inner.add_edge(START, "charge")
    down = [True]

    def route(state: Log) -> str:
        if down.pop() if down else False:
            raise ConnectionError("the router's lookup is down")
        return END

    outer = StateGraph(Log)
    outer.add_node("a", lambda s: {"log": ["a"]})
    outer.add_node("sub", inner.compile())
    outer.add_edge(START, "a")
    outer.add_edge("a", "sub")
    outer.add_conditional_edges("sub", route, [END])
    graph = outer.compile(checkpointer=saver_factory.make())
    config = {"configurable": {"thread_id": "t"}}

    def run(value: Any) -> Any:
        return (
            graph.invoke(value, config)
            if mode == "sync"
            else asyncio.run(graph.ainvoke(value, config))
        )

    with pytest.raises(ConnectionError):
        run({"log": []})
    assert run(None)["log"] == ["a", "a", "charge"]  # as a run that never failed
    assert charges == ["charged"]


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream subgraphs"])
def test_the_runs_context_reaches_the_nodes_of_a_subgraph(how: str) -> None:
    from dataclasses import dataclass

    from trellis import Runtime

    @dataclass
    class Ctx:
        user: str

    def who(state: Log, runtime: Runtime[Ctx]) -> dict[str, Any]:
        return {"log": [runtime.context.user if runtime.context else "no context"]}

    inner = StateGraph(Log, context_schema=Ctx)
    inner.add_node("who", who)
    inner.add_edge(START, "who")
    outer = StateGraph(Log, context_schema=Ctx)
    outer.add_node("sub", inner.compile())
    outer.add_edge(START, "sub")
    graph = outer.compile()
    if how == "invoke":
        out = graph.invoke({"log": []}, context=Ctx("alice"))
    elif how == "ainvoke":
        out = asyncio.run(graph.ainvoke({"log": []}, context=Ctx("alice")))
    else:
        chunks = graph.stream(
            {"log": []}, context=Ctx("alice"), stream_mode="values", subgraphs=True
        )
        out = [chunk for _, chunk in chunks][-1]
    assert out == {"log": ["alice"]}


def test_get_state_subgraphs_shows_a_subgraph_not_yet_started_as_an_empty_snapshot() -> None:
    from trellis import StateSnapshot

    inner = StateGraph(Log)
    inner.add_node("c1", lambda s: {"log": ["c1"]})
    inner.add_edge(START, "c1")
    outer = StateGraph(Log)
    outer.add_node("p", lambda s: {"log": ["p"]})
    outer.add_node("sub", inner.compile())
    outer.add_edge(START, "p")
    outer.add_edge("p", "sub")
    app = outer.compile(checkpointer=MemorySaver(), interrupt_before=["sub"])
    cfg = {"configurable": {"thread_id": "t"}}
    app.invoke({"log": []}, cfg)
    (task,) = app.get_state(cfg, subgraphs=True).tasks
    assert isinstance(task.state, StateSnapshot)
    assert (task.state.values, task.state.next, task.state.created_at) == ({}, (), None)
    assert task.state.config["configurable"]["checkpoint_ns"].startswith("sub:")
    assert app.invoke(None, cfg)["log"][-1] == "c1"
