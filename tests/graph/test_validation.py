"""Compile-time validation: one GraphValidationError listing every problem; reachability."""

from __future__ import annotations

import operator
import warnings
from typing import Annotated, Any, Literal

import pytest
from typing_extensions import TypedDict

from trellis import END, START, Command, StateGraph
from trellis.errors import GraphValidationError


class S(TypedDict, total=False):
    a: str
    log: Annotated[list[str], operator.add]


# Nodes annotated as returning a plain dict cannot return a Command, so an
# unreachable node is certainly dead and must be an error.
def plain(state: S) -> dict[str, Any]:
    return {}


def commands(state: S):  # type: ignore[no-untyped-def]  # may return a Command anywhere
    return Command(goto="hidden")


def problems_of(builder: StateGraph[Any, Any]) -> list[str]:
    with pytest.raises(GraphValidationError) as info:
        builder.compile()
    assert isinstance(info.value, ValueError)
    for p in info.value.problems:
        assert p in str(info.value)
    return info.value.problems


def test_every_problem_is_listed_in_one_error() -> None:
    builder = StateGraph(S)
    builder.add_node("a", plain)
    builder.add_node("a", plain)  # duplicate
    builder.add_node(END, plain)  # reserved
    builder.add_edge("a", "nope")  # to unknown
    builder.add_edge("ghost", "a")  # from unknown
    builder.add_conditional_edges("a", lambda s: "x", {"x": "missing"})
    builder.add_edge(["a", "phantom"], "a")  # join from unknown
    # and no entry point
    problems = problems_of(builder)
    text = "\n".join(problems)
    for needle in ("twice", "reserved", "'nope'", "'ghost'", "'missing'", "'phantom'", "entry"):
        assert needle in text, f"{needle} not reported in:\n{text}"
    assert len(problems) >= 7


def test_unreachable_node_is_an_error() -> None:
    builder = StateGraph(S)
    builder.add_node("a", plain)
    builder.add_node("island", plain)
    builder.add_edge(START, "a")
    assert any("island" in p and "reachable" in p for p in problems_of(builder))


def test_unreachable_is_listed_with_the_other_problems() -> None:
    builder = StateGraph(S)
    builder.add_node("a", plain)
    builder.add_node("island", plain)
    builder.add_edge(START, "a")
    builder.add_edge("a", "nope")
    text = "\n".join(problems_of(builder))
    assert "'nope'" in text and "island" in text


def test_missing_entry_point() -> None:
    builder = StateGraph(S)
    builder.add_node("a", plain)
    assert any("entry" in p for p in problems_of(builder))


def test_unknown_fallback_on_error_and_bad_max_visits_are_reported() -> None:
    builder = StateGraph(S)
    builder.add_node("a", plain, max_visits=0, fallback="fb", on_error="oe")
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", lambda s: END, fallback="cfb")
    text = "\n".join(problems_of(builder))
    for needle in ("max_visits", "'fb'", "'oe'", "'cfb'"):
        assert needle in text


def test_destinations_naming_an_unknown_node() -> None:
    builder = StateGraph(S)
    builder.add_node("a", commands, destinations=("b",))
    builder.add_edge(START, "a")
    assert any("'b'" in p for p in problems_of(builder))


def test_edges_touching_start_and_end_wrongly() -> None:
    builder = StateGraph(S)
    builder.add_node("a", plain)
    builder.add_edge(START, "a")
    builder.add_edge(END, "a")
    builder.add_edge("a", START)
    text = "\n".join(problems_of(builder))
    assert "END" in text and "START" in text


# -- reachability: what counts as an edge ------------------------------------------


def test_unreachable_is_only_a_warning_when_a_command_may_go_there() -> None:
    builder = StateGraph(S)

    def hidden(state: S) -> dict[str, Any]:
        return {"a": "reached"}

    builder.add_node("a", commands)
    builder.add_node(hidden)
    builder.add_edge(START, "a")
    with pytest.warns(UserWarning, match="hidden"):
        graph = builder.compile()
    assert graph.invoke({}) == {"a": "reached", "log": []}  # the Command does reach it


