"""``interrupt()`` and how resume values find their way back to it.

A node that calls ``interrupt(value)`` is suspended: the run stops, the
thread's checkpoint records the pending interrupt, and ``invoke`` returns the
state with ``"__interrupt__"``. ``Command(resume=...)`` re-runs the node from
its start; its k-th ``interrupt()`` call then returns the k-th resume value.
Every interrupt call has its own id, so parallel interrupts resume by id.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from trellis.engine.context import current_task
from trellis.errors import InterruptError
from trellis.types import Interrupt

if TYPE_CHECKING:
    from trellis.engine.loop import RunLoop
    from trellis.engine.task import Task

__all__ = [
    "GraphInterrupt",
    "abandoned",
    "assign_resume",
    "interrupt",
    "interrupt_id",
    "on_abandoned",
]

_log = logging.getLogger("trellis")
AbandonedHook = Callable[["RunLoop", Sequence[str]], None]
_abandoned_hooks: list[AbandonedHook] = []


class GraphInterrupt(BaseException):
    """Raised inside a node by ``interrupt()``; caught by the driver, never by users.

    A ``BaseException`` so that a node's ``except Exception`` does not swallow it.
    """

    def __init__(self, interrupt: Interrupt, interrupts: list[Interrupt] | None = None) -> None:
        super().__init__(interrupt)
        # Several at once when a subgraph stopped on parallel interrupts.
        self.interrupts = interrupts or [interrupt]


def interrupt_id(task_id: str, index: int) -> str:
    return hashlib.blake2b(f"{task_id}:{index}".encode(), digest_size=16).hexdigest()


def interrupt(value: Any) -> Any:
    """Pause the run and ask for input; returns the resume value once given.

    >>> def review(state):
    ...     answer = interrupt({"question": "approve refund?", "amount": state["amount"]})
    ...     return {"approved": answer == "yes"}
    >>> graph.invoke(Command(resume="yes"), config)

    Requires a checkpointer. The node re-runs from its start on resume; use
    ``once()`` around side effects that must not repeat.
    """
    task = current_task("interrupt()")
    if task.loop.saver is None:
        raise InterruptError(
            f"node {task.name!r} called interrupt() but the graph has no checkpointer; "
            "compile(checkpointer=...) so the run can be resumed"
        )
    index = task.interrupt_count
    task.interrupt_count = index + 1
    resume = task.resume
    if resume is not None and index < len(resume):
        return resume[index]
    raise GraphInterrupt(Interrupt(value=value, id=interrupt_id(task.id, index)))


def assign_resume(
    tasks: list[Task], pending: list[Interrupt], resume: Any, *, thread_id: str | None
) -> None:
    """Give each interrupted task the resume value meant for it.

    ``resume`` is a bare value (only when exactly one interrupt is pending) or
    a mapping of interrupt id to value.
    """
    if not pending:
        raise InterruptError(
            f"Command(resume=...) given, but thread {thread_id!r} has no pending interrupt"
        )
    by_id = {i.id: i for i in pending}
    owner: dict[str, Task] = {}
    for task in tasks:
        for i in task.interrupts:
            owner[i.id] = task
    if isinstance(resume, Mapping) and all(k in by_id for k in resume):
        answers = dict(resume)  # {} answers nothing: the question is asked again (LangGraph)
    elif isinstance(resume, Mapping) and all(_looks_like_id(k) for k in resume):  # not {}
        unknown = [k for k in resume if k not in by_id]
        raise InterruptError(
            f"thread {thread_id!r}: resume map names unknown interrupt id(s) "
            f"{', '.join(map(repr, unknown))}; pending: {', '.join(by_id)}"
        )
    elif len(pending) == 1:
        answers = {pending[0].id: resume}
    else:
        raise InterruptError(
            f"thread {thread_id!r} has {len(pending)} interrupts pending; resume with a map "
            f"of interrupt id to value: Command(resume={{id: value, ...}}) with ids "
            f"{', '.join(by_id)}"
        )
    # A node stops at its first unanswered interrupt, so its answer is simply the
    # next resume value in its list. A subgraph node may stop on several at once
    # (its own parallel interrupts): it gets the answers by id, to pass down.
    given: dict[Task, dict[str, Any]] = {}
    for iid, value in answers.items():
        given.setdefault(owner[iid], {})[iid] = value
    for task, mine in given.items():
        answer = mine if len(task.interrupts) > 1 else next(iter(mine.values()))
        task.resume = [*(task.resume or []), answer]
    for task in tasks:
        task.interrupts = []


def _looks_like_id(key: Any) -> bool:
    return isinstance(key, str) and len(key) == 32 and all(c in "0123456789abcdef" for c in key)


def on_abandoned(hook: AbandonedHook) -> AbandonedHook:
    """Have ``hook(loop, ids)`` called when a run or ``update_state`` moves a
    thread's head past interrupts it waited on (new input, an update, a fork)
    without answering them: whatever was asked there can no longer resume it.

    The approval gates register one (a request for such an interrupt is
    superseded); the engine itself knows nothing of what an interrupt asked.
    """
    if hook not in _abandoned_hooks:
        _abandoned_hooks.append(hook)
    return hook


def abandoned(loop: RunLoop, ids: Sequence[str]) -> None:
    """Tell the hooks: the head ``loop`` committed no longer waits on ``ids``.

    Called after the new head is saved. A hook that fails is logged, not
    raised: the run it reports on has already succeeded.
    """
    for hook in list(_abandoned_hooks):
        try:
            hook(loop, ids)
        except Exception:
            _log.warning(
                "thread %r: could not mark what interrupts %s waited for as superseded",
                loop.thread_id,
                ", ".join(ids),
                exc_info=True,
            )


async def aabandoned(loop: RunLoop, ids: Sequence[str]) -> None:
    """``abandoned`` for an async run: the hooks may wait on a database (an
    approval store on PostgreSQL), so they run in a worker thread."""
    if _abandoned_hooks:
        import asyncio

        await asyncio.to_thread(abandoned, loop, ids)
