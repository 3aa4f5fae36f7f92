"""``with_config``: a bound config under each call's own, as LangGraph 1.2 merges them."""

from types import SimpleNamespace
from typing import Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


class S(TypedDict, total=False):
    n: int
    seen: list[Any]


def langgraph_api() -> SimpleNamespace:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.config import get_config
    from langgraph.graph import END, START, StateGraph

    return SimpleNamespace(
        StateGraph=StateGraph, START=START, END=END, get_config=get_config, Saver=InMemorySaver
    )


def trellis_api() -> SimpleNamespace:
    from trellis import END, START, MemorySaver, StateGraph, get_config

    return SimpleNamespace(
        StateGraph=StateGraph, START=START, END=END, get_config=get_config, Saver=MemorySaver
    )


def build(api: SimpleNamespace) -> Any:
    """A loop of ``inc`` up to n=5; each step notes what config the node was given."""

    def inc(state: S) -> dict[str, Any]:
        config = api.get_config()
        seen = [config["configurable"].get("user"), list(config.get("tags") or [])]
        return {"n": state.get("n", 0) + 1, "seen": [*seen, config.get("recursion_limit")]}

    g = api.StateGraph(S)
    g.add_node("inc", inc)
    g.add_edge(api.START, "inc")
    g.add_conditional_edges("inc", lambda s: "inc" if s["n"] < 5 else api.END, ["inc", api.END])
    return g


def observe(api: SimpleNamespace) -> list[Any]:
    graph = build(api).compile()
    bound = graph.with_config(recursion_limit=3, configurable={"user": "ann"}, tags=["z", "x"])
    calls = [
        lambda: bound.invoke({"n": 0}),  # the bound limit stops the loop
        lambda: bound.invoke(
            {"n": 0}, {"recursion_limit": 10, "tags": ["y", "z"], "configurable": {"user": "bob"}}
        ),
        lambda: bound.with_config({"recursion_limit": 10}).invoke(
            {"n": 3}, {"configurable": {"other": 1}}
        ),
        lambda: list(bound.stream({"n": 3}, {"recursion_limit": 10}, stream_mode="values")),
        lambda: graph.invoke({"n": 3}),  # the graph it came from is unchanged
        lambda: (
            build(api)
            .compile(checkpointer=api.Saver())
            .with_config(configurable={"thread_id": "t"})
            .invoke({"n": 4})
        ),  # a bound thread id
    ]
    seen: list[Any] = []
    for call in calls:
        try:
            seen.append(call())
        except Exception as exc:
            seen.append(("raised", type(exc).__name__))
    return seen


def test_with_config_runs_as_in_langgraph() -> None:
    reference = observe(langgraph_api())
    assert reference[0] == ("raised", "GraphRecursionError")
    assert observe(trellis_api()) == reference


def test_a_bound_thread_reaches_the_state_apis() -> None:
    """Trellis also reads a bound thread id in get_state and its kin (LangGraph 1.2
    raises KeyError there)."""
    api = trellis_api()
    graph = build(api).compile(checkpointer=api.Saver())
    bound = graph.with_config(configurable={"thread_id": "t"})
    bound.invoke({"n": 4})
    assert bound.get_state({}).values["n"] == 5
    assert [s.values.get("n") for s in bound.get_state_history({})] == [5, 4, None]
    bound.update_state({}, {"n": 9})
    assert graph.get_state({"configurable": {"thread_id": "t"}}).values["n"] == 9
