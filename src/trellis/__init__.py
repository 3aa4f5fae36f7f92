"""Trellis: stateful, durable agent workflows with LangGraph's API.

Port a LangGraph program by changing its imports; keep the production
machinery LangGraph leaves to you: crash-safe checkpoints with O(n) storage,
retries, timeouts, circuit breakers, compensations, approval gates with a
review queue, traces and per-node metrics.

>>> from trellis import StateGraph, START, END
>>> builder = StateGraph(State)
>>> builder.add_node("classify", classify)
>>> builder.add_edge(START, "classify")
>>> graph = builder.compile(checkpointer=SqliteSaver.from_path("runs.db"))

Errors live in ``trellis.errors``; observability helpers in ``trellis.observe``.
"""

from typing import TYPE_CHECKING, Any

from trellis.engine.compiled import CompiledStateGraph
from trellis.engine.context import get_config, get_runtime, get_store, get_stream_writer
from trellis.engine.interrupts import interrupt
from trellis.engine.once import aonce, once
from trellis.engine.saga import CompensationReport
from trellis.graph.builder import StateGraph
from trellis.graph.managed import IsLastStep, RemainingSteps
from trellis.graph.reducers import REMOVE_ALL_MESSAGES, MessagesState, RemoveMessage, add_messages
from trellis.resilience.circuit import CircuitBreaker
from trellis.types import (
    END,
    START,
    Command,
    Interrupt,
    Overwrite,
    RetryPolicy,
    RunnableConfig,
    Runtime,
    Send,
    StateSnapshot,
    StateUpdate,
)

if TYPE_CHECKING:
    from trellis.hitl import Approval, ApprovalPolicy, ReviewQueue
    from trellis.persist.memory import InMemorySaver, MemorySaver
    from trellis.persist.postgres import AsyncPostgresSaver, PostgresSaver
    from trellis.persist.sqlite import AsyncSqliteSaver, SqliteSaver

__all__ = [
    "END",
    "REMOVE_ALL_MESSAGES",
    "START",
    "Approval",
    "ApprovalPolicy",
    "AsyncPostgresSaver",
    "AsyncSqliteSaver",
    "CircuitBreaker",
    "Command",
    "CompensationReport",
    "CompiledStateGraph",
    "InMemorySaver",
    "Interrupt",
    "IsLastStep",
    "Overwrite",
    "MemorySaver",
    "MessagesState",
    "PostgresSaver",
    "RemainingSteps",
    "RemoveMessage",
    "RetryPolicy",
    "ReviewQueue",
    "RunnableConfig",
    "Runtime",
    "Send",
    "SqliteSaver",
    "StateGraph",
    "StateSnapshot",
    "StateUpdate",
    "add_messages",
    "aonce",
    "get_config",
    "get_runtime",
    "get_store",
    "get_stream_writer",
    "interrupt",
    "once",
]

# Imported on first use: psycopg is an optional extra, and these keep
# `import trellis` fast.
# The savers resolve through `trellis.persist`, which knows each one's module.
_LAZY = {
    "MemorySaver": "trellis.persist",
    "InMemorySaver": "trellis.persist",
    "SqliteSaver": "trellis.persist",
    "AsyncSqliteSaver": "trellis.persist",
    "PostgresSaver": "trellis.persist",
    "AsyncPostgresSaver": "trellis.persist",
    "Approval": "trellis.hitl",
    "ApprovalPolicy": "trellis.hitl",
    "ReviewQueue": "trellis.hitl",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trellis' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
