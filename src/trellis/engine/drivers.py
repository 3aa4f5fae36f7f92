"""The two thin drivers around ``RunLoop``: one sync, one async.

They do the I/O the loop refuses to do: call nodes and routers, run a step's
tasks concurrently, and hand results back. A lone task runs inline; the sync
driver never starts an event loop.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import os
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from time import perf_counter
from typing import Any

from trellis.engine.context import CURRENT_TASK
from trellis.engine.durable import Effect, pending_writes
from trellis.engine.guard import (
    SKIPPED,
    acall_guarded,
    call_guarded,
    finish_handled,
    route_failure,
)
from trellis.engine.interrupts import GraphInterrupt, aabandoned, abandoned
from trellis.engine.live import arun_live, run_live, streams_live
from trellis.engine.loop import RunLoop
from trellis.engine.pools import LazyPool
from trellis.engine.streaming import (
    checkpoint_chunks,
    debug_start,
    interrupt_chunks,
    step_chunks,
    task_chunks,
)
from trellis.engine.subgraph import ParentCommand
from trellis.engine.task import Task
from trellis.errors import InvalidUpdateError, NodeCancelledError, NodeTimeoutError, TrellisError
from trellis.persist.base import Put
from trellis.types import START

__all__ = ["arun", "arun_steps", "asteps", "event_chunks", "run_steps"]

_WORKERS = min(32, (os.cpu_count() or 1) + 4)
_POOL = LazyPool("trellis", _WORKERS)  # for parallel steps and sync nodes under ainvoke


class StepFailed(Exception):
    """A task of a step failed with ``error``; the loop records what the others did."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


# -- sync -------------------------------------------------------------------


def run_task(task: Task) -> None:
    """Run one task to completion in the calling thread."""
    node = task.node
    token = CURRENT_TASK.set(task)
    observer = task.loop.observer
    entered = None
    if observer is not None:
        started = task.began = perf_counter()
        if observer.scoped:
            entered = observer.enter(task)
    messages = task.loop.messages
    streaming = None
    try:
        if messages is not None:
            streaming = messages.enter(task)
        if node.guarded:
            out = call_guarded(task)
            if out is SKIPPED:
                task.finish_skipped()
                return
        elif node.takes_state and not node.injected:
            out = node.fn(task.input)
        else:
            args, kwargs = task.args()
            out = node.fn(*args, **kwargs)
        if node.is_async or (type(out) is not dict and inspect.isawaitable(out)):
            if inspect.iscoroutine(out):
                out.close()
            raise TypeError(
                f"node {task.name!r} is async; run the graph with ainvoke/astream instead"
            )
        task.accept(out)
        for branch in node.branches:
            args, kwargs = task.router_args(branch)
            result = branch.router(*args, **kwargs)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError(
                    f"the router after {task.name!r} is async; use ainvoke/astream instead"
                )
            task.route(branch, result)
        task.done = True
    except GraphInterrupt as signal:
        task.interrupts = list(signal.interrupts)
    except ParentCommand:
        raise  # a subgraph steering its parent: not this node's failure
    except BaseException as exc:
        try:
            routed = route_failure(task, exc)
        except GraphInterrupt as signal:  # the error_handler asked a human: the task waits
            task.interrupts = list(signal.interrupts)
            return
        except Exception as failed:  # the error_handler failed too: the task fails with it
            _fail(task, failed, by_handler=True)
            raise
        if inspect.isawaitable(routed):
            routed.close()  # type: ignore[attr-defined]
            routed = False
            exc.add_note(f"the error_handler of {task.name!r} is async: run with ainvoke")
        if not routed:
            _fail(task, exc)
            raise
    finally:
        CURRENT_TASK.reset(token)
        if streaming is not None:
            messages.leave(task, streaming)  # type: ignore[union-attr]
        if observer is not None:
            task.duration = perf_counter() - started
            if entered:
                observer.leave(entered)


