"""Observability: typed run events, metrics, timelines, tracing and logging.

Pass sinks to ``compile(observers=[...])``; every sink receives every
:class:`Event` of every run::

    from trellis.observe import JsonlSink, MetricsCollector, prometheus_text

    metrics = MetricsCollector()
    graph = builder.compile(observers=[metrics, JsonlSink("runs.jsonl")])
    graph.invoke({"x": 1})
    print(prometheus_text(metrics))

OpenTelemetry is optional (``pip install 'trellis[otel]'``): :class:`OtelObserver`
is loaded on first use and importing this package never imports OpenTelemetry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trellis.observe.diff import Change, diff_states, render_diff
    from trellis.observe.events import (
        Event,
        EventKind,
        Observers,
        Outcome,
        RunEvents,
        Sink,
        SpanHandle,
        new_span_id,
        new_trace_id,
    )
    from trellis.observe.logging import JsonFormatter, LoggingObserver, configure_logging
    from trellis.observe.metrics import GraphMetrics, MetricsCollector, NodeMetrics
    from trellis.observe.otel import OtelObserver, current_trace_ids
    from trellis.observe.prometheus import CONTENT_TYPE, prometheus_text
    from trellis.observe.sinks import CallbackSink, JsonlSink, MemorySink, read_jsonl
    from trellis.observe.sketch import DDSketch
    from trellis.observe.timeline import build_timeline, render_html, render_json, render_tree

# Where each public name lives. Submodules load on first use: the engine imports
# only events and metrics, and `import trellis` should not pay for timelines,
# diffs, Prometheus text or (through otel) OpenTelemetry.
_HOME = {
    **dict.fromkeys(["Change", "diff_states", "render_diff"], "diff"),
    **dict.fromkeys(
        [
            "Event",
            "EventKind",
            "Observers",
            "Outcome",
            "RunEvents",
            "Sink",
            "SpanHandle",
            "new_span_id",
            "new_trace_id",
        ],
        "events",
    ),  # fmt: skip
    **dict.fromkeys(["JsonFormatter", "LoggingObserver", "configure_logging"], "logging"),
    **dict.fromkeys(["GraphMetrics", "MetricsCollector", "NodeMetrics"], "metrics"),
    **dict.fromkeys(["OtelObserver", "current_trace_ids"], "otel"),
    **dict.fromkeys(["CONTENT_TYPE", "prometheus_text"], "prometheus"),
    **dict.fromkeys(["CallbackSink", "JsonlSink", "MemorySink", "read_jsonl"], "sinks"),
    "DDSketch": "sketch",
    **dict.fromkeys(["build_timeline", "render_html", "render_json", "render_tree"], "timeline"),
}

__all__ = [
    "CONTENT_TYPE",
    "CallbackSink",
    "Change",
    "DDSketch",
    "Event",
    "EventKind",
    "GraphMetrics",
    "JsonFormatter",
    "JsonlSink",
    "LoggingObserver",
    "MemorySink",
    "MetricsCollector",
    "NodeMetrics",
    "Observers",
    "OtelObserver",
    "Outcome",
    "RunEvents",
    "Sink",
    "SpanHandle",
    "build_timeline",
    "configure_logging",
    "current_trace_ids",
    "diff_states",
    "new_span_id",
    "new_trace_id",
    "prometheus_text",
    "read_jsonl",
    "render_diff",
    "render_html",
    "render_json",
    "render_tree",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"trellis.observe.{home}"), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
