"""Reducers shipped with Trellis: ``add_messages`` and its ``RemoveMessage``.

A message is any object with an ``id`` attribute (LangChain's message objects),
or a dict with ``role``/``content`` (and optionally ``id``). With ``langchain_core``
installed, shorthands (``"hi"``, ``("user", "hi")``, a dict) become LangChain
message objects, as in LangGraph; without it they stay dicts.
"""

from __future__ import annotations

import functools
import importlib.util
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Final

from typing_extensions import TypedDict

from trellis.errors import InvalidUpdateError
from trellis.types import Overwrite, Replaced

__all__ = [
    "ABSENT",
    "DROPPED",
    "NOT_OVERWRITE",
    "REMOVE_ALL_MESSAGES",
    "SPECIAL_WRITES",
    "MessagesState",
    "RemoveMessage",
    "add_messages",
    "fold_writes",
    "langchain_messages",
    "names_langchain_messages",
    "overwrite_value",
    "reduce_write",
    "shown",
    "two_overwrites",
]

REMOVE_ALL_MESSAGES = "__remove_all__"
NOT_OVERWRITE: Any = object()
_OVERWRITE = "__overwrite__"


def overwrite_value(value: Any) -> Any:
    """What an ``Overwrite`` write (in any of LangGraph's three forms) sets the key
    to; ``NOT_OVERWRITE`` for any other write."""
    kind = type(value)
    if kind is Overwrite:
        return value.value
    if kind is dict:
        if len(value) == 1 and _OVERWRITE in value:
            return value[_OVERWRITE]
        if value.get("type") == _OVERWRITE and "value" in value:
            return value["value"]
    return NOT_OVERWRITE


ABSENT: Any = object()
"""A state key's value before anything was written to it."""
DROPPED: Any = object()
"""``reduce_write``'s result for a write that an ``Overwrite`` of the step replaces."""
SPECIAL_WRITES: Final = frozenset({dict, Overwrite, Replaced})
"""The types of write ``reduce_write`` must see: any other write to a reducer key,
in a step with no ``Overwrite`` yet, simply reduces (the hot paths do that inline)."""


def reduce_write(
    reducer: Callable[[Any, Any], Any],
    key: str,
    old: Any,
    value: Any,
    overwritten: set[str] | None,
) -> tuple[Any, set[str] | None]:
    """What reducer key ``key``, holding ``old`` (or ``ABSENT``), holds after one
    write of a step, and the step's set of keys an ``Overwrite`` replaced (made on
    its first). A reviewer's ``Replaced`` edit is taken as is and later writes fold
    into it; an ``Overwrite`` wins over the step's other writes (two raise), which
    come back ``DROPPED``."""
    kind = type(value)
    if kind is Replaced:
        return value.value, overwritten
    if kind is Overwrite or kind is dict:
        new = overwrite_value(value)
        if new is not NOT_OVERWRITE:
            if overwritten is None:
                overwritten = set()
            elif key in overwritten:
                raise two_overwrites(key)
            overwritten.add(key)
            return new, overwritten
    if overwritten and key in overwritten:
        return DROPPED, overwritten
    return (value if old is ABSENT else reducer(old, value)), overwritten


def shown(update: dict[str, Any]) -> dict[str, Any]:
    """``update`` as a user reads it (streams, task results): a reviewer's
    replacement as the ``Overwrite`` it was given as."""
    if not any(type(v) is Replaced for v in update.values()):
        return update
    return {k: Overwrite(v.value) if type(v) is Replaced else v for k, v in update.items()}


def two_overwrites(key: str, by: str | None = None) -> InvalidUpdateError:
    who = f" from node {by!r}" if by is not None else ""
    return InvalidUpdateError(
        f"state key {key!r} got two Overwrite values{who} in one step; only one write "
        "may replace a reducer key's value per step"
    )


def fold_writes(
    reducer: Callable[[Any, Any], Any], key: str, first: Any, then: Any, by: str
) -> Any:
    """Two writes of node ``by`` to the reducer key ``key``, as one write: an
    ``Overwrite`` drops the writes before it and keeps out those after it (as
    LangGraph applies a step's writes)."""
    if overwrite_value(then) is not NOT_OVERWRITE:
        if overwrite_value(first) is not NOT_OVERWRITE:
            raise two_overwrites(key, by)
        return then
    if type(first) is Replaced:  # a reviewer's replacement: the node's writes fold in
        return Replaced(reducer(first.value, then))
    if overwrite_value(first) is not NOT_OVERWRITE:
        return first
    return reducer(first, then)


@dataclass(frozen=True, slots=True)
class RemoveMessage:
    """Returned inside a messages update, deletes the message with this ``id``.

    >>> return {"messages": [RemoveMessage(id=old["id"])]}
    """

    id: str