def _fail(task: Task, error: BaseException, *, by_handler: bool = False) -> None:
    """``task`` failed with ``error``: its own, or (``by_handler``) its error_handler's."""
    task.error = error
    _name_the_node(task, error, "the error_handler of node" if by_handler else "node")


def _name_the_node(task: Task, exc: BaseException, who: str = "node") -> None:
    # A node's own exception propagates unchanged (callers catch its type), so
    # say where it came from in a note rather than by wrapping it.
    if isinstance(exc, Exception) and not isinstance(exc, TrellisError):
        exc.add_note(f"raised by {who} {task.name!r} at step {task.step} (task {task.id})")


def _keeper(loop: RunLoop) -> Any:
    """For a parallel step: save each finished task's writes as it finishes (None: don't)."""
    if not loop.saves_writes():
        return None
    saver, thread, checkpoint, ns, outer = (
        loop.saver,
        loop.thread_id,
        loop.checkpoint_id,
        loop.checkpoint_ns,
        loop.outer,
    )

    def keep(task: Task) -> None:
        if outer is not None and _abandoned(outer):
            return  # the step's perform() stops the run
        if task.done and not task.interrupts:
            saver.put_writes(thread, checkpoint, pending_writes([task]), checkpoint_ns=ns)

    return keep


def run_tasks(tasks: list[Task]) -> None:
    """Run a step's tasks; several at once share the thread pool.

    Rather than one pool job per task (a submit costs more than a small node),
    a few workers — the calling thread among them — drain a shared queue. A
    failure does not stop the others: every task of the step runs, as under
    LangGraph (which starts them all at once), so which ones finished — and are
    kept, not re-run on resume — does not depend on thread timing.
    """
    if not tasks:
        return
    if len(tasks) == 1:
        try:
            run_task(tasks[0])
        except Exception as exc:
            raise StepFailed(exc) from exc
        return
    queue = deque(tasks)
    failures: list[tuple[Task, BaseException]] = []
    keep = _keeper(tasks[0].loop)

    def drain() -> None:
        while True:
            try:
                task = queue.popleft()
            except IndexError:
                return
            try:
                contextvars.copy_context().run(run_task, task)
            except BaseException as exc:
                failures.append((task, exc))
                continue
            if keep:  # a crash before the step ends must not lose this task's work
                try:
                    keep(task)
                except BaseException as exc:
                    exc.add_note(f"while saving what node {task.name!r} wrote at step {task.step}")
                    task.done = False  # its writes cannot be kept: it runs again on resume
                    task.error = exc
                    failures.append((task, exc))

    from concurrent.futures import wait

    pool = _POOL.get()
    workers = min(len(tasks) - 1, _WORKERS)
    limit = tasks[0].loop.config.get("max_concurrency")
    if limit is not None:  # config max_concurrency counts the calling thread too
        workers = min(workers, limit - 1)
    helpers = [pool.submit(drain) for _ in range(workers)]
    drain()
    # Helpers still queued (every worker busy, e.g. in a nested graph's step) are
    # not waited for: the queue is empty, so they would find nothing to do.
    wait([h for h in helpers if not h.cancel()])
    if failures:
        for _, error in failures:
            if not isinstance(error, Exception):
                raise error  # Ctrl-C or an exit, as from a one-task step: not a failure
        # The first failure in task order, so the error reported is deterministic.
        _, error = min(failures, key=lambda f: tasks.index(f[0]))
        raise StepFailed(error) from error


def _applies_input(tasks: list[Task]) -> bool:
    """The step only applies the run's input: no user code runs in it (a router
    on START would), so its checkpoint and the input checkpoint before it can be
    committed together. (Not under ``debug``, whose stream shows each checkpoint
    as it is saved.)"""
    return len(tasks) == 1 and tasks[0].name == START and not tasks[0].node.branches


