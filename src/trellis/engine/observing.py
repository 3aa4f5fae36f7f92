"""Turning a run into events: run, step and task spans, retries, interrupts.

Only runs that are observed pay for it: a ``RunObserver`` exists when the graph
has observers (``compile(observers=[...])``, ``metrics=True``) or the caller
streams ``"events"``. Events are emitted from the driver's thread, in order:
``step_start``, every ``task_start``, then (after the step) every ``task_end``
or ``task_error`` with its measured duration, then ``step_end``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from trellis.observe.events import Event, EventKind, Outcome, new_span_id, new_trace_id
from trellis.types import START

if TYPE_CHECKING:
    from trellis.engine.loop import RunLoop
    from trellis.engine.task import Task

__all__ = ["RunObserver"]

_perf = time.perf_counter
_now = time.time
_new = tuple.__new__
_MAX_MESSAGE = 2000  # characters of an exception message kept in an event
_STEP_START, _STEP_END = EventKind.STEP_START, EventKind.STEP_END
_TASK_START, _TASK_END = EventKind.TASK_START, EventKind.TASK_END
_NO_DATA: Mapping[str, Any] = MappingProxyType({})  # shared, so it must be read-only
# node, task_id, attempt, status, error_type, error_message, data: unset for step events
_BLANK6 = (None, None, None, None, None, None, _NO_DATA)


class RunObserver:
    """Emits the events of one run to the graph's sinks (and the stream)."""

    __slots__ = (
        "buffer",
        "graph",
        "run_span",
        "run_started",
        "sinks",
        "step_span",
        "step_started",
        "thread_id",
        "trace_id",
        "parent_span",
        "run_id",
        "log",
        "kept",
        "spans",
        "targets",
        "wants_starts",
    )

    def __init__(
        self, sinks: list[Any], graph: str, loop: RunLoop, *, buffer: bool, log: Any = None
    ) -> None:
        from trellis.observe.otel import current_trace_ids

        ids = current_trace_ids()
        self.sinks = sinks
        self.graph = graph
        self.thread_id = loop.thread_id
        if loop.run_id is None:
            import uuid

            loop.run_id = uuid.uuid4().hex
        self.run_id = loop.run_id
        self.trace_id = ids[0] if ids else new_trace_id()
        self.parent_span = ids[1] if ids else None
        self.run_span = new_span_id()
        self.spans = 0
        self.run_started = 0.0
        self.step_span = ""
        self.step_started = 0.0
        # Events kept for stream_mode="events"; the driver drains it after each step.
        self.buffer: list[Event] | None = [] if buffer else None
        # compile(trace=True): the run's events go to the saver's event log at the end.
        self.log = log if loop.thread_id is not None else None
        self.kept: list[Event] = []
        # Where each kind of event goes, decided once: the sinks that want it (a
        # sink may declare ``kinds``), then the lists. Kinds nobody wants are not
        # even built (see ``wants``).
        everyone: list[Any] = []
        if self.buffer is not None:
            everyone.append(self.buffer.append)
        if self.log is not None:
            everyone.append(self.kept.append)
        self.targets = {
            kind: tuple(
                [s for s in sinks if kind in (getattr(s, "kinds", None) or (kind,))] + everyone
            )
            for kind in EventKind
        }
        self.wants_starts = bool(self.targets[_TASK_START] or self.targets[_STEP_START])

    def _span_id(self) -> str:
        # Unique within the run's trace (the run span's own random high half, then a
        # counter): cheaper than drawing 64 random bits per step and per task.
        self.spans += 1
        return f"{self.run_span[:8]}{self.spans:08x}"

    def _emit(self, event: Event) -> None:
        for target in self.targets[event.kind]:
            try:
                target(event)
            except Exception:  # a broken sink must never break the run
                import logging

                logging.getLogger("trellis.observe").exception("event sink %r failed", target)

    def _event(self, kind: EventKind, span: str, parent: str | None, **fields: Any) -> Event:
        return Event(
            kind,
            self.trace_id,
            span,
            parent,
            fields.pop("ts", None) or _now(),
            thread_id=self.thread_id,
            run_id=self.run_id,
            graph=self.graph,
            **fields,
        )

    def drain(self) -> list[Event]:
        if not self.buffer:
            return []
        events = list(self.buffer)
        self.buffer.clear()  # in place: ``targets`` holds its append
        return events

    # -- run ---------------------------------------------------------------

    def run_start(self) -> None:
        self.run_started = _perf()
        self._emit(self._event(EventKind.RUN_START, self.run_span, self.parent_span))

    def run_end(
        self, loop: RunLoop, error: BaseException | None = None, *, cancelled: bool = False
    ) -> None:
        if cancelled:
            status = Outcome.CANCELLED
        elif error is not None:
            status = Outcome.ERROR
        elif loop.status in ("interrupted", "interrupt_before", "interrupt_after"):
            status = Outcome.INTERRUPTED
        else:
            status = Outcome.OK
        self._emit(
            self._event(
                EventKind.RUN_END,
                self.run_span,
                self.parent_span,
                duration=_perf() - self.run_started,
                status=status,
                **_error_fields(error),
            )
        )
        if self.log is not None and self.kept:
            kept = list(self.kept)
            self.kept.clear()
            try:
                self.log.append(str(self.thread_id), [e.to_dict() for e in kept])
            except Exception:  # losing a trace must not fail the run it describes
                import logging

                logging.getLogger("trellis.observe").exception("could not store run events")

    # -- steps and tasks ---------------------------------------------------

    # The per-step events are built as plain tuples (Event is a NamedTuple):
    # this is the hot path of an observed run, so no keyword plumbing here.

    def step_start(self, loop: RunLoop, tasks: list[Task]) -> None:
        now = _now()
        self.step_span = step_span = self._span_id()
        self.step_started = _perf()
        if not self.wants_starts:  # e.g. metrics only: spans are still named, not announced
            for task in tasks:
                if task.name != START:
                    task.span = self._span_id()
            return
        step = loop.step
        head = (self.trace_id,)
        tail = (self.thread_id, self.run_id, self.graph, step)
        emit = self._emit
        emit(
            _new(Event, (_STEP_START, *head, step_span, self.run_span, now, None, *tail, *_BLANK6))
        )
        keyed = loop.saver is not None  # task ids only mean something with a checkpointer
        for task in tasks:
            if task.name == START:  # the input step is not a node: no task span
                continue
            task.span = span = self._span_id()
            emit(
                _new(
                    Event,
                    (_TASK_START, *head, span, step_span, now, None, *tail, task.name,
                     task.id if keyed else None, task.attempt, None, None, None, _NO_DATA),
                )
            )  # fmt: skip

    def step_end(self, loop: RunLoop, tasks: list[Task], error: BaseException | None) -> None:
        now = _now()
        head = (self.trace_id,)
        tail = (self.thread_id, self.run_id, self.graph)
        step_span = self.step_span
        emit = self._emit
        keyed = loop.saver is not None
        for task in tasks:
            span = task.span
            if span is None:
                continue
            task_id = task.id if keyed else None
            status: str = Outcome.OK
            kind = _TASK_END
            etype = emsg = None
            if task.interrupts:
                ids = {"interrupts": [i.id for i in task.interrupts]}
                emit(
                    _new(
                        Event,
                        (EventKind.INTERRUPT, *head, span, step_span, now, None, *tail,
                         task.step, task.name, task_id, task.attempt, None, None, None, ids),
                    )
                )  # fmt: skip
                status = Outcome.INTERRUPTED
            elif task.error is not None:
                kind = EventKind.TASK_ERROR
                status = (
                    Outcome.TIMEOUT if "Timeout" in type(task.error).__name__ else Outcome.ERROR
                )
                etype, emsg = type(task.error).__name__, _message(task.error)
            elif not task.done:
                status = Outcome.CANCELLED
            emit(
                _new(
                    Event,
                    (kind, *head, span, step_span, now, task.duration, *tail, task.step,
                     task.name, task_id, task.attempt, status, etype, emsg, _NO_DATA),
                )
            )  # fmt: skip
        if not self.targets[_STEP_END]:
            return
        emit(
            _new(
                Event,
                (_STEP_END, *head, step_span, self.run_span, now, _perf() - self.step_started,
                 *tail, loop.step, None, None, None,
                 Outcome.ERROR if error is not None else Outcome.OK, None, None, _NO_DATA),
            )
        )  # fmt: skip

    def retry(self, task: Task, delay: float, error: BaseException | None) -> None:
        self._task_event(EventKind.RETRY, task, data={"delay": delay}, **_error_fields(error))

    def instant(
        self, kind: EventKind, task: Task, *, status: str | None = None, data: Any = None
    ) -> None:
        """A point-in-time event inside ``task``'s span (approvals, for one)."""
        self._task_event(kind, task, status=status, data=dict(data or {}))

    def _task_event(self, kind: EventKind, task: Task, **fields: Any) -> None:
        self._emit(
            self._event(
                kind,
                task.span or self.step_span,
                self.step_span,
                step=task.step,
                node=task.name,
                task_id=task.id,
                attempt=task.attempt,
                **fields,
            )
        )

    def checkpoint_saved(self, checkpoint_id: str, step: int) -> None:
        self._emit(
            self._event(
                EventKind.CHECKPOINT_SAVED,
                self.step_span or self.run_span,
                self.run_span,
                step=step,
                data={"checkpoint_id": checkpoint_id},
            )
        )

    def compensation(self, node: str, outcome: Any) -> None:
        self._emit(
            self._event(
                EventKind.COMPENSATION,
                self.run_span,
                self.parent_span,
                node=node,
                status=Outcome.OK if outcome == "ok" else Outcome.ERROR,
                data={} if outcome == "ok" else {"error": str(outcome)},
            )
        )


def _message(error: BaseException) -> str:
    # An exception can carry a whole document (a failed LLM call's response body).
    return str(error)[:_MAX_MESSAGE]


def _error_fields(error: BaseException | None) -> dict[str, Any]:
    if error is None:
        return {}
    return {"error_type": type(error).__name__, "error_message": _message(error)}
