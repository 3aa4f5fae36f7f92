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
    from typing_extensions import TypedDict

    from trellis import START, StateGraph

    class C(TypedDict):
        n: int

    builder = StateGraph(C)
    previous = START
    for i in range(100):
        builder.add_node(f"n{i}", lambda s: {"n": s["n"] + 1})
        builder.add_edge(previous, f"n{i}")
        previous = f"n{i}"
    return builder.compile(**options)


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
        )
    ]


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
