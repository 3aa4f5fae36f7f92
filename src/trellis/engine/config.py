"""Run configs: merging what ``with_config`` binds under each call's own config, and
the thread id as every checkpointer keys a thread."""

from __future__ import annotations

from typing import Any, cast

from trellis.errors import InvalidConfigError
from trellis.types import RunnableConfig

__all__ = ["merge_configs", "thread_key"]


def merge_configs(*configs: RunnableConfig | dict[str, Any] | None) -> RunnableConfig:
    """``configs`` merged left to right, as LangGraph's ``with_config`` merges them:
    ``configurable`` and ``metadata`` key by key, ``tags`` joined in order, anything
    else the latest value that is not None.

    >>> merge_configs({"recursion_limit": 50, "configurable": {"user": "ann"}},
    ...               {"configurable": {"thread_id": "t1"}})
    {'recursion_limit': 50, 'configurable': {'user': 'ann', 'thread_id': 't1'}}
    """
    merged: dict[str, Any] = {}
    for config in configs:
        if not config:
            continue
        items: Any = config.items()
        for key, value in items:
            old: Any = merged.get(key)
            if key in ("configurable", "metadata"):
                merged[key] = {**(old or {}), **(value or {})}
            elif key == "tags":
                merged[key] = [*(old or ()), *(value or ())]
            elif value is not None or key not in merged:
                merged[key] = value
    return cast("RunnableConfig", merged)


def thread_key(value: Any) -> str:
    """``configurable["thread_id"]`` as every checkpointer keys the thread: a string
    (``1`` is ``"1"``) that each backend can store, checked before anything is.

    >>> thread_key(7)
    '7'
    """
    key = str(value)
    if "\x00" in key or not (key.isascii() or _utf8(key)):
        raise InvalidConfigError(
            f"thread_id {key!r} holds a NUL character or an unpaired surrogate, which "
            "not every checkpointer can store (PostgreSQL text cannot)"
        )
    return key


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