def perform(loop: RunLoop) -> None:
    """Make the saver calls the loop asked for, in order."""
    if loop.outer is not None and _abandoned(loop.outer):
        # Its thread runs on, but the node's next attempt (or the parent's failure)
        # owns what this run would write: writing would race it for the checkpoints.
        task = loop.outer[0]
        raise NodeTimeoutError(task.name, task.node.timeout or 0.0)
    effects, loop.effects = loop.effects, []
    if len(effects) == 1:  # nearly every step: one checkpoint
        effect = effects[0]
        getattr(loop.saver, effect.name)(**effect.kwargs)
        _saved(loop, effect)
        return
    for name, kwargs, done in _calls(loop.saver, effects):
        getattr(loop.saver, name)(**kwargs)
        for effect in done:
            _saved(loop, effect)


def _abandoned(outer: tuple[Task, int] | None) -> bool:
    """Whether a run inside node attempt ``outer`` (task, attempt), or inside one
    that encloses it, runs on in a thread abandoned when that attempt timed out:
    its task has moved on to a later attempt, or failed or finished without it.
    (Checked before each write; a write already under way still lands.)"""
    while outer is not None:
        task, attempt = outer
        if task.attempt != attempt or task.error is not None or task.done:
            return True
        outer = task.loop.outer
    return False


def _calls(
    saver: Any, effects: list[Effect], prefix: str = ""
) -> Iterator[tuple[str, dict[str, Any], list[Effect]]]:
    """The saver calls for ``effects``: consecutive puts that each extend the one
    before become one ``put_many`` (one transaction, one commit)."""
    if not _batches(type(saver), prefix):
        for effect in effects:
            yield effect.name, effect.kwargs, [effect]
        return
    i = 0
    while i < len(effects):
        group = [effects[i]]
        while i + len(group) < len(effects) and _extends(group[-1], effects[i + len(group)]):
            group.append(effects[i + len(group)])
        i += len(group)
        if len(group) == 1:
            yield group[0].name, group[0].kwargs, group
            continue
        first = group[0].kwargs
        puts = [
            Put(e.kwargs["checkpoint"], e.kwargs["metadata"], e.kwargs["writes"]) for e in group
        ]
        kwargs = {
            "thread_id": first["thread_id"],
            "puts": puts,
            "expected_head": first["expected_head"],
            "checkpoint_ns": first["checkpoint_ns"],
        }
        yield "put_many", kwargs, group


def _batches(cls: type, prefix: str) -> bool:
    """Whether puts to a ``cls`` saver may be batched into ``put_many`` (``prefix``
    "a": ``aput``/``aput_many``). Not when a subclass overrides ``put`` below the
    class that defines ``put_many``: it wants to see every checkpoint (an audit, a
    retry wrapper), and ``put_many`` would go around it."""
    known = _BATCHES.get((cls, prefix))
    if known is None:
        many = _defined_in(cls, prefix + "put_many")
        one = _defined_in(cls, prefix + "put")
        known = _BATCHES[cls, prefix] = many is not None and (one is None or issubclass(many, one))
    return known


_BATCHES: dict[tuple[type, str], bool] = {}


def _defined_in(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in c.__dict__), None)


def _extends(before: Effect, after: Effect) -> bool:
    a, b = before.kwargs, after.kwargs
    return (
        before.name == after.name == "put"
        and a["thread_id"] == b["thread_id"]
        and a["checkpoint_ns"] == b["checkpoint_ns"]
        and b["expected_head"] == a["checkpoint"].id
    )


def _saved(loop: RunLoop, effect: Any) -> None:
    if effect.name != "put":
        return
    checkpoint = effect.kwargs["checkpoint"]
    if loop.observer is not None:
        loop.observer.checkpoint_saved(checkpoint.id, checkpoint.step)
    if "debug" in loop.modes:
        loop.saved = [*loop.saved, (checkpoint, effect.kwargs["metadata"])]


