"""get_graph(): Mermaid text in LangGraph's exact format, and the ASCII picture."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal

from typing_extensions import TypedDict

from trellis import END, START, Command, StateGraph


class S(TypedDict, total=False):
    n: int
    log: Annotated[list[str], operator.add]


HEADER = "---\nconfig:\n  flowchart:\n    curve: linear\n---\ngraph TD;\n"
FOOTER = (
    "\tclassDef default fill:#f2f0ff,line-height:1.2\n"
    "\tclassDef first fill-opacity:0\n"
    "\tclassDef last fill:#bfb6fc\n"
)


def route(state: S) -> Literal["x", "__end__"]:
    return "x"


def _literal_router_graph() -> Any:
    builder = StateGraph(S)
    builder.add_node("s", lambda s: {})
    builder.add_node("x", lambda s: {})
    builder.add_edge(START, "s")
    builder.add_conditional_edges("s", route)
    builder.add_edge("x", END)
    return builder.compile()


def test_mermaid_matches_langgraph_for_a_literal_router() -> None:
    expected = (
        HEADER + "\t__start__([<p>__start__</p>]):::first\n"
        "\ts(s)\n"
        "\tx(x)\n"
        "\t__end__([<p>__end__</p>]):::last\n"
        "\t__start__ --> s;\n"
        "\ts -.-> __end__;\n"
        "\ts -.-> x;\n"
        "\tx --> __end__;\n" + FOOTER
    )
    assert _literal_router_graph().get_graph().draw_mermaid() == expected


def test_mermaid_path_map_labels_and_self_loop_last() -> None:
    builder = StateGraph(S)
    builder.add_node("inc", lambda s: {})
    builder.add_node("done", lambda s: {})
    builder.add_edge(START, "inc")
    builder.add_conditional_edges("inc", lambda s: "stop", {"more": "inc", "stop": "done"})
    builder.add_edge("done", END)
    expected = (
        HEADER + "\t__start__([<p>__start__</p>]):::first\n"
        "\tinc(inc)\n"
        "\tdone(done)\n"
        "\t__end__([<p>__end__</p>]):::last\n"
        "\t__start__ --> inc;\n"
        "\tinc -. &nbsp;stop&nbsp; .-> done;\n"
        "\tdone --> __end__;\n"
        "\tinc -. &nbsp;more&nbsp; .-> inc;\n" + FOOTER
    )
    assert builder.compile().get_graph().draw_mermaid() == expected


def test_mermaid_plain_chain() -> None:
    builder = StateGraph(S)
    builder.add_sequence([("a", lambda s: {}), ("b", lambda s: {})])
    builder.add_edge(START, "a")
    builder.add_edge("b", END)
    expected = (
        HEADER + "\t__start__([<p>__start__</p>]):::first\n"
        "\ta(a)\n"
        "\tb(b)\n"
        "\t__end__([<p>__end__</p>]):::last\n"
        "\t__start__ --> a;\n"
        "\ta --> b;\n"
        "\tb --> __end__;\n" + FOOTER
    )
    assert builder.compile().get_graph().draw_mermaid() == expected


def test_command_literal_hint_is_drawn_as_dotted_edges() -> None:
    def go(state: S) -> Command[Literal["b", "__end__"]]:
        return Command(goto="b")

    builder = StateGraph(S)
    builder.add_node("a", go)
    builder.add_node("b", lambda s: {})
    builder.add_edge(START, "a")
    text = builder.compile().get_graph().draw_mermaid()
    assert "\ta -.-> b;\n" in text
    assert "\ta -.-> __end__;\n" in text


def test_mermaid_ids_spell_other_characters_as_langgraph_does() -> None:
    builder = StateGraph(S)
    builder.add_node("fetch data", lambda s: {})
    builder.add_node("x.y", lambda s: {})
    builder.add_edge(START, "fetch data")
    builder.add_edge("fetch data", "x.y")
    text = builder.compile().get_graph().draw_mermaid()
    assert "\tfetch\\20data(fetch data)\n" in text
    assert "\t__start__ --> fetch\\20data;\n\tfetch\\20data --> x\\2ey;\n" in text


def test_mermaid_highlights_executed_nodes() -> None:
    text = _literal_router_graph().get_graph().draw_mermaid(highlight=frozenset({"x"}))
    assert "\tx(x):::executed\n" in text
    assert "\ts(s)\n" in text
    assert "classDef executed" in text


def test_ascii_has_a_box_for_every_node_in_layer_order() -> None:
    builder = StateGraph(S)
    for name in ("fetch", "style", "security", "aggregate"):
        builder.add_node(name, lambda s: {})
    builder.add_edge(START, "fetch")
    builder.add_edge("fetch", "style")
    builder.add_edge("fetch", "security")
    builder.add_edge(["style", "security"], "aggregate")
    builder.add_edge("aggregate", END)
    text = builder.compile().get_graph().draw_ascii()
    for name in (START, "fetch", "style", "security", "aggregate", END):
        assert f"| {name} |" in text
    lines = text.splitlines()
    row = {name: next(i for i, ln in enumerate(lines) if f"| {name} |" in ln) for name in
           (START, "fetch", "style", "security", "aggregate", END)}  # fmt: skip
    assert row[START] < row["fetch"] < row["style"] == row["security"] < row["aggregate"]
    assert row["aggregate"] < row[END]
    assert "fetch --> style" in text


def test_ascii_shows_conditional_labels() -> None:
    builder = StateGraph(S)
    builder.add_node("inc", lambda s: {})
    builder.add_node("done", lambda s: {})
    builder.add_edge(START, "inc")
    builder.add_conditional_edges("inc", lambda s: "stop", {"more": "inc", "stop": "done"})
    text = builder.compile().get_graph().draw_ascii()
    assert "inc -.-> done [stop]" in text
