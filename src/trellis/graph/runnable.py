"""LangChain Runnables as nodes: ``add_node("agent", prompt | model)``, as LangGraph takes them.

A Runnable is not a function; the node calls its ``invoke`` with the state and the
node's config (so its callbacks, metadata and ``stream_mode="messages"`` handler
reach it). Under ``ainvoke`` it runs in a worker thread, as any sync node does.
"""

from __future__ import annotations

from typing import Any

from trellis.types import RunnableConfig

__all__ = ["is_runnable", "runnable_node"]


def is_runnable(action: Any) -> bool:
    """Whether ``action`` is a LangChain Runnable (and not a plain function).

    >>> is_runnable(RunnableLambda(lambda s: s)), is_runnable(len)
    (True, False)
    """
    return (
        not callable(action)
        and callable(getattr(action, "invoke", None))
        and callable(getattr(action, "get_name", None))
    )


def runnable_node(runnable: Any) -> Any:
    """A node function that runs ``runnable`` on the state, with the node's config."""

    def node(state: Any, config: RunnableConfig) -> Any:
        return runnable.invoke(state, config)

    node.__name__ = runnable.get_name()
    node.__qualname__ = f"runnable_node({node.__name__})"
    return node
