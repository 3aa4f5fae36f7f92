"""``trellis history / state / threads / prune``: read and trim a checkpoint database.

These need only the saver, not the graph: what a thread holds can be read on
a machine that does not have the graph's code.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from trellis.cli.common import (
    CliError,
    DbOption,
    checkpoint_or_none,
    err_console,
    open_saver,
    out_console,
    print_json,
    reported_errors,
    saver_label,
)
from trellis.engine.durable import DONE, ERROR, GOTO, INTERRUPT
from trellis.engine.task import scheduled_paths
from trellis.graph.reducers import shown
from trellis.persist.base import CheckpointTuple
from trellis.persist.events import event_log_for

__all__ = ["history_command", "prune_command", "state_command", "threads_command"]

ThreadArgument = Annotated[str, typer.Argument(metavar="THREAD", help="The thread id.")]
GraphOption = Annotated[
    str | None,
    typer.Option(
        "--graph",
        metavar="MODULE:ATTR",
        help="The graph that wrote the thread, so states holding its classes can be read.",
    ),
]


def history_command(
    thread: ThreadArgument,
    db: DbOption = None,
    graph: GraphOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Newest N only.")
    ] = None,
) -> None:
    """List a thread's checkpoints, newest first."""
    with reported_errors(err_console()), open_saver(db, must_exist=True, graph=graph) as saver:
        saved = list(saver.list(thread, limit=limit))
        if not saved:
            raise CliError(f"thread {thread!r} has no checkpoints in {saver_label(saver)}")
        table = Table(title=f"thread {escape(thread)}", title_justify="left")
        for column in ("checkpoint id", "step", "source", "next", "created"):
            table.add_column(column, no_wrap=column != "next")
        head = saved[0].checkpoint.id  # newest first: the thread's head
        for item in saved:
            cp = item.checkpoint
            finished = _finished(item) if cp.id == head else {}
            asked = " (interrupted)" if _interrupts(item, finished) else ""
            table.add_row(
                cp.id,
                str(cp.step),
                escape(str(item.metadata.get("source", ""))),
                escape(", ".join(_next(item, finished)) + asked),
                _created(cp.created_at),
            )
        out_console().print(table)


def state_command(
    thread: ThreadArgument,
    checkpoint: Annotated[
        str | None,
        typer.Option("--checkpoint", "-c", help="A checkpoint id (default: the latest)."),
    ] = None,
    db: DbOption = None,
    graph: GraphOption = None,
) -> None:
    """Print a thread's state as JSON: values, what runs next, pending interrupts.

    The values are those saved at the checkpoint; "finished" holds the writes of
    tasks that finished in a step that has not committed yet (a sibling asked a
    question or failed), which apply with it and do not run again."""
    with reported_errors(err_console()), open_saver(db, must_exist=True, graph=graph) as saver:
        item = checkpoint_or_none(saver, thread, checkpoint)
        head = item if checkpoint is None else saver.get_tuple(thread)
        if head is None:
            raise CliError(f"thread {thread!r} has no checkpoints in {saver_label(saver)}")
        if item is None:
            raise CliError(
                f"thread {thread!r} has no checkpoint {checkpoint!r}; "
                f"`trellis history {thread}` lists its checkpoints"
            )
        cp = item.checkpoint
        finished = _finished(item) if cp.id == head.checkpoint.id else {}
        errors = [
            {"node": w.task_name, **_as_dict(w.value)}
            for w in item.pending_writes
            if w.channel == ERROR
        ]
        document = {
            "thread_id": thread,
            "checkpoint_id": cp.id,
            "parent_id": cp.parent_id,
            "step": cp.step,
            "source": item.metadata.get("source"),
            "created_at": _created(cp.created_at),
            "next": _next(item, finished),
            "values": dict(cp.values),
            "finished": list(finished.values()),
            "interrupts": _interrupts(item, finished),
            "errors": errors,
        }
        print_json(out_console(), document)


