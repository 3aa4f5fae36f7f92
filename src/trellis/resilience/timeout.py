"""Per-attempt timeouts for sync and async nodes.

Sync nodes run in a worker thread and the caller stops waiting at the deadline.
Python cannot kill a thread, so a timed-out thread is *abandoned*: it keeps
running until the node's code returns on its own (its result is dropped) and
its side effects still happen. The workers are daemon threads, so an abandoned
one never keeps the interpreter from exiting, and the pool grows a fresh worker
rather than queueing behind a hung one.

Async nodes are cancelled with ``asyncio.timeout``. That only works when the node
gives the event loop control back; a node that calls ``time.sleep`` or spins the
CPU holds the loop, and nothing inside the loop can notice. One watchdog thread
outside the loop keeps a heap of deadlines and marks the attempt timed out as
soon as its deadline passes (calling ``on_expired`` from that thread, so the
engine can report a blocked loop while it is still blocked); when the node
finally returns, its result is discarded and :class:`NodeTimeoutError` is raised.
The watchdog does not cancel the task itself: ``asyncio.timeout`` already does at
the node's first ``await``, and a second, foreign cancellation would surface as a
bare ``CancelledError`` instead of a timeout.

>>> call_with_timeout(sum, ([1, 2],), {}, 1.0, node="adder")
3
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from trellis.errors import NodeTimeoutError

__all__ = ["acall_sync_with_timeout", "acall_with_timeout", "call_with_timeout"]

T = TypeVar("T")
OnExpired = Callable[[str, float], None]
"""``on_expired(node, timeout)``, called from the watchdog thread at the deadline."""

_log = logging.getLogger("trellis.resilience")


class _DaemonPool:
    """An elastic pool of daemon threads: reuses idle workers, never waits for a busy one.

    ``concurrent.futures.ThreadPoolExecutor`` joins its threads at exit (one hung
    node would hang the interpreter) and queues work behind busy threads (hung
    nodes would starve the rest), so neither fits abandoned work.
    """

    def __init__(self, idle_timeout: float = 30.0) -> None:
        self._idle_timeout = idle_timeout
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        # One token per idle worker; a submit takes a token or starts a worker.
        self._idle = threading.Semaphore(0)
        self._names = itertools.count(1)

    def submit(self, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((future, call))
        if not self._idle.acquire(blocking=False):
            name = f"trellis-timeout-{next(self._names)}"
            threading.Thread(target=self._work, name=name, daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            try:
                future, call = self._queue.get(timeout=self._idle_timeout)
            except queue.Empty:
                # Retire only if a token is free; none free means a submit has
                # counted on an idle worker and its item is on the way.
                if self._idle.acquire(blocking=False):
                    return
                continue
            self._run_one(future, call)
            del future, call  # do not pin the last result while idle

    def _run_one(self, future: Future[Any], call: Callable[[], Any]) -> None:
        if not future.set_running_or_notify_cancel():
            self._idle.release()
            return
        try:
            result = call()
        except BaseException as exc:
            self._idle.release()  # idle before the caller resumes, so the next submit reuses us
            future.set_exception(exc)
        else:
            self._idle.release()
            future.set_result(result)


class _Deadline:
    __slots__ = ("done", "expired", "node", "on_expired", "timeout", "when")

    def __init__(self, when: float, node: str, timeout: float, on_expired: OnExpired | None):
        self.when = when
        self.node = node
        self.timeout = timeout
        self.on_expired = on_expired
        self.done = False
        self.expired = False


class _Watchdog:
    """One daemon thread for every async timeout: a heap of deadlines, no thread per call."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._seq = itertools.count()
        self._finished = 0  # entries done before their deadline, still in the heap
        self._thread: threading.Thread | None = None

    def watch(self, timeout: float, node: str, on_expired: OnExpired | None) -> _Deadline:
        entry = _Deadline(time.monotonic() + timeout, node, timeout, on_expired)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="trellis-watchdog", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._heap, (entry.when, next(self._seq), entry))
            if self._heap[0][2] is entry:
                self._cond.notify()
        return entry

    def finish(self, entry: _Deadline) -> None:
        with self._cond:
            if entry.done:
                return
            entry.done = True
            if not entry.expired:
                self._finished += 1
                # Lazy deletion, compacted when finished entries dominate the heap.
                if self._finished > 256 and self._finished * 2 > len(self._heap):
                    self._heap = [item for item in self._heap if not item[2].done]
                    heapq.heapify(self._heap)
                    self._finished = 0

    def _run(self) -> None:
        while True:
            fired: list[_Deadline] = []
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    entry = heapq.heappop(self._heap)[2]
                    if entry.done:
                        self._finished -= 1
                    else:
                        entry.expired = True
                        fired.append(entry)
                if not fired and self._heap:  # all popped entries may have been done ones
                    self._cond.wait(self._heap[0][0] - now)
            for entry in fired:  # outside the lock: a callback may take its time
                if entry.on_expired is not None:
                    try:
                        entry.on_expired(entry.node, entry.timeout)
                    except Exception:
                        _log.exception("on_expired callback for node %r failed", entry.node)


