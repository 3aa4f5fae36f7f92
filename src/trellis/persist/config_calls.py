"""LangGraph's config-shaped checkpointer calls, accepted by every saver.

Code written against LangGraph's ``BaseCheckpointSaver`` passes a config where
Trellis's protocol takes a thread id: ``saver.get_tuple(config)``,
``saver.list(config, before=config, limit=5)``, ``saver.get(config)``,
``saver.list(None)`` for every thread. The decorators here turn that shape into
Trellis's, so each saver writes its reads once, keyed by thread id, and both
spellings reach the same code. A config names the thread, and optionally the
namespace and checkpoint, under ``"configurable"``.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import inspect
import itertools
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from trellis.errors import InvalidConfigError
from trellis.persist.base import Checkpoint, CheckpointTuple
from trellis.persist.storage import encode_filter, metadata_matcher

__all__ = ["ConfigCalls", "accepts_config", "alists_by_config", "lists_by_config"]

F = TypeVar("F", bound=Callable[..., Any])

ThreadRef = str | Mapping[str, Any]
"""A thread id, or a LangGraph config naming one."""


def config_target(target: Any, what: str) -> tuple[str, str | None, str | None]:
    """(thread_id, checkpoint_id, checkpoint_ns) named by a LangGraph config; the
    namespace is None when the config does not name one."""
    if not isinstance(target, Mapping):
        raise TypeError(
            f"{what} takes a thread id or a config {{'configurable': {{'thread_id': ...}}}}, "
            f"got {type(target).__name__}"
        )
    configurable = target.get("configurable") or {}
    thread_id = configurable.get("thread_id")
    if thread_id is None:
        raise InvalidConfigError(
            f"{what}: the config names no thread: it needs {{'configurable': "
            f"{{'thread_id': ...}}}}, got keys {sorted(configurable)}"
        )
    return str(thread_id), configurable.get("checkpoint_id"), configurable.get("checkpoint_ns")


def accepts_config(fn: F) -> F:
    """``get_tuple``/``aget_tuple`` that also take a LangGraph config first.

    >>> saver.get_tuple({"configurable": {"thread_id": "t1", "checkpoint_id": cid}})
    """

    def target(thread_id: Any, checkpoint_id: str | None, ns: str) -> tuple[str, str | None, str]:
        if isinstance(thread_id, str):
            return thread_id, checkpoint_id, ns
        thread_id, named, given_ns = config_target(thread_id, fn.__name__)
        return thread_id, checkpoint_id or named, ns or given_ns or ""

    if inspect.iscoroutinefunction(fn):  # stays one: callers check, LangGraph among them

        @functools.wraps(fn)
        async def acall(
            self: Any, thread_id: Any, checkpoint_id: str | None = None, *, checkpoint_ns: str = ""
        ) -> Any:
            thread, checkpoint, ns = target(thread_id, checkpoint_id, checkpoint_ns)
            return await fn(self, thread, checkpoint, checkpoint_ns=ns)

        return acall  # type: ignore[return-value]

    @functools.wraps(fn)
    def call(
        self: Any, thread_id: Any, checkpoint_id: str | None = None, *, checkpoint_ns: str = ""
    ) -> Any:
        thread, checkpoint, ns = target(thread_id, checkpoint_id, checkpoint_ns)
        return fn(self, thread, checkpoint, checkpoint_ns=ns)

    return call  # type: ignore[return-value]


@dataclass(frozen=True)
class _Listing:
    """A ``list`` call resolved: a thread's listing the saver serves itself
    (``direct``), or every thread's, or one named checkpoint's."""

    thread_id: str | None
    named: str | None
    checkpoint_ns: str
    before: str | None
    limit: int | None
    filter: Mapping[str, Any] | None

    @classmethod
    def of(
        cls,
        target: Any,
        what: str,
        *,
        checkpoint_ns: str = "",
        before: Any = None,
        limit: int | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> _Listing:
        named = None
        if target is not None and not isinstance(target, str):
            target, named, ns = config_target(target, what)
            checkpoint_ns = checkpoint_ns or ns or ""
        if before is not None and not isinstance(before, str):
            before = config_target(before, what)[1]
        return cls(target, named, checkpoint_ns, before, limit, filter)

    @property
    def direct(self) -> bool:
        return self.thread_id is not None and self.named is None

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keywords of a saver's own ``list``/``alist``."""
        return {
            "checkpoint_ns": self.checkpoint_ns,
            "before": self.before,
            "limit": self.limit,
            "filter": self.filter,
        }

    def wants_named(self) -> bool:
        """Whether the named checkpoint can be listed at all (before reading it)."""
        named, before = self.named, self.before
        assert named is not None
        fits = encode_filter(self.filter) is not None and self.limit != 0
        return fits and (before is None or named < before)

    def keep(self, tup: CheckpointTuple | None) -> list[CheckpointTuple]:
        """The named checkpoint, read, if its metadata fits the filter."""
        pairs = encode_filter(self.filter)
        if tup is None or (pairs and not metadata_matcher(pairs)(json.dumps(tup.metadata))):
            return []
        return [tup]

    def every_thread(self, saver: Any) -> list[CheckpointTuple]:
        """Newest first across threads (checkpoint ids sort by time)."""
        encode_filter(self.filter)  # an invalid filter fails before any read
        lists = [saver.list(t.thread_id, **self.kwargs) for t in saver.threads()]
        merged = heapq.merge(*lists, key=lambda t: t.checkpoint.id, reverse=True)
        return list(itertools.islice(merged, self.limit))


