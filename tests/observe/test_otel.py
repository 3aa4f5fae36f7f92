from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from trellis.observe import MemorySink, Observers, Outcome, RunEvents
from trellis.observe.otel import OtelObserver, current_trace_ids


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def wall(self) -> float:
        return 1_700_000_000.0 + self.t

    def perf(self) -> float:
        return self.t


@pytest.fixture
def otel() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _spans(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def test_run_step_and_task_spans_nest_with_attributes_and_event_times(
    otel: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = otel
    clock = Clock()
    run = RunEvents(
        OtelObserver(provider), graph="g", thread_id="t1", clock=clock.wall, perf_clock=clock.perf
    )
    run.run_start()
    step = run.step_start(0)
    task = run.task_start(step, "fetch", task_id="task-1")
    clock.t += 0.25
    run.task_end(task)
    run.step_end(step)
    run.run_end(Outcome.OK)

    spans = _spans(exporter)
    assert set(spans) == {"run g", "step 0", "fetch"}
    run_span, step_span, task_span = spans["run g"], spans["step 0"], spans["fetch"]
    assert run_span.parent is None
    assert step_span.parent is not None and task_span.parent is not None
    assert step_span.parent.span_id == run_span.context.span_id
    assert task_span.parent.span_id == step_span.context.span_id
    assert len({s.context.trace_id for s in spans.values()}) == 1
    attrs = dict(task_span.attributes or {})
    assert attrs["trellis.node"] == "fetch"
    assert attrs["trellis.attempt"] == 1
    assert attrs["trellis.thread_id"] == "t1"
    assert attrs["trellis.step"] == 0
    assert attrs["trellis.outcome"] == "ok"
    assert attrs["trellis.trace_id"] == run.trace_id
    assert task_span.start_time == 1_700_000_000 * 10**9
    assert task_span.end_time == task_span.start_time + 250_000_000
    assert task_span.status.status_code is StatusCode.UNSET


def test_failed_attempts_record_the_error_and_retries_become_span_events(
    otel: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = otel
    run = RunEvents(OtelObserver(provider), graph="g", join_otel=False)
    run.run_start()
    step = run.step_start(0)
    first = run.task_start(step, "call_api")
    run.task_error(first, ConnectionError("refused"))
    run.retry(first, 0.5)
    second = run.task_start(step, "call_api", attempt=2)
    run.task_error(second, TimeoutError("slow"), status=Outcome.TIMEOUT)
    run.step_end(step, Outcome.ERROR)
    run.run_end(Outcome.ERROR, RuntimeError("call_api failed"))

    finished = exporter.get_finished_spans()
    attempts = sorted(
        (s for s in finished if s.name == "call_api"),
        key=lambda s: str((s.attributes or {})["trellis.attempt"]),
    )
    assert [(s.attributes or {})["trellis.outcome"] for s in attempts] == ["error", "timeout"]
    for span, (etype, message) in zip(
        attempts, [("ConnectionError", "refused"), ("TimeoutError", "slow")], strict=True
    ):
        assert span.status.status_code is StatusCode.ERROR
        (exc,) = [e for e in span.events if e.name == "exception"]
        assert dict(exc.attributes or {}) == {
            "exception.type": etype,
            "exception.message": message,
        }
    step_span = next(s for s in finished if s.name == "step 0")
    (retry,) = [e for e in step_span.events if e.name == "retry"]
    assert (retry.attributes or {})["trellis.delay"] == 0.5
    assert (retry.attributes or {})["trellis.node"] == "call_api"
    run_span = next(s for s in finished if s.name == "run g")
    assert run_span.status.status_code is StatusCode.ERROR
    assert "call_api failed" in (run_span.status.description or "")


def test_a_run_inside_an_active_span_joins_that_trace(
    otel: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = otel
    mem = MemorySink()
    assert current_trace_ids() is None
    with provider.get_tracer("app").start_as_current_span("http request") as outer:
        ids = current_trace_ids()
        ctx = outer.get_span_context()
        assert ids == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
        run = RunEvents(Observers([OtelObserver(provider), mem]), graph="g")
        run.run_start()
        step = run.step_start(0)
        run.task_end(run.task_start(step, "fetch"))
        run.step_end(step)
        run.run_end()
    assert {e.trace_id for e in mem.events} == {f"{ctx.trace_id:032x}"}
    assert mem.events[0].parent_span_id == f"{ctx.span_id:016x}"
    spans = _spans(exporter)
    assert {s.context.trace_id for s in spans.values()} == {ctx.trace_id}
    run_parent = spans["run g"].parent
    assert run_parent is not None and run_parent.span_id == ctx.span_id


def test_a_run_outside_any_span_is_a_new_root(
    otel: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = otel
    with provider.get_tracer("app").start_as_current_span("unrelated"):
        # join_otel=False: the engine chose not to adopt, so the run must not nest.
        run = RunEvents(OtelObserver(provider), graph="g", join_otel=False)
        run.run_start()
        run.run_end()
    assert _spans(exporter)["run g"].parent is None


def test_run_end_closes_spans_left_open_by_a_crash(
    otel: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = otel
    observer = OtelObserver(provider)
    run = RunEvents(observer, graph="g", join_otel=False)
    run.run_start()
    step = run.step_start(0)
    run.task_start(step, "stuck")
    run.run_end(Outcome.CANCELLED)
    spans = _spans(exporter)
    assert set(spans) == {"run g", "step 0", "stuck"}
    assert (spans["stuck"].attributes or {})["trellis.outcome"] == "cancelled"
    assert observer._open == {}


def test_end_events_alone_still_record_every_span(
    otel: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = otel
    mem = MemorySink()
    run = RunEvents(mem, graph="g", join_otel=False)
    run.run_start()
    step = run.step_start(0)
    run.task_end(run.task_start(step, "fetch"))
    run.step_end(step)
    run.run_end()
    observer = OtelObserver(provider)
    for event in mem.events:
        if not event.kind.value.endswith("_start"):
            observer(event)
    spans = _spans(exporter)
    assert set(spans) == {"run g", "step 0", "fetch"}
    fetch_end = next(e for e in mem.events if e.kind.value == "task_end")
    fetch = spans["fetch"]
    assert fetch.start_time is not None and fetch.end_time is not None
    assert fetch.start_time == pytest.approx(fetch_end.start_ts * 1e9, abs=1000)
    assert fetch.end_time - fetch.start_time == round((fetch_end.duration or 0) * 1e9)


_BLOCKED = textwrap.dedent(
    """
    import sys

    class BlockOtel:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, BlockOtel())

    import trellis.observe as observe
    from trellis.observe import MemorySink, MetricsCollector, Observers, RunEvents

    mem = MemorySink()
    run = RunEvents(Observers([mem, MetricsCollector()]), graph="g")
    run.run_start()
    run.run_end()
    assert len(mem.events) == 2
    assert observe.current_trace_ids() is None
    try:
        observe.OtelObserver()
    except ImportError as exc:
        assert "trellis[otel]" in str(exc), exc
    else:
        raise AssertionError("OtelObserver worked without OpenTelemetry")
    loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
    assert not loaded, loaded
    print("clean")
    """
)


def test_observe_imports_and_runs_without_opentelemetry() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKED], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_importing_observe_does_not_load_opentelemetry_even_when_installed() -> None:
    code = (
        "import sys, trellis.observe, trellis.observe.otel\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


async def test_concurrent_runs_in_one_caller_span_keep_their_own_spans(
    otel: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    import asyncio

    from typing_extensions import TypedDict

    from trellis import END, START, StateGraph

    provider, exporter = otel

    class S(TypedDict):
        n: int

    async def work(state: S) -> dict[str, int]:
        await asyncio.sleep(0.02 * state["n"])
        return {}

    builder = StateGraph(S)
    builder.add_node("work", work)
    builder.add_edge(START, "work")
    builder.add_edge("work", END)
    graph = builder.compile(observers=[OtelObserver(provider)])
    with provider.get_tracer("app").start_as_current_span("request"):
        await graph.abatch([{"n": 1}, {"n": 6}])
    work = [s for s in exporter.get_finished_spans() if s.name == "work"]
    assert len(work) == 2, "the quicker run must not end the slower run's task span"
    assert all(s.parent is not None for s in work)
    assert max(s.end_time - s.start_time for s in work) >= 0.1 * 1e9


def test_a_late_event_goes_to_its_own_run_not_to_another_in_the_same_trace(
    otel: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Two runs joined one caller span, so they share its trace id. An event whose
    own span and parent already ended lands on its run's latest open span, and is
    dropped once its run has no span open, never on the other run's spans."""
    provider, exporter = otel
    observer = OtelObserver(provider)
    with provider.get_tracer("app").start_as_current_span("request"):
        slow = RunEvents(observer, graph="slow", run_id="r-slow")
        quick = RunEvents(observer, graph="quick", run_id="r-quick")
    assert slow.trace_id == quick.trace_id
    slow.run_start()
    slow_task = slow.task_start(slow.step_start(0), "wait")
    quick.run_start()
    quick_step = quick.step_start(0)
    quick_task = quick.task_start(quick_step, "call")
    quick.task_error(quick_task, RuntimeError("boom"))
    quick.step_end(quick_step, Outcome.ERROR)
    quick.retry(quick_task, 0.5)  # its task and step are closed; its run is open
    quick.run_end(Outcome.ERROR)
    quick.retry(quick_task, 1.0)  # nothing of its run is open any more
    slow.task_end(slow_task)
    slow.run_end()
    retries = {
        (s.name, (s.attributes or {})["trellis.graph"]): [
            (e.attributes or {})["trellis.delay"] for e in s.events if e.name == "retry"
        ]
        for s in exporter.get_finished_spans()
        if s.name != "request"
    }
    assert retries == {
        ("run slow", "slow"): [],
        ("step 0", "slow"): [],
        ("wait", "slow"): [],
        ("run quick", "quick"): [0.5],
        ("step 0", "quick"): [],
        ("call", "quick"): [],
    }


def test_a_subgraph_run_is_a_span_under_the_parent_task(
    otel: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    from typing_extensions import TypedDict

    from trellis import START, StateGraph

    provider, exporter = otel
    observer = OtelObserver(provider)

    class S(TypedDict, total=False):
        x: int

    inner = StateGraph(S)
    inner.add_node("work", lambda s: {"x": 1})
    inner.add_edge(START, "work")
    outer = StateGraph(S)
    outer.add_node("call_sub", inner.compile(observers=[observer], name="sub"))
    outer.add_edge(START, "call_sub")
    outer.compile(observers=[observer], name="parent").invoke({})
    spans = _spans(exporter)
    assert len({s.context.trace_id for s in exporter.get_finished_spans()}) == 1
    parent_of_sub = spans["run sub"].parent
    assert parent_of_sub is not None and parent_of_sub.span_id == spans["call_sub"].context.span_id


def test_a_retried_task_ends_on_its_last_attempt_and_compensations_get_spans(
    otel: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    from typing_extensions import TypedDict

    from trellis import START, RetryPolicy, StateGraph

    provider, exporter = otel

    class S(TypedDict, total=False):
        x: int

    calls = []

    def flaky(state: S) -> S:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("transient")
        return {"x": 1}

    def bad(state: S) -> S:
        raise ValueError("bad")

    builder = StateGraph(S)
    retry = RetryPolicy(initial_interval=0.001, jitter=False)
    builder.add_node("flaky", flaky, retry_policy=retry, compensate=lambda s: None)
    builder.add_node("bad", bad)
    builder.add_edge(START, "flaky")
    builder.add_edge("flaky", "bad")
    graph = builder.compile(observers=[OtelObserver(provider)], name="g")
    with pytest.raises(ValueError, match="bad"):
        graph.invoke({})
    spans = _spans(exporter)
    assert (spans["flaky"].attributes or {})["trellis.attempt"] == 3
    undo = spans["compensation flaky"]  # the saga runs after the run span has ended
    assert undo.parent is not None and undo.parent.span_id == spans["run g"].context.span_id
    assert (undo.attributes or {})["trellis.outcome"] == "ok"
    assert [e.name for e in undo.events] == ["compensation"]


@pytest.mark.parametrize("mode", ["sync", "parallel", "async", "timeout"])
def test_a_span_a_node_opens_is_a_child_of_its_task_span(
    otel: tuple[TracerProvider, InMemorySpanExporter], mode: str
) -> None:
    # An instrumented call inside a node (an HTTP client, an LLM SDK) opens its span
    # on whatever span is current: it must be the node's own.
    import asyncio

    from typing_extensions import TypedDict

    from trellis import START, StateGraph

    provider, exporter = otel
    tracer = provider.get_tracer("a client library")

    class S(TypedDict, total=False):
        a: int
        b: int

    def call(name: str) -> dict[str, int]:
        with tracer.start_as_current_span(f"call from {name}"):
            return {name: 1}

    async def acall(state: S) -> dict[str, int]:
        await asyncio.sleep(0)
        return call("a")

    builder = StateGraph(S)
    options = {"timeout": 5.0} if mode == "timeout" else {}
    builder.add_node("a", acall if mode == "async" else lambda s: call("a"), **options)
    builder.add_edge(START, "a")
    if mode == "parallel":
        builder.add_node("b", lambda s: call("b"))
        builder.add_edge(START, "b")
    graph = builder.compile(observers=[OtelObserver(provider)])
    if mode == "async":
        asyncio.run(graph.ainvoke({}))
    else:
        graph.invoke({})
    spans = _spans(exporter)
    for node in ("a", "b") if mode == "parallel" else ("a",):
        parent = spans[f"call from {node}"].parent
        assert parent is not None and parent.span_id == spans[node].context.span_id, node
        assert spans[f"call from {node}"].context.trace_id == spans[node].context.trace_id


def test_a_task_that_waits_for_a_worker_has_its_span_from_when_its_node_began(
    otel: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    import time

    from typing_extensions import TypedDict

    from trellis import START, StateGraph

    provider, exporter = otel

    class S(TypedDict, total=False):
        x: int

    builder = StateGraph(S)
    for name in ("a", "b", "c"):
        builder.add_node(name, lambda s: time.sleep(0.02) or {})
        builder.add_edge(START, name)
    builder.compile(observers=[OtelObserver(provider)]).invoke({}, {"max_concurrency": 1})
    spans = sorted(
        (s.start_time or 0, s.end_time or 0)
        for s in exporter.get_finished_spans()
        if s.name in ("a", "b", "c")
    )
    assert len(spans) == 3
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - 2_000_000  # ns: one after the other
    assert all(end - start < 40_000_000 for start, end in spans)  # its own 20 ms, not queued
