"""examples/review_loop.py: the draft → check loop escapes to human_review after 3 drafts."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
review_loop = importlib.import_module("examples.review_loop")

POINTS = ["backoff", "jitter", "timeouts", "idempotency"]


def nodes_run(points: list[str]) -> list[str]:
    value = {"topic": "Retries", "required": points}
    return [name for chunk in review_loop.graph.stream(value) for name in chunk]


def test_a_draft_that_passes_ends_the_loop() -> None:
    assert nodes_run(POINTS[:2]) == ["draft", "check", "draft", "check"]
    result = review_loop.graph.invoke({"topic": "Retries", "required": POINTS[:2]})
    assert result["status"] == "approved"
    assert result["draft"] == "Retries: backoff; jitter."
    assert result["feedback"] == ["revision 1: also cover 'jitter'"]


def test_passing_on_the_last_allowed_draft_needs_no_human() -> None:
    assert nodes_run(POINTS[:3]) == ["draft", "check"] * 3
    result = review_loop.graph.invoke({"topic": "Retries", "required": POINTS[:3]})
    assert (result["status"], result["revision"]) == ("approved", 3)


def test_the_fourth_draft_goes_to_human_review_instead() -> None:
    assert nodes_run(POINTS) == ["draft", "check"] * review_loop.MAX_DRAFTS + ["human_review"]
    result = review_loop.graph.invoke({"topic": "Retries", "required": POINTS})
    assert result["status"] == "needs_human_review"
    assert result["revision"] == review_loop.MAX_DRAFTS
    assert result["approved"] is False
    assert result["feedback"][-1] == (
        "no passing draft after 3 revisions: sent to a human reviewer"
    )
    assert len(result["feedback"]) == 4


def test_the_fallback_is_drawn() -> None:
    mermaid = review_loop.graph.get_graph().draw_mermaid()
    assert "draft -. &nbsp;fallback&nbsp; .-> human_review;" in mermaid
