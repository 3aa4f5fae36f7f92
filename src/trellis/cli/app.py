"""The ``trellis`` command: run, draw and inspect graphs from the shell.

>>> trellis run examples.support:graph --input '{"message": "I want a refund"}'
>>> trellis draw examples.routing:graph --format ascii
>>> trellis history <thread> ; trellis state <thread> ; trellis prune --keep-last 20
>>> trellis approvals list   # the review queue (approvals.py)
"""

from __future__ import annotations

import typer

from trellis.cli.approvals import approvals_app
from trellis.cli.draw import draw_command
from trellis.cli.history import history_command, prune_command, state_command, threads_command
from trellis.cli.run import run_command
from trellis.cli.trace import diff_command, trace_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="trellis",
    help="Run, draw and inspect Trellis graphs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run_command)
app.command("draw")(draw_command)
app.command("history")(history_command)
app.command("state")(state_command)
app.command("threads")(threads_command)
app.command("prune")(prune_command)
app.command("trace")(trace_command)
app.command("diff")(diff_command)
app.add_typer(approvals_app, name="approvals")


def main() -> None:
    """Console-script entry point (``trellis = "trellis.cli.app:main"``)."""
    app()
