"""``bulk_update_state``: supersteps of updates, each a checkpoint on the one before,
the updates of one superstep applied as parallel tasks, as in LangGraph 1.2."""

import asyncio
import operator
from types import SimpleNamespace
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


class S(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    last: str


def langgraph_api() -> SimpleNamespace:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.errors import InvalidUpdateError
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import StateUpdate

    return SimpleNamespace(
        StateGraph=StateGraph, START=START, END=END, Saver=InMemorySaver,
        StateUpdate=StateUpdate, InvalidUpdateError=InvalidUpdateError,
    )  # fmt: skip


def trellis_api() -> SimpleNamespace:
    from trellis import END, START, MemorySaver, StateGraph, StateUpdate
    from trellis.errors import InvalidUpdateError

    return SimpleNamespace(
        StateGraph=StateGraph, START=START, END=END, Saver=MemorySaver,
        StateUpdate=StateUpdate, InvalidUpdateError=InvalidUpdateError,
    )  # fmt: skip


def _graph(api: SimpleNamespace) -> Any:
    """a fans out to b and c, which d joins; d routes back to a once."""
    g = api.StateGraph(S)
    for name in "abc":
        g.add_node(name, lambda s, name=name: {"log": [name]})
    g.add_node("d", lambda s: {"log": ["d"], "last": "d"})
    g.add_edge(api.START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    g.add_edge(["b", "c"], "d")
    g.add_conditional_edges("d", lambda s: "a" if s["log"].count("d") < 2 else api.END)
    return g.compile(checkpointer=api.Saver())


def _view(snapshot: Any) -> dict[str, Any]:
    md = snapshot.metadata or {}
    return {"values": snapshot.values, "next": snapshot.next, "source": md.get("source"),
            "step": md.get("step")}  # fmt: skip


SCENARIOS: dict[str, Any] = {
    # One update per superstep, each counted as written by its node.
    "chain": lambda u: [[u({"log": ["A"]}, "a")], [u({"log": ["B"]}, "b")]],
    # b and c in one superstep: the join before d is met by the pair.
    "parallel": lambda u: [
        [u({"log": ["A"]}, "a")],
        [u({"log": ["B"]}, "b"), u({"log": ["C"]}, "c")],
    ],
    # A router reads the update of the superstep it belongs to.
    "router": lambda u: [[u({"log": ["D"], "last": "x"}, "d")], [u({"log": ["d"]}, "d")]],
    # Three-field updates (the task id is LangGraph's and is not checked here).
    "plain tuples": lambda u: [[({"log": ["A"]}, "a", None)], [({"last": "y"}, "c", None)]],
}


def observe(api: SimpleNamespace, scenario: str, is_async: bool, first_run: bool) -> list[Any]:
    app = _graph(api)
    cfg = {"configurable": {"thread_id": "t"}}
    if first_run:
        app.invoke({"log": []}, cfg)
    supersteps = SCENARIOS[scenario](api.StateUpdate)
    if is_async:
        done = asyncio.run(app.abulk_update_state(cfg, supersteps))
    else:
        done = app.bulk_update_state(cfg, supersteps)
    seen = [_view(app.get_state(done)), [_view(h) for h in app.get_state_history(cfg)]]
    seen.append(app.invoke(None, cfg))
    seen.append(_view(app.get_state(cfg)))
    return seen


@pytest.mark.parametrize("first_run", [False, True], ids=["fresh", "after-run"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_bulk_update_state_matches_langgraph(
    scenario: str, is_async: bool, first_run: bool
) -> None:
    assert observe(trellis_api(), scenario, is_async, first_run) == observe(
        langgraph_api(), scenario, is_async, first_run
    )


BAD: dict[str, Any] = {
    "no supersteps": (lambda u: [], ValueError),
    "an empty superstep": (lambda u: [[u({"log": ["A"]}, "a")], []], ValueError),
    "several updates, one without as_node": (
        lambda u: [[u({"log": ["B"]}, "b"), u({"log": ["C"]})]], "InvalidUpdateError"),
    "two writes of a last-value key": (
        lambda u: [[u({"last": "b"}, "b"), u({"last": "c"}, "c")]], "InvalidUpdateError"),
    "an unknown node": (lambda u: [[u({"log": ["x"]}, "nope")]], "InvalidUpdateError"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_supersteps_raise_as_in_langgraph(case: str) -> None:
    make, error = BAD[case]
    for api in (langgraph_api(), trellis_api()):
        app = _graph(api)
        cfg = {"configurable": {"thread_id": "t"}}
        app.invoke({"log": []}, cfg)
        expected = getattr(api, error) if isinstance(error, str) else error
        with pytest.raises(expected) as raised:
            app.bulk_update_state(cfg, make(api.StateUpdate))
        if api.StateGraph.__module__.startswith("trellis"):  # Trellis names the culprit
            named = {
                "unknown node": "'nope'",
                "one without": "update 1 has none",
                "last-value": "'last'",
            }
            for clue, text in named.items():
                if clue in case:
                    assert text in str(raised.value)


def test_an_update_as_a_met_joins_target_leaves_it_scheduled_as_in_langgraph() -> None:
    def observe(api: SimpleNamespace) -> list[Any]:
        g = api.StateGraph(S)
        for name in "spqjk":
            g.add_node(name, lambda s, name=name: {"log": [name]})
        g.add_edge(api.START, "s")
        g.add_edge("s", "p")
        g.add_edge("s", "q")
        g.add_edge(["p", "q"], "j")
        g.add_edge("j", "k")
        app = g.compile(checkpointer=api.Saver(), interrupt_before=["j"])
        cfg = {"configurable": {"thread_id": "t"}}
        app.invoke({"log": []}, cfg)
        app.update_state(cfg, {"log": ["j-by-hand"]}, as_node="j")
        return [app.get_state(cfg).next, app.invoke(None, cfg), app.invoke(None, cfg)]

    assert observe(trellis_api()) == observe(langgraph_api())
