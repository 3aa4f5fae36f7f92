"""``get_graph(xray=...)``: subgraphs drawn inside their nodes, Mermaid text as LangGraph 1.2."""

from types import SimpleNamespace
from typing import Any, Literal, TypedDict

import pytest
from tests.differential.programs import compiled_chain

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


class S(TypedDict, total=False):
    n: int


def _api(lib: str) -> SimpleNamespace:
    from tests.differential.test_differential import langgraph_api, trellis_api

    return langgraph_api() if lib == "langgraph" else trellis_api()


def _node(state: S) -> dict[str, Any]:
    return {}


def nested(api: SimpleNamespace) -> Any:
    """Two levels of subgraphs, one reused under two parents."""
    leaf = compiled_chain(api, S, ("x", _node), ("y", _node))
    inner = compiled_chain(api, S, ("pre", _node), ("deep", leaf))
    return compiled_chain(api, S, ("a", _node), ("inner", inner), ("z", _node))


def fan_out(api: SimpleNamespace) -> Any:
    """A subgraph whose START has two arrows (so it stays) and whose nodes route to END."""

    def pick(state: S) -> Literal["l", "r"]:
        return "l"

    sg = api.StateGraph(S)
    sg.add_node("l", _node)
    sg.add_node("r", _node)
    sg.add_node("m", _node)
    sg.add_conditional_edges(api.START, pick)
    sg.add_edge("l", "m")
    sg.add_conditional_edges("r", lambda s: "done", {"done": api.END, "again": "m"})
    sub = sg.compile()
    g = api.StateGraph(S)
    g.add_node("first", _node)
    g.add_node("split", sub)
    g.add_edge(api.START, "first")
    g.add_edge("first", "split")
    g.add_edge("split", api.END)
    return g.compile()


def last_and_parallel(api: SimpleNamespace) -> Any:
    """Two subgraphs side by side, one a single node, both ending the run."""
    one = compiled_chain(api, S, ("solo", _node))
    two = compiled_chain(api, S, ("p", _node), ("q", _node))
    g = api.StateGraph(S)
    g.add_node("go", _node)
    g.add_node("one", one)
    g.add_node("two", two)
    g.add_edge(api.START, "go")
    g.add_edge("go", "one")
    g.add_edge("go", "two")
    return g.compile()


@pytest.mark.parametrize("build", [nested, fan_out, last_and_parallel])
@pytest.mark.parametrize("xray", [False, True, 1, 2])
def test_mermaid_matches_langgraph(build: Any, xray: int | bool) -> None:
    def draw(lib: str) -> tuple[str, list[str]]:
        graph = build(_api(lib)).get_graph(xray=xray)
        return graph.draw_mermaid(), sorted(graph.nodes)

    assert draw("trellis") == draw("langgraph")


def test_xray_names_inner_nodes_by_their_path() -> None:
    drawn = nested(_api("trellis")).get_graph(xray=True)
    assert {"inner:pre", "inner:deep:x", "inner:deep:y"} <= set(drawn.nodes)
    assert "inner" not in drawn.nodes
    assert "inner:deep" not in nested(_api("trellis")).get_graph(xray=True).nodes
    assert "inner:deep" in nested(_api("trellis")).get_graph(xray=1).nodes


async def test_aget_graph_draws_the_same() -> None:
    for lib in ("trellis", "langgraph"):
        graph = nested(_api(lib))
        drawn = await graph.aget_graph(xray=True)
        assert drawn.draw_mermaid() == graph.get_graph(xray=True).draw_mermaid()
