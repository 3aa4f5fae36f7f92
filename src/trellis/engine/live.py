"""Live chunks: what nodes stream (``custom`` writes, ``messages`` tokens, a
subgraph's chunks under ``subgraphs=True``) reaches the caller while the nodes run,
as LangGraph streams it, not when their step ends.

Only a run streamed by its caller in one of those ways goes live; the step's
nodes then run in a pool thread (sync) or an asyncio task (async) while the
stream hands out their chunks. A run nested in a node (a subgraph) streams
through its parent's task instead.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from trellis.engine.context import CURRENT_TASK
from trellis.engine.pools import LazyPool

if TYPE_CHECKING:
    from trellis.engine.loop import RunLoop
    from trellis.engine.task import Task

__all__ = ["arun_live", "run_live", "streams_live"]

LIVE_MODES = frozenset({"custom", "messages"})
_DONE = object()

# Threads for the steps of live streams, made as needed and kept for the next: a
# pool of their own, so a step never waits for a thread held by a node.
_POOL = LazyPool("trellis-live", 256)


def streams_live(loop: RunLoop) -> bool:
    """Whether ``loop``'s steps hand out node chunks as they are made.

    >>> streams_live(loop)  # a top-level stream(stream_mode="custom")
    True
    """
    wanted = loop.subgraphs or not LIVE_MODES.isdisjoint(loop.modes)
    return wanted and CURRENT_TASK.get() is None


def run_live(
    loop: RunLoop, tasks: list[Task], run: Callable[[list[Task]], None]
) -> Iterator[tuple[str, Any]]:
    """``run(tasks)`` in a worker thread, yielding their chunks as they come; then
    whatever ``run`` raised. A caller that stops reading waits for the step's
    nodes to end: nothing of the run goes on behind its back."""
    import queue  # on use: most runs never stream live

    chunks: queue.SimpleQueue[Any] = queue.SimpleQueue()
    failed: list[BaseException] = []

    def work() -> None:
        try:
            run(tasks)
        except BaseException as exc:  # handed to the reading thread, re-raised there
            failed.append(exc)
        finally:
            chunks.put(_DONE)

    loop.live = chunks.put
    worker = _POOL.get().submit(contextvars.copy_context().run, work)
    try:
        while (item := chunks.get()) is not _DONE:
            yield item
    finally:
        worker.exception()  # waits for it to end (work() raises nothing itself)
        loop.live = None
    if failed:
        raise failed[0]


async def arun_live(
    loop: RunLoop, run: Callable[[], Awaitable[None]]
) -> AsyncGenerator[tuple[str, Any], None]:
    """``await run()`` as a task, yielding its nodes' chunks as they come (from the
    event loop or from worker threads); then whatever it raised. A caller that
    stops reading cancels it."""
    import asyncio

    chunks: asyncio.Queue[Any] = asyncio.Queue()
    events = asyncio.get_running_loop()
    # From a worker thread too: a put is queued before the node's result is, so
    # every chunk comes out before _DONE.
    loop.live = lambda item: events.call_soon_threadsafe(chunks.put_nowait, item)
    runner = asyncio.ensure_future(run())
    runner.add_done_callback(lambda _: chunks.put_nowait(_DONE))
    try:
        while (item := await chunks.get()) is not _DONE:
            yield item
    finally:
        loop.live = None
        if not runner.done():
            runner.cancel()
            await asyncio.wait({runner})
    runner.result()
