"""Trellis-only shapes: what observing a run costs, and the review queue at scale.

Neither has a LangGraph counterpart (LangGraph has no built-in events, metrics
or review queue), so each row is Trellis measured against itself or an absolute
target from the issues.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

from benchmarks.harness import Config, Row, Shape, Target

__all__ = ["SHAPES"]


def _chain(**options: Any) -> Any:
    """The 100-node chain of the core shapes, compiled with ``options``."""
    from benchmarks.engines import api
    from benchmarks.shapes_core import chain_builder

    return chain_builder(api("trellis"), 100).compile(**options)


def _per_step(graph: Any, runs: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(runs):
        graph.invoke({"n": 0})
    return (time.perf_counter_ns() - start) / runs / 100 / 1000


def run_observed(cfg: Config) -> list[Row]:
    """The 100-node chain with events (to a sink) and metrics on, against it off."""
    counted = [0]

    def sink(event: Any) -> None:  # the cheapest consumer: counts every event
        counted[0] += 1

    plain = _chain()
    observed = _chain(observers=[sink], metrics=True)
    runs = 20 if cfg.quick else 200
    for graph in (plain, observed):
        _per_step(graph, 5)
    ratios = []
    for _ in range(cfg.reps):  # interleaved, so machine noise hits both sides
        ratios.append(_per_step(observed, runs) / _per_step(plain, runs))
    return [
        Row(
            "observed",
            "100-node chain, events + metrics on / off",
            "x",
            {"trellis": float(statistics.median(ratios))},
            [Target("max", 2.0, unit="x")],
            note="events to a counting sink, compile(metrics=True); no OpenTelemetry spans",
        ),
        _otel_row(cfg, plain, sink),
    ]


def _otel_row(cfg: Config, plain: Any, sink: Any) -> Row:
    """The same chain with OpenTelemetry spans on as well, really made by the SDK."""
    label = "  + OpenTelemetry spans (SDK, batch processor) / off"
    target = [Target("max", 2.0, unit="x")]
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from trellis.observe import OtelObserver
    except ImportError:
        return Row("observed", label, "x", {"trellis": "n/a (no OpenTelemetry SDK)"}, target)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    traced = _chain(observers=[sink, OtelObserver(provider)], metrics=True)
    runs = 5 if cfg.quick else 40  # a traced run takes milliseconds, not microseconds
    _per_step(traced, 2)
    ratios, steps = [], []
    for _ in range(cfg.reps):
        step = _per_step(plain, runs)
        ratios.append(_per_step(traced, runs) / step)
        steps.append(step)
        exporter.clear()  # the finished spans would pile up otherwise
    per_span = _sdk_span_us(provider, 500 if cfg.quick else 5000)
    provider.shutdown()
    step = float(statistics.median(steps))
    note = (
        f"the OpenTelemetry SDK alone takes {per_span:.1f} µs to start and end one span "
        "(TracerProvider + BatchSpanProcessor, the attributes Trellis sets)"
    )
    if 2 * per_span > step:  # a step makes a step span and a task span
        note += (
            f"; a step makes 2 spans and a whole plain step takes {step:.1f} µs, "
            "so 2x is out of reach for the SDK's span creation alone"
        )
    return Row("observed", label, "x", {"trellis": float(statistics.median(ratios))}, target, note)


def _sdk_span_us(provider: Any, spans: int) -> float:
    """What the SDK costs per span: start with Trellis's attributes, one more, end."""
    from opentelemetry import trace

    tracer = provider.get_tracer("benchmarks")
    root = trace.set_span_in_context(trace.INVALID_SPAN)
    attributes = {
        "trellis.trace_id": "0" * 32, "trellis.graph": "LangGraph", "trellis.thread_id": "t",
        "trellis.run_id": "0" * 32, "trellis.step": 1, "trellis.node": "n1", "trellis.attempt": 1,
    }  # fmt: skip
    samples = []
    for _ in range(3):
        start = time.perf_counter_ns()
        for i in range(spans):
            span = tracer.start_span(
                "n1", context=root, kind=trace.SpanKind.INTERNAL, attributes=attributes,
                start_time=i,
            )  # fmt: skip
            span.set_attribute("trellis.outcome", "ok")
            span.end(end_time=i + 1)
        samples.append((time.perf_counter_ns() - start) / spans / 1000)
    return float(statistics.median(samples))


def run_review_queue(cfg: Config) -> list[Row]:
    """``ReviewQueue.pending()`` with 10,000 runs waiting, on SQLite."""
    from trellis import ReviewQueue, SqliteSaver
    from trellis.hitl.records import ApprovalRequest
    from trellis.hitl.store import store_for

    saver = SqliteSaver.from_path(cfg.tmpdir / f"queue-{uuid.uuid4().hex[:8]}.db")
    store = store_for(saver)
    waiting = 1000 if cfg.quick else 10_000
    now = time.time()
    for i in range(waiting):
        store.create(
            ApprovalRequest(
                id=uuid.uuid4().hex, thread_id=f"t{i}", node="delete", summary="delete data",
                context={"i": i}, risk="high" if i % 3 else "low", confidence=None,
                created_at=now - i, deadline=now + 3600 + i, status="pending",
            )
        )  # fmt: skip
    queue = ReviewQueue(saver)
    timings: dict[str, list[float]] = {"page": [], "high": []}
    for _ in range(cfg.reps):
        start = time.perf_counter_ns()
        queue.pending()
        timings["page"].append((time.perf_counter_ns() - start) / 1e6)
        start = time.perf_counter_ns()
        queue.pending(risk="high")
        timings["high"].append((time.perf_counter_ns() - start) / 1e6)
    saver.close()
    return [
        Row(
            "review_queue",
            f"ReviewQueue.pending() with {waiting:,} waiting (SQLite), first page",
            "ms",
            {"trellis": float(statistics.median(timings["page"]))},
            [Target("max", 20.0, unit="ms")],
            note="ordered by deadline from the index table; default page of 100",
        ),
        Row(
            "review_queue",
            f"  pending(risk='high') with {waiting:,} waiting",
            "ms",
            {"trellis": float(statistics.median(timings["high"]))},
            [Target("max", 20.0, unit="ms")],
        ),
    ]


SHAPES = [
    Shape("observed", "trellis", "events + metrics overhead (Trellis only)", run_observed),
    Shape("review_queue", "trellis", "review queue at 10,000 waiting runs", run_review_queue),
]
