"""Within one task, the order of its chunks across stream modes, as in LangGraph 1.2."""

from typing import Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


class S(TypedDict):
    x: int


def _kinds(engine: str, modes: list[str]) -> list[tuple[str, str]]:
    if engine == "langgraph":
        from langgraph.graph import START, StateGraph
    else:
        from trellis import START, StateGraph

    g = StateGraph(S)
    g.add_node("a", lambda s: {"x": s["x"] + 1})
    g.add_node("b", lambda s: {"x": s["x"] + 1})
    g.add_edge(START, "a")
    g.add_edge("a", "b")

    def kind(chunk: Any) -> str:
        payload = chunk.get("payload", chunk) if isinstance(chunk, dict) else chunk
        if "result" in payload:
            return "result"
        return "start" if "input" in payload else "update" if "type" not in chunk else "other"

    return [(mode, kind(c)) for mode, c in g.compile().stream({"x": 0}, stream_mode=modes)]


@pytest.mark.parametrize("modes", [["updates", "tasks"], ["updates", "debug"]], ids=str)
def test_a_tasks_update_comes_before_its_result(modes: list[str]) -> None:
    reference = _kinds("langgraph", modes)
    assert ("updates", "update") in reference
    assert _kinds("trellis", modes) == reference
