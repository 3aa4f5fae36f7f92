"""``trellis approvals list|show|approve|reject|edit|sweep|metrics``: the review queue from a shell.

>>> trellis approvals list --db runs.db --risk high
>>> trellis approvals approve 3f2a... --db runs.db --notes "ticket checked"
>>> trellis approvals sweep --db postgresql://app@db/prod --graph app.flows:graph

``--db`` is a SQLite file or a PostgreSQL URL. Deciding without ``--graph``
only stores the decision: the run continues at its thread's next
``invoke(None, config)``. With ``--graph MODULE:ATTR`` the run resumes here.
"""

from __future__ import annotations

import datetime as dt
import enum
import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from trellis.cli.common import (
    DEFAULT_DB,
    CliError,
    DbOption,
    err_console,
    open_saver,
    out_console,
    parse_json,
    print_json,
    reported_errors,
    require_trellis,
)
from trellis.hitl.queue import ReviewQueue
from trellis.hitl.records import ApprovalRequest
from trellis.persist.base import Database

__all__ = ["approvals_app"]

approvals_app = typer.Typer(
    name="approvals",
    help="List and decide approval requests; resolve overdue ones.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

GraphOption = Annotated[
    str | None,
    typer.Option("--graph", help="MODULE:ATTR of the graph, to resume runs as they are decided."),
]
IdArgument = Annotated[str, typer.Argument(metavar="ID", help="The request id.")]
ReviewerOption = Annotated[
    str | None,
    typer.Option("--reviewer", help="Who decides \\[default: $TRELLIS_REVIEWER or your login]."),
]
NotesOption = Annotated[str | None, typer.Option("--notes", help="Why (kept in the audit trail).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class Risk(enum.StrEnum):
    """``--risk``'s choices, the queue's ``RISKS``: typer refuses a typo naming the option."""

    low = "low"
    medium = "medium"
    high = "high"


@contextmanager
def _queue(db: str | None, graph: str | None = None) -> Iterator[ReviewQueue]:
    """The queue over ``db``; with ``graph``, one that resumes runs through it."""
    target = db or str(DEFAULT_DB)
    if graph is not None:
        from trellis.cli.loader import load_graph

        app = load_graph(graph)
        if app.checkpointer is not None:  # its requests live with it, as its runs do
            if db is not None:
                note = "[yellow]note:[/] the graph has its own checkpointer; --db is ignored"
                err_console().print(note)
            yield ReviewQueue(app.checkpointer, graph=app)
            return
        saver = open_saver(target, must_exist=True)  # checks the file and its tables
        try:
            yield ReviewQueue(saver, graph=app.with_checkpointer(saver, trace=True))
        finally:
            saver.close()
        return
    _check_queue_db(target)
    queue = ReviewQueue.from_url(target)
    try:
        yield queue
    finally:
        queue.close()


def _check_queue_db(target: str) -> None:
    """Asked before a store opens its pool: a mistyped ?schema= or --db is refused
    rather than given Trellis's tables, and an unreachable server fails at once
    rather than after the pool's wait."""
    where = Database.from_url(target)
    if where.kind == "sqlite" and not Path(where.target).exists():
        raise CliError(f"no database at {target!r}; give --db (a SQLite file or a postgresql URL)")
    require_trellis(where, "tables", "trellis_approval_requests", "trellis_checkpoints")


def _reviewer(given: str | None) -> str:
    if given:
        return given
    env = os.environ.get("TRELLIS_REVIEWER")
    if env:
        return env
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers): say so in the audit trail
        return "unknown"


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _span(seconds: float) -> str:
    sign, s = ("-" if seconds < 0 else ""), abs(int(seconds))
    if s >= 86400:
        return f"{sign}{s // 86400}d{s % 86400 // 3600}h"
    if s >= 3600:
        return f"{sign}{s // 3600}h{s % 3600 // 60}m"
    if s >= 60:
        return f"{sign}{s // 60}m{s % 60}s"
    return f"{sign}{s}s"


@approvals_app.command("list")
def list_command(
    db: DbOption = None,
    risk: Annotated[list[Risk] | None, typer.Option("--risk", help="The request's risk.")] = None,
    node: Annotated[list[str] | None, typer.Option("--node", help="Gated node name.")] = None,
    older_than: Annotated[
        float | None,
        typer.Option("--older-than", min=0, help="Waiting at least this many seconds."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most N.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Pending requests across all threads, soonest deadline first."""
    with reported_errors(err_console()), _queue(db) as queue:
        risks = [r.value for r in risk] if risk else None
        found = queue.pending(risk=risks, node=node, older_than=older_than, limit=limit + 1)
        more, found = len(found) > limit, found[:limit]
        if as_json:
            print_json(out_console(), [r.as_dict() for r in found])
            return
        if not found:
            err_console().print("no pending approval requests")
            return
        now = queue.clock()
        table = Table(title_justify="left")
        for column in ("id", "node", "risk", "conf.", "thread", "waiting", "due in", "summary"):
            table.add_column(column, no_wrap=column not in ("summary", "thread"))
        for r in found:
            table.add_row(
                r.id, escape(r.node), r.risk,
                "-" if r.confidence is None else f"{r.confidence:.2f}",
                escape(r.thread_id), _span(now - r.created_at),
                "never" if r.deadline is None else _span(r.deadline - now), escape(r.summary),
            )  # fmt: skip
        out_console().print(table)
        if more:
            err_console().print(f"more requests wait than shown; raise --limit (now {limit})")


@approvals_app.command("show")
def show_command(
    request_id: IdArgument,
    db: DbOption = None,
    as_json: JsonOption = False,
    graph: Annotated[
        str | None,
        typer.Option("--graph", help="MODULE:ATTR of the graph, to read edits of its types."),
    ] = None,
) -> None:
    """One request: what it asks, its context, and its decision (if any)."""
    with reported_errors(err_console()), _queue(db, graph) as queue:
        request = queue.get(request_id)
        if as_json:
            print_json(out_console(), request.as_dict())
            return
        _print_request(request)


def _print_request(r: ApprovalRequest) -> None:
    out = out_console()
    lines = [
        ("id", r.id), ("thread", r.thread_id), ("node", r.node), ("status", r.status),
        ("risk", r.risk), ("confidence", "-" if r.confidence is None else f"{r.confidence:g}"),
        ("summary", r.summary), ("created", _when(r.created_at)), ("deadline", _when(r.deadline)),
        ("on timeout", r.on_timeout),
    ]  # fmt: skip
    d = r.decision
    if d is not None:
        lines += [
            ("decided", _when(d.decided_at)), ("reviewer", d.reviewer or "-"),
            ("notes", d.notes or "-"),
        ]  # fmt: skip
        if d.resolution:
            lines.append(("resolution", d.resolution))
    for label, value in lines:
        out.print(f"[bold]{label:>11}[/] {escape(str(value))}")
    out.print("[bold]    context[/]")
    print_json(out, r.context)
    if d is not None and d.update is not None:
        out.print("[bold]       edit[/]")
        print_json(out, d.update)


def _done(request: ApprovalRequest, resumed: bool) -> None:
    err = err_console()
    who = request.decision.reviewer if request.decision else None
    err.print(f"{request.id}: [bold]{request.status}[/] by {escape(str(who))}")
    if not resumed:
        err.print(
            "the run continues at the next invoke(None, ...) of thread "
            f"{escape(request.thread_id)!r} (or decide with --graph to resume it now)",
            style="dim",
        )


def _decide(
    verdict: str,
    request_id: str,
    db: Any,
    reviewer: str | None,
    notes: str | None,
    graph: str | None,
) -> None:
    """``approve`` or ``reject`` one request, resuming the run when ``graph`` is given."""
    with reported_errors(err_console()), _queue(db, graph) as queue:
        decide = queue.approve if verdict == "approve" else queue.reject
        _done(decide(request_id, reviewer=_reviewer(reviewer), notes=notes), graph is not None)


@approvals_app.command("approve")
def approve_command(
    request_id: IdArgument,
    db: DbOption = None,
    reviewer: ReviewerOption = None,
    notes: NotesOption = None,
    graph: GraphOption = None,
) -> None:
    """Approve: the gated node runs."""
    _decide("approve", request_id, db, reviewer, notes, graph)


@approvals_app.command("reject")
def reject_command(
    request_id: IdArgument,
    db: DbOption = None,
    reviewer: ReviewerOption = None,
    notes: NotesOption = None,
    graph: GraphOption = None,
) -> None:
    """Reject: the run goes to the gate's on_reject node, or ends."""
    _decide("reject", request_id, db, reviewer, notes, graph)


@approvals_app.command("edit")
def edit_command(
    request_id: IdArgument,
    update: Annotated[str, typer.Option("--update", help="JSON object of state keys to set.")],
    db: DbOption = None,
    reviewer: ReviewerOption = None,
    notes: NotesOption = None,
    graph: GraphOption = None,
) -> None:
    """Approve with a state update applied before the node runs."""
    with reported_errors(err_console()):
        values = parse_json(update, "--update")
        if not isinstance(values, dict):
            raise CliError("--update must be a JSON object")
    with reported_errors(err_console()), _queue(db, graph) as queue:
        decided = queue.edit(request_id, values, reviewer=_reviewer(reviewer), notes=notes)
        _done(decided, graph is not None)


@approvals_app.command("sweep")
def sweep_command(
    db: DbOption = None,
    graph: GraphOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resolve every overdue request by its gate's on_timeout (safe to run concurrently)."""
    with reported_errors(err_console()), _queue(db, graph) as queue:
        resolved = queue.expire_due()
        if as_json:
            print_json(out_console(), [r.as_dict() for r in resolved])
            return
        for r in resolved:
            resolution = r.decision.resolution if r.decision else r.on_timeout
            out_console().print(f"{r.id} {escape(r.node)} timed out -> {escape(str(resolution))}")
        err_console().print(f"{len(resolved)} overdue request(s) resolved")


@approvals_app.command("metrics")
def metrics_command(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Per gated node: requests, outcomes, median and p95 time to decision."""
    with reported_errors(err_console()), _queue(db) as queue:
        found = queue.metrics()
        if as_json:
            print_json(out_console(), found)
            return
        table = Table(title_justify="left")
        columns = ("node", "requests", "pending", "auto", "approved", "rejected", "edited",
                   "timed out", "superseded", "median", "p95")  # fmt: skip
        for column in columns:
            table.add_column(column, no_wrap=True)
        for m in found.values():
            table.add_row(
                escape(m.node), str(m.requests), str(m.pending), str(m.auto_approved),
                str(m.approved), str(m.rejected), str(m.edited), str(m.timed_out),
                str(m.superseded),
                "-" if m.median_time_to_decision is None else _span(m.median_time_to_decision),
                "-" if m.p95_time_to_decision is None else _span(m.p95_time_to_decision),
            )  # fmt: skip
        out_console().print(table)
