"""LangGraph's ``error_handler=``: what a node that failed for good hands over to."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal

import pytest
from typing_extensions import TypedDict

from trellis import START, Command, RetryPolicy, StateGraph
from trellis.errors import NodeError

FAST = RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=False)


class S(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    status: str


def _boom(state: S) -> dict[str, Any]:
    raise ConnectionError("api down")


def _log(name: str) -> Any:
    def node(state: S) -> dict[str, Any]:
        return {"log": [name]}

    return node


def _graph(handler: Any, *, fallback: bool = False, **options: Any) -> Any:
    builder = StateGraph(S)
    builder.add_node("boom", _boom, error_handler=handler, **options)
    if fallback:  # reached only through the handler's Command[Literal["fallback"]]
        builder.add_node("fallback", _log("fallback"))
    builder.add_node("after", _log("after"))
    builder.add_edge(START, "boom")
    builder.add_edge("boom", "after")
    return builder.compile()


def _to_fallback(state: S, error: NodeError) -> Command[Literal["fallback"]]:
    return Command(update={"status": f"{error.node}: {error.error}"}, goto="fallback")


def test_the_handler_gets_the_node_and_error_and_steers_the_run() -> None:
    out = _graph(_to_fallback, fallback=True, retry_policy=FAST).invoke({"log": []})
    assert out == {"log": ["fallback"], "status": "boom: api down"}  # "after" never ran


def _handled(state: S) -> dict[str, Any]:
    return {"status": "handled"}


def test_a_handler_returning_an_update_ends_that_branch() -> None:
    out = _graph(_handled).invoke({"log": []})
    assert out == {"log": [], "status": "handled"}


async def test_an_async_handler_under_ainvoke() -> None:
    async def handler(state: S, error: NodeError) -> dict[str, Any]:
        return {"status": f"async: {type(error.error).__name__}"}

    out = await _graph(handler).ainvoke({"log": []})
    assert out["status"] == "async: ConnectionError"


def test_an_async_handler_under_invoke_says_so() -> None:
    async def handler(state: S) -> dict[str, Any]:
        return {}

    with pytest.raises(ConnectionError) as caught:
        _graph(handler).invoke({"log": []})
    assert any("error_handler" in note for note in caught.value.__notes__)


def test_a_handler_writing_an_unknown_key_is_an_error() -> None:
    def handler(state: S) -> dict[str, Any]:
        return {"nope": 1}

    with pytest.raises(ValueError, match="'nope'"):
        _graph(handler).invoke({"log": []})


@pytest.mark.parametrize("route", ["on_error", "error_handler"])
def test_a_routed_failure_still_skips_its_edges_when_its_step_resumes(route: str) -> None:
    """A sibling's interrupt keeps the routed task's result in the step's writes; the
    resumed step must not fire the failed node's own edges."""
    from trellis import MemorySaver, interrupt

    builder = StateGraph(S)
    options = (
        {"on_error": "fallback"}
        if route == "on_error"
        else {"error_handler": _to_fallback, "destinations": ("fallback",)}
    )
    builder.add_node("boom", _boom, **options)
    builder.add_node("ask", lambda s: {"log": [f"ask:{interrupt('ok?')}"]})
    builder.add_node("fallback", _log("fallback"))
    builder.add_node("after", _log("after"))
    builder.add_edge(START, "boom")
    builder.add_edge(START, "ask")
    builder.add_edge("boom", "after")
    graph = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({}, config)
    assert graph.invoke(Command(resume="yes"), config)["log"] == ["ask:yes", "fallback"]


@pytest.mark.parametrize("is_async", [False, True])
def test_an_error_handler_may_ask_a_human_and_the_resume_answers_it(is_async: bool) -> None:
    """interrupt() in the handler pauses the run (as LangGraph); on resume the node
    runs again and, failing again, its handler gets the answer."""

    from trellis import MemorySaver, interrupt

    calls: list[str] = []

    def ask(state: S, error: NodeError) -> dict[str, Any]:
        calls.append("handler")
        return {"status": f"{error.node}: human said {interrupt('skip it?')}"}

    def boom(state: S) -> dict[str, Any]:
        calls.append("boom")
        raise ConnectionError("api down")

    builder = StateGraph(S)
    builder.add_node("boom", boom, error_handler=ask)
    builder.add_edge(START, "boom")
    graph = builder.compile(checkpointer=MemorySaver())

    def run(value: Any) -> Any:
        return _invoke(graph, value, is_async)

    (asked,) = run({})["__interrupt__"]
    assert asked.value == "skip it?"
    assert run(Command(resume="yes"))["status"] == "boom: human said yes"
    assert calls == ["boom", "handler", "boom", "handler"]


@pytest.mark.parametrize("is_async", [False, True])
def test_a_handler_that_fails_fails_the_task_and_a_resume_retries_in_full(
    is_async: bool,
) -> None:
    """The task's error is the handler's (get_state shows it), and resuming the failed
    run gives the node its whole retry budget again, as any failed run's."""

    from trellis import MemorySaver

    attempts: list[int] = []
    broken = [True]

    def boom(state: S, runtime: Any) -> dict[str, Any]:
        attempts.append(runtime.execution_info.node_attempt)
        raise ConnectionError("api down")

    def handler(state: S) -> dict[str, Any]:
        if broken[0]:
            raise RuntimeError("the handler broke too")
        return {"status": "handled"}

    policy = RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False)
    builder = StateGraph(S)
    builder.add_node("boom", boom, retry_policy=policy, error_handler=handler)
    builder.add_edge(START, "boom")
    graph = builder.compile(checkpointer=MemorySaver())

    def run(value: Any) -> Any:
        return _invoke(graph, value, is_async)

    with pytest.raises(RuntimeError, match="the handler broke too") as failed:
        run({})
    notes = getattr(failed.value, "__notes__", [])
    assert any(n.startswith("raised by the error_handler of node 'boom' at step") for n in notes)
    (task,) = graph.get_state({"configurable": {"thread_id": "t"}}).tasks
    assert task.error == {"type": "RuntimeError", "message": "the handler broke too"}
    broken[0] = False
    assert run(None)["status"] == "handled"
    assert attempts == [1, 2, 3, 1, 2, 3]


def _invoke(graph: Any, value: Any, is_async: bool) -> Any:
    """``value`` into thread t, with invoke or ainvoke."""
    import asyncio

    config = {"configurable": {"thread_id": "t"}}
    return asyncio.run(graph.ainvoke(value, config)) if is_async else graph.invoke(value, config)
