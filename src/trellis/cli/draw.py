"""``trellis draw``: print a graph's structure as Mermaid or ASCII."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from trellis.cli.common import err_console, reported_errors
from trellis.cli.loader import load_graph

__all__ = ["DrawFormat", "draw_command"]


class DrawFormat(enum.StrEnum):
    mermaid = "mermaid"
    ascii = "ascii"


def draw_command(
    target: Annotated[
        str, typer.Argument(metavar="MODULE:ATTR", help="The graph to draw (as for `run`).")
    ],
    format: Annotated[
        DrawFormat, typer.Option("--format", "-f", help="Mermaid text or an ASCII picture.")
    ] = DrawFormat.mermaid,
    xray: Annotated[
        bool, typer.Option("--xray", help="Draw each subgraph's nodes inside its node.")
    ] = False,
) -> None:
    """Print the graph: Mermaid (paste into a Markdown ```mermaid block) or ASCII.

    trellis draw examples.code_analysis:graph --format ascii
    """
    with reported_errors(err_console()):
        drawable = load_graph(target).get_graph(xray=xray)
        text = drawable.draw_ascii() if format is DrawFormat.ascii else drawable.draw_mermaid()
        typer.echo(text.rstrip("\n"))
