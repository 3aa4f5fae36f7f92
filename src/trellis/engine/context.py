"""The running task, reachable from inside node code without passing it around.

``get_stream_writer()``, ``get_config()``, ``interrupt()`` and ``once()`` find
the task they belong to through one context variable. It is set by the
drivers around each node call; threads get it through ``copy_context``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from trellis.types import RunnableConfig, Runtime, StreamWriter

if TYPE_CHECKING:
    from trellis.engine.task import Task

__all__ = [
    "CURRENT_TASK",
    "current_task",
    "get_config",
    "get_runtime",
    "get_store",
    "get_stream_writer",
]

CURRENT_TASK: ContextVar[Task | None] = ContextVar("trellis_task", default=None)
# The attempt a node with a timeout runs as: one abandoned at its timeout runs on in
# its thread while the next attempt runs, and what it streams must not count.
CURRENT_ATTEMPT: ContextVar[int | None] = ContextVar("trellis_attempt", default=None)


def current_task(what: str) -> Task:
    task = CURRENT_TASK.get()
    if task is None:
        raise RuntimeError(f"{what} can only be called from inside a running node")
    return task


def _discard(_chunk: Any) -> None:
    return None


def get_stream_writer() -> StreamWriter:
    """The writer for ``stream_mode="custom"`` of the node that calls it.

    >>> def node(state):
    ...     get_stream_writer()({"progress": 0.5})
    ...     return {}

    A stream that asks for ``"custom"`` hands the chunks out as they are written;
    outside a node the writer discards them.
    """
    task = CURRENT_TASK.get()
    if task is None:
        return _discard
    return task.writer()


def get_config() -> RunnableConfig:
    """The ``config`` of the node that calls it (as if it declared ``config``)."""
    return current_task("get_config()").config()


def get_store() -> Any:
    """The store of the node that calls it: ``compile(store=...)`` of its graph, or
    of the graph whose node runs it; None without one.

    >>> def remember(state):
    ...     get_store().put(("users", "ada"), "prefs", {"tone": "brief"})
    """
    return current_task("get_store()").loop.store


def get_runtime(context_schema: Any = None) -> Runtime[Any]:
    """The ``Runtime`` of the node that calls it (as if it declared ``runtime``):
    its run's context, stream writer and execution info, as LangGraph's.

    >>> def node(state):
    ...     user = get_runtime(Context).context.user_id
    """
    return current_task("get_runtime()").runtime()
