"""What a run streams: the chunks of each stream mode, shaped as LangGraph's.

Pure functions over a ``RunLoop`` and the tasks of the step just committed;
the drivers yield what they produce.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from trellis.engine.task import Task, scheduled_paths, sends_first, task_id
from trellis.graph.reducers import shown
from trellis.types import START, Interrupt

if TYPE_CHECKING:
    from trellis.engine.loop import RunLoop

__all__ = [
    "aviews",
    "checkpoint_chunks",
    "debug_start",
    "engine_modes",
    "interrupt_chunks",
    "step_chunks",
    "task_chunks",
    "views",
]

NESTED = "__nested__"  # a (namespace, mode, chunk) from a subgraph, for stream(subgraphs=True)
DEBUG_VIEWS = frozenset({"tasks", "checkpoints"})
"""Stream modes that show part of ``"debug"``: its task and its checkpoint chunks."""


def engine_modes(modes: tuple[str, ...]) -> tuple[str, ...]:
    """The modes a run makes chunks for: ``"debug"`` stands in for its views."""
    if DEBUG_VIEWS.isdisjoint(modes):
        return modes
    made = [m for m in modes if m not in DEBUG_VIEWS]
    return (*made, "debug") if "debug" not in made else tuple(made)


def views(chunks: Iterable[tuple[str, Any]], wanted: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """``chunks`` with each ``"debug"`` chunk shown as the modes ``wanted``:
    ``"tasks"`` gets task and task-result payloads, ``"checkpoints"`` checkpoint
    payloads (as LangGraph's), ``"debug"`` the chunk itself."""
    for mode, chunk in chunks:
        yield from _view(mode, chunk, wanted)


async def aviews(
    chunks: AsyncGenerator[tuple[str, Any], None], wanted: tuple[str, ...]
) -> AsyncGenerator[tuple[str, Any], None]:
    """:func:`views` of an async stream (closed when this one is)."""
    async with contextlib.aclosing(chunks):
        async for mode, chunk in chunks:
            for item in _view(mode, chunk, wanted):
                yield item


def _view(mode: str, chunk: Any, wanted: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    namespace = None
    inner_mode, inner = mode, chunk
    if mode == NESTED:
        namespace, inner_mode, inner = chunk
    if inner_mode != "debug":
        yield mode, chunk
        return
    shown: list[tuple[str, Any]] = []
    if "debug" in wanted:
        shown.append(("debug", inner))
    kind = inner["type"]
    if kind == "checkpoint" and "checkpoints" in wanted:
        shown.append(("checkpoints", inner["payload"]))
    elif kind in ("task", "task_result") and "tasks" in wanted:
        shown.append(("tasks", inner["payload"]))
    for view_mode, view in shown:
        yield (NESTED, (namespace, view_mode, view)) if namespace is not None else (view_mode, view)


def step_chunks(loop: RunLoop, tasks: list[Task]) -> Iterator[tuple[str, Any]]:
    """Stream output for the step just committed, in the requested modes."""
    yield from task_chunks(loop, tasks, stopped=False)
    keys = loop.output_keys
    if loop.wrote and "values" in loop.modes and (keys is None or keys.written(tasks)):
        yield "values", loop.values_chunk()


def task_chunks(loop: RunLoop, tasks: list[Task], *, stopped: bool) -> Iterator[tuple[str, Any]]:
    """Each task's subgraph chunks, custom writes, debug result and update. In a
    ``stopped`` step (on interrupts, or whose writes conflict), a task that did not
    finish shows only what it streamed before it stopped."""
    modes = loop.modes
    updates = "updates" in modes
    debug = "debug" in modes
    keys = loop.output_keys
    for task in tasks:
        if task.name == START:
            continue
        for nested in task.nested or ():
            yield NESTED, nested
        yield from task.streamed or ()
        if stopped and (not task.done or task.interrupts):
            if debug and (task.error is not None or task.interrupts):
                yield "debug", _debug_result(task)  # as LangGraph: how it stopped
            continue
        if updates:  # a task's update, then its result (as LangGraph streams them)
            update = task.update if keys is None else keys.update(task.update)
            if update and task.node.approval is not None:  # only a gate's edit replaces
                update = shown(update)
            if loop.replayed and task.id in loop.replayed:  # as LangGraph marks it
                yield "updates", {task.name: update, "__metadata__": {"cached": True}}
            else:
                yield "updates", {task.name: update}
        if debug:
            yield "debug", _debug_result(task)


def checkpoint_chunks(loop: RunLoop) -> Iterator[tuple[str, Any]]:
    """``debug`` chunks for the checkpoints just saved, shaped as LangGraph's."""
    saved, loop.saved = loop.saved, []
    for checkpoint, metadata in saved:
        thread = {"thread_id": loop.thread_id, "checkpoint_ns": loop.checkpoint_ns}
        pending = checkpoint.pending
        paths = scheduled_paths(pending, pending.get("nodes", ()))  # Sends, then nodes
        parent = checkpoint.parent_id
        yield (
            "debug",
            {
                "step": checkpoint.step,
                "timestamp": _now(),
                "type": "checkpoint",
                "payload": {
                    "config": {"configurable": {**thread, "checkpoint_id": checkpoint.id}},
                    "parent_config": (
                        {"configurable": {**thread, "checkpoint_id": parent}} if parent else None
                    ),
                    "values": {
                        k: checkpoint.values[k]
                        for k in loop.plan.channels
                        if k in checkpoint.values
                    },
                    "metadata": dict(metadata),
                    "next": [name for name, _ in paths],
                    "tasks": _next_tasks(checkpoint, paths),
                },
            },
        )


def _next_tasks(checkpoint: Any, paths: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """The tasks a checkpoint schedules (their ``paths``), as a checkpoint chunk lists them."""
    step = checkpoint.step + 1
    return [
        {
            "id": task_id(checkpoint.id, step, name, path),
            "name": name,
            "interrupts": (),
            "state": None,
        }
        for name, path in paths
    ]


def interrupt_chunks(loop: RunLoop, ran: list[Task] | None = None) -> Iterator[tuple[str, Any]]:
    """What LangGraph streams when a run stops on interrupts (or a breakpoint: none).

    First what the tasks that ran in the stopped step (``ran``) produced, which
    LangGraph streams live; then one ``__interrupt__`` chunk per task that stopped,
    as each does in LangGraph; then, if finished tasks wrote, the state with their
    writes (the run's result)."""
    groups: list[tuple[Interrupt, ...]] = []
    if ran:
        yield from task_chunks(loop, ran, stopped=True)
        groups = [tuple(t.interrupts) for t in sends_first(ran) if t.interrupts]
    shown = {id(i) for group in groups for i in group}
    rest = tuple(i for i in loop.interrupts if id(i) not in shown)  # from an earlier run
    if rest or not groups:
        groups.append(rest)
    for group in groups:
        chunk = {"__interrupt__": group}
        if "updates" in loop.modes:
            yield "updates", chunk
        if "values" in loop.modes and group:
            keys = loop.output_keys
            if keys is None:
                yield "values", {**loop.values_chunk(), **chunk}
            else:
                yield "values", keys.with_interrupts(loop.values, group)
    if "values" in loop.modes and loop.live_values is not None:
        yield "values", loop.values_chunk(loop.live_values)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _debug_result(task: Task) -> dict[str, Any]:
    return {
        "step": task.step,
        "timestamp": _now(),
        "type": "task_result",
        "payload": {
            "id": task.id,
            "name": task.name,
            "error": task.error,
            "result": shown(dict(task.update or {})) if task.error is None else {},
            "interrupts": [{"value": i.value, "id": i.id} for i in task.interrupts],
        },
    }


def debug_start(task: Task) -> dict[str, Any]:
    return {
        "step": task.step,
        "timestamp": _now(),
        "type": "task",
        "payload": {
            "id": task.id,
            "name": task.name,
            "input": task.input,
            "triggers": task.triggers(),
        },
    }
