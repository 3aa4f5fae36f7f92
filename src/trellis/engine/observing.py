"""Turning a run into events: run, step and task spans, retries, interrupts.

Only runs that are observed pay for it: a ``RunObserver`` exists when the graph
has observers (``compile(observers=[...])``, ``metrics=True``) or the caller
streams ``"events"``. Events are emitted from the driver's thread, in order:
``step_start``, every ``task_start``, then (after the step) every ``task_end``
or ``task_error`` with its measured duration, then ``step_end``.

Timestamps come from one wall-clock reading per run plus the monotonic clock
(``ts = perf_counter() + offset``): one clock read per step edge serves both the
event time and the step duration. A ``task_end`` carries when its node ended, so
the ends of a step's tasks, sent in task order, need not be in time order.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

from trellis.engine.context import CURRENT_TASK
from trellis.errors import NodeError, NodeTimeoutError
from trellis.observe.events import (
    NO_DATA,
    Event,
    EventKind,
    Outcome,
    error_message,
    new_span_id,
    new_trace_id,
)
from trellis.observe.metrics import MetricsCollector, Tally
from trellis.types import START

if TYPE_CHECKING:
    from trellis.engine.loop import RunLoop
    from trellis.engine.task import Task

__all__ = ["STORE_EVERY", "Routes", "RunObserver"]

STORE_EVERY = 0.1
"""Seconds: how often (at a step's end) a traced run stores the events it has kept,
besides at its first step's end and its own end, so a crash loses at most this much
of the run history (and the run shows as still running); one write per step at most."""

_log = logging.getLogger("trellis.observe")
_perf = time.perf_counter
_now = time.time
_new = tuple.__new__
_STEP_START, _STEP_END = EventKind.STEP_START, EventKind.STEP_END
_TASK_START, _TASK_END, _TASK_ERROR = EventKind.TASK_START, EventKind.TASK_END, EventKind.TASK_ERROR
_OK, _INTERRUPTED = Outcome.OK, Outcome.INTERRUPTED
# The low halves of step and task span ids, "00000001" on: concatenating one to the
# run's prefix is a third of the cost of formatting the id, measured per step.
_NCOUNTERS = 1024  # about 60 KB of strings
_COUNTERS = [f"{n:08x}" for n in range(_NCOUNTERS)]
# Task outcomes: a plain MetricsCollector counts them through tallies, not events.
_OUTCOMES = frozenset({_TASK_END, _TASK_ERROR})


def _wants(sink: Any, kind: EventKind) -> bool:
    """Whether ``sink`` takes ``kind``: it is among the ``kinds`` the sink declared,
    or the sink declared none (an empty declaration means none at all)."""
    kinds = getattr(sink, "kinds", None)
    return kinds is None or kind in kinds


class Routes:
    """Which sinks get each kind of event: worked out once per graph, not per run."""

    __slots__ = ("collectors", "counts", "graph", "scopes", "sinks", "targets")

    def __init__(self, sinks: list[Any], graph: str) -> None:
        self.graph = graph
        self.sinks = list(sinks)  # what these routes were worked out for
        # A plain MetricsCollector (compile(metrics=True)) is not sent task outcome
        # events: the engine adds each outcome to the node's Tally directly.
        self.collectors = tuple(s for s in sinks if type(s) is MetricsCollector)
        self.counts: dict[str, tuple[Tally, ...]] = {}
        # Sinks that make a task's span current while its node runs (OpenTelemetry:
        # a span the node opens itself, an HTTP or LLM call, is then the task's child).
        self.scopes = tuple(s for s in sinks if callable(getattr(s, "enter_span", None)))
        # The sinks that want each kind (a sink may declare ``kinds``); kinds nobody
        # wants are not even built.
        self.targets: dict[EventKind, tuple[Any, ...]] = {
            kind: tuple(
                s
                for s in sinks
                if _wants(s, kind) and not (kind in _OUTCOMES and s in self.collectors)
            )
            for kind in EventKind
        }

    def observer(self, loop: RunLoop, *, buffer: bool, log: Any = None) -> RunObserver:
        """The observer of one run of the graph (see :class:`RunObserver`)."""
        return RunObserver(self, loop, buffer=buffer, log=log)

    def tallies_for(self, node: str) -> tuple[Tally, ...]:
        """Where ``node``'s attempts are counted: one tally per collector (made on its
        first run)."""
        tallies = self.counts[node] = tuple(c.tally(self.graph, node) for c in self.collectors)
        return tallies


class RunObserver:
    """Emits the events of one run to the graph's sinks (and the stream)."""

    __slots__ = (
        "buffer",
        "counts",
        "defer_store",
        "graph",
        "keyed",
        "kept",
        "log",
        "offset",
        "open_step",
        "parent_span",
        "run_id",
        "run_span",
        "routes",
        "run_started",
        "scoped",
        "span_prefix",
        "spans",
        "step_span",
        "step_number",
        "step_started",
        "store_due",
        "stored_at",
        "targets",
        "thread_id",
        "to_step_end",
        "to_step_start",
        "to_task_end",
        "to_task_error",
        "to_task_start",
        "trace_id",
    )

    def __init__(self, routes: Routes, loop: RunLoop, *, buffer: bool, log: Any = None) -> None:
        from trellis.observe.otel import current_trace_ids

        outer = CURRENT_TASK.get()  # set when this run is a subgraph inside a task
        if outer is not None and outer.span is not None and outer.loop.observer is not None:
            ids: tuple[str, str] | None = (outer.loop.observer.trace_id, outer.span)
        else:
            ids = current_trace_ids()
        self.graph = routes.graph
        self.thread_id = loop.thread_id
        if loop.run_id is None:
            import uuid

            loop.run_id = uuid.uuid4().hex
        self.run_id = loop.run_id
        self.trace_id = ids[0] if ids else new_trace_id()
        self.parent_span = ids[1] if ids else None
        self.run_span = new_span_id()
        # Step and task span ids are unique within the run's trace: the run span's
        # random high half, then a counter (cheaper than 64 random bits per span).
        self.span_prefix = self.run_span[:8]
        self.spans = 0
        self.offset = _now() - _perf()
        self.run_started = 0.0
        self.step_span = ""
        self.step_started = 0.0
        self.step_number: int | None = None  # the step step_span is for
        self.open_step: list[Task] | None = None  # a step started and not yet ended
        self.keyed = loop.saver is not None  # task ids only mean something with a checkpointer
        # Events kept for stream_mode="events"; the driver drains it after each step.
        self.buffer: list[Event] | None = [] if buffer else None
        # compile(trace=True): the run's events go to the saver's event log at the end.
        self.log = log if loop.thread_id is not None else None
        self.kept: list[Event] = []
        # An async run stores them itself, from a worker thread (``astore``).
        self.defer_store = False
        # Stored as the first step ends, then at most every STORE_EVERY seconds: a
        # crash loses that much of the history, not the run's whole.
        self.stored_at = -math.inf
        self.store_due = False  # an async run's driver should store them now
        self.routes = routes
        self.scoped = bool(routes.scopes)  # read per task: see enter()
        self.counts = routes.counts if routes.collectors else None
        targets = routes.targets
        everyone: list[Any] = []
        if self.buffer is not None:
            everyone.append(self.buffer.append)
        if self.log is not None:
            everyone.append(self.kept.append)
        if everyone:  # every kind, after the sinks
            targets = {kind: (*sinks, *everyone) for kind, sinks in targets.items()}
        self.targets = targets
        self.to_step_start = targets[_STEP_START]
        self.to_task_start = targets[_TASK_START]
        self.to_task_end = targets[_TASK_END]
        self.to_task_error = targets[_TASK_ERROR]
        self.to_step_end = targets[_STEP_END]

    def _send(
        self,
        kind: EventKind,
        span: str,
        parent: str | None,
        *,
        ts: float | None = None,
        **fields: Any,
    ) -> None:
        """Build and deliver an event off the hot path (``ts``: its time, when the
        clock was already read); a kind no sink wants is not even built."""
        targets = self.targets[kind]
        if not targets:
            return
        event = Event(
            kind,
            self.trace_id,
            span,
            parent,
            _perf() + self.offset if ts is None else ts,
            thread_id=self.thread_id,
            run_id=self.run_id,
            graph=self.graph,
            **fields,
        )
        for target in targets:
            try:
                target(event)
            except Exception:  # a broken sink must never break the run
                _sink_failed(target)

    def drain(self) -> list[Event]:
        if not self.buffer:
            return []
        events = list(self.buffer)
        self.buffer.clear()  # in place: ``targets`` holds its append
        return events

    # -- run ---------------------------------------------------------------

    def run_start(self) -> None:
        started = self.run_started = _perf()
        self._send(EventKind.RUN_START, self.run_span, self.parent_span, ts=started + self.offset)

    def run_end(
        self, loop: RunLoop, error: BaseException | None = None, *, cancelled: bool = False
    ) -> None:
        # Not an Exception: the caller cancelled the task, pressed Ctrl-C or exited.
        cancelled = cancelled or (error is not None and not isinstance(error, Exception))
        if self.open_step is not None:  # stopped inside a step: close its spans
            self.step_end(loop, self.open_step, error, cancelled=cancelled)
        if error is None and loop.status in ("interrupted", "interrupt_before", "interrupt_after"):
            # Also when the caller then stopped reading: the __interrupt__ chunk is the
            # last a paused run yields, and breaking there is how one waits for a human.
            status = _INTERRUPTED
        elif cancelled:
            status = Outcome.CANCELLED
        elif error is not None:
            status = Outcome.ERROR
        else:
            status = _OK
        ended = _perf()
        self._send(
            EventKind.RUN_END,
            self.run_span,
            self.parent_span,
            ts=ended + self.offset,
            duration=ended - self.run_started,
            status=status,
            **_error_fields(error),
        )
        self._flush()

    def _flush(self) -> None:
        """Store the events kept for the run history (``compile(trace=True)``)."""
        if not self.defer_store:
            self._store()

    async def astore(self, *, final: bool = True) -> None:
        """``_flush`` for an async run: the log may wait on a database server, so
        it is written from a worker thread. After the ``final`` one, later events
        (compensations) are stored as they come."""
        if final:
            self.defer_store = False
        self.store_due = False
        if self.log is not None and self.kept:
            import asyncio

            await asyncio.to_thread(self._store)

    def _store(self) -> None:
        if self.log is not None and self.kept:
            kept = list(self.kept)
            self.kept.clear()
            try:
                self.log.append(str(self.thread_id), [e.to_dict() for e in kept])
            except Exception:  # losing a trace must not fail the run it describes
                _log.exception("could not store run events")

    # -- steps and tasks ---------------------------------------------------

    # The hot path of an observed run. Events are built as plain tuples (Event is
    # a NamedTuple; tuple.__new__ skips its Python-level __new__) from locals, and
    # delivered by inlined loops rather than through ``_send``.

    def step_start(self, loop: RunLoop, tasks: list[Task]) -> None:
        started = self.step_started = _perf()
        self.open_step = tasks
        # Span ids inline rather than by a method: two calls are 5% of an observed step.
        prefix = self.span_prefix
        n = self.spans + 1
        self.step_span = step_span = prefix + _COUNTERS[n] if n < _NCOUNTERS else f"{prefix}{n:08x}"
        now = started + self.offset
        step = self.step_number = loop.step
        targets = self.to_step_start
        if targets:
            event = _new(Event, (_STEP_START, self.trace_id, step_span, self.run_span, now, None,
                                 self.thread_id, self.run_id, self.graph, step, None, None, None,
                                 None, None, None, NO_DATA))  # fmt: skip
            for target in targets:
                try:
                    target(event)
                except Exception:  # a broken sink must never break the run
                    _sink_failed(target)
        targets = self.to_task_start
        for task in tasks:
            if task.name == START:  # the input step is not a node: no task span
                continue
            n += 1
            task.span = span = prefix + _COUNTERS[n] if n < _NCOUNTERS else f"{prefix}{n:08x}"
            if targets:
                event = _new(Event, (_TASK_START, self.trace_id, span, step_span, now, None,
                                     self.thread_id, self.run_id, self.graph, step, task.name,
                                     task.id if self.keyed else None, task.attempt, None, None,
                                     None, NO_DATA))  # fmt: skip
                for target in targets:
                    try:
                        target(event)
                    except Exception:
                        _sink_failed(target)
        self.spans = n

    def step_end(
        self,
        loop: RunLoop,
        tasks: list[Task],
        error: BaseException | None,
        *,
        cancelled: bool = False,
    ) -> None:
        ended = _perf()
        self.open_step = None
        now = ended + self.offset
        step_span = self.step_span
        counts = self.counts
        for task in tasks:
            span = task.span
            if span is None:
                continue
            duration = task.duration
            # When the node ended: tasks wait for a worker (max_concurrency, a busy
            # pool), so a task's span is its own, not the step's.
            at = task.began + duration + self.offset if task.began else now
            if task.done and task.error is None and not task.interrupts and not task.halt:
                status = _OK
                targets = self.to_task_end
                if targets:
                    event = _new(Event, (_TASK_END, self.trace_id, span, step_span, at, duration,
                                         self.thread_id, self.run_id, self.graph, task.step,
                                         task.name, task.id if self.keyed else None,
                                         task.attempt, _OK, None, None, NO_DATA))  # fmt: skip
                    for target in targets:
                        try:
                            target(event)
                        except Exception:
                            _sink_failed(target)
            else:
                status = self._unfinished(task, span, at)
            if counts is not None:  # after the sinks, where the collector was
                # Tally.add inlined: a function call is a tenth of an observed step.
                for tally in counts.get(task.name) or self.routes.tallies_for(task.name):
                    pending = tally.pending
                    pending.append((duration if task.began else None, status))
                    if len(pending) >= tally.fold_at:
                        tally.fold()
        targets = self.to_step_end
        if targets:
            status = _step_status(error, cancelled)
            failed = error if status == Outcome.ERROR else None  # what the step failed of
            event = _new(Event, (_STEP_END, self.trace_id, step_span, self.run_span, now,
                                 ended - self.step_started, self.thread_id, self.run_id,
                                 self.graph, loop.step, None, None, None, status,
                                 type(failed).__name__ if failed is not None else None,
                                 error_message(failed) if failed is not None else None,
                                 NO_DATA))  # fmt: skip
            for target in targets:
                try:
                    target(event)
                except Exception:
                    _sink_failed(target)
        if self.log is not None and ended - self.stored_at >= STORE_EVERY:
            self.stored_at = ended
            if self.defer_store:
                self.store_due = True
            else:
                self._store()

    def enter(self, task: Task) -> list[tuple[Any, Any]] | None:
        """Make ``task``'s span current for the sinks that keep spans of their own,
        while its node runs; ``leave`` with what this returns when it has."""
        if task.span is None:
            return None
        entered = []
        for sink in self.routes.scopes:
            try:
                entered.append((sink, sink.enter_span(task.span)))
            except Exception:
                _sink_failed(sink)
        return entered

    def leave(self, entered: list[tuple[Any, Any]]) -> None:
        for sink, token in reversed(entered):
            try:
                sink.leave_span(token)
            except Exception:
                _sink_failed(sink)

    def _unfinished(self, task: Task, span: str, now: float) -> str:
        """Emit the end of a task that did not simply succeed; return its status.

        An interrupted task gets its ``interrupt`` event first.
        """
        where = {
            "step": task.step,
            "node": task.name,
            "task_id": task.id if self.keyed else None,
            "attempt": task.attempt,
        }
        kind = _TASK_END
        error = task.error
        if task.interrupts:
            self._send(
                EventKind.INTERRUPT, span, self.step_span, ts=now, **where,
                data={"interrupts": [i.id for i in task.interrupts]},
            )  # fmt: skip
            status = _INTERRUPTED
        elif error is None and task.done:
            # It ran to its end but for its own edges: a gate sent the run elsewhere
            # (ok), or it raised and on_error / error_handler took over (a failure).
            error = getattr(task, "handled", None)
            status = _OK if error is None else _failure_status(error)
            kind = _TASK_END if error is None else _TASK_ERROR
        elif error is not None:
            kind = _TASK_ERROR
            status = _failure_status(error)
        else:  # never finished: a sibling failed first
            status = Outcome.CANCELLED
        self._send(
            kind, span, self.step_span, ts=now, duration=task.duration, status=status, **where,
            **_error_fields(error),
        )  # fmt: skip
        return status

    def retry(self, task: Task, delay: float, error: BaseException | None) -> None:
        self._task_event(EventKind.RETRY, task, data={"delay": delay}, **_error_fields(error))

    def instant(
        self, kind: EventKind, task: Task, *, status: str | None = None, data: Any = None
    ) -> None:
        """A point-in-time event inside ``task``'s span (approvals, for one)."""
        self._task_event(kind, task, status=status, data=dict(data or {}))

    def _task_event(self, kind: EventKind, task: Task, **fields: Any) -> None:
        self._send(
            kind,
            task.span or self.step_span,
            self.step_span,
            step=task.step,
            node=task.name,
            task_id=task.id,
            attempt=task.attempt,
            **fields,
        )

    def checkpoint_saved(self, checkpoint_id: str, step: int) -> None:
        # In the step's span, or (the input checkpoint, before any step) the run's:
        # the input's is saved with the first step's, inside that step's span.
        step_span = self.step_span if step == self.step_number else ""
        self._send(
            EventKind.CHECKPOINT_SAVED,
            step_span or self.run_span,
            self.run_span if step_span else self.parent_span,
            step=step,
            data={"checkpoint_id": checkpoint_id},
        )

    def compensation(self, node: str, outcome: Any) -> None:
        """One compensation ran (``outcome``: ``"ok"`` or ``{"error": ...}``). The
        saga runs after the run has ended, so this goes to the history at once."""
        error = outcome.get("error") if isinstance(outcome, dict) else None
        self._send(
            EventKind.COMPENSATION,
            self.run_span,
            self.parent_span,
            node=node,
            status=Outcome.OK if outcome == "ok" else Outcome.ERROR,
            data={} if outcome == "ok" else {"error": str(error or outcome)},
        )
        self._flush()


def _step_status(error: BaseException | None, cancelled: bool) -> str:
    if cancelled:
        return Outcome.CANCELLED
    return _OK if error is None else Outcome.ERROR


def _failure_status(error: BaseException) -> str:
    """``timeout`` for an error that is (or, under a retry policy, wraps) the node's
    own timeout or a ``TimeoutError`` (asyncio's and socket's included), not for any
    error whose class name merely mentions one."""
    cause = error.original if isinstance(error, NodeError) else error
    timed_out = isinstance(cause, (NodeTimeoutError, TimeoutError))
    return Outcome.TIMEOUT if timed_out else Outcome.ERROR


def _error_fields(error: BaseException | None) -> dict[str, Any]:
    if error is None:
        return {}
    return {"error_type": type(error).__name__, "error_message": error_message(error)}


def _sink_failed(target: Any) -> None:
    _log.exception("event sink %r failed", target)
