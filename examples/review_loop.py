"""A draft → check loop that hands the work to a person after three drafts.

``draft`` writes a text covering one more of the ``required`` points per
revision; ``check`` sends it back until every point is covered. ``draft`` is
added with ``max_visits=3, fallback="human_review"``: a fourth entry runs
``human_review`` instead, so a draft that never passes cannot loop forever.

>>> graph.invoke({"topic": "Retries", "required": ["backoff", "jitter"]})["status"]
'approved'
>>> points = ["backoff", "jitter", "timeouts", "idempotency"]
>>> graph.invoke({"topic": "Retries", "required": points})["status"]
'needs_human_review'
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from trellis import END, START, StateGraph

__all__ = ["MAX_DRAFTS", "ReviewInput", "ReviewState", "build", "graph"]

MAX_DRAFTS = 3


class ReviewInput(TypedDict):
    topic: str
    required: NotRequired[list[str]]


class ReviewState(TypedDict, total=False):
    topic: str
    required: list[str]
    draft: str
    revision: int
    feedback: Annotated[list[str], operator.add]
    approved: bool
    status: Literal["approved", "needs_human_review"]


def draft(state: ReviewState) -> dict[str, Any]:
    revision = state.get("revision", 0) + 1
    covered = state.get("required", [])[:revision]
    body = "; ".join(covered) if covered else "overview"
    return {"draft": f"{state['topic']}: {body}.", "revision": revision}


def check(state: ReviewState) -> dict[str, Any]:
    missing = [p for p in state.get("required", []) if p not in state["draft"]]
    if missing:
        note = f"revision {state['revision']}: also cover {missing[0]!r}"
        return {"approved": False, "feedback": [note]}
    return {"approved": True, "status": "approved"}


def after_check(state: ReviewState) -> Literal["revise", "done"]:
    return "done" if state["approved"] else "revise"


def human_review(state: ReviewState) -> dict[str, Any]:
    note = f"no passing draft after {state['revision']} revisions: sent to a human reviewer"
    return {"status": "needs_human_review", "feedback": [note]}


def build() -> StateGraph[ReviewState, None]:
    """The review loop, uncompiled."""
    builder: StateGraph[ReviewState, None] = StateGraph(ReviewState, input_schema=ReviewInput)
    builder.add_node("draft", draft, max_visits=MAX_DRAFTS, fallback="human_review")
    builder.add_node("check", check)
    builder.add_node("human_review", human_review)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "check")
    builder.add_conditional_edges("check", after_check, {"revise": "draft", "done": END})
    builder.add_edge("human_review", END)
    return builder


graph = build().compile()
