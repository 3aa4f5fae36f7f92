"""Typed run events, their ids, and the fan-out that delivers them to sinks.

Every event of one run shares a ``trace_id``; runs, steps and tasks each own a
``span_id``, and point at their parent through ``parent_span_id``::

    run span (run_start .. run_end)
    └── step span (step_start .. step_end)
        └── task span (task_start .. task_end | task_error)

The engine retries a node inside its task span: each failed attempt of a retry
policy is a ``retry`` event there, and the end event carries the last attempt's
number (hand-built events, :class:`RunEvents`, may give each attempt a span).

Instant events (retry, interrupt, approval_*, checkpoint_saved, compensation,
circuit_state) carry the span id of the span they happened in, like OpenTelemetry
span events.

``ts`` is the wall-clock time (epoch seconds) at which the event happened; an end
event also carries ``duration`` (seconds, measured with a monotonic clock), so the
span started at ``ts - duration`` (see :attr:`Event.start_ts`).

A sink is any callable taking one :class:`Event`; it may also have ``close()``.
Sinks are called on the thread that emits, which may be a worker thread of the
step's pool, so a sink that keeps state guards it (every shipped sink does).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = [
    "Event",
    "EventKind",
    "Observers",
    "Outcome",
    "RunEvents",
    "Sink",
    "SpanHandle",
    "new_span_id",
    "new_trace_id",
]

_log = logging.getLogger("trellis.observe")
NO_DATA: Mapping[str, Any] = MappingProxyType({})  # shared, so read-only

Sink = Callable[["Event"], None]
"""Anything that accepts an event: ``sink(event)``."""


class EventKind(StrEnum):
    """What happened. The value is the wire name used in JSON and by sinks."""

    RUN_START = "run_start"
    RUN_END = "run_end"
    STEP_START = "step_start"
    STEP_END = "step_end"
    TASK_START = "task_start"
    TASK_END = "task_end"
    TASK_ERROR = "task_error"
    RETRY = "retry"
    INTERRUPT = "interrupt"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_DECIDED = "approval_decided"
    CHECKPOINT_SAVED = "checkpoint_saved"
    COMPENSATION = "compensation"
    CIRCUIT_STATE = "circuit_state"


class Outcome:
    """The ``status`` values Trellis uses (plain strings, so sinks need no import)."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"


def new_trace_id() -> str:
    """A random 128-bit trace id as 32 lowercase hex digits (W3C trace-context form).

    >>> len(new_trace_id())
    32
    """
    return f"{random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """A random 64-bit span id as 16 lowercase hex digits.

    >>> len(new_span_id())
    16
    """
    return f"{random.getrandbits(64) or 1:016x}"


class Event(NamedTuple):
    """One observable fact about a run (immutable).

    A ``NamedTuple`` rather than a frozen dataclass: the engine builds several per
    step, and a tuple is about eight times cheaper to build.

    >>> e = Event(EventKind.TASK_END, new_trace_id(), new_span_id(), node="fetch",
    ...           ts=1700000000.5, duration=0.25, status="ok")
    >>> Event.from_dict(e.to_dict()) == e
    True
    """

    kind: EventKind
    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    ts: float = 0.0
    duration: float | None = None
    thread_id: str | None = None
    run_id: str | None = None
    graph: str | None = None
    step: int | None = None
    node: str | None = None
    task_id: str | None = None
    attempt: int | None = None
    status: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    # Small, JSON-able extras: retry delay, checkpoint id, approval id, circuit states.
    data: Mapping[str, Any] = NO_DATA

    @property
    def start_ts(self) -> float:
        """When the span this event closes began (``ts`` for events without duration)."""
        return self.ts - self.duration if self.duration is not None else self.ts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; fields that are ``None`` or empty are left out."""
        out: dict[str, Any] = {"kind": self.kind.value}
        for name in _FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.data:
            out["data"] = dict(self.data)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Event:
        """Rebuild an event from :meth:`to_dict` output; unknown keys are ignored."""
        kwargs = {name: raw[name] for name in _FIELDS if name in raw}
        return cls(
            kind=EventKind(raw["kind"]),
            data=dict(raw.get("data") or {}),
            **kwargs,
        )


_FIELDS = tuple(name for name in Event._fields if name not in ("kind", "data"))


class Observers:
    """Fan one event out to many sinks; a failing sink never breaks the run.

    A sink that raises is logged once (with its traceback) and keeps receiving
    later events. ``bool(observers)`` is false when there is no sink, so callers
    can skip building events altogether.

    >>> from trellis.observe import MemorySink
    >>> mem = MemorySink()
    >>> bus = Observers([mem])
    >>> bus.emit(Event(EventKind.RUN_START, new_trace_id(), new_span_id()))
    >>> len(mem.events)
    1
    """

    __slots__ = ("_failed", "_sinks")

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        self._sinks: tuple[Sink, ...] = tuple(sinks)
        self._failed: set[int] = set()

    @property
    def sinks(self) -> tuple[Sink, ...]:
        return self._sinks

    def add(self, sink: Sink) -> None:
        """Attach another sink (not thread-safe against a concurrent ``emit``)."""
        self._sinks = (*self._sinks, sink)

    def __bool__(self) -> bool:
        return bool(self._sinks)

    def __len__(self) -> int:
        return len(self._sinks)

    def emit(self, event: Event) -> None:
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:
                self._sink_failed(sink, event)

    __call__ = emit

    def _sink_failed(self, sink: Sink, event: Event) -> None:
        if id(sink) in self._failed:
            return
        self._failed.add(id(sink))
        _log.exception(
            "observer %r failed on a %s event; it keeps receiving events but further "
            "failures are not logged",
            sink,
            event.kind.value,
        )

    def close(self) -> None:
        """Close every sink that has a ``close()``; errors are logged, not raised."""
        for sink in self._sinks:
            close = getattr(sink, "close", None)
            if close is None:
                continue
            try:
                close()
            except Exception:
                _log.exception("observer %r failed to close", sink)


