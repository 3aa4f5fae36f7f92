"""StateGraph builder: naming, options, sequences, entry/finish points, joins, conditional edges."""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, RetryPolicy, StateGraph
from trellis.errors import GraphValidationError


class S(TypedDict, total=False):
    a: str
    n: int
    log: Annotated[list[str], operator.add]


def log(name: str) -> Any:
    def node(state: S) -> dict[str, Any]:
        return {"log": [name]}

    node.__name__ = name
    return node


def run_log(builder: StateGraph[Any, Any], inp: dict[str, Any] | None = None) -> list[str]:
    out = builder.compile().invoke(inp if inp is not None else {})
    return list(out["log"])


# -- add_node ----------------------------------------------------------------


def test_add_node_with_function_uses_its_name() -> None:
    def greet(state: S) -> dict[str, Any]:
        return {"a": "hi"}

    builder = StateGraph(S)
    builder.add_node(greet)
    builder.add_edge(START, "greet")
    graph = builder.compile()
    assert list(graph.stream({})) == [{"greet": {"a": "hi"}}]
    assert "greet" in graph.nodes


def test_add_node_returns_the_builder_for_chaining() -> None:
    builder = StateGraph(S)
    assert builder.add_node("x", log("x")) is builder
    assert builder.add_edge(START, "x") is builder
    assert builder.add_conditional_edges("x", lambda s: END) is builder


def test_add_node_lambda_without_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="name"):
        StateGraph(S).add_node(lambda s: {})


def test_add_node_name_without_function_is_rejected() -> None:
    with pytest.raises(TypeError, match="'x'"):
        StateGraph(S).add_node("x")


def test_langgraph_and_trellis_options_are_accepted() -> None:
    builder = StateGraph(S)
    builder.add_node(
        "x",
        log("x"),
        retry_policy=RetryPolicy(max_attempts=2),
        metadata={"owner": "team"},
        timeout=5.0,
        destinations=("y",),
    )
    builder.add_node("y", log("y"), defer=True, input_schema=S, max_visits=3, fallback="z")
    builder.add_node("z", log("z"), on_error="y", compensate=lambda s: None)
    builder.add_edge(START, "x")
    builder.add_edge("x", "y")
    assert run_log(builder) == ["x", "y"]


@pytest.mark.parametrize("option", ["retries", "retry_polcy", "on_failure"])
def test_unknown_option_is_a_type_error_naming_it(option: str) -> None:
    with pytest.raises(TypeError, match=option):
        StateGraph(S).add_node("x", log("x"), **{option: 1})


def test_state_graph_needs_a_schema_and_rejects_unknown_keywords() -> None:
    with pytest.raises(ValueError, match="state_schema"):
        StateGraph()
    with pytest.raises(TypeError, match="bogus"):
        StateGraph(S, bogus=1)


def test_state_schema_must_be_a_known_kind() -> None:
    class Plain:
        a: str

    with pytest.raises(TypeError, match="TypedDict"):
        StateGraph(Plain)


# -- sequences, entry and finish points ------------------------------------


def test_add_sequence_chains_functions_and_named_pairs_in_order() -> None:
    builder = StateGraph(S)
    builder.add_sequence([log("one"), ("two", log("second")), log("three")])
    builder.add_edge(START, "one")
    graph = builder.compile()
    assert graph.invoke({})["log"] == ["one", "second", "three"]
    assert [next(iter(c)) for c in graph.stream({})] == ["one", "two", "three"]


def test_add_sequence_needs_nodes() -> None:
    with pytest.raises(ValueError):
        StateGraph(S).add_sequence([])


def test_set_entry_point_and_finish_point() -> None:
    builder = StateGraph(S)
    builder.add_node("x", log("x"))
    builder.add_node("y", log("y"))
    builder.set_entry_point("x")
    builder.add_edge("x", "y")
    builder.set_finish_point("y")
    assert run_log(builder) == ["x", "y"]


def test_set_conditional_entry_point_routes_the_start() -> None:
    builder = StateGraph(S)
    builder.add_node("x", log("x"))
    builder.add_node("y", log("y"))
    builder.set_conditional_entry_point(lambda s: "y" if s.get("a") == "go-y" else "x")
    assert run_log(builder, {"a": "go-y"}) == ["y"]
    assert run_log(builder, {"a": "other"}) == ["x"]


# -- joins -------------------------------------------------------------------


def test_join_waits_for_every_source_even_across_steps() -> None:
    builder = StateGraph(S)
    for name in ("a", "b1", "b", "c"):
        builder.add_node(name, log(name))
    builder.add_edge(START, "a")
    builder.add_edge(START, "b1")
    builder.add_edge("b1", "b")
    builder.add_edge(["a", "b"], "c")
    assert run_log(builder) == ["a", "b1", "b", "c"]


