"""``trellis trace`` and ``trellis diff``: look back at what a thread's runs did.

``trace`` reads the events stored by runs compiled with ``trace=True`` (the
``trellis run`` command always traces) and prints the timeline tree, or exports
it as JSON or as one self-contained HTML page. ``diff`` compares the state at
two checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from trellis.cli.common import (
    CliError,
    DbOption,
    checkpoint_or_none,
    err_console,
    open_saver,
    out_console,
    reported_errors,
    saver_label,
)
from trellis.cli.history import GraphOption, ThreadArgument
from trellis.observe.diff import diff_states, render_diff
from trellis.observe.events import Event, EventKind
from trellis.observe.timeline import render_html, render_json, render_tree
from trellis.persist.events import event_log_for

__all__ = ["diff_command", "trace_command"]


def trace_command(
    thread: ThreadArgument,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the events as JSON.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", dir_okay=False, help="Write an HTML timeline here.")
    ] = None,
    graph: Annotated[
        str | None,
        typer.Option("--graph", help="MODULE:ATTR of the graph, to draw it on the HTML page."),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option("--run", help="Only this run: its id, or the start of it the tree prints."),
    ] = None,
) -> None:
    """Show the timeline of THREAD's runs: step, node, ✓/✗, duration, retries, interrupts."""
    with reported_errors(err_console()), open_saver(db, must_exist=True) as saver:
        log = event_log_for(saver)
        if run is not None:
            run = _run_named(log.runs(thread), thread, run)
        rows = log.list(thread, run_id=run)
        if not rows:
            raise CliError(
                f"no run history for thread {thread!r}; runs are traced when compiled with "
                "trace=True (`trellis run` always traces)"
            )
        events = [Event.from_dict(row) for row in rows]
        if html is not None:
            mermaid = None
            if graph is not None:
                from trellis.cli.loader import load_graph

                mermaid = load_graph(graph).get_graph().draw_mermaid()
            executed = sorted({e.node for e in events if e.kind is EventKind.TASK_END and e.node})
            html.write_text(
                render_html(events, graph_mermaid=mermaid, executed=executed, title=thread),
                encoding="utf-8",
            )
            out_console().print(f"wrote {escape(str(html))}")
        elif as_json:
            print(render_json(events))
        else:
            print(render_tree(events), end="")


def _run_named(runs: list[str], thread: str, run: str) -> str:
    """The run id ``run`` stands for: itself, or the one id it begins (the tree
    prints the first 8 characters of each)."""
    if run in runs or not runs:
        return run
    begun = [r for r in runs if run and r.startswith(run)]
    if len(begun) == 1:
        return begun[0]
    if begun:
        raise CliError(f"run {run!r} of thread {thread!r} is ambiguous: {', '.join(begun)}")
    raise CliError(f"thread {thread!r} has no run {run!r}; its runs: {', '.join(runs)}")


def diff_command(
    thread: ThreadArgument,
    first: Annotated[str, typer.Argument(metavar="A", help="The older checkpoint id.")],
    second: Annotated[str, typer.Argument(metavar="B", help="The newer checkpoint id.")],
    db: DbOption = None,
    graph: GraphOption = None,
) -> None:
    """Show what changed in THREAD's state between checkpoints A and B."""
    with reported_errors(err_console()), open_saver(db, must_exist=True, graph=graph) as saver:
        if saver.get_tuple(thread) is None:
            raise CliError(f"thread {thread!r} has no checkpoints in {saver_label(saver)}")
        a = checkpoint_or_none(saver, thread, first)
        b = checkpoint_or_none(saver, thread, second)
        missing = [c for c, found in ((first, a), (second, b)) if found is None]
        if a is None or b is None:
            raise CliError(
                f"thread {thread!r} has no checkpoint {', '.join(map(repr, missing))}; "
                f"`trellis history {thread}` lists its checkpoints"
            )
        changes = diff_states(dict(a.checkpoint.values), dict(b.checkpoint.values))
        print(render_diff(changes) if changes else "no changes", end="" if changes else "\n")