def test_router_without_path_map_may_go_anywhere_no_warning() -> None:
    builder = StateGraph(S)
    builder.add_node("a", plain)
    builder.add_node("b", plain)
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", lambda s: "b")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        builder.compile()


def test_destinations_count_as_edges() -> None:
    def go(state: S) -> Command[Any]:
        return Command(goto="b")

    builder = StateGraph(S)
    builder.add_node("a", go, destinations=("b",))
    builder.add_node("b", plain)
    builder.add_edge(START, "a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        builder.compile()


def test_command_literal_return_hint_counts_as_edges() -> None:
    def go(state: S) -> Command[Literal["b", "__end__"]]:
        return Command(goto="b")

    builder = StateGraph(S)
    builder.add_node("a", go)
    builder.add_node("b", plain)
    builder.add_node("c", plain)
    builder.add_edge(START, "a")
    # b is declared; c is not, and go() is fully annotated: c is dead.
    problems = problems_of(builder)
    assert any("'c'" in p for p in problems)
    assert not any("'b'" in p for p in problems)


def test_literal_router_hint_counts_as_edges() -> None:
    def route(state: S) -> Literal["b", "__end__"]:
        return "b"

    builder = StateGraph(S)
    builder.add_node("a", plain)
    builder.add_node("b", plain)
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", route)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        builder.compile()


def test_literal_return_hints_naming_an_unknown_node_are_problems() -> None:
    # As LangGraph: a typo in a hint is caught at compile, not when it is returned.
    def route(state: S) -> Literal["b", "typo"]:
        return "b"

    def go(state: S) -> Command[Literal["b", "zzz"]]:
        return Command(goto="b")

    builder = StateGraph(S)
    builder.add_node("a", go)
    builder.add_node("b", plain)
    builder.add_edge(START, "a")
    builder.add_conditional_edges("b", route)
    problems = problems_of(builder)
    assert any("router from 'b'" in p and "'typo'" in p for p in problems), problems
    assert any("hint of node 'a'" in p and "'zzz'" in p for p in problems), problems


def test_a_node_only_a_subgraph_steers_to_is_not_an_error() -> None:
    # A subgraph's node may return Command(graph=Command.PARENT, goto=...): as a
    # node that may return a Command, a target only it reaches is only a warning.
    inner = StateGraph(S)
    inner.add_node("i", lambda s: Command(graph=Command.PARENT, goto="escalate"))
    inner.add_edge(START, "i")
    builder = StateGraph(S)
    builder.add_node("sub", inner.compile())
    builder.add_node("escalate", lambda s: {"log": ["escalated"]})
    builder.add_edge(START, "sub")
    with pytest.warns(UserWarning, match="'escalate'"):
        graph = builder.compile()
    assert graph.invoke({"log": []})["log"] == ["escalated"]


@pytest.mark.parametrize("path_map", [["b", END], {"go": "b", "stop": END}])
def test_path_maps_count_as_edges(path_map: Any) -> None:
    builder = StateGraph(S)
    builder.add_node("a", plain)
    builder.add_node("b", plain)
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", lambda s: END, path_map)
    builder.compile()


def test_fallbacks_count_as_edges() -> None:
    builder = StateGraph(S)
    builder.add_node("a", plain, max_visits=2, fallback="fb")
    builder.add_node("fb", plain)
    builder.add_node("b", plain)
    builder.add_node("cfb", plain)
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", lambda s: END, ["b", END], fallback="cfb")
    builder.compile()


def test_validate_returns_the_builder_when_fine() -> None:
    builder = StateGraph(S)
    builder.add_node("a", plain)
    builder.add_edge(START, "a")
    assert builder.validate() is builder
