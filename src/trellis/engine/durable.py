"""Between a run and its checkpointer: what to save, and how to pick up again.

Pure functions over a ``RunLoop``. They build checkpoint records and pending
writes, and restore a loop from a stored checkpoint; the drivers perform the
resulting saver calls (``Effect``), sync or async.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from trellis.errors import GraphVersionError
from trellis.persist.base import Checkpoint, CheckpointTuple, PendingWrite, new_checkpoint_id
from trellis.types import Interrupt, Send

if TYPE_CHECKING:
    from trellis.engine.loop import RunLoop
    from trellis.engine.task import Task

__all__ = [
    "Effect",
    "compensation_key",
    "compensations_done",
    "inherit_compensations",
    "once_write",
    "pending_writes",
    "record",
    "restore",
    "restore_tasks",
    "unsaved_compensable",
    "waiting_on",
]

# Special pending-write channels. Ordinary state writes use idx >= 0.
GOTO, DONE, ERROR, INTERRUPT, RESUME, ONCE = (
    "__goto__",
    "__done__",
    "__error__",
    "__interrupt__",
    "__resume__",
    "__once__",
)
_SPECIAL_IDX = {ERROR: -1, INTERRUPT: -3, RESUME: -4, ONCE: -6}
# The DONE write's value for a task that finished without doing its own work: its
# failure was routed (on_error, error_handler) or a gate sent the run elsewhere. Its
# edges do not fire when its step commits, and there is nothing to compensate.
HALTED: Final = "halted"
RETRY, RETRY_IDX = "__retry__", -7  # the attempt count and next attempt time of a task
# The saga's record of finished compensations, written on the head it ran at.
COMPENSATED, COMPENSATED_IDX = "__compensated__", -8
COMMAND_TASK: Final = "__command__"
"""The task id of the ``goto`` write of a ``Command(resume=..., goto=...)`` whose
step stopped again: the next resume of that step runs its targets too."""
COMMAND_GOTO_IDX: Final = -9


@dataclass(slots=True)  # not frozen: one per checkpoint, and frozen init costs 2x
class Effect:
    """A saver call the driver must make: ``name`` (or ``"a" + name``) with ``kwargs``."""

    name: str
    kwargs: dict[str, Any]


def record(
    loop: RunLoop,
    source: str,
    writes: list[PendingWrite] | None = None,
    *,
    checkpoint_id: str | None = None,
) -> Effect:
    """The ``put`` of a new checkpoint holding the loop's current state."""
    new_id = checkpoint_id or new_checkpoint_id()
    versions = loop.versions
    for key in loop.updated:
        versions[key] = new_id
    appends: dict[str, list[Any]] = {}
    if loop.appends:
        appends = {k: v for k, v in loop.appends.items() if v is not None and k in loop.updated}
        loop.appends = {}
    checkpoint = Checkpoint(
        new_id,
        loop.head,
        loop.step,
        time.time(),
        dict(loop.values),
        dict(versions),
        appends,
        _pending(loop),
        loop.plan.fingerprint,
    )
    extra = loop.run_metadata
    if extra is None:
        extra = loop.run_metadata = run_metadata(loop.config)
    metadata: dict[str, Any] = {"source": source, "step": loop.step, "parents": {}}
    if extra:
        metadata = {**extra, **metadata}
    metadata["run_id"] = loop.run_id
    effect = Effect(
        "put",
        {
            "thread_id": loop.thread_id,
            "checkpoint_ns": loop.checkpoint_ns,
            "checkpoint": checkpoint,
            "metadata": metadata,
            "expected_head": loop.expected_head,
            "writes": writes or (),
        },
    )
    loop.head = loop.expected_head = loop.checkpoint_id = new_id
    loop.updated.clear()
    return effect


