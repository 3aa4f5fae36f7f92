"""What every command shares: consoles, error reporting, JSON in and out, the database.

Results (states, tables, drawings) go to stdout so they can be piped; progress,
notes and errors go to stderr.
"""

from __future__ import annotations

import json
import traceback as tb
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.markup import escape

from trellis.jsonable import to_jsonable
from trellis.persist.base import Database

__all__ = [
    "DEFAULT_DB",
    "CliError",
    "checkpoint_or_none",
    "DbOption",
    "err_console",
    "open_saver",
    "out_console",
    "parse_json",
    "print_json",
    "reported_errors",
    "shown_db",
]

DEFAULT_DB = Path(".trellis") / "trellis.db"
"""Where ``trellis run`` keeps checkpoints when the graph brings no checkpointer."""


def _named_db(value: str | None) -> str | None:
    # An empty --db (an unset shell variable, say) would otherwise be the current
    # directory to some commands and the default file to others.
    if value is not None and not value.strip():
        raise typer.BadParameter("is empty; give a SQLite file or a postgresql:// URL")
    return value


DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="SQLite checkpoint file, or postgresql:// URL (?schema=NAME outside 'public') "
        "\\[default: .trellis/trellis.db].",
        callback=_named_db,
    ),
]
"""``--db``, as every command that opens the checkpoint database takes it."""

# Tables and JSON are for reading whole: when piped, do not wrap them at 80 columns.
_PIPE_WIDTH = 200


class CliError(Exception):
    """A problem with how a command was called; printed as one red line, exit code 1.

    >>> raise CliError("give --input or --thread")
    """


def err_console() -> Console:
    return _console(stderr=True)


def out_console() -> Console:
    return _console(stderr=False)


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=_PIPE_WIDTH)
    return console


@contextmanager
def reported_errors(
    console: Console, *, traceback: bool = False, notes: list[str] | None = None
) -> Iterator[None]:
    """Turn any exception into a red ``Type: message`` line and exit code 1.

    ``notes`` (filled in while the command runs) are printed after the error.

    >>> with reported_errors(err_console()):
    ...     run_the_command()
    """
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except CliError as exc:
        console.print(f"[bold red]error:[/] [red]{escape(str(exc))}[/]")
        raise typer.Exit(1) from None
    except Exception as exc:
        if traceback:
            console.print("".join(tb.format_exception(exc)), markup=False, style="dim")
        # One line, as promised: psycopg, for one, adds a hint on a line of its own.
        message = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
        console.print(f"[bold red]{type(exc).__name__}:[/] [red]{escape(message)}[/]")
        hints = list(notes or ())
        if "not on the serializer's allowlist" in str(exc):
            hints.append(
                "hint: pass --graph MODULE:ATTR (the graph that wrote this thread) so the "
                "classes its state schemas name can be read"
            )
        for note in hints:
            console.print(escape(note), style="dim", soft_wrap=True)
        raise typer.Exit(1) from None


def checkpoint_or_none(saver: Any, thread: str, checkpoint_id: str | None = None) -> Any:
    """``saver.get_tuple``, with None for a checkpoint id the thread does not have
    (the saver raises for it), so a command can name what to try instead.

    >>> checkpoint_or_none(saver, "t1", "no-such-id") is None
    True
    """
    from trellis.errors import CheckpointNotFoundError

    try:
        return saver.get_tuple(thread, checkpoint_id)
    except CheckpointNotFoundError:
        return None


def parse_json(text: str, option: str) -> Any:
    """Parse a JSON option value, naming the option when it is not JSON.

    >>> parse_json('{"n": 1}', "--input")
    {'n': 1}
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{option} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            f"{text!r:.80}"
        ) from None


def print_json(console: Console, value: Any) -> None:
    """Pretty JSON: coloured on a terminal, plain text when piped."""
    text = json.dumps(to_jsonable(value), indent=2, ensure_ascii=False)
    if console.is_terminal:
        console.print_json(text)
    else:
        console.file.write(text + "\n")


def shown_db(db: str) -> str:
    """``--db`` as it may be printed: a PostgreSQL URL's password is masked.

    >>> shown_db("postgresql://app:s3cret@db/prod")
    'postgresql://app:****@db/prod'
    """
    parts = urlsplit(db)
    if parts.scheme not in ("postgres", "postgresql") or parts.password is None:
        return db
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:****@{host}"))


def saver_label(saver: Any) -> str:
    """Where ``saver`` keeps its rows, for messages: a file, or a PostgreSQL schema.

    >>> saver_label(SqliteSaver.from_path("runs.db"))
    "'runs.db'"
    """
    database = saver.database
    if database is not None and database.kind == "postgres":
        return f"schema {database.schema!r} at {saver.where}"
    return repr(str(saver.path))


def require_trellis(where: Database, what: str, *tables: str) -> None:
    """Refuse a database holding none of Trellis's ``tables`` (``what`` names them to
    the user): opening a store on it would add them to someone else's database, or
    to a mistyped ?schema=."""
    if any(where.has_table(table) for table in tables):
        return
    if where.kind == "postgres":
        raise CliError(
            f"no Trellis {what} in schema {where.schema!r} of {shown_db(where.target)}; "
            "check --db and its ?schema="
        )
    raise CliError(f"no Trellis {what} in {where.target!r}; check --db")


def open_saver(db: str | Path | None, *, must_exist: bool, graph: str | None = None) -> Any:
    """The checkpointer ``--db`` names: a SQLite file (default ``.trellis/trellis.db``)
    or a ``postgresql://`` URL (``?schema=NAME`` outside ``public``).

    Commands that only read (history, state) refuse to create a new, empty file.
    ``graph`` (MODULE:ATTR) lets the saver decode the classes that graph's state
    schemas name (dataclasses, enums, models): without it only plain values can be
    read, as checkpoints never import classes they name.
    """
    where = Database.from_url(str(db)) if db is not None else None
    if where is not None and where.kind == "postgres":
        from trellis.persist.postgres import PostgresSaver

        if must_exist:
            require_trellis(where, "checkpoints", "trellis_checkpoints")
        saver: Any = PostgresSaver.from_conn_string(where.target, schema=where.schema, pool_size=2)
    else:
        from trellis.persist.sqlite import SqliteSaver

        path = Path(where.target) if where is not None else DEFAULT_DB
        if must_exist and not path.exists():
            raise CliError(
                f"no checkpoint database at {str(path)!r}; `trellis run` writes to "
                f"{str(DEFAULT_DB)!r} unless given --db"
            )
        if must_exist:
            require_trellis(Database("sqlite", str(path)), "checkpoints", "trellis_checkpoints")
        saver = SqliteSaver.from_path(path)
    if graph is not None:
        from trellis.cli.loader import load_graph

        load_graph(graph).builder.compile(checkpointer=saver)  # widens saver.serde's allowlist
    return saver
