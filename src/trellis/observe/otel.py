"""OpenTelemetry spans from Trellis events (the ``otel`` extra).

Nothing here imports OpenTelemetry at module import time: the package is imported
inside :class:`OtelObserver` and, only if something else already imported it, by
:func:`current_trace_ids`. So ``import trellis.observe`` works without the extra.

Span tree: one span per run (a child of the caller's span when the run starts
inside an active OpenTelemetry context), a child per step, and a child of the step
per task. Spans start and end at the events' own timestamps, but for a task's: its
step announces every task at once, and a task may then wait for a worker, so its
span starts when its node does (``enter_span``), or else as the task's end event
says, or when something happens inside it first. Instant
events (retry, interrupt, approvals, checkpoints, ...) become span events on the
innermost span still open. Compensations run after their run has ended: each
becomes a short span of its own under the run's. Nesting relies on start events: a
span seen only through its end event is still recorded, but as a root.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from trellis.observe.events import NO_DATA, Event, EventKind, Outcome

__all__ = ["OtelObserver", "current_trace_ids"]

_STARTS = frozenset({EventKind.RUN_START, EventKind.STEP_START, EventKind.TASK_START})
_ENDS = frozenset({EventKind.RUN_END, EventKind.STEP_END, EventKind.TASK_END, EventKind.TASK_ERROR})
_SCALARS = (str, bool, int, float)
_ENDED_RUNS = 256  # recent run spans kept for the compensations that follow them


def current_trace_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` in hex of the active OpenTelemetry span, else ``None``.

    The engine calls this when a run starts, so the run joins the caller's trace.
    If OpenTelemetry was never imported there can be no active span, and this
    returns ``None`` without importing it.

    >>> current_trace_ids() is None or len(current_trace_ids()[0]) == 32
    True
    """
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def _ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


def _attributes(event: Event) -> dict[str, Any]:
    attrs: dict[str, Any] = {"trellis.trace_id": event.trace_id}
    for key, value in (
        ("trellis.graph", event.graph),
        ("trellis.thread_id", event.thread_id),
        ("trellis.run_id", event.run_id),
        ("trellis.step", event.step),
        ("trellis.node", event.node),
        ("trellis.task_id", event.task_id),
        ("trellis.attempt", event.attempt),
    ):
        if value is not None:
            attrs[key] = value
    return attrs


def _data_attributes(data: Mapping[str, Any], prefix: str = "trellis.") -> dict[str, Any]:
    return {
        f"{prefix}{k}": v if isinstance(v, _SCALARS) else str(v)
        for k, v in data.items()
        if v is not None
    }