def _pending(loop: RunLoop) -> dict[str, Any]:
    """What is scheduled, kept small: a checkpoint is written every step, and
    empty entries are left out."""
    pending: dict[str, Any] = {}
    nodes = loop.next_nodes
    if nodes:
        pending["nodes"] = list(nodes) if len(nodes) == 1 else sorted(set(nodes))
    if loop.next_sends:
        pending["sends"] = list(loop.next_sends)
    if loop.barriers:
        pending["barriers"] = {str(i): sorted(seen) for i, seen in loop.barriers.items()}
    if loop.visits:
        pending["visits"] = dict(loop.visits)
    if loop.deferred:
        pending["deferred"] = sorted(loop.deferred)
    if loop.compensable:
        pending["compensable"] = [list(entry) for entry in loop.compensable]
        if loop.compensated:
            # The saga's record is a write on the head it ran at; carried here, it
            # survives the head moving on, so no compensation ever runs twice.
            pending["compensated"] = dict(loop.compensated)
    if loop.start_task is not None:  # the input checkpoint: the input is still to apply
        pending["start"] = loop.start_task.input
    return pending


def restore(loop: RunLoop, saved: CheckpointTuple, *, continue_run: bool) -> None:
    """Load ``saved`` into ``loop``. ``continue_run``: keep its scheduled tasks."""
    checkpoint = saved.checkpoint
    loop.values = dict(checkpoint.values)
    loop.versions = dict(checkpoint.versions)
    loop.step = loop.restored_step = checkpoint.step
    loop.checkpoint_id = checkpoint.id
    loop.head = checkpoint.id
    pending = checkpoint.pending or {}
    if not continue_run:
        if "barriers" in pending and checkpoint.fingerprint == loop.plan.fingerprint:
            # As LangGraph's join channels: a join half met by an earlier run of
            # the thread stays half met, so a new run can complete it. (A join's
            # index only means that join in the graph that saved it.)
            loop.barriers = _barriers(pending)
        return
    nodes = list(pending.get("nodes", ()))
    sends = [s for s in pending.get("sends", ()) if isinstance(s, Send)]
    missing = sorted({*nodes, *(s.node for s in sends)} - set(loop.plan.nodes))
    if missing:
        raise GraphVersionError(
            f"thread {loop.thread_id!r} is waiting on node(s) {', '.join(map(repr, missing))}, "
            f"which this graph does not have (checkpoint {checkpoint.id}); it was saved by a "
            "different version of the graph"
        )
    loop.next_nodes = nodes
    loop.next_sends = sends
    loop.wrote_any = bool(loop.values)  # a resumed run's result is the state it reaches
    loop.barriers = _barriers(pending)
    loop.visits = dict(pending.get("visits", {}))
    loop.deferred = set(pending.get("deferred", ()))
    loop.run_id = saved.metadata.get("run_id") or loop.run_id
    loop.compensable = [list(entry) for entry in pending.get("compensable", ())]
    if loop.compensable:
        loop.compensated = compensations_done(saved)
        if loop.compensable_states is not None:
            # "exit" keeps each entry's state in memory, one per entry: the earlier
            # runs' entries get the state this run starts from, the latest known.
            loop.compensable_states = [dict(loop.values) for _ in loop.compensable]
    # As LangGraph: a resumed run spends no step on its input, and its first step
    # (the one after the checkpoint) has recursion_limit + 1 steps left.
    loop.first_step = loop.step + 2
    if "start" in pending:
        from trellis.engine.task import PULL, Task
        from trellis.types import START

        plan = loop.plan
        loop.start_task = Task(loop, plan.start, pending["start"], loop.step + 1, (PULL, START))


def compensation_key(index: int, entry: list[Any]) -> str:
    """Where the saga's record keeps how the compensation of ``entry`` went: under
    the id of the task that ran the node, as the same node run has the same id
    whether its step failed or committed; entries saved without an id (older
    checkpoints) under their position."""
    return str(entry[2]) if len(entry) > 2 else str(index)


