"""``trellis run``: run a graph with a live line per node, then print its final state.

A graph compiled without a checkpointer is recompiled here with a SQLite one
(``--db``, default ``.trellis/trellis.db``), so every run is a thread that can
be resumed, inspected (``trellis state``/``history``) and continued::

    trellis run examples.support:graph --thread c42 --input '{"message": "refund please"}'
    trellis run examples.support:graph --thread c42 --resume '"approved"'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys
import uuid
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.markup import escape

from trellis.cli.common import (
    CliError,
    DbOption,
    err_console,
    open_saver,
    out_console,
    parse_json,
    print_json,
    reported_errors,
    shown_db,
)
from trellis.cli.loader import load_graph
from trellis.cli.progress import NodeTracker, View, open_view
from trellis.engine.compiled import CompiledStateGraph
from trellis.jsonable import to_jsonable
from trellis.types import Command, Interrupt, RunnableConfig

__all__ = ["run_command"]

_MODES = ["debug", "values", "updates"]  # updates: the only mode that reports interrupts


@dataclass(slots=True)
class _Request:
    """What to send the graph: an input, a resume value, or nothing (continue)."""

    input: Any
    label: str  # how the run is described when it starts


@dataclass(slots=True)
class _Outcome:
    values: dict[str, Any] | None
    interrupts: list[Interrupt]


def run_command(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:ATTR",
            help="A compiled graph, a StateGraph, or a function of no arguments returning one.",
        ),
    ],
    input_json: Annotated[
        str | None,
        typer.Option("--input", "-i", help="The graph input as JSON ('-' reads stdin)."),
    ] = None,
    resume_json: Annotated[
        str | None,
        typer.Option("--resume", help="Answer pending interrupt(s): Command(resume=JSON)."),
    ] = None,
    thread: Annotated[
        str | None,
        typer.Option("--thread", "-t", help="Thread id; without --input, continues the thread."),
    ] = None,
    db: DbOption = None,
    no_db: Annotated[
        bool, typer.Option("--no-db", help="Run without a checkpointer (nothing is saved).")
    ] = False,
    recursion_limit: Annotated[
        int | None, typer.Option("--recursion-limit", min=1, help="Most super-steps to run.")
    ] = None,
    show_traceback: Annotated[
        bool, typer.Option("--traceback", help="Show the traceback of an error.")
    ] = False,
) -> None:
    """Run a graph, showing each node as it runs, then print the final state as JSON."""
    err, out = err_console(), out_console()
    notes: list[str] = []
    with reported_errors(err, traceback=show_traceback, notes=notes):
        if db is not None and no_db:
            raise CliError("--db and --no-db cannot go together")
        request = _request(input_json, resume_json, thread)
        graph, saver = _with_checkpointer(load_graph(target), db, no_db, err)
        try:
            durable = graph.checkpointer is not None
            if not durable and (thread is not None or resume_json is not None):
                raise CliError("--thread and --resume need a checkpointer; drop --no-db")
            thread_id = thread or (uuid.uuid4().hex[:12] if durable else None)
            config: RunnableConfig = {}
            if thread_id is not None:
                config["configurable"] = {"thread_id": thread_id}
            if recursion_limit is not None:
                config["recursion_limit"] = recursion_limit
            where = f" on thread {thread_id}" if thread_id else " (nothing saved)"
            err.print(f"[bold]{request.label}[/] {escape(target)}{escape(where)}")
            retry = _command(["trellis", "run", target, "--thread", str(thread_id)], db)
            outcome = _execute(graph, request.input, config, err, notes, retry)
            print_json(out, outcome.values or {})
            if thread_id is not None:
                _report_pause(err, graph, config, outcome, thread_id, retry, db)
        finally:
            if saver is not None:
                saver.close()


def _request(input_json: str | None, resume_json: str | None, thread: str | None) -> _Request:
    if input_json is not None and resume_json is not None:
        raise CliError("give --input (start a run) or --resume (answer an interrupt), not both")
    if resume_json is not None:
        answer = parse_json(resume_json, "--resume")
        if answer is None:
            raise CliError(
                "--resume needs a value other than null (it is what interrupt() returns)"
            )
        return _Request(Command(resume=answer), "resuming")
    if input_json is not None:
        text = sys.stdin.read() if input_json == "-" else input_json
        return _Request(parse_json(text, "--input"), "running")
    if thread is None:
        raise CliError(
            "nothing to run: give --input JSON to start a run, or --thread to continue one"
        )
    return _Request(None, "continuing")


def _with_checkpointer(
    graph: CompiledStateGraph, db: str | None, no_db: bool, err: Console
) -> tuple[CompiledStateGraph, Any]:
    """The graph to run, with the --db checkpointer unless it has one or --no-db."""
    if graph.checkpointer is not None:
        if db is not None:
            err.print("[yellow]note:[/] the graph has its own checkpointer; --db is ignored")
        return graph, None
    if no_db:
        return graph, None
    saver = open_saver(db, must_exist=False)
    try:
        # trace=True keeps a run history for `trellis trace` (unless the graph says otherwise)
        durable = graph.with_checkpointer(saver, trace=True)
    except BaseException:
        saver.close()
        raise
    return durable, saver


def _execute(
    graph: CompiledStateGraph,
    value: Any,
    config: RunnableConfig,
    err: Console,
    notes: list[str],
    retry: str,
) -> _Outcome:
    tracker = NodeTracker()
    outcome = _Outcome(None, [])
    with open_view(err, tracker, graph.builder.nodes) as view:
        try:
            for mode, chunk in _stream(graph, value, config):
                if mode == "debug":
                    line = tracker.feed(chunk)
                    if line is not None:
                        view.changed(line)
                elif mode == "values":
                    outcome.values = chunk
                elif mode == "updates" and "__interrupt__" in chunk:
                    # One chunk per interrupting task: a parallel step may bring several.
                    seen = {i.id for i in outcome.interrupts}
                    outcome.interrupts += [i for i in chunk["__interrupt__"] if i.id not in seen]
        except BaseException:
            _settle_failure(graph, config, tracker, view)
            if graph.checkpointer is not None and tracker.lines:
                notes.append(f"the thread keeps what finished; to retry the rest: {retry}")
            raise
        if outcome.interrupts:
            _settle_interrupt(graph, config, tracker, view)
        for line in tracker.settle("stopped"):  # nothing should be left; never leave a spinner
            view.changed(line)
    if graph.checkpointer is not None and outcome.values is None:
        outcome.values = graph.get_state(config).values  # a resumed run that wrote nothing
    return outcome


def _stream(graph: CompiledStateGraph, value: Any, config: RunnableConfig) -> Iterator[Any]:
    """``graph.stream`` or, for a graph with async nodes, ``astream`` driven on an
    event loop of its own, chunk by chunk (the live view updates in between)."""
    if not graph.needs_async:
        yield from graph.stream(value, config, stream_mode=_MODES)
        return
    chunks = cast(AsyncGenerator[Any, None], graph.astream(value, config, stream_mode=_MODES))
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(chunks))
            except StopAsyncIteration:
                return
    finally:
        # Ctrl-C can land while a step is awaited: cancel it, then close the stream
        # (which a step still running would refuse).
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        with contextlib.suppress(RuntimeError):
            loop.run_until_complete(chunks.aclose())
        loop.close()


def _settle_failure(
    graph: CompiledStateGraph, config: RunnableConfig, tracker: NodeTracker, view: View
) -> None:
    """Mark the failed task ✗; its still-running siblings are stopped.

    The engine raises the node's own exception, which does not say which task
    of a parallel step it came from; the checkpoint's pending writes do.
    """
    running = tracker.running()
    failed: set[str] = set()
    if graph.checkpointer is not None and running:
        try:
            failed = {t.id for t in graph.get_state(config).tasks if t.error is not None}
        except Exception:  # the report must not hide the run's own error
            failed = set()
    if not failed and len(running) == 1:
        failed = {running[0].id}
    changed = tracker.settle("failed", failed or None) + tracker.settle("stopped")
    for line in changed:
        view.changed(line)


def _settle_interrupt(
    graph: CompiledStateGraph, config: RunnableConfig, tracker: NodeTracker, view: View
) -> None:
    asking = {t.id for t in graph.get_state(config).tasks if t.interrupts}
    for line in tracker.settle("interrupted", asking) + tracker.settle("waiting"):
        view.changed(line)


def _command(words: list[str], db: str | None) -> str:
    """A shell command line, with ``--db`` when one was given."""
    if db is not None:
        words = [*words, "--db", shown_db(db)]
    return shlex.join(words)


def _report_pause(
    err: Console,
    graph: CompiledStateGraph,
    config: RunnableConfig,
    outcome: _Outcome,
    thread_id: str,
    again: str,
    db: str | None,
) -> None:
    """Say why the run stopped early, if it did, and the command that goes on
    (``again``: the command that continues the thread)."""
    snapshot = graph.get_state(config)
    # A checkpointer keeping nothing outside this process (``database`` None: a
    # MemorySaver or an in-memory SQLite the graph brought) leaves nothing that a
    # later command could resume or inspect. (A saver of another kind may not say.)
    saver = graph.checkpointer
    gone = getattr(saver, "database", False) is None
    if gone and (outcome.interrupts or snapshot.next):
        notes = (
            "[yellow]note:[/] the graph's own checkpointer keeps nothing after this command "
            "exits, so the thread cannot be resumed or inspected from the command line; "
            "compile the graph without a checkpointer and `trellis run` saves it to --db"
        )
        err.print(f"\n[bold yellow]⏸ paused[/] on thread {escape(thread_id)}\n{notes}")
        return
    if outcome.interrupts:
        owner = {i.id: t.name for t in snapshot.tasks for i in t.interrupts}
        n = len(outcome.interrupts)
        err.print(
            f"\n[bold yellow]⏸ paused:[/] {n} interrupt(s) waiting on thread {escape(thread_id)}"
        )
        for item in outcome.interrupts:
            node = owner.get(item.id, "?")
            value = escape(_compact(item.value))
            err.print(f"  [bold]{escape(node)}[/]  id [cyan]{item.id}[/]\n    {value}")
        if n == 1:
            answer = "'<JSON answer>'"
        else:
            answer = "'{" + ", ".join(f'"{i.id}": <JSON>' for i in outcome.interrupts) + "}'"
        err.print("resume with:")
        err.print(f"  {escape(again)} --resume {escape(answer)}", soft_wrap=True)
    elif snapshot.next:
        names = ", ".join(snapshot.next)
        err.print(f"\n[bold yellow]⏸ paused[/] before {escape(names)}; continue with:")
        err.print(f"  {escape(again)}", soft_wrap=True)
    inspect = _command(["trellis", "state", thread_id], db)
    err.print(
        f"[dim]thread {escape(thread_id)}; inspect it with: {escape(inspect)}[/]", soft_wrap=True
    )


def _compact(value: Any) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False)