def _message_id(message: Any) -> Any:
    if isinstance(message, dict):
        return message.get("id")
    return getattr(message, "id", None)


def _is_remove(message: Any) -> bool:
    return isinstance(message, RemoveMessage) or type(message).__name__ == "RemoveMessage"


@functools.cache
def langchain_converter() -> Callable[[Any], Any] | None:
    """LangChain's ``convert_to_messages`` when ``langchain_core`` is installed."""
    if importlib.util.find_spec("langchain_core") is None:
        return None
    from langchain_core.messages import convert_to_messages

    return convert_to_messages


def _coerce(message: Any) -> Any:
    """Give a message an id (LangGraph does the same) and turn shorthands into
    LangChain message objects, as LangGraph does, or into dicts without LangChain."""
    if isinstance(message, (str, tuple, dict)):
        convert = langchain_converter()
        if convert is not None:
            (message,) = convert([message])
    if isinstance(message, str):
        return {"role": "user", "content": message, "id": str(uuid.uuid4())}
    if isinstance(message, tuple) and len(message) == 2:
        return {"role": message[0], "content": message[1], "id": str(uuid.uuid4())}
    if isinstance(message, dict):
        if message.get("id") is None:
            return {**message, "id": str(uuid.uuid4())}
        return message
    if _is_remove(message):
        return message
    if getattr(message, "id", "") is None:
        message.id = str(uuid.uuid4())
    return message


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) and not (
        isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)
    ):
        return list(value)
    return [value]


def add_messages(left: Any, right: Any) -> list[Any]:
    """Merge a messages update into a messages list.

    New ids are appended in order; a message whose id is already present
    replaces it in place; ``RemoveMessage(id)`` deletes; a
    ``RemoveMessage(REMOVE_ALL_MESSAGES)`` clears everything before it.

    >>> class State(TypedDict):
    ...     messages: Annotated[list, add_messages]
    """
    current = [_coerce(m) for m in _as_list(left)]
    updates = [_coerce(m) for m in _as_list(right)]
    for i in range(len(updates) - 1, -1, -1):
        if _is_remove(updates[i]) and updates[i].id == REMOVE_ALL_MESSAGES:
            return [m for m in updates[i + 1 :] if not _is_remove(m)]
    index = {_message_id(m): i for i, m in enumerate(current)}
    merged = list(current)
    removed: set[Any] = set()
    for message in updates:
        mid = _message_id(message)
        if _is_remove(message):
            if mid not in index:
                raise ValueError(f"RemoveMessage: no message with id {mid!r} to remove")
            removed.add(mid)
            continue
        if mid in index:
            merged[index[mid]] = message
            removed.discard(mid)
        else:
            index[mid] = len(merged)
            merged.append(message)
    if removed:
        merged = [m for m in merged if _message_id(m) not in removed]
    return merged


_LANGCHAIN_MESSAGES = (
    "AIMessage", "AIMessageChunk", "ChatMessage", "ChatMessageChunk", "FunctionMessage",
    "FunctionMessageChunk", "HumanMessage", "HumanMessageChunk", "RemoveMessage",
    "SystemMessage", "SystemMessageChunk", "ToolMessage", "ToolMessageChunk",
)  # fmt: skip


def langchain_messages() -> list[type]:
    """LangChain's message classes when ``langchain_core`` is installed (else none):
    what a LangGraph agent ported to Trellis keeps in an ``add_messages`` key, so a
    checkpointer must be allowed to store them.

    >>> [cls.__name__ for cls in langchain_messages()][:2]
    ['AIMessage', 'AIMessageChunk']
    """
    if importlib.util.find_spec("langchain_core") is None:
        return []
    from langchain_core import messages

    found = (getattr(messages, name, None) for name in _LANGCHAIN_MESSAGES)
    return [cls for cls in found if isinstance(cls, type)]


def names_langchain_messages(classes: Iterable[type]) -> bool:
    """Whether ``classes`` (a schema's allowlist) hold one of LangChain's message
    classes, ``BaseMessage`` say: LangGraph's classic agent state is
    ``Annotated[Sequence[BaseMessage], operator.add]``, and it stores the subclasses.

    >>> from langchain_core.messages import BaseMessage
    >>> names_langchain_messages([BaseMessage]), names_langchain_messages([int])
    (True, False)
    """
    ours = [cls for cls in classes if cls.__module__.startswith("langchain_core.")]
    if not ours:  # langchain_core is not imported for a schema that names none of it
        return False
    from langchain_core.messages import BaseMessage

    return any(issubclass(cls, BaseMessage) for cls in ours)


class MessagesState(TypedDict):
    """A ready-made state with one ``messages`` key reduced by ``add_messages``."""

    messages: Annotated[list[Any], add_messages]
