from __future__ import annotations

import json
import operator
import random
import threading
import tracemalloc
from collections.abc import Callable
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import START, RetryPolicy, StateGraph
from trellis.engine.interrupts import interrupt
from trellis.observe import (
    Event,
    EventKind,
    MemorySink,
    MetricsCollector,
    NodeMetrics,
    Observers,
    Outcome,
    RunEvents,
)
from trellis.persist.memory import MemorySaver


class Trail(TypedDict, total=False):
    trail: Annotated[list[str], operator.add]
    fail: bool


def _run_with_one_retry(metrics: MetricsCollector, graph: str = "review") -> None:
    run = RunEvents(Observers([metrics]), graph=graph, thread_id="t", join_otel=False)
    run.run_start()
    step = run.step_start(0)
    first = run.task_start(step, "call_api", attempt=1)
    run.task_error(first, TimeoutError("slow"), status=Outcome.TIMEOUT)
    run.retry(first, 0.5)
    run.task_end(run.task_start(step, "call_api", attempt=2))
    run.task_end(run.task_start(step, "format"))
    run.step_end(step)
    run.run_end(Outcome.OK)


def _in_threads(work: Callable[[], None], n: int) -> None:
    """Run ``work`` in ``n`` threads at once and wait for them all."""
    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_counts_follow_the_documented_rules() -> None:
    metrics = MetricsCollector()
    _run_with_one_retry(metrics)
    snap = metrics.snapshot()
    graph = snap["graphs"]["review"]
    api = graph["nodes"]["call_api"]
    assert (api["calls"], api["successes"], api["failures"]) == (2, 1, 1)
    assert (api["retries"], api["timeouts"], api["interrupts"]) == (1, 1, 0)
    assert api["success_rate"] == 0.5
    assert api["latency"]["count"] == 2
    assert graph["nodes"]["format"]["success_rate"] == 1.0
    assert graph["runs_started"] == graph["runs_finished"] == 1
    assert graph["runs_failed"] == graph["runs_interrupted"] == 0
    assert graph["run_duration"]["count"] == 1
    json.dumps(snap)  # JSON-able, whatever is inside


def test_run_outcomes_and_interrupted_tasks() -> None:
    metrics = MetricsCollector()
    for status in (Outcome.OK, Outcome.ERROR, Outcome.INTERRUPTED, Outcome.CANCELLED):
        run = RunEvents(metrics, graph="g", join_otel=False)
        run.run_start()
        step = run.step_start(0)
        run.task_end(run.task_start(step, "ask"), Outcome.INTERRUPTED)
        run.run_end(status)
    graph = metrics.snapshot("g")["graphs"]["g"]
    assert graph["runs_started"] == 4
    assert (graph["runs_finished"], graph["runs_failed"], graph["runs_interrupted"]) == (1, 2, 1)
    ask = graph["nodes"]["ask"]
    assert (ask["calls"], ask["interrupts"], ask["successes"], ask["failures"]) == (4, 4, 0, 0)
    assert ask["success_rate"] is None


def test_latency_quantiles_track_the_durations() -> None:
    metrics = MetricsCollector()
    durations = [i / 1000 for i in range(1, 1001)]
    random.Random(1).shuffle(durations)
    for d in durations:
        metrics(Event(EventKind.TASK_END, "a" * 32, "b" * 16, graph="g", node="n", duration=d))
    latency = metrics.snapshot()["graphs"]["g"]["nodes"]["n"]["latency"]
    assert latency["p50"] == pytest.approx(0.5, rel=0.011)
    assert latency["p95"] == pytest.approx(0.95, rel=0.011)
    assert latency["p99"] == pytest.approx(0.99, rel=0.011)
    assert latency["sum"] == pytest.approx(sum(durations))


def test_events_without_graph_go_under_a_default_name_and_snapshot_filters() -> None:
    metrics = MetricsCollector()
    metrics(Event(EventKind.TASK_END, "a" * 32, "b" * 16, node="n", status="ok"))
    metrics(Event(EventKind.STEP_END, "a" * 32, "b" * 16, node="n", status="ok"))  # ignored
    assert metrics.graph_names() == ["graph"]
    assert metrics.snapshot("elsewhere") == {"graphs": {}}
    metrics.reset()
    assert metrics.snapshot() == {"graphs": {}}


def test_concurrent_recording_loses_no_counts() -> None:
    metrics = MetricsCollector()
    sink = Observers([metrics, MemorySink()])

    def work() -> None:
        for i in range(2000):
            sink.emit(
                Event(EventKind.TASK_END, "a" * 32, "b" * 16, graph="g", node="n", duration=i / 1e4)
            )

    _in_threads(work, 8)
    node = metrics.snapshot()["graphs"]["g"]["nodes"]["n"]
    assert node["calls"] == node["successes"] == node["latency"]["count"] == 16_000


