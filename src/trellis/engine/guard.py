"""Calling a node that has production options: retries, timeout, circuit
breaker, approval gate, ``on_error`` routing.

Plain nodes never come here (the drivers call them directly); these wrappers
are chosen at compile time for the nodes that need them.
"""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Any

from trellis.engine.context import CURRENT_ATTEMPT
from trellis.engine.durable import RETRY, RETRY_IDX
from trellis.errors import InvalidUpdateError, NodeError
from trellis.graph.managed import managed_note
from trellis.observe.events import EventKind
from trellis.persist.base import PendingWrite
from trellis.resilience.retry import RetryState, arun_with_retry, run_with_retry, select_policy
from trellis.resilience.timeout import (
    acall_sync_with_timeout,
    acall_with_timeout,
    call_with_timeout,
)
from trellis.types import END

if TYPE_CHECKING:
    from trellis.engine.task import Task

__all__ = ["acall_guarded", "call_guarded", "route_failure"]

SKIPPED: Any = object()


def _gate(task: Task) -> bool:
    """Run the node's approval gate; False when the node must not run."""
    approval = task.node.approval
    if approval is None:
        return True
    return _follow(task, approval.gate(task))


async def _agate(task: Task) -> bool:
    """The async twin of ``_gate``."""
    approval = task.node.approval
    if approval is None:
        return True
    return _follow(task, await approval.agate(task))


def _follow(task: Task, outcome: Any) -> bool:
    """Apply a gate's outcome to ``task``; False when the node must not run."""
    update = getattr(outcome, "update", None)
    goto = getattr(outcome, "goto", None)
    if update:
        writable = task.loop.plan.writable
        unknown = sorted(set(update) - writable)
        if unknown:
            raise InvalidUpdateError(
                f"approval edit for node {task.name!r} names unknown state key(s) "
                f"{', '.join(map(repr, unknown))}" + managed_note(unknown, task.loop.plan.managed)
            )
        task.pre_update = dict(update)  # the gate has already shown it to the node's input
    if goto is not None:
        task.halt = True
        if goto != END:
            task.add_goto(goto)
        return False
    return True


def _retry_write(task: Task, state: RetryState, exc: BaseException | None) -> PendingWrite | None:
    """The write that lets a retry survive a crash; None when there is none to save."""
    if exc is None or state.next_attempt_at is None or not task.loop.saves_writes():
        return None  # under durability="exit", saved with the run's one save instead
    return PendingWrite(task.id, task.name, RETRY_IDX, RETRY, state.to_dict())


def _persist_retry(task: Task, state: RetryState, exc: BaseException | None) -> None:
    write = _retry_write(task, state, exc)
    if write is not None:
        loop = task.loop
        loop.saver.put_writes(
            loop.thread_id, loop.checkpoint_id, [write], checkpoint_ns=loop.checkpoint_ns
        )


async def _apersist_retry(task: Task, state: RetryState, exc: BaseException | None) -> None:
    write = _retry_write(task, state, exc)
    if write is not None:
        loop = task.loop
        await loop.saver.aput_writes(
            loop.thread_id, loop.checkpoint_id, [write], checkpoint_ns=loop.checkpoint_ns
        )


def _observe_retry(task: Task, state: RetryState, exc: BaseException | None) -> None:
    observer = task.loop.observer
    if observer is None or exc is None or state.next_attempt_at is None:
        return
    observer.retry(task, max(0.0, state.next_attempt_at - time.time()), exc)


def _enter(task: Task, breaker: Any) -> Any:
    """Ask the node's breaker for a permit (raises CircuitOpenError when open)."""
    if breaker is None:
        return None
    permit, moved = breaker.admit(task.name)
    if moved:
        _circuit_moved(task, breaker, moved)
    return permit


def _leave(task: Task, breaker: Any, permit: Any, exc: BaseException | None) -> None:
    """Tell the breaker how the call went."""
    if breaker is None:
        return
    moved = breaker.record_success(permit) if exc is None else breaker.record_failure(exc, permit)
    if moved:
        _circuit_moved(task, breaker, moved)


def _release(breaker: Any, permit: Any) -> None:
    """The call ended with no verdict on the dependency: free its half-open trial slot.

    That is a ``BaseException`` that is not an ``Exception``: ``CancelledError``
    (a sibling failed, or the caller cancelled the run), ``GraphInterrupt`` (the
    node called ``interrupt()``), ``KeyboardInterrupt``. An interrupt counts as
    no verdict rather than a success because the node may ask before it calls
    the dependency at all; the re-run on resume is the trial. Without the
    release, a half-open breaker would wait forever on a trial that never answers.
    """
    if breaker is not None:
        breaker.release(permit)


def _circuit_moved(task: Task, breaker: Any, moved: Any) -> None:
    # The changes this task's call made, as the breaker recorded them: comparing
    # states before and after would also count (or hide) a sibling's changes.
    observer = task.loop.observer
    if observer is None:
        return
    for old, new in moved:
        data = {"breaker": breaker.name, "from": str(old), "to": str(new)}
        observer.instant(EventKind.CIRCUIT_STATE, task, status=str(new), data=data)


def _attempt_sync(task: Task) -> Any:
    node = task.node
    args, kwargs = task.args()
    breaker = node.circuit
    permit = _enter(task, breaker)
    # Which attempt runs, for what an abandoned one still writes (Task.current_attempt).
    token = CURRENT_ATTEMPT.set(task.attempt) if node.timeout is not None else None
    try:
        if node.timeout is not None:
            out = call_with_timeout(node.fn, args, kwargs, node.timeout, node=node.name)
        else:
            out = node.fn(*args, **kwargs)
    except Exception as exc:
        _leave(task, breaker, permit, exc)
        raise
    except BaseException:
        _release(breaker, permit)
        raise
    finally:
        if token is not None:
            CURRENT_ATTEMPT.reset(token)
    _leave(task, breaker, permit, None)
    return out


