"""Per-node and per-graph metrics, kept in constant memory.

Counting rules (what each number means):

- A node *call* is one completed task attempt: ``task_end`` or ``task_error``.
  ``successes`` are ``task_end`` with status ``ok``; ``failures`` are
  ``task_error`` (a timed-out attempt is also counted in ``timeouts``);
  ``interrupts`` are ``task_end`` with status ``interrupted``. So a task that
  fails once and then succeeds counts 2 calls, 1 failure, 1 success, 1 retry.
- ``success_rate`` is ``successes / (successes + failures)``; ``None`` before any.
- Latency covers every completed attempt, whatever its outcome.
- A run ends *finished* (status ``ok``), *interrupted*, or *failed* (anything else).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from trellis.observe.events import Event, EventKind, Outcome
from trellis.observe.sketch import DDSketch

__all__ = ["DEFAULT_GRAPH", "GraphMetrics", "MetricsCollector", "NodeMetrics"]

DEFAULT_GRAPH = "graph"
"""The graph label used for events that carry no graph name."""


@dataclass(slots=True)
class NodeMetrics:
    """Counters and a latency sketch for one node of one graph.

    >>> m = NodeMetrics()
    >>> m.record(0.2, Outcome.OK); m.record(0.4, Outcome.ERROR)
    >>> m.calls, m.successes, m.failures, m.success_rate
    (2, 1, 1, 0.5)
    """

    calls: int = 0
    successes: int = 0
    failures: int = 0
    retries: int = 0
    timeouts: int = 0
    interrupts: int = 0
    latency: DDSketch = field(default_factory=DDSketch)

    def record(self, duration: float | None, outcome: str) -> None:
        """Count one completed attempt lasting ``duration`` seconds."""
        self.calls += 1
        if outcome == Outcome.OK:
            self.successes += 1
        elif outcome == Outcome.INTERRUPTED:
            self.interrupts += 1
        else:
            self.failures += 1
            if outcome == Outcome.TIMEOUT:
                self.timeouts += 1
        if duration is not None and duration >= 0.0:
            self.latency.add(duration)

    @property
    def success_rate(self) -> float | None:
        done = self.successes + self.failures
        return self.successes / done if done else None

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "successes": self.successes,
            "failures": self.failures,
            "retries": self.retries,
            "timeouts": self.timeouts,
            "interrupts": self.interrupts,
            "success_rate": self.success_rate,
            "latency": self.latency.summary(),
        }


@dataclass(slots=True)
class GraphMetrics:
    """Run counters and a run-duration sketch for one graph, plus its nodes.

    >>> g = GraphMetrics()
    >>> g.runs_started += 1; g.record_run(1.5, Outcome.OK)
    >>> g.runs_finished, g.run_duration.count
    (1, 1)
    """

    runs_started: int = 0
    runs_finished: int = 0
    runs_failed: int = 0
    runs_interrupted: int = 0
    run_duration: DDSketch = field(default_factory=DDSketch)
    nodes: dict[str, NodeMetrics] = field(default_factory=dict)

    def record_run(self, duration: float | None, outcome: str) -> None:
        if outcome == Outcome.OK:
            self.runs_finished += 1
        elif outcome == Outcome.INTERRUPTED:
            self.runs_interrupted += 1
        else:
            self.runs_failed += 1
        if duration is not None and duration >= 0.0:
            self.run_duration.add(duration)

    def snapshot(self) -> dict[str, Any]:
        return {
            "runs_started": self.runs_started,
            "runs_finished": self.runs_finished,
            "runs_failed": self.runs_failed,
            "runs_interrupted": self.runs_interrupted,
            "run_duration": self.run_duration.summary(),
            "nodes": {name: m.snapshot() for name, m in sorted(self.nodes.items())},
        }


class MetricsCollector:
    """An observer that turns events into :class:`GraphMetrics`; thread-safe.

    Pass it to ``compile(observers=[collector])`` or feed it events directly.
    Memory grows with the number of distinct graphs and nodes, never with the
    number of runs or tasks.

    >>> from trellis.observe import RunEvents
    >>> metrics = MetricsCollector()
    >>> run = RunEvents(metrics, graph="demo", join_otel=False)
    >>> run.run_start(); step = run.step_start(0)
    >>> run.task_end(run.task_start(step, "fetch")); run.step_end(step); run.run_end()
    >>> metrics.snapshot()["graphs"]["demo"]["nodes"]["fetch"]["successes"]
    1
    """

    # The kinds this sink reads: the engine sends it only these (a sink without
    # ``kinds`` gets every event).
    kinds: frozenset[EventKind] = frozenset(
        {
            EventKind.TASK_END,
            EventKind.TASK_ERROR,
            EventKind.RETRY,
            EventKind.RUN_START,
            EventKind.RUN_END,
        }
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._graphs: dict[str, GraphMetrics] = {}
        # (graph, node) -> metrics: one dict lookup on the hot path instead of two.
        self._nodes: dict[tuple[str | None, str | None], NodeMetrics] = {}

    def __call__(self, event: Event) -> None:
        kind = event.kind
        if kind is EventKind.TASK_END or kind is EventKind.TASK_ERROR:
            status = event.status or (Outcome.OK if kind is EventKind.TASK_END else Outcome.ERROR)
            self.record_task(event.graph, event.node, event.duration, status)
        elif kind is EventKind.RETRY:
            self.record_retry(event.graph, event.node)
        elif kind is EventKind.RUN_START:
            self.record_run_start(event.graph)
        elif kind is EventKind.RUN_END:
            self.record_run_end(event.graph, event.duration, event.status or Outcome.OK)

    def _graph(self, graph: str | None) -> GraphMetrics:
        # Called with the lock held.
        name = graph or DEFAULT_GRAPH
        metrics = self._graphs.get(name)
        if metrics is None:
            metrics = self._graphs[name] = GraphMetrics()
        return metrics

    def _node(self, graph: str | None, node: str | None) -> NodeMetrics:
        # Called with the lock held.
        metrics = self._nodes.get((graph, node))
        if metrics is None:
            nodes = self._graph(graph).nodes
            metrics = nodes.get(node or "?")
            if metrics is None:
                metrics = nodes[node or "?"] = NodeMetrics()
            self._nodes[graph, node] = metrics
        return metrics

    def record_task(
        self, graph: str | None, node: str | None, duration: float | None, outcome: str
    ) -> None:
        """Count one completed task attempt (what a ``task_end``/``task_error`` does)."""
        with self._lock:
            self._node(graph, node).record(duration, outcome)

    def record_retry(self, graph: str | None, node: str | None) -> None:
        with self._lock:
            self._node(graph, node).retries += 1

    def record_run_start(self, graph: str | None) -> None:
        with self._lock:
            self._graph(graph).runs_started += 1

    def record_run_end(self, graph: str | None, duration: float | None, outcome: str) -> None:
        with self._lock:
            self._graph(graph).record_run(duration, outcome)

    def graph_names(self) -> list[str]:
        with self._lock:
            return sorted(self._graphs)

    def snapshot(self, graph: str | None = None) -> dict[str, Any]:
        """Every metric as plain data: ``{"graphs": {name: GraphMetrics.snapshot()}}``.

        With ``graph``, only that graph's entry is included (empty if unseen).
        """
        with self._lock:
            names = sorted(self._graphs) if graph is None else [graph]
            return {
                "graphs": {
                    name: self._graphs[name].snapshot() for name in names if name in self._graphs
                }
            }

    def reset(self) -> None:
        with self._lock:
            self._graphs.clear()
            self._nodes.clear()