@dataclass(slots=True)
class SpanHandle:
    """An open span, as returned by the ``*_start`` methods of :class:`RunEvents`."""

    span_id: str
    parent_span_id: str | None
    started: float
    step: int | None = None
    node: str | None = None
    task_id: str | None = None
    attempt: int | None = None


class RunEvents:
    """Builds the events of one run, with ids, timestamps and durations filled in.

    The run joins the active OpenTelemetry trace, when there is one, by adopting
    its trace id and using its span as the run's parent.

    >>> from trellis.observe import MemorySink
    >>> mem = MemorySink()
    >>> run = RunEvents(Observers([mem]), graph="g", thread_id="t1")
    >>> run.run_start()
    >>> step = run.step_start(0)
    >>> task = run.task_start(step, "fetch", attempt=1)
    >>> run.task_end(task)
    >>> run.step_end(step)
    >>> run.run_end("ok")
    >>> [e.kind.value for e in mem.events][:3]
    ['run_start', 'step_start', 'task_start']
    """

    __slots__ = (
        "_clock",
        "_emit",
        "_perf",
        "graph",
        "parent_span_id",
        "run",
        "run_id",
        "span_id",
        "thread_id",
        "trace_id",
    )

    def __init__(
        self,
        emit: Sink,
        *,
        graph: str | None = None,
        thread_id: str | None = None,
        run_id: str | None = None,
        join_otel: bool = True,
        clock: Callable[[], float] = time.time,
        perf_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        from trellis.observe.otel import current_trace_ids

        ids = current_trace_ids() if join_otel else None
        self._emit = emit
        self._clock = clock
        self._perf = perf_clock
        self.graph = graph
        self.thread_id = thread_id
        self.run_id = run_id
        self.trace_id = ids[0] if ids else new_trace_id()
        self.parent_span_id = ids[1] if ids else None
        self.span_id = new_span_id()
        self.run = SpanHandle(self.span_id, self.parent_span_id, 0.0)

    def _event(
        self,
        kind: EventKind,
        span: SpanHandle,
        *,
        duration: float | None = None,
        status: str | None = None,
        error: BaseException | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self._emit(
            Event(
                kind,
                self.trace_id,
                span.span_id,
                span.parent_span_id,
                self._clock(),
                duration,
                self.thread_id,
                self.run_id,
                self.graph,
                span.step,
                span.node,
                span.task_id,
                span.attempt,
                status,
                None if error is None else type(error).__name__,
                None if error is None else error_message(error),
                {} if data is None else data,
            )
        )

    def _end(
        self,
        kind: EventKind,
        span: SpanHandle,
        status: str,
        error: BaseException | None,
        data: Mapping[str, Any] | None,
    ) -> None:
        elapsed = self._perf() - span.started
        self._event(kind, span, duration=elapsed, status=status, error=error, data=data)

    def run_start(self, data: Mapping[str, Any] | None = None) -> None:
        self.run.started = self._perf()
        self._event(EventKind.RUN_START, self.run, data=data)

    def run_end(
        self,
        status: str = Outcome.OK,
        error: BaseException | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self._end(EventKind.RUN_END, self.run, status, error, data)

    def step_start(self, step: int, data: Mapping[str, Any] | None = None) -> SpanHandle:
        span = SpanHandle(new_span_id(), self.span_id, self._perf(), step)
        self._event(EventKind.STEP_START, span, data=data)
        return span

    def step_end(
        self,
        span: SpanHandle,
        status: str = Outcome.OK,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self._end(EventKind.STEP_END, span, status, None, data)

    def task_start(
        self,
        step: SpanHandle,
        node: str,
        *,
        attempt: int = 1,
        task_id: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> SpanHandle:
        span = SpanHandle(
            new_span_id(), step.span_id, self._perf(), step.step, node, task_id, attempt
        )
        self._event(EventKind.TASK_START, span, data=data)
        return span

    def task_end(
        self,
        span: SpanHandle,
        status: str = Outcome.OK,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Close a task attempt that returned (``ok``) or suspended (``interrupted``)."""
        self._end(EventKind.TASK_END, span, status, None, data)

    def task_error(
        self,
        span: SpanHandle,
        error: BaseException,
        *,
        status: str = Outcome.ERROR,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Close a failed task attempt; pass ``status="timeout"`` for a timeout."""
        self._end(EventKind.TASK_ERROR, span, status, error, data)

    def instant(
        self,
        kind: EventKind,
        span: SpanHandle | None = None,
        *,
        status: str | None = None,
        error: BaseException | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Emit a point-in-time event inside ``span`` (the run span when omitted)."""
        self._event(kind, span or self.run, status=status, error=error, data=data)

    def retry(self, span: SpanHandle, delay: float, error: BaseException | None = None) -> None:
        """The attempt in ``span`` failed and will be retried after ``delay`` seconds."""
        self._event(EventKind.RETRY, span, error=error, data={"delay": delay})


MAX_MESSAGE = 2000
"""Characters of an exception message an event keeps: an error can carry a
whole document (a failed model call's response body)."""


def error_message(error: BaseException) -> str:
    """``str(error)``, cut to :data:`MAX_MESSAGE` characters (ending in "...")."""
    text = str(error)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."
