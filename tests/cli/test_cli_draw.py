"""`trellis draw`: Mermaid and ASCII pictures of a graph."""

from __future__ import annotations

import textwrap
from pathlib import Path

from typer.testing import CliRunner

from trellis.cli.app import app


def test_draw_mermaid_is_the_default() -> None:
    result = CliRunner().invoke(app, ["draw", "examples.routing:graph"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "graph TD;" in lines
    assert "\tanalyze -.-> detailed_processing;" in lines
    assert "\tanalyze -.-> quick_processing;" in lines
    assert "\tquick_processing --> generate;" in lines


def test_draw_ascii_boxes_every_node() -> None:
    result = CliRunner().invoke(app, ["draw", "examples.code_analysis:graph", "--format", "ascii"])
    assert result.exit_code == 0, result.output
    for node in ("parse", "analyze_style", "analyze_security", "analyze_performance", "aggregate"):
        assert f"| {node} |" in result.stdout
    assert "graph TD" not in result.stdout


def test_draw_rejects_an_unknown_format() -> None:
    result = CliRunner().invoke(app, ["draw", "examples.routing:graph", "--format", "svg"])
    assert result.exit_code == 2
    assert "svg" in result.output


def test_draw_a_bad_target_is_exit_1() -> None:
    result = CliRunner().invoke(app, ["draw", "examples.routing:nothing"])
    assert result.exit_code == 1
    assert "module 'examples.routing' has no attribute 'nothing'" in result.stderr


def test_draw_xray_shows_the_nodes_inside_a_subgraph(tmp_path: Path) -> None:
    module = tmp_path / "nested_graph.py"
    module.write_text(
        textwrap.dedent(
            """
            from typing import TypedDict
            from trellis import StateGraph, START

            class S(TypedDict, total=False):
                n: int

            inner = StateGraph(S)
            inner.add_node("fetch", lambda s: {})
            inner.add_node("parse", lambda s: {})
            inner.add_edge(START, "fetch")
            inner.add_edge("fetch", "parse")
            outer = StateGraph(S)
            outer.add_node("load", inner.compile())
            outer.add_edge(START, "load")
            graph = outer.compile()
            """
        )
    )
    plain = CliRunner().invoke(app, ["draw", f"{module}:graph"])
    assert plain.exit_code == 0, plain.output
    assert "\tload(load)" in plain.stdout.splitlines()
    assert "fetch" not in plain.stdout
    xray = CliRunner().invoke(app, ["draw", f"{module}:graph", "--xray"])
    assert xray.exit_code == 0, xray.output
    lines = xray.stdout.splitlines()
    assert "\tsubgraph load" in lines
    assert "\tload\\3afetch --> load\\3aparse;" in lines