def compensations_done(saved: CheckpointTuple) -> dict[str, Any]:
    """How the compensations of ``saved``'s compensable entries went (``"ok"`` or
    the error), by :func:`compensation_key`: those carried from earlier heads,
    then the saga's record on this one, which is newer."""
    done: dict[str, Any] = dict((saved.checkpoint.pending or {}).get("compensated", {}))
    for write in saved.pending_writes:
        if write.channel == COMPENSATED:
            done.update(write.value)
    return done


def inherit_compensations(loop: RunLoop, head: CheckpointTuple) -> None:
    """A fork from an older checkpoint: what the thread's head compensated of the
    node runs the fork shares with it stays compensated, as a node run undone
    once is never undone again.

    Task ids name the checkpoint a task was planned from, so an id the head
    knows is the same node run. An entry saved without one counts only when
    the head's entries start with the fork's (then it is the same position).
    """
    if not loop.compensable:
        return
    entries = (head.checkpoint.pending or {}).get("compensable", ())
    same_positions = [list(entry) for entry in entries[: len(loop.compensable)]] == (
        loop.compensable
    )
    theirs = compensations_done(head)
    done = {**loop.compensated}
    for index, entry in enumerate(loop.compensable):
        if len(entry) <= 2 and not same_positions:
            continue
        key = compensation_key(index, entry)
        if key in theirs and done.get(key) != "ok":
            done[key] = theirs[key]
    loop.compensated = done


def unsaved_compensable(saved: CheckpointTuple, compensable: set[str]) -> list[list[Any]]:
    """Entries for the node runs of ``compensable`` nodes that finished in the step
    ``saved`` still has to commit (it failed, was interrupted, or the process
    died): ``[node, checkpoint id, task id, its update]``, as the state in the
    checkpoint does not hold that update yet."""
    finished: dict[str, list[Any]] = {}
    for write in saved.pending_writes:
        if write.channel == DONE and write.value != HALTED and write.task_name in compensable:
            finished[write.task_id] = [write.task_name, saved.checkpoint.id, write.task_id, {}]
    for write in sorted(saved.pending_writes, key=lambda w: w.idx):
        entry = finished.get(write.task_id)
        if entry is not None and write.idx >= 0 and write.channel not in (GOTO, DONE):
            entry[3][write.channel] = write.value
    return list(finished.values())


def _barriers(pending: Mapping[str, Any]) -> dict[int, set[str]]:
    return {int(i): set(s) for i, s in pending.get("barriers", {}).items()}


BREAKPOINT_TASK: Final = "__breakpoint__"
"""The task id of :func:`breakpoint_marker`'s write."""


def breakpoint_marker() -> PendingWrite:
    """A pending interrupt owned by no task: the thread is paused at a breakpoint."""
    return PendingWrite(BREAKPOINT_TASK, BREAKPOINT_TASK, _SPECIAL_IDX[INTERRUPT], INTERRUPT, [])


# Config keys that say where a checkpoint is, not what the run is about.
_NOT_METADATA: Final = frozenset({"thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map"})


def run_metadata(config: Mapping[str, Any]) -> dict[str, Any]:
    """What every checkpoint of a run records from its config, as LangGraph does:
    the scalars of ``metadata``, then those of ``configurable`` (a ``user_id``,
    say) not already there, so history can be filtered by them."""
    out: dict[str, Any] = {}
    for source in (config.get("metadata"), config.get("configurable")):
        for key, value in (source or {}).items():
            if (
                key not in out
                and isinstance(value, (str, int, float, bool))
                and not key.startswith(("__", "langgraph_"))
                and key not in _NOT_METADATA
            ):
                out[key] = value
    return out


def has_tasks(saved: CheckpointTuple) -> bool:
    """Whether ``saved`` schedules tasks (nodes, Sends, an input to apply): its
    run stopped before the end."""
    pending = saved.checkpoint.pending or {}
    return bool(pending.get("nodes") or pending.get("sends") or "start" in pending)


