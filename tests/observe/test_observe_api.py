from __future__ import annotations

import ast
import sys
from pathlib import Path

import trellis.observe as observe

OBSERVE_DIR = Path(observe.__file__).parent
ALLOWED_TRELLIS = ("trellis.observe", "trellis.types", "trellis.errors")


def _imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(module, at module level?) for every import in a file."""
    top = {id(node) for node in getattr(tree, "body", [])}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in top))
    return found


def test_observe_sits_below_the_engine_and_imports_otel_lazily() -> None:
    files = sorted(OBSERVE_DIR.glob("*.py"))
    assert len(files) >= 10
    for path in files:
        for module, top_level in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if module.startswith("trellis"):
                assert module.startswith(ALLOWED_TRELLIS), f"{path.name} imports {module}"
            if module.startswith("opentelemetry"):
                assert not top_level, f"{path.name} imports {module} at import time"
            root = module.split(".")[0]
            assert root in sys.stdlib_module_names or root in (
                "trellis",
                "opentelemetry",
                "typing_extensions",
            ), f"{path.name} depends on {module}"


def test_all_lists_exactly_the_public_names_and_each_resolves() -> None:
    assert observe.__all__ == sorted(observe.__all__)
    for name in observe.__all__:
        assert getattr(observe, name) is not None, name
    public = {
        "CallbackSink", "Change", "CONTENT_TYPE", "DDSketch", "Event", "EventKind",
        "GraphMetrics", "JsonFormatter", "JsonlSink", "LoggingObserver", "MemorySink",
        "MetricsCollector", "NodeMetrics", "Observers", "OtelObserver", "Outcome",
        "RunEvents", "Sink", "SpanHandle", "build_timeline", "configure_logging",
        "current_trace_ids", "diff_states", "new_span_id", "new_trace_id",
        "prometheus_text", "read_jsonl", "render_diff", "render_html", "render_json",
        "render_tree",
    }  # fmt: skip
    assert set(observe.__all__) == public


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        observe.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