def call_guarded(task: Task) -> Any:
    """Run a guarded node in the calling thread; ``SKIPPED`` if a gate said no."""
    if not _gate(task):
        return SKIPPED
    node = task.node
    if not node.policies:
        task.started = time.time()
        return _attempt_sync(task)
    asked = task.interrupt_count  # the gate's interrupt, if any, is not the node's to ask

    def attempt(state: RetryState) -> Any:
        task.attempt = state.attempt
        task.started = task.started or state.first_attempt_at
        task.interrupt_count = asked  # a retried node asks its interrupts again from the first
        task.streamed = None
        return _attempt_sync(task)

    def on_attempt(state: RetryState, exc: BaseException | None) -> None:
        _observe_retry(task, state, exc)
        task.attempt = state.attempt
        _persist_retry(task, state, exc)

    try:
        return run_with_retry(attempt, node.policies, on_attempt=on_attempt, state=task.retry)
    except Exception as exc:
        if _gave_up(task, exc):
            raise NodeError(node.name, task.attempt, exc) from exc
        raise


async def _attempt_async(task: Task) -> Any:
    node = task.node
    args, kwargs = task.args()
    breaker = node.circuit
    permit = _enter(task, breaker)
    token = CURRENT_ATTEMPT.set(task.attempt) if node.timeout is not None else None
    try:
        if node.is_async:
            if node.timeout is not None:
                out = await acall_with_timeout(node.fn, args, kwargs, node.timeout, node=node.name)
            else:
                out = await node.fn(*args, **kwargs)
        elif node.subgraph is not None:
            call = node.subgraph.acall
            out = await acall_with_timeout(call, args, kwargs, node.timeout, node=node.name)
        else:
            out = await acall_sync_with_timeout(node.fn, args, kwargs, node.timeout, node=node.name)
    except Exception as exc:
        _leave(task, breaker, permit, exc)
        raise
    except BaseException:
        _release(breaker, permit)
        raise
    finally:
        if token is not None:
            CURRENT_ATTEMPT.reset(token)
    _leave(task, breaker, permit, None)
    return out


async def acall_guarded(task: Task) -> Any:
    """The async twin of ``call_guarded``."""
    if not await _agate(task):
        return SKIPPED
    node = task.node
    if not node.policies:
        task.started = time.time()
        return await _attempt_async(task)
    asked = task.interrupt_count

    async def attempt(state: RetryState) -> Any:
        task.attempt = state.attempt
        task.started = task.started or state.first_attempt_at
        task.interrupt_count = asked  # a retried node asks its interrupts again from the first
        task.streamed = None
        return await _attempt_async(task)

    async def on_attempt(state: RetryState, exc: BaseException | None) -> None:
        _observe_retry(task, state, exc)
        task.attempt = state.attempt
        await _apersist_retry(task, state, exc)

    try:
        return await arun_with_retry(
            attempt, node.policies, on_attempt=on_attempt, state=task.retry
        )
    except Exception as exc:
        if _gave_up(task, exc):
            raise NodeError(node.name, task.attempt, exc) from exc
        raise


def _gave_up(task: Task, exc: Exception) -> bool:
    """Whether ``exc`` ends retries the node's policy made for it (then NodeError).
    An exception no policy covers, or one on the only attempt, is the node's own
    and propagates as is, as without a policy and as LangGraph, so that callers
    catching its type still do."""
    return task.attempt > 1 and select_policy(task.node.policies, exc) is not None


def route_failure(task: Task, exc: BaseException) -> Any:
    """A node failed for good: hand it to its ``error_handler`` or ``on_error`` node.

    Returns False when neither is set (the failure propagates), True when the
    failure was routed, or — for an async ``error_handler`` — the awaitable
    whose result the caller passes to ``finish_handled``.
    """
    if not isinstance(exc, Exception):
        return False
    if task.node.approval is not None and not task.started:
        return False  # its gate raised: the node never ran (started is set once it passed)
    node = task.node
    handler = node.error_handler
    if handler is not None or node.on_error is not None:
        task.handled = exc  # observers still see the failure the route hides
    if handler is not None:
        # LangGraph's error_handler: handler(state) or handler(state, error) with
        # error.node and error.error; what it returns replaces the node's result.
        error = exc if isinstance(exc, NodeError) else NodeError(task.name, task.attempt, exc)
        out = handler(task.input, error) if node.handler_takes_error else handler(task.input)
        if inspect.isawaitable(out):
            return out
        finish_handled(task, out)
        return True
    target = task.node.on_error
    if target is None:
        return False
    original = exc.original if isinstance(exc, NodeError) else exc
    record = {
        "node": task.name,
        "error_type": type(original).__name__,
        "message": str(original),
        "attempts": task.attempt,
        "time": time.time(),
    }
    update, task.update = {**(task.update or {}), "errors": [record]}, None
    task._set_update(update)  # after a reviewer's edit, if the gate holds one
    task.goto = [target] if target != END else []
    task.halt = True
    task.error = None
    task.done = True
    return True


def finish_handled(task: Task, out: Any) -> None:
    """The error handler's result becomes the task's (after a reviewer's edit, if the
    gate holds one); the failed node's edges do not fire."""
    task.update = None
    task.goto = []
    task.accept(out)
    task.halt = True
    task.error = None
    task.done = True