def waiting_on(saved: CheckpointTuple | None) -> tuple[str, ...]:
    """The ids of the interrupts ``saved`` waits on (none at a breakpoint)."""
    if saved is None:
        return ()
    return tuple(
        i.id
        for w in saved.pending_writes
        if w.channel == INTERRUPT and w.task_id != BREAKPOINT_TASK
        for i in w.value
    )


def pending_writes(tasks: list[Task]) -> list[PendingWrite]:
    """What survives of a step that did not commit: finished tasks' writes,
    errors, pending interrupts and resume values, keyed by task id."""
    out: list[PendingWrite] = []
    for task in tasks:
        tid, name = task.id, task.name
        if task.interrupts:
            out.append(PendingWrite(tid, name, _SPECIAL_IDX[INTERRUPT], INTERRUPT, task.interrupts))
            if task.attempt > 1:  # a retry reached the question: the answer starts afresh
                out.append(PendingWrite(tid, name, RETRY_IDX, RETRY, None))
        elif task.error is not None:
            err = task.error
            out.append(
                PendingWrite(
                    tid,
                    name,
                    _SPECIAL_IDX[ERROR],
                    ERROR,
                    {"type": type(err).__name__, "message": str(err)},
                )
            )
            # Retries ran out: a later resume starts with a full budget again.
            out.append(PendingWrite(tid, name, RETRY_IDX, RETRY, None))
        elif task.done:
            idx = 0
            for key, value in (task.update or {}).items():
                out.append(PendingWrite(tid, name, idx, key, value))
                idx += 1
            out.append(PendingWrite(tid, name, idx, GOTO, list(task.goto)))
            out.append(PendingWrite(tid, name, idx + 1, DONE, HALTED if task.halt else True))
        if task.resume:
            out.append(PendingWrite(tid, name, _SPECIAL_IDX[RESUME], RESUME, list(task.resume)))
        if task.once:
            out.append(once_write(task, dict(task.once)))
    return out


def once_write(task: Task, results: dict[str, Any]) -> PendingWrite:
    """The write that keeps ``task``'s ``once()`` ``results`` (by key) with its step."""
    return PendingWrite(task.id, task.name, _SPECIAL_IDX[ONCE], ONCE, results)


def restore_tasks(tasks: list[Task], writes: tuple[PendingWrite, ...]) -> list[Interrupt]:
    """Attach saved results to re-planned tasks; return the pending interrupts."""
    by_task: dict[str, list[PendingWrite]] = {}
    for write in writes:
        by_task.setdefault(write.task_id, []).append(write)
    interrupts: list[Interrupt] = []
    for task in tasks:
        saved = by_task.get(task.id)
        if not saved:
            continue
        update: dict[str, Any] = {}
        done = False
        for write in sorted(saved, key=lambda w: w.idx):
            if write.channel == DONE:
                done = True
                task.halt = write.value == HALTED
            elif write.channel == GOTO:
                task.goto = list(write.value)
            elif write.channel == INTERRUPT:
                task.interrupts = list(write.value)
                interrupts.extend(task.interrupts)
            elif write.channel == RESUME:
                task.resume = list(write.value)
            elif write.channel == ONCE:
                task.once = dict(write.value)
            elif write.channel == RETRY:
                from trellis.resilience.retry import RetryState

                task.retry = RetryState.from_dict(write.value) if write.value else None
                if task.retry is not None:  # observers see the attempt that starts
                    task.attempt = task.retry.attempt
            elif write.channel == ERROR:
                continue
            elif write.idx >= 0:
                update[write.channel] = write.value
        if done:  # a task that finished after an interrupt no longer waits on it
            task.done = True
            task.update = update or None
            if task.interrupts:
                interrupts = [i for i in interrupts if i not in task.interrupts]
                task.interrupts = []
    return interrupts
