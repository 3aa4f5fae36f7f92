"""Render metrics in Prometheus' text exposition format (version 0.0.4).

Counters end in ``_total``; latencies and run durations are summaries with
``quantile`` labels plus ``_sum`` and ``_count``. Serve the text with the
content type :data:`CONTENT_TYPE`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from trellis.observe.metrics import DEFAULT_GRAPH, MetricsCollector

__all__ = ["CONTENT_TYPE", "prometheus_text"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))

# (snapshot key, metric suffix, help) for the per-node counters.
_NODE_COUNTERS = (
    ("calls", "node_calls_total", "Completed task attempts per node."),
    ("successes", "node_successes_total", "Task attempts that returned normally."),
    ("failures", "node_failures_total", "Task attempts that raised (timeouts included)."),
    ("retries", "node_retries_total", "Task attempts that were retried."),
    ("timeouts", "node_timeouts_total", "Task attempts that exceeded their timeout."),
    ("interrupts", "node_interrupts_total", "Task attempts suspended by an interrupt."),
    ("cancelled", "node_cancelled_total", "Tasks stopped unfinished when a sibling failed."),
)
_GRAPH_COUNTERS = (
    ("runs_started", "graph_runs_started_total", "Runs started."),
    ("runs_finished", "graph_runs_finished_total", "Runs that finished successfully."),
    ("runs_failed", "graph_runs_failed_total", "Runs that ended with an error."),
    ("runs_interrupted", "graph_runs_interrupted_total", "Runs suspended by an interrupt."),
)


def prometheus_text(
    source: MetricsCollector | Mapping[str, Any],
    *,
    prefix: str = "trellis",
    graph: str = DEFAULT_GRAPH,
) -> str:
    """The metrics of ``source`` as exposition text: a collector, its ``snapshot()``,
    or one graph's metrics (``graph.metrics()``, labelled ``graph=``).

    >>> collector = MetricsCollector()
    >>> collector.record_task("g", "fetch", 0.12, "ok")
    >>> print(prometheus_text(collector).splitlines()[2])
    trellis_node_calls_total{graph="g",node="fetch"} 1
    >>> text = prometheus_text(app.metrics(), graph="support")  # doctest: +SKIP
    """
    snap = source.snapshot() if isinstance(source, MetricsCollector) else source
    graphs: Mapping[str, Any] = snap.get("graphs", {})
    if "graphs" not in snap and ("nodes" in snap or "runs_started" in snap):
        graphs = {graph: snap}  # one graph's snapshot
    out: list[str] = []

    nodes = [
        ({"graph": g, "node": n}, m)
        for g, gm in sorted(graphs.items())
        for n, m in sorted(gm.get("nodes", {}).items())
    ]
    for key, suffix, help_text in _NODE_COUNTERS:
        _family(out, f"{prefix}_{suffix}", "counter", help_text)
        for labels, m in nodes:
            _sample(out, f"{prefix}_{suffix}", labels, m.get(key, 0))

    rated = [
        (labels, m["success_rate"]) for labels, m in nodes if m.get("success_rate") is not None
    ]
    _family(
        out,
        f"{prefix}_node_success_ratio",
        "gauge",
        "successes / (successes + failures); absent before the first completed attempt.",
    )
    for labels, rate in rated:
        _sample(out, f"{prefix}_node_success_ratio", labels, rate)

    _summary(
        out,
        f"{prefix}_node_latency_seconds",
        "Task attempt latency.",
        [(labels, m.get("latency", {})) for labels, m in nodes],
    )

    graph_rows = [({"graph": g}, gm) for g, gm in sorted(graphs.items())]
    for key, suffix, help_text in _GRAPH_COUNTERS:
        _family(out, f"{prefix}_{suffix}", "counter", help_text)
        for labels, gm in graph_rows:
            _sample(out, f"{prefix}_{suffix}", labels, gm.get(key, 0))
    _summary(
        out,
        f"{prefix}_graph_run_duration_seconds",
        "Run duration, from start to finish, failure or interrupt.",
        [(labels, gm.get("run_duration", {})) for labels, gm in graph_rows],
    )
    return "\n".join(out) + "\n"


def _summary(
    out: list[str],
    name: str,
    help_text: str,
    rows: list[tuple[dict[str, str], Mapping[str, Any]]],
) -> None:
    _family(out, name, "summary", help_text)
    for labels, s in rows:
        for q, key in _QUANTILES:
            value = s.get(key)
            _sample(out, name, {**labels, "quantile": q}, math.nan if value is None else value)
        _sample(out, f"{name}_sum", labels, s.get("sum", 0))
        _sample(out, f"{name}_count", labels, s.get("count", 0))


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {_escape_help(help_text)}")
    out.append(f"# TYPE {name} {kind}")


def _sample(out: list[str], name: str, labels: Mapping[str, str], value: float) -> None:
    body = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())
    out.append(f"{name}{{{body}}} {_format_value(value)}")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
