"""examples/code_analysis.py: three analyzers fan out, the aggregator joins them."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
code_analysis = importlib.import_module("examples.code_analysis")

EXPECTED = [
    ("performance", 17, "nested loop: O(n²)"),
    ("security", 5, "SQL built by string formatting"),
    ("security", 10, "pickle.loads() on untrusted data runs arbitrary code"),
    ("style", 4, "function 'getUser' is not snake_case"),
    ("style", 4, "function 'getUser' has no docstring"),
]


def issues(result: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(i["analyzer"], i["line"], i["message"]) for i in result["issues"]]


def test_sample_code_findings_are_merged_in_node_name_order() -> None:
    result = code_analysis.graph.invoke({"code": code_analysis.SAMPLE_CODE})
    assert issues(result) == EXPECTED
    assert result["functions"] == ["getUser", "load", "pairs"]
    assert result["total_issues"] == 5
    assert result["severity"] == "high"
    assert result["summary"] == "1 performance, 2 security, 2 style"


def test_analyzers_run_in_one_step_and_aggregate_runs_once_after_all() -> None:
    chunks = code_analysis.graph.stream({"code": "x = 1\n"}, stream_mode="debug")
    step_of: dict[str, list[int]] = {}
    for chunk in chunks:
        if chunk["type"] == "task":
            step_of.setdefault(chunk["payload"]["name"], []).append(chunk["step"])
    (parse_step,) = step_of.pop("parse")
    assert step_of == {
        "analyze_performance": [parse_step + 1],
        "analyze_security": [parse_step + 1],
        "analyze_style": [parse_step + 1],
        "aggregate": [parse_step + 2],
    }


def test_merge_order_does_not_depend_on_completion_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # Force the analyzers to finish style → security → performance: the reverse
    # of the merge order. The result must still be EXPECTED.
    style_done, security_done = threading.Event(), threading.Event()

    def after(wait: threading.Event | None, done: threading.Event | None, fn: Callable[..., Any]):
        def node(state: Any) -> Any:
            if wait is not None and not wait.wait(5):
                raise AssertionError("analyzers did not run concurrently")
            out = fn(state)
            if done is not None:
                done.set()
            return out

        return node

    monkeypatch.setattr(
        code_analysis, "analyze_style", after(None, style_done, code_analysis.analyze_style)
    )
    monkeypatch.setattr(
        code_analysis,
        "analyze_security",
        after(style_done, security_done, code_analysis.analyze_security),
    )
    monkeypatch.setattr(
        code_analysis,
        "analyze_performance",
        after(security_done, None, code_analysis.analyze_performance),
    )
    graph = code_analysis.build().compile()
    assert issues(graph.invoke({"code": code_analysis.SAMPLE_CODE})) == EXPECTED


def test_clean_code_has_low_severity() -> None:
    clean = 'def add(a, b):\n    """Sum."""\n    return a + b\n'
    result = code_analysis.graph.invoke({"code": clean})
    assert result["issues"] == []
    assert (result["severity"], result["summary"]) == ("low", "no issues")


def test_each_security_pattern_is_reported() -> None:
    code = (
        "import subprocess\n"
        "def run(cmd, q):\n"
        '    """Run."""\n'
        "    subprocess.run(cmd, shell=True)\n"
        "    exec(q)\n"
        '    return "SELECT * FROM t WHERE id = %s" % q\n'
    )
    found = {i["message"] for i in code_analysis.graph.invoke({"code": code})["issues"]}
    assert "shell=True invites shell injection" in found
    assert "exec() runs arbitrary code" in found


def test_code_that_does_not_parse_fails_before_the_fan_out() -> None:
    ran: list[str] = []
    with pytest.raises(SyntaxError):
        for chunk in code_analysis.graph.stream({"code": "def broken(:\n"}):
            ran.extend(chunk)
    assert ran == []
