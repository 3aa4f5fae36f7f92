"""RemainingSteps and IsLastStep, as LangGraph 1.2 counts them: in a new run, after
a recursion error, on resuming an interrupt and on a fork of a past checkpoint."""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


_NAMES = ("END", "START", "StateGraph", "Command", "interrupt", "MemorySaver")
_NAMES += ("RemainingSteps", "IsLastStep", "GraphRecursionError")


def _api(lib: str) -> dict[str, Any]:
    if lib == "langgraph":
        from langgraph import errors, graph, managed, types
        from langgraph.checkpoint import memory

        modules: list[Any] = [graph, managed, types, memory, errors]
    else:
        import trellis
        import trellis.errors

        modules = [trellis, trellis.errors]
    return {n: next(getattr(m, n) for m in modules if hasattr(m, n)) for n in _NAMES}


def _state(api: dict[str, Any]) -> Any:
    fields = {
        "n": int,
        "log": Annotated[list, operator.add],
        "remaining_steps": api["RemainingSteps"],
        "is_last_step": api["IsLastStep"],
    }
    return TypedDict("State", fields, total=False)  # type: ignore[operator]


def _seen(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "n": state["n"] + 1,
        "log": [[state["n"], state["remaining_steps"], state["is_last_step"]]],
    }


def _loop(api: dict[str, Any], until: int) -> Any:
    b = api["StateGraph"](_state(api))
    b.add_node("a", _seen)
    b.add_edge(api["START"], "a")
    # The router reads the managed value too (as the node's step sees it).
    b.add_conditional_edges(
        "a", lambda s: api["END"] if s["n"] >= until or s["remaining_steps"] < 0 else "a"
    )
    return b.compile(checkpointer=api["MemorySaver"]())


def _logs(lib: str) -> list[Any]:
    api = _api(lib)
    out: list[Any] = []

    def attempt(graph: Any, value: Any, config: Any) -> None:
        try:
            graph.invoke(value, config)
            out.append("done")
        except api["GraphRecursionError"]:
            out.append("recursion")
        out.append([list(e) for e in graph.get_state(config).values.get("log", [])])

    looping = _loop(api, until=100)
    config = {"configurable": {"thread_id": "spin"}, "recursion_limit": 4}
    attempt(looping, {"n": 0}, config)
    attempt(looping, None, config)  # resumed after the error: it counts afresh

    finite = _loop(api, until=6)
    config = {"configurable": {"thread_id": "fork"}, "recursion_limit": 10}
    attempt(finite, {"n": 0}, config)
    past = next(s for s in finite.get_state_history(config) if s.values.get("n") == 2)
    for limit in (2, 3, 4):
        attempt(finite, None, {**past.config, "recursion_limit": limit})

    def ask(state: dict[str, Any]) -> dict[str, Any]:
        api["interrupt"]("go on?")
        return {"log": [["ask", state["remaining_steps"], state["is_last_step"]]]}

    b = api["StateGraph"](_state(api))
    b.add_node("a", _seen)
    b.add_node("ask", ask)
    b.add_edge(api["START"], "a")
    b.add_edge("a", "ask")
    b.add_edge("ask", "a")
    asking = b.compile(checkpointer=api["MemorySaver"]())
    config = {"configurable": {"thread_id": "ask"}, "recursion_limit": 6}
    attempt(asking, {"n": 0}, config)
    attempt(asking, api["Command"](resume="yes"), config)
    return out


def test_managed_values_count_steps_as_langgraph_does() -> None:
    assert _logs("trellis") == _logs("langgraph")
