"""``get_subgraphs``: the nodes that are compiled graphs, by namespace, as LangGraph 1.2."""

import asyncio
from types import SimpleNamespace
from typing import Any, TypedDict

import pytest
from tests.differential.programs import compiled_chain

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


class S(TypedDict, total=False):
    n: int


def _api(lib: str) -> SimpleNamespace:
    if lib == "langgraph":
        from langgraph.graph import START, StateGraph
    else:
        from trellis import START, StateGraph  # type: ignore[assignment]
    return SimpleNamespace(StateGraph=StateGraph, START=START)


def _nested(api: SimpleNamespace) -> Any:
    """outer: a, inner (whose node deep is itself a graph); plain: no subgraphs."""

    def chain(*nodes: tuple[str, Any]) -> Any:
        return compiled_chain(api, S, *nodes)

    leaf = chain(("x", lambda s: {"n": 1}))
    inner = chain(("pre", lambda s: {"n": 2}), ("deep", leaf))
    return chain(("a", lambda s: {"n": 3}), ("inner", inner), ("other", leaf))


def _names(found: Any) -> list[tuple[str, Any]]:
    return [(ns, sorted(g.get_graph().nodes)) for ns, g in found]


QUERIES = [
    {},
    {"recurse": True},
    {"namespace": "inner"},
    {"namespace": "inner|deep"},
    {"namespace": "inner|deep", "recurse": True},
    {"namespace": "a"},
    {"namespace": "in"},
    {"namespace": "nope", "recurse": True},
]


@pytest.mark.parametrize("query", QUERIES, ids=str)
def test_get_subgraphs_matches_langgraph(query: dict[str, Any]) -> None:
    seen = {}
    for lib in ("langgraph", "trellis"):
        graph = _nested(_api(lib))

        async def collect(graph: Any = graph) -> list[Any]:
            return [found async for found in graph.aget_subgraphs(**query)]

        seen[lib] = (_names(graph.get_subgraphs(**query)), _names(asyncio.run(collect())))
    assert seen["trellis"] == seen["langgraph"]
    assert seen["trellis"][0] == seen["trellis"][1]