def run_steps(loop: RunLoop) -> Iterator[tuple[str, Any]]:
    """Drive ``loop`` to the end, yielding stream chunks for its modes."""
    obs = loop.observer
    if obs is None:
        yield from _steps(loop)
        return
    obs.run_start()
    try:
        for chunk in _steps(loop):
            yield chunk
            if obs.buffer:
                yield from event_chunks(obs)
    except GeneratorExit:  # the caller stopped reading: no more yields allowed
        obs.run_end(loop, cancelled=True)
        raise
    except BaseException as exc:
        obs.run_end(loop, cause(exc))
        yield from event_chunks(obs)  # how it failed, then the error
        raise
    obs.run_end(loop)
    yield from event_chunks(obs)


def cause(exc: BaseException) -> BaseException:
    """What a run failed of, as its caller sees it: a node's own error, not the
    StepFailed wrapping it."""
    return exc.error if isinstance(exc, StepFailed) else exc


def event_chunks(obs: Any) -> Iterator[tuple[str, Any]]:
    """The observer's buffered events, as ``"events"`` chunks."""
    return (("events", event) for event in obs.drain())


def _steps(loop: RunLoop) -> Iterator[tuple[str, Any]]:
    modes = loop.modes
    debug = "debug" in modes
    obs = loop.observer
    live = streams_live(loop)
    if loop.resuming and "values" in modes and loop.wrote_any:
        yield "values", loop.values_chunk()  # a resumed run first shows where it stands
    while True:
        tasks = loop.tick()
        if loop.effects and not (_applies_input(tasks) and not debug):
            perform(loop)
        if loop.saved:
            yield from checkpoint_chunks(loop)
        if not tasks:
            if loop.status == "interrupt_before" or loop.stopped_at_end:
                yield from interrupt_chunks(loop)
            break
        if debug:
            for task in tasks:
                if task.name != START and not task.done:
                    yield "debug", debug_start(task)
        todo = [t for t in tasks if not t.done] if loop.resuming_tasks else tasks
        if obs is not None:
            obs.step_start(loop, todo)
            if obs.buffer:  # streamed "events": out before the step runs, not after
                yield from event_chunks(obs)
        try:
            if live and not _applies_input(todo):
                yield from run_live(loop, todo, run_tasks)
            else:
                run_tasks(todo)
        except StepFailed as failure:
            if obs is not None:
                obs.step_end(loop, todo, failure.error)
            loop.fail(tasks)
            perform(loop)
            if modes:  # what the step produced before it failed, as LangGraph streams it
                yield from task_chunks(loop, todo, stopped=True)
            raise
        if obs is not None:
            obs.step_end(loop, todo, None)
        if any(t.interrupts for t in todo):
            try:
                loop.suspend(tasks)
            finally:  # what the step kept is saved even if its writes conflict
                perform(loop)
            settle(loop)
            if modes:
                yield from interrupt_chunks(loop, todo)
            return
        try:
            loop.commit(tasks)
        except InvalidUpdateError:
            if modes:  # LangGraph streamed each task's update before it merged them
                yield from task_chunks(loop, todo, stopped=True)
            raise
        if loop.effects:
            perform(loop)
        if obs is not None and obs.buffer:  # the step's end, once it is committed and saved
            yield from event_chunks(obs)
        if modes:
            yield from step_chunks(loop, tasks)
            if loop.saved:
                yield from checkpoint_chunks(loop)
        if loop.status == "interrupt_after":
            if modes:  # as at interrupt_before: an empty __interrupt__ marks the pause
                yield from interrupt_chunks(loop)
            break
    loop.finish()
    if loop.effects:
        perform(loop)
    settle(loop)


def settle(loop: RunLoop, *, failed: bool = False) -> None:
    """After the run's last save: report interrupts its new head left unanswered
    (``failed``: the run stopped on an error)."""
    if loop.waiting:
        left = loop.left_behind(failed=failed)
        if left:
            abandoned(loop, left)


async def asettle(loop: RunLoop, *, failed: bool = False) -> None:
    """The async twin of ``settle``."""
    if loop.waiting:
        left = loop.left_behind(failed=failed)
        if left:
            await aabandoned(loop, left)


# -- async ------------------------------------------------------------------


