"""Checkpointers: where runs keep their state between steps.

``MemorySaver`` (alias ``InMemorySaver``) and ``SqliteSaver`` need only the
standard library; ``PostgresSaver`` imports psycopg when first used (install
``trellis[postgres]``).

>>> from trellis.persist import SqliteSaver
>>> saver = SqliteSaver.from_path("checkpoints.db")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trellis.persist.base import (
    Checkpoint,
    Checkpointer,
    CheckpointTuple,
    PendingWrite,
    SaverBase,
    ThreadInfo,
)
from trellis.persist.memory import InMemorySaver, MemorySaver
from trellis.persist.sqlite import SqliteSaver

if TYPE_CHECKING:
    from trellis.persist.postgres import PostgresSaver

__all__ = [
    "Checkpoint",
    "CheckpointTuple",
    "Checkpointer",
    "InMemorySaver",
    "MemorySaver",
    "PendingWrite",
    "PostgresSaver",
    "SaverBase",
    "SqliteSaver",
    "ThreadInfo",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresSaver":
        from trellis.persist.postgres import PostgresSaver

        return PostgresSaver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