def threads_command(
    db: DbOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Newest N only.")
    ] = None,
) -> None:
    """List the threads in a database, most recently updated first."""
    with reported_errors(err_console()), open_saver(db, must_exist=True) as saver:
        table = Table()
        for column in ("thread", "checkpoints", "updated", "head"):
            table.add_column(column, no_wrap=True)
        for info in saver.threads(limit=limit):
            table.add_row(
                escape(info.thread_id),
                str(info.checkpoints),
                _created(info.updated_at),
                info.head_id,
            )
        out_console().print(table)


def prune_command(
    db: DbOption = None,
    ttl: Annotated[
        float | None,
        typer.Option("--ttl", min=0, help="Remove checkpoints older than this many seconds."),
    ] = None,
    keep_last: Annotated[
        int | None, typer.Option("--keep-last", min=1, help="Keep each thread's newest N.")
    ] = None,
) -> None:
    """Apply retention: --keep-last keeps each thread's newest N checkpoints (heads,
    their parents and pending interrupts always stay); --ttl also removes whole
    threads last written before then, unless they wait on a person (an interrupt
    or a breakpoint), and the run history (``trellis trace``) of runs that ended
    before."""
    with reported_errors(err_console()):
        if ttl is None and keep_last is None:
            raise CliError("give --ttl SECONDS and/or --keep-last N")
        with open_saver(db, must_exist=True) as saver:
            log = event_log_for(saver)
            # Counted before and after: a thread the prune removes whole takes its
            # runs' history with it, beside the old runs the log prunes itself. (A
            # log of the caller's own without run_count reports what it pruned.)
            count = getattr(log, "run_count", None)
            before = count() if count is not None and ttl is not None else 0
            removed = saver.prune(ttl=ttl, keep_last=keep_last)
            report = f"removed {removed} checkpoint(s)"
            if ttl is not None:
                runs = log.prune(time.time() - ttl)
                if count is not None:
                    runs = max(0, before - count())  # runs may end meanwhile
                report += f" and the history of {runs} run(s)"
        typer.echo(report)


def _next(item: CheckpointTuple, finished: dict[str, dict[str, Any]]) -> list[str]:
    """What runs next from this checkpoint, as ``StateSnapshot.next`` lists it:
    ``Send``s first, then nodes; not the tasks that already ``finished`` there."""
    pending = item.checkpoint.pending or {}
    scheduled = [name for name, _ in scheduled_paths(pending, pending.get("nodes", ()))]
    for done in finished.values():  # one scheduled task per finished one
        if done["node"] in scheduled:
            scheduled.remove(done["node"])
    return scheduled


def _finished(item: CheckpointTuple) -> dict[str, dict[str, Any]]:
    """By task id, the tasks that finished in the step after this checkpoint, the
    thread's head, which did not commit (a sibling failed or asked a question):
    their writes, kept to be applied with the step (``graph.get_state`` shows them
    applied). Past a checkpoint that is not the head, its step did commit: ask
    only of the head."""
    by_task: dict[str, list[Any]] = {}
    for write in item.pending_writes:
        by_task.setdefault(write.task_id, []).append(write)
    finished = {}
    for task_id, writes in by_task.items():
        if any(w.channel == DONE for w in writes):
            ordered = sorted(writes, key=lambda w: w.idx)
            update = {
                w.channel: w.value for w in ordered if w.idx >= 0 and w.channel not in (GOTO, DONE)
            }
            finished[task_id] = {"node": writes[0].task_name, "writes": shown(update)}
    return finished


def _interrupts(item: CheckpointTuple, finished: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The interrupts raised in the step after this checkpoint, but those of tasks
    that were answered and ``finished``."""
    found = []
    for write in item.pending_writes:
        if write.channel == INTERRUPT and write.task_id not in finished:
            for i in write.value:
                found.append({"node": write.task_name, "id": i.id, "value": i.value})
    return found


def _as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {"message": str(value)}


def _created(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
