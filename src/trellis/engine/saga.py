"""Compensations (sagas): undo completed side effects, newest first.

``add_node(name, fn, compensate=undo)``: when a run fails for good — or when
``graph.compensate(config)`` is called — ``undo(state)`` runs for every node
that completed, newest first, each with the state as it was after its node.
Each finished compensation is recorded on the thread's head checkpoint, and
every later checkpoint of the run (a resume, an update, a fork) carries that
record on, so a rollback that crashed resumes where it stopped and no
compensation that finished ever runs again for the same node run. A failing
compensation is recorded and reported; the rest still run.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trellis.engine.durable import COMPENSATED, COMPENSATED_IDX, compensation_key
from trellis.persist.base import PendingWrite

if TYPE_CHECKING:
    from trellis.engine.compiled import CompiledStateGraph
    from trellis.engine.loop import RunLoop

__all__ = ["CompensationReport", "Saga"]

_SAGA_TASK = "00000000000000000000000000000000"


@dataclass(slots=True)
class CompensationReport:
    """What a rollback did: nodes compensated (newest first) and failures."""

    compensated: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(slots=True)
class Saga:
    """The rollback of one thread (or of one run without a checkpointer).

    ``entries`` are ``[node, checkpoint_id, task_id]`` in completion order, with
    a fourth item, the node's update, for a node that finished in a step that did
    not commit (the checkpoint is the state before it); ``states`` holds the
    in-memory state after each entry when there is no checkpointer. ``done``:
    how each compensation went, by :func:`~trellis.engine.durable.compensation_key`.
    """

    graph: CompiledStateGraph
    thread_id: str | None
    head_id: str | None
    entries: list[list[Any]]
    states: list[dict[str, Any]] | None = None
    done: dict[str, Any] = field(default_factory=dict)
    observer: Any = None  # the failed run's RunObserver, told of each compensation
    ns: str = ""  # the checkpoint namespace: a subgraph's run keeps its saga there

    @classmethod
    def of_run(cls, graph: CompiledStateGraph, loop: RunLoop) -> Saga:
        return cls(
            graph,
            loop.thread_id,
            loop.head,
            list(loop.compensable),
            loop.compensable_states,
            dict(loop.compensated),
            observer=loop.observer,
            ns=loop.checkpoint_ns,
        )

    def _in_memory(self, index: int) -> bool:
        """Whether entry ``index``'s state is kept in memory: a run under "exit", or a
        run without a checkpointer. An entry an earlier run saved names its checkpoint."""
        return self.states is not None and (
            self.entries[index][1] is None or self.graph.checkpointer is None
        )

    def _state(self, index: int) -> dict[str, Any]:
        if self._in_memory(index):
            return self.states[index]  # type: ignore[index]
        checkpoint_id = self.entries[index][1]
        saved = self.graph.checkpointer.get_tuple(
            self.thread_id, checkpoint_id, checkpoint_ns=self.ns
        )
        return self._after(index, saved)

    async def _astate(self, index: int) -> dict[str, Any]:
        if self._in_memory(index):
            return self.states[index]  # type: ignore[index]
        checkpoint_id = self.entries[index][1]
        saved = await self.graph.checkpointer.aget_tuple(
            self.thread_id, checkpoint_id, checkpoint_ns=self.ns
        )
        return self._after(index, saved)

    def _after(self, index: int, saved: Any) -> dict[str, Any]:
        """The state after entry ``index``'s node, from its checkpoint ``saved``."""
        values = dict(saved.checkpoint.values) if saved is not None else {}
        entry = self.entries[index]
        if len(entry) > 3:  # its step did not commit: add the node's own update
            self.graph.plan.apply(values, entry[3])
        return values

    def _pending(self) -> list[tuple[int, str, Any]]:
        nodes = self.graph.plan.nodes
        todo = []
        for index in range(len(self.entries) - 1, -1, -1):
            name = self.entries[index][0]
            node = nodes.get(name)
            undo = node.compensate if node is not None else None
            # A compensation that failed is tried again next time; one that finished never is.
            if undo is None or self.done.get(compensation_key(index, self.entries[index])) == "ok":
                continue
            todo.append((index, name, undo))
        return todo

    def _record(self, index: int, outcome: Any) -> list[PendingWrite]:
        self.done[compensation_key(index, self.entries[index])] = outcome
        if self.graph.checkpointer is None or self.head_id is None:
            return []
        return [PendingWrite(_SAGA_TASK, "__saga__", COMPENSATED_IDX, COMPENSATED, dict(self.done))]

    def _settle(
        self, report: CompensationReport, index: int, name: str, error: Exception | None
    ) -> list[PendingWrite]:
        """Note how one compensation went, in the report and (returned) for the saver."""
        if error is None:
            outcome: Any = "ok"
            report.compensated.append(name)
        else:
            outcome = {"error": f"{type(error).__name__}: {error}"}
            report.failed.append({"node": name, "error": outcome["error"]})
        if self.observer is not None:
            self.observer.compensation(name, outcome)
        return self._record(index, outcome)

    def run(self) -> CompensationReport:
        report = CompensationReport()
        for index, name, undo in self._pending():
            error: Exception | None = None
            try:
                result = undo(self._state(index))
                if inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
                        result.close()  # never awaited: no warning outlives the error
                    raise TypeError(f"compensation of {name!r} is async; use acompensate()")
            except Exception as exc:
                error = exc
            writes = self._settle(report, index, name, error)
            if writes:
                self.graph.checkpointer.put_writes(
                    self.thread_id, self.head_id, writes, checkpoint_ns=self.ns
                )
        return report

    async def arun(self) -> CompensationReport:
        report = CompensationReport()
        for index, name, undo in self._pending():
            error: Exception | None = None
            try:
                result = undo(await self._astate(index))
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                error = exc
            observer = self.observer
            if observer is not None:  # its event is stored from a worker thread, at once
                observer.defer_store = True
            writes = self._settle(report, index, name, error)
            if observer is not None:
                await observer.astore()
            if writes:
                await self.graph.checkpointer.aput_writes(
                    self.thread_id, self.head_id, writes, checkpoint_ns=self.ns
                )
        return report


def attach(error: BaseException, report: CompensationReport) -> None:
    """Tell the caller of a failed run what the automatic rollback did."""
    error.compensation = report  # type: ignore[attr-defined]
    if report.compensated or report.failed:
        failed = ", ".join(f"{f['node']} ({f['error']})" for f in report.failed)
        note = f"Trellis compensated: {', '.join(report.compensated) or 'nothing'}"
        error.add_note(note + (f"; compensations that failed: {failed}" if failed else ""))
