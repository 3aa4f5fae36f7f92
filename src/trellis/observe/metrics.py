"""Per-node and per-graph metrics, kept in constant memory.

Counting rules (what each number means):

- A node *call* is one task that ended: ``task_end`` or ``task_error``.
  ``successes`` are ``task_end`` with status ``ok``; ``failures`` are
  ``task_error`` (a timed-out task is also counted in ``timeouts``);
  ``interrupts`` are ``task_end`` with status ``interrupted``; ``cancelled`` are
  ``task_end`` with status ``cancelled``: tasks stopped unfinished (a sibling of
  their step failed, or the caller cancelled the run), neither a success nor a
  failure of their own. A retry policy retries inside the task, and each
  retried attempt is a ``retry`` event: so a task that fails once and then
  succeeds counts 1 call, 1 success, 1 retry.
- ``success_rate`` is ``successes / (successes + failures)``; ``None`` before any.
- Latency covers every completed attempt, whatever its outcome.
- A run ends *finished* (status ``ok``), *interrupted*, or *failed* (anything else).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat, starmap
from typing import Any, cast

from trellis.observe.events import Event, EventKind, Outcome
from trellis.observe.sketch import DDSketch

__all__ = ["DEFAULT_GRAPH", "GraphMetrics", "MetricsCollector", "NodeMetrics"]

DEFAULT_GRAPH = "graph"
"""The graph label used for events that carry no graph name."""

_OK, _INTERRUPTED, _TIMEOUT = Outcome.OK, Outcome.INTERRUPTED, Outcome.TIMEOUT
_CANCELLED = Outcome.CANCELLED
_FOLD_AT = 64  # outcomes a node holds back before counting them: bounds the memory


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
    cancelled: int = 0
    latency: DDSketch = field(default_factory=DDSketch)

    def record(self, duration: float | None, outcome: str) -> None:
        """Count one completed attempt lasting ``duration`` seconds."""
        self.calls += 1
        if outcome == _OK:
            self.successes += 1
        elif outcome == _INTERRUPTED:
            self.interrupts += 1
        elif outcome == _CANCELLED:
            self.cancelled += 1
        else:
            self.failures += 1
            if outcome == _TIMEOUT:
                self.timeouts += 1
        if duration is not None and duration >= 0.0:
            self.latency.add(duration)

    def record_many(self, durations: Sequence[float | None], outcomes: Sequence[str]) -> None:
        """Count several attempts at once: the same as ``record`` for each pair, in bulk.

        >>> m = NodeMetrics()
        >>> m.record_many([0.2, 0.4, None], [Outcome.OK, Outcome.TIMEOUT, Outcome.INTERRUPTED])
        >>> m.calls, m.successes, m.failures, m.timeouts, m.interrupts, m.latency.count
        (3, 1, 1, 1, 1, 2)
        """
        total = len(outcomes)
        if not total:
            return
        ok = outcomes.count(_OK)
        self.calls += total
        self.successes += ok
        if ok != total:
            interrupts = outcomes.count(_INTERRUPTED)
            cancelled = outcomes.count(_CANCELLED)
            self.interrupts += interrupts
            self.cancelled += cancelled
            self.failures += total - ok - interrupts - cancelled
            self.timeouts += outcomes.count(_TIMEOUT)
        # The engine's durations are never None nor negative: check that in C, and
        # filter only when needed.
        if None in durations or min(cast("Sequence[float]", durations)) < 0.0:
            durations = [d for d in durations if d is not None and d >= 0.0]
        self.latency.add_many(cast("Sequence[float]", durations))

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
            "cancelled": self.cancelled,
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


class Tally:
    """Where the engine drops one node's task outcomes; they are counted in bulk.

    Get one from :meth:`MetricsCollector.tally`. ``add`` is thread-safe and takes
    no lock: outcomes wait in a short queue and are counted a few dozen at a time
    (and before any metric is read), because in Python the per-value bookkeeping
    costs more than a small node's whole step.
    """

    __slots__ = ("_collector", "graph", "node", "pending")
    fold_at = _FOLD_AT
    """How many outcomes wait before they are counted (whoever appends to
    ``pending`` directly calls :meth:`fold` once it holds that many)."""

    def __init__(self, collector: MetricsCollector, graph: str | None, node: str | None) -> None:
        self._collector = collector
        self.graph = graph
        self.node = node
        # deque: append and popleft are atomic, so adding never waits on the lock.
        self.pending: deque[tuple[float | None, str]] = deque()

    def add(self, duration: float | None, outcome: str) -> None:
        """Count one completed attempt: the same as ``record_task`` for this node."""
        pending = self.pending
        pending.append((duration, outcome))
        if len(pending) >= self.fold_at:
            self.fold()

    def fold(self) -> None:
        """Count what is waiting now."""
        with self._collector._lock:
            self._collector._fold(self)


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
        # (graph, node) -> its tally, kept across reset() since the engine holds them.
        self._tallies: dict[tuple[str | None, str | None], Tally] = {}

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
        tally = self._tallies.get((graph, node))
        if tally is not None and tally.pending:  # what came first is counted first
            self._fold(tally)
        return metrics

    def _fold(self, tally: Tally) -> None:
        # Called with the lock held. Only a fold takes from ``pending``, so the
        # count read here is there to take, whatever ``add`` does meanwhile.
        pending = tally.pending
        taken = len(pending)
        if taken:
            durations, outcomes = zip(*starmap(pending.popleft, repeat((), taken)), strict=True)
            metrics = self._nodes.get((tally.graph, tally.node))
            if metrics is None:
                metrics = self._node(tally.graph, tally.node)
            metrics.record_many(durations, outcomes)

    def tally(self, graph: str | None, node: str | None) -> Tally:
        """The :class:`Tally` that counts ``node``'s attempts in ``graph`` (made once)."""
        with self._lock:
            tally = self._tallies.get((graph, node))
            if tally is None:
                tally = self._tallies[graph, node] = Tally(self, graph, node)
            return tally

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
            for tally in self._tallies.values():
                if tally.pending:
                    self._fold(tally)
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
            for tally in self._tallies.values():
                tally.pending.clear()
