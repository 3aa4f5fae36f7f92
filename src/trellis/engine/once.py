"""``once()``: a side effect that runs at most once per task, across re-runs.

A node re-runs from its first line when it is retried, resumed after an
``interrupt`` or recovered after a crash. Wrapping a side effect in
``once(key, fn)`` records its result with the task's pending writes the moment
it returns, so every later run of that task gets the recorded result instead
of calling ``fn`` again.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from trellis.engine.context import current_task
from trellis.engine.durable import ONCE, once_write
from trellis.persist.base import PendingWrite

if TYPE_CHECKING:
    from trellis.engine.task import Task

__all__ = ["aonce", "once"]

T = TypeVar("T")

# Calls in flight, per task object and key. A timed-out attempt is abandoned, not
# stopped: its thread may still be inside fn when the retry reaches the same
# once(); the retry must wait for that call's result, not make a second call.
_in_flight: dict[tuple[Task, str], tuple[threading.Event, int]] = {}  # and the caller's thread
_in_flight_lock = threading.Lock()
_in_flight_async: dict[tuple[Task, str], Any] = {}  # aonce's: asyncio futures, one loop


def _keep(task: Task, key: str, result: Any) -> None:
    task.once = {**(task.once or {}), key: result}


def _once_writes(task: Task) -> list[PendingWrite]:
    """The write saving ``task``'s recorded results, if its run saves writes mid-step."""
    if not task.loop.saves_writes():
        return []  # none, or saved with the run's one save (durability="exit")
    return [once_write(task, dict(task.once or {}))]


def once(key: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` at most once for this task and ``key``.

    >>> def charge(state):
    ...     receipt = once("charge", payments.charge, state["card"], state["amount"])
    ...     approved = interrupt({"receipt": receipt})  # resuming does not charge again
    ...     return {"receipt": receipt, "approved": approved}

    The result must be serializable by the checkpointer.
    """
    task = current_task("once()")
    while True:
        if task.once and key in task.once:
            return task.once[key]  # type: ignore[no-any-return]
        me = threading.get_ident()
        with _in_flight_lock:
            running = _in_flight.get((task, key))
            if running is None:
                done = threading.Event()
                _in_flight[task, key] = (done, me)
        if running is None:
            break
        if running[1] == me:  # waiting would wait for ourselves
            raise RuntimeError(
                f"once({key!r}) in node {task.name!r} was called again from inside its own fn"
            )
        running[0].wait()  # then take its result, or call fn if it raised
    try:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: close it so no warning outlives the error
            raise TypeError(
                f"once({key!r}) in node {task.name!r} got an async function; use `await aonce(...)`"
            )
        _keep(task, key, result)
    finally:
        with _in_flight_lock:
            del _in_flight[task, key]
        done.set()
    writes = _once_writes(task)
    if writes:
        loop = task.loop
        loop.saver.put_writes(
            loop.thread_id, loop.checkpoint_id, writes, checkpoint_ns=loop.checkpoint_ns
        )
    return result


async def aonce(key: str, fn: Callable[..., Awaitable[T] | T], *args: Any, **kwargs: Any) -> T:
    """The async twin of ``once``: ``fn`` may be sync or async."""
    import asyncio

    task = current_task("aonce()")
    if task.once and key in task.once:
        return task.once[key]  # type: ignore[no-any-return]
    while (running := _in_flight_async.get((task, key))) is not None:
        if running is asyncio.current_task():  # waiting would wait for ourselves
            raise RuntimeError(
                f"aonce({key!r}) in node {task.name!r} was called again from inside its own fn"
            )
        # An attempt that timed out was cancelled, but the call it made goes on
        # (shielded): wait for it rather than make a second call.
        with contextlib.suppress(Exception):
            await asyncio.shield(running)
        if task.once and key in task.once:
            found: T = await _persisted(task, key)
            return found

    async def call() -> Any:
        result = fn(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    running = asyncio.ensure_future(call())
    _in_flight_async[task, key] = running

    def finished(done: asyncio.Future[Any]) -> None:
        _in_flight_async.pop((task, key), None)
        if not done.cancelled() and done.exception() is None:
            _keep(task, key, done.result())  # even if nobody awaits

    running.add_done_callback(finished)
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        # The run was cancelled, the call goes on: save its result once it is in,
        # so that resuming the thread does not make the call again.
        running.add_done_callback(lambda done: _save_later(task, key, done))
        raise
    result: T = await _persisted(task, key)
    return result


_saving: set[Any] = set()  # saves in flight after a cancel: kept from the collector


def _save_later(task: Task, key: str, done: Any) -> None:
    import asyncio

    if done.cancelled() or done.exception() is not None:
        return

    async def save() -> None:
        loop = task.loop
        if not loop.saves_writes():
            return
        try:
            # A run resumed meanwhile (same checkpoint, same task id) may have saved
            # results of its own since: add this one to them, never replace them.
            saved = await loop.saver.aget_tuple(
                loop.thread_id, loop.checkpoint_id, checkpoint_ns=loop.checkpoint_ns
            )
            kept: dict[str, Any] = next(
                (
                    w.value
                    for w in (saved.pending_writes if saved is not None else ())
                    if w.task_id == task.id and w.channel == ONCE
                ),
                {},
            )
            if key in kept:
                return
            # This task's results as of now (a retry of it may have added more since the
            # read), then what a resumed run saved, which wins.
            write = once_write(task, {**(task.once or {}), **kept})
            await loop.saver.aput_writes(
                loop.thread_id, loop.checkpoint_id, [write], checkpoint_ns=loop.checkpoint_ns
            )
        except (Exception, asyncio.CancelledError):  # nobody awaits this: say so
            logging.getLogger("trellis").exception(
                "could not save the result of aonce(%r) in node %r after its run was "
                "cancelled; resuming the thread calls it again",
                key,
                task.name,
            )

    saving = asyncio.ensure_future(save())
    _saving.add(saving)
    saving.add_done_callback(_saving.discard)


async def _persisted(task: Task, key: str) -> Any:
    """``task``'s recorded result for ``key``, after saving it with the task's writes."""
    result = task.once[key]  # type: ignore[index]
    writes = _once_writes(task)
    if writes:
        loop = task.loop
        await loop.saver.aput_writes(
            loop.thread_id, loop.checkpoint_id, writes, checkpoint_ns=loop.checkpoint_ns
        )
    return result