class OtelObserver:
    """An event sink that records OpenTelemetry spans.

    Attributes on every span: ``trellis.graph``, ``trellis.thread_id``,
    ``trellis.step``, ``trellis.node``, ``trellis.attempt`` (as applicable) and, on
    ending, ``trellis.outcome``. A failed task or run gets status ``ERROR`` and an
    ``exception`` event (``exception.type``, ``exception.message``).

    When the run started inside an active span, the engine adopts that trace id
    and the spans join the caller's trace. Otherwise OpenTelemetry assigns the run
    a new trace id of its own; the Trellis trace id is kept in the
    ``trellis.trace_id`` attribute.

    >>> from opentelemetry.sdk.trace import TracerProvider    # doctest: +SKIP
    >>> graph = builder.compile(observers=[OtelObserver(TracerProvider())])  # doctest: +SKIP
    """

    def __init__(self, tracer_provider: Any = None, *, tracer_name: str = "trellis") -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
            raise ImportError(
                "OtelObserver needs OpenTelemetry: pip install 'trellis[otel]'"
            ) from exc
        self._trace = trace
        # Looked up once: per span they were a measurable share of this observer's time.
        self._internal = trace.SpanKind.INTERNAL
        self._status, self._error_code = trace.Status, trace.StatusCode.ERROR
        self._tracer = trace.get_tracer(tracer_name, tracer_provider=tracer_provider)
        self._lock = threading.Lock()
        # Trellis span id -> (OpenTelemetry span, parent span id, run id, start ns).
        self._open: dict[str, tuple[Any, str | None, str | None, int]] = {}
        # Task span id -> its start event, until the span is opened (see module doc).
        self._waiting: dict[str, Event] = {}
        # Run span id -> its ended span, for the latest runs: compensations come after.
        self._ended: OrderedDict[str, Any] = OrderedDict()

    def enter_span(self, span_id: str) -> Any:
        """Make the span of task ``span_id`` the current one while its node runs (the
        engine calls this), so a span the node opens itself, an instrumented HTTP or
        LLM call, is the task's child. Returns the token ``leave_span`` takes."""
        self._open_waiting(span_id, time.time())
        with self._lock:
            entry = self._open.get(span_id)
        if entry is None:
            return None
        from opentelemetry import context

        return context.attach(self._trace.set_span_in_context(entry[0]))

    def leave_span(self, token: Any) -> None:
        """Restore the context ``enter_span`` replaced."""
        if token is not None:
            from opentelemetry import context

            context.detach(token)

    def __call__(self, event: Event) -> None:
        kind = event.kind
        if kind is EventKind.TASK_START:
            with self._lock:
                self._waiting[event.span_id] = event
        elif kind in _STARTS:
            self._start(event)
        elif kind in _ENDS:
            self._finish(event)
        else:
            self._instant(event)

    def _name(self, event: Event) -> str:
        kind = event.kind
        if kind is EventKind.RUN_START or kind is EventKind.RUN_END:
            return f"run {event.graph}" if event.graph else "run"
        if kind is EventKind.STEP_START or kind is EventKind.STEP_END:
            return f"step {event.step}"
        return event.node or "task"

    def _open_waiting(self, span_id: str | None, at: float | None = None) -> None:
        """Open the task span ``span_id`` if it waits: at ``at``, else as announced."""
        if span_id is None or not self._waiting:
            return
        with self._lock:
            event = self._waiting.pop(span_id, None)
        if event is not None:
            self._start(event if at is None else event._replace(ts=at))

    def _parent_context(self, event: Event) -> Any:
        trace = self._trace
        parent_id = event.parent_span_id
        self._open_waiting(parent_id)
        with self._lock:
            parent = self._open.get(parent_id) if parent_id else None
        if parent is not None:
            return trace.set_span_in_context(parent[0])
        if event.kind is not EventKind.RUN_START or not parent_id:
            return trace.set_span_in_context(trace.INVALID_SPAN)  # a new root, not the ambient
        # The run joined a foreign trace: parent it on the caller's span. Prefer the
        # live span (it carries the right sampling flags) when it is the current one.
        current = trace.get_current_span()
        ctx = current.get_span_context()
        if ctx.is_valid and f"{ctx.span_id:016x}" == parent_id:
            return trace.set_span_in_context(current)
        try:
            remote = trace.SpanContext(
                trace_id=int(event.trace_id, 16),
                span_id=int(parent_id, 16),
                is_remote=True,
                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
            )
        except ValueError:
            return trace.set_span_in_context(trace.INVALID_SPAN)
        return trace.set_span_in_context(trace.NonRecordingSpan(remote))

    def _start(self, event: Event) -> None:
        start = _ns(event.ts)
        attributes = _attributes(event)
        if event.data:
            attributes.update(_data_attributes(event.data))
        span = self._tracer.start_span(
            self._name(event),
            context=self._parent_context(event),
            kind=self._internal,
            attributes=attributes,
            start_time=start,
        )
        with self._lock:
            self._open[event.span_id] = (span, event.parent_span_id, event.run_id, start)

    def _finish(self, event: Event) -> None:
        with self._lock:
            entry = self._open.pop(event.span_id, None)
            self._waiting.pop(event.span_id, None)  # never entered: opened from its end
        if entry is None:
            # No start event was seen (observer attached mid-run, or an engine that
            # emits only end events): record the span from its end event alone.
            self._start(
                event._replace(
                    kind=_START_OF[event.kind],
                    ts=event.start_ts,
                    duration=None,
                    status=None,
                    error_type=None,
                    error_message=None,
                    data=NO_DATA,
                )
            )
            with self._lock:
                entry = self._open.pop(event.span_id)
        if event.kind is EventKind.RUN_END:
            self._end_children(event)
            with self._lock:
                self._ended[event.span_id] = entry[0]
                if len(self._ended) > _ENDED_RUNS:
                    self._ended.popitem(last=False)
        # Start plus the monotonic duration: exact, where epoch floats lose nanoseconds.
        end = entry[3] + _ns(event.duration) if event.duration is not None else _ns(event.ts)
        self._close(entry[0], event, end)

    def _close(self, span: Any, event: Event, end: int) -> None:
        status = event.status or (Outcome.ERROR if event.kind is EventKind.TASK_ERROR else "ok")
        span.set_attribute("trellis.outcome", status)
        if event.attempt is not None:  # a retried task ends on a later attempt than it began
            span.set_attribute("trellis.attempt", event.attempt)
        if event.data:
            span.set_attributes(_data_attributes(event.data))
        if event.error_type or status in (Outcome.ERROR, Outcome.TIMEOUT):
            attrs = {"exception.type": event.error_type or "Error"}
            if event.error_message is not None:
                attrs["exception.message"] = event.error_message
            stack = event.data.get("stacktrace")
            if isinstance(stack, str):
                attrs["exception.stacktrace"] = stack
            span.add_event("exception", attributes=attrs, timestamp=end)
            description = f"{event.error_type or 'Error'}: {event.error_message or ''}"
            span.set_status(self._status(self._error_code, description.rstrip(": ")))
        span.end(end_time=end)

    def _end_children(self, event: Event) -> None:
        # A run that ends with spans still open (a crash mid-step): close them so they
        # are exported rather than leaked.
        # Only this run's descendants: concurrent runs that joined one caller span
        # share its trace id, and their spans must stay open.
        with self._lock:
            waiting = [sid for sid, e in self._waiting.items() if e.run_id == event.run_id]
        for sid in waiting:  # announced, never begun: closed with the rest
            self._open_waiting(sid)
        with self._lock:
            family = {event.span_id}
            orphans: list[tuple[str, tuple[Any, str | None, str | None, int]]] = []
            grew = True
            while grew:
                grew = False
                for sid, entry in self._open.items():
                    if sid not in family and entry[1] in family:
                        family.add(sid)
                        orphans.append((sid, entry))
                        grew = True
            for sid, _ in orphans:
                del self._open[sid]
        for _, (span, *_) in reversed(orphans):
            span.set_attribute("trellis.outcome", event.status or Outcome.CANCELLED)
            span.end(end_time=_ns(event.ts))

    def _instant(self, event: Event) -> None:
        self._open_waiting(event.span_id)
        with self._lock:
            # The span may have ended already (a retry comes after its task_error):
            # then the event goes to its parent, else to its run's latest open span.
            entry = self._open.get(event.span_id)
            if entry is None and event.parent_span_id:
                entry = self._open.get(event.parent_span_id)
            if entry is None and event.run_id is not None:
                # Not by trace id: concurrent runs that joined one caller span share it.
                entry = next(
                    (e for e in reversed(self._open.values()) if e[2] == event.run_id),
                    None,
                )
            ended = self._ended.get(event.span_id) if entry is None else None
        if ended is not None:
            self._after_run(ended, event)
        if entry is None:
            return
        entry[0].add_event(
            event.kind.value, attributes=self._event_attributes(event), timestamp=_ns(event.ts)
        )

    def _event_attributes(self, event: Event) -> dict[str, Any]:
        attrs = _attributes(event) | _data_attributes(event.data)
        if event.status:
            attrs["trellis.outcome"] = event.status
        if event.error_type:
            attrs["exception.type"] = event.error_type
        if event.error_message:
            attrs["exception.message"] = event.error_message
        return attrs

    def _after_run(self, run: Any, event: Event) -> None:
        """An event of a run whose span has ended (a compensation: the saga runs
        after the run), recorded as a span of its own under the run's."""
        at = _ns(event.ts)
        span = self._tracer.start_span(
            f"{event.kind.value} {event.node}" if event.node else event.kind.value,
            context=self._trace.set_span_in_context(run),
            kind=self._internal,
            attributes=_attributes(event),
            start_time=at,
        )
        span.add_event(event.kind.value, attributes=self._event_attributes(event), timestamp=at)
        if event.status == Outcome.ERROR:
            error = str(event.data.get("error", "")) if event.data else ""
            span.set_status(self._status(self._error_code, error or None))
        span.set_attribute("trellis.outcome", event.status or "ok")
        span.end(end_time=at)

    def close(self) -> None:
        """End any span still open (their runs never reported an end)."""
        with self._lock:
            leftovers = list(self._open.values())
            self._open.clear()
        for span, *_ in reversed(leftovers):
            span.end()


_START_OF = {
    EventKind.RUN_END: EventKind.RUN_START,
    EventKind.STEP_END: EventKind.STEP_START,
    EventKind.TASK_END: EventKind.TASK_START,
    EventKind.TASK_ERROR: EventKind.TASK_START,
}