@pytest.mark.parametrize("path", ["record_task", "tally"])  # events, and the engine's way
def test_memory_stays_flat_over_a_million_task_executions(path: str) -> None:
    metrics = MetricsCollector()
    rng = random.Random(3)
    # Nine decades of latencies, 1 µs to 1000 s: the widest spread a node could see.
    durations = [10.0 ** rng.uniform(-6, 3) for _ in range(4096)]
    outcomes = [Outcome.OK] * 97 + [Outcome.ERROR, Outcome.TIMEOUT, Outcome.INTERRUPTED]
    record = metrics.record_task
    if path == "tally":
        tallies = {node: metrics.tally("g", node) for node in "nm"}

        def record(graph: str, node: str, duration: float, outcome: str) -> None:
            tallies[node].add(duration, outcome)

    def feed(start: int, stop: int) -> None:
        for i in range(start, stop):
            record("g", "n" if i % 2 else "m", durations[i & 4095], outcomes[i % 100])

    def buckets() -> int:
        with metrics._lock:
            nodes = metrics._graphs["g"].nodes
            return sum(m.latency.bucket_count for m in nodes.values())

    feed(0, 50_000)
    warm = buckets()
    # tracemalloc makes every allocation slow, so it watches one window of 50,000
    # executions; the bucket count covers the whole million.
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        feed(50_000, 100_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    feed(100_000, 1_000_000)
    assert grown < 16 * 1024, f"metrics grew by {grown} bytes over 50,000 executions"
    assert buckets() == warm <= 2 * 2048
    nodes = metrics.snapshot()["graphs"]["g"]["nodes"]
    assert nodes["n"]["calls"] + nodes["m"]["calls"] == 1_000_000
    assert nodes["n"]["latency"]["count"] == 500_000


def test_tallies_count_exactly_what_record_task_counts() -> None:
    rng = random.Random(5)
    outcomes = [Outcome.OK, Outcome.ERROR, Outcome.TIMEOUT, Outcome.INTERRUPTED]
    durations = [None, -1.0, 0.0, *(rng.uniform(1e-6, 5.0) for _ in range(50))]
    calls = [(rng.choice("ab"), rng.choice(durations), rng.choice(outcomes)) for _ in range(1000)]
    direct, tallied = MetricsCollector(), MetricsCollector()
    for node, duration, outcome in calls:
        direct.record_task("g", node, duration, outcome)
        tallied.tally("g", node).add(duration, outcome)
    # Read mid-way (with outcomes still waiting) and at the end: always up to date.
    assert tallied.snapshot() == direct.snapshot()
    for node, duration, outcome in calls[:10]:
        direct.record_task("g", node, duration, outcome)
        tallied.tally("g", node).add(duration, outcome)
    assert tallied.snapshot() == direct.snapshot()


def test_a_tally_survives_reset_and_counts_afresh() -> None:
    metrics = MetricsCollector()
    tally = metrics.tally("g", "n")
    tally.add(0.1, Outcome.OK)
    metrics.reset()
    assert metrics.snapshot() == {"graphs": {}}
    tally.add(0.2, Outcome.ERROR)
    node = metrics.snapshot()["graphs"]["g"]["nodes"]["n"]
    assert (node["calls"], node["failures"], node["latency"]["sum"]) == (1, 1, 0.2)


def test_concurrent_tallies_lose_no_counts() -> None:
    metrics = MetricsCollector()
    tally = metrics.tally("g", "n")

    def work() -> None:
        for i in range(2000):
            tally.add(i / 1e4, Outcome.OK)
            if i % 500 == 0:
                metrics.snapshot()  # folds while the others keep adding

    _in_threads(work, 8)
    node = metrics.snapshot()["graphs"]["g"]["nodes"]["n"]
    assert node["calls"] == node["successes"] == node["latency"]["count"] == 16_000


def test_a_graph_counts_exactly_what_its_events_say() -> None:
    # compile(metrics=True) counts through tallies, not events; a subclass of the
    # collector is sent the events instead. Both must agree to the last bit.
    class EventFed(MetricsCollector):
        pass

    flaky_calls = [0]

    def flaky(state: Trail) -> dict[str, Any]:
        flaky_calls[0] += 1
        if flaky_calls[0] % 2:
            raise ConnectionError("every other call")
        return {"trail": ["flaky"]}

    def broken(state: Trail) -> dict[str, Any]:
        if state.get("fail"):
            raise ValueError("asked to fail")
        return {"trail": ["broken"]}

    def ask(state: Trail) -> dict[str, Any]:
        return {"trail": [interrupt("ok?")]}

    builder = StateGraph(Trail)
    builder.add_node("a", lambda s: {"trail": ["a"]})
    builder.add_node("b", lambda s: {"trail": ["b"]})
    retry = RetryPolicy(max_attempts=2, initial_interval=0.0, jitter=False)
    builder.add_node("flaky", flaky, retry_policy=retry)
    builder.add_node("broken", broken)
    builder.add_node("ask", ask)
    for node in ("a", "b", "flaky"):  # one parallel step
        builder.add_edge(START, node)
    builder.add_edge(["a", "b", "flaky"], "broken")
    builder.add_edge("broken", "ask")
    events_fed = EventFed()
    graph = builder.compile(checkpointer=MemorySaver(), observers=[events_fed], metrics=True)
    for i in range(150):  # past the tallies' bulk size, so some outcomes wait to be counted
        config = {"configurable": {"thread_id": f"t{i}"}}
        try:
            graph.invoke({"trail": [], "fail": i % 7 == 0}, config)
        except ValueError:
            continue
    snapshot = graph.metrics()
    assert snapshot.pop("subgraphs") == {}  # the graph has none
    assert snapshot == events_fed.snapshot()["graphs"][graph.name]
    nodes = snapshot["nodes"]
    # Retries happen inside the task: a retry event each, one task end for the last.
    assert (nodes["flaky"]["successes"], nodes["flaky"]["retries"]) == (150, 150)
    assert (nodes["broken"]["failures"], nodes["ask"]["interrupts"]) == (22, 128)
    assert nodes["a"]["latency"]["count"] == 150
    assert nodes["broken"]["failures"] == 22 and nodes["ask"]["interrupts"] == 128


def test_counting_nothing_in_bulk_is_a_no_op() -> None:
    node = NodeMetrics()
    node.record_many([], [])
    assert (node.calls, node.latency.count) == (0, 0)
