"""Routing by complexity: a long query gets the detailed path, a short one the quick path.

``analyze`` sizes up the query, a router picks ``detailed_processing`` or
``quick_processing``, and both lead to ``generate``.

>>> graph.invoke({"query": "What is a checkpoint?"})["detail_level"]
'basic'
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from trellis import END, START, StateGraph

__all__ = ["COMPLEX_AT", "RoutingInput", "RoutingState", "build", "graph"]

COMPLEX_AT = 100
"""Queries longer than this many characters take the detailed path."""


class RoutingInput(TypedDict):
    query: str


class RoutingState(TypedDict, total=False):
    query: str
    complexity: Literal["high", "low"]
    needs_tools: bool
    detail_level: Literal["comprehensive", "basic"]
    response: str


def analyze(state: RoutingState) -> dict[str, Any]:
    query = state["query"]
    return {
        "complexity": "high" if len(query) > COMPLEX_AT else "low",
        "needs_tools": "code" in query.lower(),
    }


def route_by_complexity(state: RoutingState) -> Literal["detailed_processing", "quick_processing"]:
    return "detailed_processing" if state["complexity"] == "high" else "quick_processing"


def detailed_processing(state: RoutingState) -> dict[str, Any]:
    return {"detail_level": "comprehensive"}


def quick_processing(state: RoutingState) -> dict[str, Any]:
    return {"detail_level": "basic"}


def generate(state: RoutingState) -> dict[str, Any]:
    tools = " with code tools" if state.get("needs_tools") else ""
    return {"response": f"Answer at {state['detail_level']} detail{tools}."}


def build() -> StateGraph[RoutingState, None]:
    """The routing workflow, uncompiled."""
    builder: StateGraph[RoutingState, None] = StateGraph(RoutingState, input_schema=RoutingInput)
    builder.add_node("analyze", analyze)
    builder.add_node("detailed_processing", detailed_processing)
    builder.add_node("quick_processing", quick_processing)
    builder.add_node("generate", generate)
    builder.add_edge(START, "analyze")
    builder.add_conditional_edges("analyze", route_by_complexity)
    builder.add_edge("detailed_processing", "generate")
    builder.add_edge("quick_processing", "generate")
    builder.add_edge("generate", END)
    return builder


graph = build().compile()