def test_join_does_not_fire_when_a_source_never_runs() -> None:
    builder = StateGraph(S)
    for name in ("a", "b", "c"):
        builder.add_node(name, log(name))
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", lambda s: END, ["b", END])
    builder.add_edge(["a", "b"], "c")
    assert run_log(builder) == ["a"]


def test_join_fires_once_per_completion_of_all_sources() -> None:
    builder = StateGraph(S)
    for name in ("a", "b", "c"):
        builder.add_node(name, log(name))
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    builder.add_edge(["a", "b"], "c")
    assert run_log(builder) == ["a", "b", "c"]


def test_a_join_into_end_ends_the_run_after_its_sources() -> None:
    builder = StateGraph(S)
    for name in ("a", "b1", "b"):
        builder.add_node(name, log(name))
    builder.add_edge(START, "a")
    builder.add_edge(START, "b1")
    builder.add_edge("b1", "b")
    builder.add_edge(["a", "b"], END)
    assert run_log(builder) == ["a", "b1", "b"]


# -- conditional edges ----------------------------------------------------------


def _router_graph(path_map: Any, route: Any, **kwargs: Any) -> StateGraph[Any, Any]:
    builder = StateGraph(S)
    for name in ("src", "x", "y"):
        builder.add_node(name, log(name))
    builder.add_edge(START, "src")
    builder.add_conditional_edges("src", route, path_map, **kwargs)
    return builder


def test_conditional_edges_with_dict_path_map() -> None:
    builder = _router_graph({"left": "x", "right": "y", "stop": END}, lambda s: s["a"])
    assert run_log(builder, {"a": "left"}) == ["src", "x"]
    assert run_log(builder, {"a": "right"}) == ["src", "y"]
    assert run_log(builder, {"a": "stop"}) == ["src"]


def test_conditional_edges_with_list_path_map() -> None:
    builder = _router_graph(["x", "y", END], lambda s: s["a"])
    assert run_log(builder, {"a": "y"}) == ["src", "y"]
    assert run_log(builder, {"a": END}) == ["src"]


def test_conditional_edges_without_path_map_accept_names_lists_and_end() -> None:
    builder = _router_graph(None, lambda s: s["a"].split(","))
    assert run_log(builder, {"a": "y,x"}) == ["src", "x", "y"]
    assert run_log(builder, {"a": f"y,{END}"}) == ["src", "y"]


def test_conditional_edges_fallback_is_taken_for_unknown_results() -> None:
    builder = _router_graph({"left": "x"}, lambda s: s["a"], fallback="y")
    assert run_log(builder, {"a": "left"}) == ["src", "x"]
    assert run_log(builder, {"a": "nowhere"}) == ["src", "y"]


def test_path_map_must_be_dict_or_list() -> None:
    builder = StateGraph(S)
    builder.add_node("x", log("x"))
    with pytest.raises(TypeError, match="path_map"):
        builder.add_conditional_edges("x", lambda s: "x", "x")  # type: ignore[arg-type]


# -- names reported at compile -------------------------------------------------


@pytest.mark.parametrize("name", [START, END])
def test_reserved_names_are_reported_at_compile(name: str) -> None:
    builder = StateGraph(S)
    builder.add_node(name, log("r"))  # recorded, not raised: compile lists everything
    builder.add_node("x", log("x"))
    builder.add_edge(START, "x")
    with pytest.raises(GraphValidationError) as info:
        builder.compile()
    assert any("reserved" in p and name in p for p in info.value.problems)


def test_node_name_with_separator_is_reported() -> None:
    builder = StateGraph(S)
    builder.add_node("a:b", log("x"))
    builder.add_edge(START, "a:b")
    with pytest.raises(GraphValidationError, match="a:b"):
        builder.compile()


def test_duplicate_names_are_reported_at_compile() -> None:
    builder = StateGraph(S)
    builder.add_node("x", log("x"))
    builder.add_node("x", log("other"))  # no exception yet
    builder.add_edge(START, "x")
    with pytest.raises(GraphValidationError) as info:
        builder.compile()
    assert [p for p in info.value.problems if "'x'" in p and "twice" in p]


def test_a_compiled_graph_keeps_the_builder_as_it_was_compiled() -> None:
    # Adding to the builder afterwards changes neither what the compiled graph
    # draws nor what its twin over a saver (a subgraph under a durable parent) runs.
    from trellis import MemorySaver

    class Log(TypedDict, total=False):
        log: Annotated[list[str], operator.add]

    builder = StateGraph(Log)
    builder.add_node("a", lambda s: {"log": ["a"]})
    builder.add_edge(START, "a")
    first = builder.compile()
    builder.add_node("later", lambda s: {"log": ["b"]})
    builder.add_edge("a", "later")
    assert "later" not in first.get_graph().draw_mermaid()
    twin = first.with_checkpointer(MemorySaver())
    assert twin.invoke({"log": []}, {"configurable": {"thread_id": "t"}}) == {"log": ["a"]}
    assert builder.compile().invoke({"log": []}) == {"log": ["a", "b"]}
