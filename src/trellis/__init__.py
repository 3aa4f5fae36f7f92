"""Trellis: stateful, durable agent workflows with LangGraph's API.

>>> from trellis import StateGraph, START, END
"""

from trellis.engine.compiled import CompiledStateGraph
from trellis.engine.context import get_config, get_stream_writer
from trellis.graph.builder import StateGraph
from trellis.graph.reducers import REMOVE_ALL_MESSAGES, MessagesState, RemoveMessage, add_messages
from trellis.types import (
    END,
    START,
    Command,
    Interrupt,
    RetryPolicy,
    RunnableConfig,
    Runtime,
    Send,
    StateSnapshot,
)

__all__ = [
    "END",
    "REMOVE_ALL_MESSAGES",
    "START",
    "Command",
    "CompiledStateGraph",
    "Interrupt",
    "MessagesState",
    "RemoveMessage",
    "RetryPolicy",
    "RunnableConfig",
    "Runtime",
    "Send",
    "StateGraph",
    "StateSnapshot",
    "add_messages",
    "get_config",
    "get_stream_writer",
]
