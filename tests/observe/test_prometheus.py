from __future__ import annotations

import math
import re

from hypothesis import given
from hypothesis import strategies as st

from trellis.observe import CONTENT_TYPE, MetricsCollector, Outcome, prometheus_text

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)?\}})? (\S+)$")
_VALUE = re.compile(r"^(NaN|[+-]Inf|[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)$")


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\":
            out.append({"\\": "\\", '"': '"', "n": "\n"}[value[i + 1]])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def parse(text: str) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    """A strict parser for the text format: every sample belongs to a declared family,
    each family is declared once with HELP then TYPE, labels are well escaped."""
    assert text.endswith("\n")
    families: dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]] = {}
    current: str | None = None
    pending_help: str | None = None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(_NAME, name) and name not in families
            pending_help = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == pending_help, f"TYPE without HELP for {name}"
            assert kind in {"counter", "gauge", "summary", "histogram", "untyped"}
            if kind == "counter":
                assert name.endswith("_total")
            families[name] = (kind, [])
            current = name
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, value = m.group(1), m.group(m.lastindex or 0)
            assert _VALUE.match(value), f"bad value {value!r}"
            assert current is not None
            kind = families[current][0]
            allowed = {current}
            if kind == "summary":
                allowed |= {f"{current}_sum", f"{current}_count"}
            assert name in allowed, f"{name} outside its family {current}"
            labels = {k: _unescape(v) for k, v in re.findall(_LABEL, m.group(2) or "")}
            families[current][1].append((name, labels, float(value)))
    return families


def _collector() -> MetricsCollector:
    metrics = MetricsCollector()
    for d in (0.1, 0.2, 0.3, 0.4):
        metrics.record_task("review", "call_api", d, Outcome.OK)
    metrics.record_task("review", "call_api", 2.0, Outcome.TIMEOUT)
    metrics.record_retry("review", "call_api")
    metrics.record_run_start("review")
    metrics.record_run_end("review", 3.5, Outcome.ERROR)
    metrics.record_run_start("review")  # still running: no duration yet
    return metrics


def _value(families: dict, family: str, name: str | None = None, **labels: str) -> float:  # type: ignore[type-arg]
    for sample_name, sample_labels, value in families[family][1]:
        if sample_name == (name or family) and sample_labels == labels:
            return float(value)
    raise AssertionError(f"no sample {name or family} {labels}")


def test_exposition_parses_strictly_and_holds_the_numbers() -> None:
    families = parse(prometheus_text(_collector()))
    node = {"graph": "review", "node": "call_api"}
    assert families["trellis_node_calls_total"][0] == "counter"
    assert _value(families, "trellis_node_calls_total", **node) == 5
    assert _value(families, "trellis_node_successes_total", **node) == 4
    assert _value(families, "trellis_node_failures_total", **node) == 1
    assert _value(families, "trellis_node_timeouts_total", **node) == 1
    assert _value(families, "trellis_node_retries_total", **node) == 1
    assert _value(families, "trellis_node_success_ratio", **node) == 0.8
    latency = "trellis_node_latency_seconds"
    assert families[latency][0] == "summary"
    p50 = _value(families, latency, quantile="0.5", **node)
    assert math.isclose(p50, 0.3, rel_tol=0.011)
    p99 = _value(families, latency, quantile="0.99", **node)
    assert math.isclose(p99, 0.4, rel_tol=0.011)  # rank floor(0.99 * 4) of 5 values
    assert _value(families, latency, f"{latency}_count", **node) == 5
    assert math.isclose(_value(families, latency, f"{latency}_sum", **node), 3.0)
    graph = {"graph": "review"}
    assert _value(families, "trellis_graph_runs_started_total", **graph) == 2
    assert _value(families, "trellis_graph_runs_failed_total", **graph) == 1
    assert _value(families, "trellis_graph_runs_finished_total", **graph) == 0
    duration = "trellis_graph_run_duration_seconds"
    assert _value(families, duration, f"{duration}_count", **graph) == 1


def test_snapshot_input_and_prefix_give_the_same_text() -> None:
    metrics = _collector()
    assert prometheus_text(metrics.snapshot()) == prometheus_text(metrics)
    assert "myapp_node_calls_total{" in prometheus_text(metrics, prefix="myapp")
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_one_graphs_metrics_render_under_the_name_given() -> None:
    """``prometheus_text(app.metrics())``: the snapshot of one graph, as the graph gives it."""
    metrics = _collector()
    metrics.record_task("review", "call_api", None, Outcome.CANCELLED)
    one_graph = metrics.snapshot()["graphs"]["review"]
    assert prometheus_text(one_graph, graph="review") == prometheus_text(metrics)
    families = parse(prometheus_text(one_graph))
    node = {"graph": "graph", "node": "call_api"}  # the default label
    assert _value(families, "trellis_node_cancelled_total", **node) == 1
    assert _value(families, "trellis_node_failures_total", **node) == 1


def test_empty_collector_still_declares_families() -> None:
    families = parse(prometheus_text(MetricsCollector()))
    assert "trellis_node_calls_total" in families
    assert all(not samples for _, samples in families.values())


def test_empty_quantiles_are_nan() -> None:
    metrics = MetricsCollector()
    metrics.record_task("g", "n", None, Outcome.OK)  # no duration known
    families = parse(prometheus_text(metrics))
    value = _value(families, "trellis_node_latency_seconds", graph="g", node="n", quantile="0.5")
    assert math.isnan(value)


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_any_graph_or_node_name_round_trips_through_label_escaping(graph: str, node: str) -> None:
    metrics = MetricsCollector()
    metrics.record_task(graph, node, 0.01, Outcome.OK)
    families = parse(prometheus_text(metrics))
    assert _value(families, "trellis_node_calls_total", graph=graph, node=node) == 1
