"""Run configs: merging what ``with_config`` binds under each call's own config, and
the thread id as every checkpointer keys a thread; and ``compile()``'s options."""

from __future__ import annotations

from typing import Any, cast

from trellis.errors import InvalidConfigError
from trellis.persist.base import Checkpointer
from trellis.types import RunnableConfig

__all__ = ["check_compile_options", "merge_configs", "thread_key"]


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


_COMPILE_OPTIONS = frozenset(
    {
        "allowlist",
        "approval_policy",
        "durability",
        "metrics",
        "observers",
        "retry_policy",
        "store",
        "trace",
    }
)


def check_compile_options(options: dict[str, Any], checkpointer: Any) -> None:
    """Refuse what would otherwise be silently ignored: a misspelt option, LangGraph's
    ``cache`` (not built), a store or checkpointer of the wrong kind."""
    if options.pop("cache", None) is not None:
        raise InvalidConfigError(
            "compile(cache=...): Trellis has no LangGraph node cache yet; "
            "memoize inside the node, or use once() for work that must not repeat"
        )
    store = options.pop("store", None)
    if store is not None:
        missing = [m for m in ("get", "put", "search") if not callable(getattr(store, m, None))]
        if missing:
            raise InvalidConfigError(
                f"compile(store=...) takes a LangGraph-style store (get, put, search: "
                f"langgraph.store.memory.InMemoryStore, say); {type(store).__name__} "
                f"has no {', '.join(missing)}"
            )
        options["store"] = store
    unknown = sorted(set(options) - _COMPILE_OPTIONS)
    if unknown:
        raise InvalidConfigError(
            f"compile() got unknown option(s) {', '.join(map(repr, unknown))}; it takes "
            f"checkpointer, interrupt_before, interrupt_after, name, debug, "
            f"{', '.join(sorted(_COMPILE_OPTIONS))}"
        )
    if checkpointer not in (None, True, False) and not isinstance(checkpointer, Checkpointer):
        kind = f"{type(checkpointer).__module__}.{type(checkpointer).__qualname__}"
        raise InvalidConfigError(
            f"checkpointer {kind} is not a Trellis checkpointer; use trellis.MemorySaver, "
            "SqliteSaver or PostgresSaver (LangGraph's savers store another format)"
        )
