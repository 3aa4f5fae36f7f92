"""The wording of the errors every saver raises, the same on each backend."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "duplicate_checkpoint",
    "head_moved",
    "no_checkpoint",
    "parent_pruned",
    "thread_label",
]


def thread_label(thread_id: str, ns: str = "") -> str:
    """How errors name a thread: with its namespace when it is a subgraph's.

    >>> thread_label("t1", "review:3f")
    "thread 't1' (namespace 'review:3f')"
    """
    return f"thread {thread_id!r}" + (f" (namespace {ns!r})" if ns else "")


def no_checkpoint(thread_id: str, ns: str, checkpoint_id: str | None) -> str:
    """The message of CheckpointNotFoundError, the same on every backend."""
    return f"{thread_label(thread_id, ns)} has no checkpoint {checkpoint_id!r}"


def duplicate_checkpoint(thread_id: str, ns: str, ids: Sequence[str]) -> str:
    """The message of the ConcurrentUpdateError of a put whose checkpoint id (one of
    ``ids``, when the database only says that one collided) is taken.

    >>> duplicate_checkpoint("t1", "", ["c9"])
    "thread 't1' already has checkpoint 'c9'"
    """
    if len(ids) == 1:
        return f"{thread_label(thread_id, ns)} already has checkpoint {ids[0]!r}"
    listed = ", ".join(map(repr, ids))
    return f"{thread_label(thread_id, ns)} already has one of checkpoints {listed}"


def head_moved(thread_id: str, ns: str, expected_head: str | None) -> str:
    """The message of the ConcurrentUpdateError of a put that lost its race."""
    if expected_head is None:
        return f"{thread_label(thread_id, ns)} already exists: another writer started it"
    return (
        f"{thread_label(thread_id, ns)}: the head is no longer {expected_head!r}; "
        "another writer advanced it"
    )


def parent_pruned(thread_id: str, ns: str, parent: str | None) -> str:
    """The message of the ConcurrentUpdateError of a put that continues an older
    checkpoint (an edit or a fork) which a prune removed after it was read."""
    return (
        f"{thread_label(thread_id, ns)}: checkpoint {parent!r}, which this write "
        "continues, was pruned meanwhile; nothing was stored"
    )
