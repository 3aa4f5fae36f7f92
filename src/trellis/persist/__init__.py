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

if TYPE_CHECKING:
    from trellis.persist.memory import InMemorySaver, MemorySaver
    from trellis.persist.postgres import AsyncPostgresSaver, PostgresSaver
    from trellis.persist.sqlite import AsyncSqliteSaver, SqliteSaver

__all__ = [
    "AsyncPostgresSaver",
    "AsyncSqliteSaver",
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


# Each saver is imported on first use, so `import trellis` stays fast and the
# PostgreSQL driver is only needed by those who use it.
_SAVERS = {
    "MemorySaver": "trellis.persist.memory",
    "InMemorySaver": "trellis.persist.memory",
    "SqliteSaver": "trellis.persist.sqlite",
    "AsyncSqliteSaver": "trellis.persist.sqlite",
    "PostgresSaver": "trellis.persist.postgres",
    "AsyncPostgresSaver": "trellis.persist.postgres",
}


def __getattr__(name: str) -> Any:
    module = _SAVERS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
