"""examples/routing.py: long queries take the detailed path, short ones the quick path."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
routing = importlib.import_module("examples.routing")


def nodes_run(query: str) -> list[str]:
    return [name for chunk in routing.graph.stream({"query": query}) for name in chunk]


def test_short_query_takes_the_quick_path() -> None:
    assert nodes_run("What is a checkpoint?") == ["analyze", "quick_processing", "generate"]
    result = routing.graph.invoke({"query": "What is a checkpoint?"})
    assert result["complexity"] == "low"
    assert result["response"] == "Answer at basic detail."


def test_long_query_takes_the_detailed_path() -> None:
    query = (
        "Complex query about implementing a distributed system with fault tolerance, "
        "high availability and code samples"
    )
    assert nodes_run(query) == ["analyze", "detailed_processing", "generate"]
    result = routing.graph.invoke({"query": query})
    assert result["detail_level"] == "comprehensive"
    assert result["response"] == "Answer at comprehensive detail with code tools."


def test_the_threshold_is_exclusive() -> None:
    at = "x" * routing.COMPLEX_AT
    assert routing.graph.invoke({"query": at})["complexity"] == "low"
    assert routing.graph.invoke({"query": at + "x"})["complexity"] == "high"


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=250))
def test_exactly_one_branch_runs_and_matches_the_length(query: str) -> None:
    ran = nodes_run(query)
    expected = "detailed_processing" if len(query) > routing.COMPLEX_AT else "quick_processing"
    assert ran == ["analyze", expected, "generate"]