_pool = _DaemonPool()
_watchdog = _Watchdog()


def _reset_after_fork() -> None:
    # Threads do not survive fork(); the child starts with fresh, empty helpers.
    global _pool, _watchdog
    _pool = _DaemonPool()
    _watchdog = _Watchdog()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _check(timeout: float, node: str) -> None:
    if not timeout > 0:  # also rejects NaN
        raise ValueError(
            f"timeout of node {node!r} must be a positive number of seconds, got {timeout!r}"
        )


def call_with_timeout(
    fn: Callable[..., T],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    timeout: float | None,
    *,
    node: str,
) -> T:
    """Run ``fn(*args, **kwargs)`` in a worker thread; give up after ``timeout`` seconds.

    Raises :class:`~trellis.errors.NodeTimeoutError` at the deadline and abandons
    the thread (see the module docstring). The caller's context variables are
    visible in the thread. Exceptions from ``fn`` propagate unchanged.
    ``timeout=None`` calls ``fn`` inline, with no thread.

    >>> call_with_timeout(max, (3, 7), {}, 0.5, node="pick")
    7
    """
    if timeout is None:
        return fn(*args, **kwargs)
    _check(timeout, node)
    context = contextvars.copy_context()
    future = _pool.submit(lambda: context.run(fn, *args, **kwargs))
    try:
        return future.result(timeout)
    except TimeoutError:
        if not future.done():
            future.cancel()  # not started yet: it never will be
            raise NodeTimeoutError(node, timeout) from None
        return future.result()  # finished in the instant between the two checks


async def acall_sync_with_timeout(
    fn: Callable[..., T],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    timeout: float | None,
    *,
    node: str,
) -> T:
    """Run a sync ``fn`` in a worker thread from async code, without blocking the loop.

    Same abandonment rules as :func:`call_with_timeout`; ``timeout=None`` still
    runs in a thread (so the loop stays free) but waits as long as it takes.

    >>> asyncio.run(acall_sync_with_timeout(max, (3, 7), {}, 0.5, node="pick"))
    7
    """
    import asyncio  # imported on use: it is slow to import and sync runs never need it

    if timeout is not None:
        _check(timeout, node)
    context = contextvars.copy_context()
    future = asyncio.wrap_future(_pool.submit(lambda: context.run(fn, *args, **kwargs)))
    try:
        async with asyncio.timeout(timeout) as scope:
            return await future
    except TimeoutError:
        if timeout is not None and scope.expired():
            raise NodeTimeoutError(node, timeout) from None
        raise


async def acall_with_timeout(
    coro_fn: Callable[..., Awaitable[T]],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    timeout: float | None,
    *,
    node: str,
    on_expired: OnExpired | None = None,
) -> T:
    """Await ``coro_fn(*args, **kwargs)`` for at most ``timeout`` seconds.

    At the deadline the node is cancelled at its next ``await``. If it blocks the
    event loop instead, the watchdog thread marks it timed out at the deadline
    (calling ``on_expired(node, timeout)`` from that thread) and, when the node
    returns, its result is discarded and :class:`~trellis.errors.NodeTimeoutError`
    is raised. An exception the node raises itself propagates unchanged, even
    past the deadline. ``timeout=None`` just awaits.

    >>> async def slow():
    ...     await asyncio.sleep(10)
    >>> asyncio.run(acall_with_timeout(slow, (), {}, 0.01, node="slow"))
    Traceback (most recent call last):
    trellis.errors.NodeTimeoutError: node 'slow' timed out after 0.01s
    """
    import asyncio  # imported on use: it is slow to import and sync runs never need it

    if timeout is None:
        return await coro_fn(*args, **kwargs)
    _check(timeout, node)
    entry = _watchdog.watch(timeout, node, on_expired)
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout) as scope:
            result = await coro_fn(*args, **kwargs)
    except TimeoutError:
        if scope.expired():
            raise NodeTimeoutError(node, timeout) from None
        raise
    finally:
        _watchdog.finish(entry)
    if entry.expired or time.monotonic() >= entry.when:
        _log.warning(
            "node %r blocked the event loop for %.3fs, past its %gs timeout; result discarded",
            node,
            time.monotonic() - started,
            timeout,
        )
        raise NodeTimeoutError(node, timeout)
    return result