def lists_by_config(fn: F) -> F:
    """``list`` that also takes a LangGraph config (or None: every thread) first and
    a config as ``before``. A config naming a checkpoint lists that one alone, as
    LangGraph does.

    >>> saver.list({"configurable": {"thread_id": "t1"}}, before=config, limit=5)
    """

    @functools.wraps(fn)
    def call(self: Any, thread_id: Any, **kwargs: Any) -> Iterator[CheckpointTuple]:
        q = _Listing.of(thread_id, "list", **kwargs)
        if q.direct:
            return fn(self, q.thread_id, **q.kwargs)  # type: ignore[no-any-return]
        if q.thread_id is None:
            return iter(q.every_thread(self))
        if not q.wants_named():
            return iter(())
        return iter(q.keep(self.get_tuple(q.thread_id, q.named, checkpoint_ns=q.checkpoint_ns)))

    return call  # type: ignore[return-value]


def alists_by_config(fn: F) -> F:
    """:func:`lists_by_config` for ``alist``.

    >>> [t async for t in saver.alist({"configurable": {"thread_id": "t1"}})]
    """

    @functools.wraps(fn)
    async def call(self: Any, thread_id: Any, **kwargs: Any) -> AsyncIterator[CheckpointTuple]:
        q = _Listing.of(thread_id, "alist", **kwargs)
        if q.direct:
            async for item in fn(self, q.thread_id, **q.kwargs):
                yield item
            return
        if q.thread_id is None:  # no async thread listing: the sync reads, off the loop
            found = await asyncio.to_thread(q.every_thread, self)
        elif q.wants_named():
            tup = await self.aget_tuple(q.thread_id, q.named, checkpoint_ns=q.checkpoint_ns)
            found = q.keep(tup)
        else:
            found = []
        for item in found:
            yield item

    return call  # type: ignore[return-value]


class ConfigCalls:
    """LangGraph's ``get``/``aget``: the checkpoint a config names (its thread's
    latest if it names none), or None for an unknown thread.

    >>> saver.get({"configurable": {"thread_id": "t1"}}).values
    {'n': 2}
    """

    def get(self, config: ThreadRef) -> Checkpoint | None:
        tup = self.get_tuple(config)  # type: ignore[attr-defined]  # each saver has it
        return tup.checkpoint if tup is not None else None

    async def aget(self, config: ThreadRef) -> Checkpoint | None:
        tup = await self.aget_tuple(config)  # type: ignore[attr-defined]
        return tup.checkpoint if tup is not None else None