async def arun_task(task: Task) -> None:
    """Run one task on the event loop (sync nodes go to a worker thread)."""
    import asyncio  # on use: asyncio is slow to import, and `invoke` never needs it

    node = task.node
    token = CURRENT_TASK.set(task)
    observer = task.loop.observer
    entered = None
    if observer is not None:
        started = task.began = perf_counter()
        if observer.scoped:
            entered = observer.enter(task)
    messages = task.loop.messages
    streaming = None
    try:
        if messages is not None:
            streaming = messages.enter(task)
        if node.guarded:  # the guard builds the arguments itself, per attempt
            out = await acall_guarded(task)
            if out is SKIPPED:
                task.finish_skipped()
                return
        else:
            out = await _acall_node(task)
        task.accept(out)
        for branch in node.branches:
            args, kwargs = task.router_args(branch)
            result = branch.router(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            task.route(branch, result)
        task.done = True
    except GraphInterrupt as signal:
        task.interrupts = list(signal.interrupts)
    except ParentCommand:
        raise  # steering the parent: not this node's failure
    except asyncio.CancelledError as exc:
        if not _node_cancelled(exc):
            raise  # the run was cancelled, or a sibling failed
        await _afailed(task, NodeCancelledError(task.name))
    except BaseException as exc:
        await _afailed(task, exc)
    finally:
        CURRENT_TASK.reset(token)
        if streaming is not None:
            messages.leave(task, streaming)  # type: ignore[union-attr]
        if observer is not None:
            task.duration = perf_counter() - started
            if entered:
                observer.leave(entered)


def _node_cancelled(exc: BaseException) -> bool:
    """Whether ``exc``, just caught, is a ``CancelledError`` a node raised itself:
    nothing is cancelling the asyncio task it ran in."""
    import asyncio

    current = asyncio.current_task()
    cancelled = isinstance(exc, asyncio.CancelledError)
    return cancelled and current is not None and not current.cancelling()


async def _afailed(task: Task, exc: BaseException) -> None:
    """A task failed: its error_handler or on_error takes over, or ``exc`` is raised."""
    try:
        routed = route_failure(task, exc)
        if inspect.isawaitable(routed):
            finish_handled(task, await routed)
            return
    except GraphInterrupt as signal:  # the error_handler asked a human: the task waits
        task.interrupts = list(signal.interrupts)
        return
    except Exception as failed:  # the error_handler failed too: the task fails with it
        _fail(task, failed, by_handler=True)
        raise
    if not routed:
        _fail(task, exc)
        raise exc


async def _acall_node(task: Task) -> Any:
    """Call an unguarded node: async ones awaited, sync ones in a worker thread."""
    import asyncio

    node = task.node
    args, kwargs = task.args()
    if node.is_async:
        return await node.fn(*args, **kwargs)
    if node.subgraph is not None:
        return await node.subgraph.acall(*args, **kwargs)
    if node.name == START:
        return node.fn(*args, **kwargs)
    ctx = contextvars.copy_context()
    out = await asyncio.get_running_loop().run_in_executor(
        _POOL.get(), lambda: ctx.run(node.fn, *args, **kwargs)
    )
    return await out if inspect.isawaitable(out) else out


async def _arun_step(todo: list[Task]) -> None:
    if len(todo) == 1:  # one task: no asyncio task of its own
        try:
            await arun_task(todo[0])
        except Exception as exc:
            raise StepFailed(exc) from exc
    else:
        await arun_tasks(todo)


async def arun_tasks(tasks: list[Task]) -> None:
    import asyncio  # on use: asyncio is slow to import, and `invoke` never needs it

    if not tasks:  # a resumed step whose tasks all finished before the crash
        return
    loop = tasks[0].loop  # several tasks: asteps runs a lone one itself
    keep = loop.saves_writes()

    async def run_and_keep(task: Task) -> None:
        await arun_task(task)
        if keep and task.done and not task.interrupts:  # survive a crash before step end
            await loop.saver.aput_writes(
                loop.thread_id,
                loop.checkpoint_id,
                pending_writes([task]),
                checkpoint_ns=loop.checkpoint_ns,
            )

    run = run_and_keep
    limit = loop.config.get("max_concurrency")
    if limit is not None and limit < len(tasks):  # config max_concurrency
        slots = asyncio.Semaphore(limit)

        async def run_in_a_slot(task: Task) -> None:
            async with slots:
                await run_and_keep(task)

        run = run_in_a_slot
    running = {asyncio.ensure_future(run(task)): task for task in tasks}
    try:
        done, pending = await asyncio.wait(running, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        # The run itself was cancelled: so is every task still running, before
        # the caller resumes the thread and runs them again.
        for future in running:
            future.cancel()
        await asyncio.wait(running)
        raise
    failures = [f for f in done if not f.cancelled() and f.exception() is not None]
    if not failures:
        return
    # As LangGraph, a failure cancels the async siblings still running. A sync node
    # runs in a worker thread that a cancel cannot stop: it finishes anyway, so it
    # is waited for and its writes kept, as the sync driver keeps every sibling's,
    # rather than run (with its side effects) a second time on resume.
    for future in pending:
        node = running[future].node
        if node.is_async or node.subgraph is not None:
            future.cancel()
    if pending:
        await asyncio.wait(pending)
    # The first failure in task order, so the error reported is deterministic.
    first = min(failures, key=lambda f: tasks.index(running[f]))
    error = first.exception()
    assert error is not None
    raise StepFailed(error) from error


async def aperform(loop: RunLoop) -> None:
    """The async twin of ``perform``: the saver's ``a``-prefixed methods."""
    effects, loop.effects = loop.effects, []
    if len(effects) == 1:
        effect = effects[0]
        await getattr(loop.saver, "a" + effect.name)(**effect.kwargs)
        _saved(loop, effect)
        return
    for name, kwargs, done in _calls(loop.saver, effects, "a"):
        await getattr(loop.saver, "a" + name)(**kwargs)
        for effect in done:
            _saved(loop, effect)


async def arun_steps(loop: RunLoop) -> AsyncGenerator[tuple[str, Any], None]:
    """The async twin of ``run_steps``: the same loop, awaited (and closed when
    this stream is: a node it runs live is cancelled)."""
    obs = loop.observer
    if obs is None:
        async with contextlib.aclosing(asteps(loop)) as steps:
            async for chunk in steps:
                yield chunk
        return
    obs.defer_store = True
    obs.run_start()
    try:
        async with contextlib.aclosing(asteps(loop)) as steps:
            async for chunk in steps:
                yield chunk
                for chunk in event_chunks(obs):
                    yield chunk
    except GeneratorExit:  # no awaiting here: the events are stored as a sync run's are
        obs.defer_store = False
        obs.run_end(loop, cancelled=True)
        raise
    except BaseException as exc:
        obs.run_end(loop, cause(exc))
        await obs.astore()
        for chunk in event_chunks(obs):
            yield chunk
        raise
    obs.run_end(loop)
    await obs.astore()
    for chunk in event_chunks(obs):
        yield chunk


async def asteps(loop: RunLoop) -> AsyncGenerator[tuple[str, Any], None]:
    modes = loop.modes
    debug = "debug" in modes
    obs = loop.observer
    live = streams_live(loop)
    if loop.resuming and "values" in modes and loop.wrote_any:
        yield "values", loop.values_chunk()
    while True:
        tasks = loop.tick()
        if loop.effects and not (_applies_input(tasks) and not debug):
            await aperform(loop)
        if loop.saved:
            for chunk in checkpoint_chunks(loop):
                yield chunk
        if not tasks:
            if loop.status == "interrupt_before" or loop.stopped_at_end:
                for chunk in interrupt_chunks(loop):
                    yield chunk
            break
        if debug:
            for task in tasks:
                if task.name != START and not task.done:
                    yield "debug", debug_start(task)
        todo = [t for t in tasks if not t.done] if loop.resuming_tasks else tasks
        if obs is not None:
            obs.step_start(loop, todo)
            if obs.buffer:  # streamed "events": out before the step runs, not after
                for chunk in event_chunks(obs):
                    yield chunk
        try:
            if live and not _applies_input(todo):
                async with contextlib.aclosing(
                    arun_live(loop, functools.partial(_arun_step, todo))
                ) as chunks:
                    async for chunk in chunks:
                        yield chunk
            else:
                await _arun_step(todo)
        except StepFailed as failure:
            if obs is not None:
                obs.step_end(loop, todo, failure.error)
            loop.fail(tasks)
            await aperform(loop)
            if modes:
                for chunk in task_chunks(loop, todo, stopped=True):
                    yield chunk
            raise
        if obs is not None:
            obs.step_end(loop, todo, None)
            if obs.store_due:  # a traced run's history so far (see STORE_EVERY)
                await obs.astore(final=False)
        if any(t.interrupts for t in todo):
            try:
                loop.suspend(tasks)
            finally:  # what the step kept is saved even if its writes conflict
                await aperform(loop)
            await asettle(loop)
            if modes:
                for chunk in interrupt_chunks(loop, todo):
                    yield chunk
            return
        try:
            loop.commit(tasks)
        except InvalidUpdateError:
            if modes:  # LangGraph streamed each task's update before it merged them
                for chunk in task_chunks(loop, todo, stopped=True):
                    yield chunk
            raise
        if loop.effects:
            await aperform(loop)
        if obs is not None and obs.buffer:  # the step's end, once it is committed and saved
            for chunk in event_chunks(obs):
                yield chunk
        if modes:
            for chunk in step_chunks(loop, tasks):
                yield chunk
            if loop.saved:
                for chunk in checkpoint_chunks(loop):
                    yield chunk
        if loop.status == "interrupt_after":
            if modes:
                for chunk in interrupt_chunks(loop):
                    yield chunk
            break
    loop.finish()
    if loop.effects:
        await aperform(loop)
    await asettle(loop)


async def arun(loop: RunLoop) -> None:
    """``asteps`` for a run that nobody streams or observes (``ainvoke``).

    A coroutine, not an async generator: each run in flight then holds no
    ``asend`` awaitable and no entry in the event loop's weak set of async
    generators. A lone plain async node is awaited inline, one frame less again
    (it matters with 10,000 runs in flight).
    """
    while True:
        tasks = loop.tick()
        if loop.effects and not _applies_input(tasks):
            await aperform(loop)
        if not tasks:
            break
        todo = [t for t in tasks if not t.done] if loop.resuming_tasks else tasks
        try:
            if len(todo) == 1:
                task = todo[0]
                try:
                    if task.node.plain_async and task.loop.messages is None:
                        # Set and set back rather than reset(token): the token would be
                        # one more object per waiting run. Unset and None read the same.
                        outer = CURRENT_TASK.get()
                        CURRENT_TASK.set(task)
                        try:
                            task.accept(await task.node.fn(task.input))
                            task.done = True
                        except GraphInterrupt as signal:
                            task.interrupts = list(signal.interrupts)
                        except ParentCommand:
                            raise
                        except Exception as exc:
                            await _afailed(task, exc)
                        except BaseException as exc:  # a CancelledError: whose?
                            if not _node_cancelled(exc):
                                raise
                            await _afailed(task, NodeCancelledError(task.name))
                        finally:
                            CURRENT_TASK.set(outer)
                    else:
                        await arun_task(task)
                except Exception as exc:
                    raise StepFailed(exc) from exc
            else:
                await arun_tasks(todo)
        except StepFailed:
            loop.fail(tasks)
            await aperform(loop)
            raise
        if any(t.interrupts for t in todo):
            try:
                loop.suspend(tasks)
            finally:  # what the step kept is saved even if its writes conflict
                await aperform(loop)
            await asettle(loop)
            return
        loop.commit(tasks)
        if loop.effects:
            await aperform(loop)
        if loop.status == "interrupt_after":
            break
    loop.finish()
    if loop.effects:
        await aperform(loop)
    await asettle(loop)
