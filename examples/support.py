"""Customer support: classify a message, handle it, answer the customer.

Refund, tracking and general questions each have a handler. A customer who
asks for a refund again and again is handed to a person: ``refund_attempts``
adds up across the messages of one thread (a reducer), and the third refund
request goes to ``human_escalation``, which pauses the run with
``interrupt()`` until an agent answers with ``Command(resume=...)``.

Refunds sit behind an approval gate: a request that names its order is
clear enough (``confidence`` 0.95) for the policy to approve it on its own;
one that does not waits in the review queue for a person, who approves,
edits or rejects it (a rejected refund is answered by ``respond``).

Counting across messages needs a thread, so compile with a checkpointer:

>>> from trellis import MemorySaver
>>> support = compile_support(MemorySaver())
>>> config = {"configurable": {"thread_id": "customer-42"}}
>>> support.invoke({"message": "I want a refund for order 1234"}, config)["reply"]
'Your refund for order 1234 has been started.'

From the shell (``trellis run`` adds a SQLite checkpointer by itself)::

    trellis run examples.support:graph --thread customer-42 \\
        --input '{"message": "I want a refund for order 1234"}'
"""

from __future__ import annotations

import operator
import re
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from trellis import END, START, Approval, ApprovalPolicy, StateGraph, interrupt

__all__ = [
    "ESCALATE_AT",
    "POLICY",
    "SupportInput",
    "SupportState",
    "build",
    "compile_support",
    "graph",
]

Intent = Literal["refund", "tracking", "general"]

ESCALATE_AT = 3
"""The refund request (counted per thread) that goes to a person instead."""

POLICY = ApprovalPolicy(auto_approve_threshold=0.9, confidence_key="confidence")
"""Low-risk gates whose ``confidence`` is at least 0.9 pass without a person."""

REFUND_APPROVAL = Approval(
    risk="low",
    timeout=4 * 3600,
    on_timeout="reject",
    on_reject="respond",
    summary=lambda state: f"refund request: {state['message']!r}",
)

_KEYWORDS: dict[Intent, tuple[str, ...]] = {
    "refund": ("refund", "money back", "return"),
    "tracking": ("track", "where is", "shipping", "delivery", "parcel"),
}
_ORDER = re.compile(r"\b(\d{3,})\b")


class SupportInput(TypedDict):
    """What a caller sends: the message, and who sent it."""

    message: str
    customer_id: NotRequired[str]


class SupportState(TypedDict, total=False):
    message: str
    customer_id: str
    intent: Intent
    order_id: str | None
    refund_attempts: Annotated[int, operator.add]
    resolution: str
    confidence: float
    escalated: bool
    reply: str
    transcript: Annotated[list[str], operator.add]


def classify(state: SupportState) -> dict[str, Any]:
    text = state["message"].lower()
    intent: Intent = next(
        (name for name, words in _KEYWORDS.items() if any(w in text for w in words)), "general"
    )
    order = _ORDER.search(state["message"])
    return {
        "intent": intent,
        "order_id": order.group(1) if order else None,
        # How sure we are what to do: a refund naming its order needs no second look.
        "confidence": 0.95 if order else 0.6,
        "resolution": "We could not approve this refund; an agent will contact you.",
        "escalated": False,  # the thread may hold an earlier message's escalation
        "transcript": [f"customer: {state['message']}"],
    }


def route_by_intent(state: SupportState) -> Intent:
    return state["intent"]


def refund(state: SupportState) -> dict[str, Any]:
    order = state.get("order_id")
    what = f"order {order}" if order else "your last order"
    return {"refund_attempts": 1, "resolution": f"Your refund for {what} has been started."}


def after_refund(state: SupportState) -> Literal["respond", "human_escalation"]:
    # Sees refund's own write: the count includes the request just handled.
    return "human_escalation" if state["refund_attempts"] >= ESCALATE_AT else "respond"


def tracking(state: SupportState) -> dict[str, Any]:
    order = state.get("order_id")
    if order is None:
        return {"resolution": "Send us your order number and we will look up the parcel."}
    return {"resolution": f"Order {order} has shipped; tracking updates will follow by email."}


def general(state: SupportState) -> dict[str, Any]:
    return {"resolution": "Thanks for reaching out; an agent will answer within one working day."}


def human_escalation(state: SupportState) -> dict[str, Any]:
    # Re-runs from the top on resume; it has no side effects before interrupt().
    answer = interrupt(
        {
            "customer_id": state.get("customer_id"),
            "reason": f"{state['refund_attempts']} refund requests on this thread",
            "message": state["message"],
            "question": "What should we tell the customer?",
        }
    )
    return {"escalated": True, "resolution": f"A support agent reviewed your case: {answer}"}


def respond(state: SupportState) -> dict[str, Any]:
    reply = state["resolution"]
    return {"reply": reply, "transcript": [f"agent: {reply}"]}


def build() -> StateGraph[SupportState, None]:
    """The support workflow, uncompiled."""
    builder: StateGraph[SupportState, None] = StateGraph(SupportState, input_schema=SupportInput)
    builder.add_node("classify", classify)
    builder.add_node("refund", refund, approval=REFUND_APPROVAL)
    builder.add_node("tracking", tracking)
    builder.add_node("general", general)
    builder.add_node("human_escalation", human_escalation)
    builder.add_node("respond", respond)
    builder.add_edge(START, "classify")
    builder.add_conditional_edges("classify", route_by_intent)
    builder.add_conditional_edges("refund", after_refund)
    builder.add_edge("tracking", "respond")
    builder.add_edge("general", "respond")
    builder.add_edge("human_escalation", "respond")
    builder.add_edge("respond", END)
    return builder


def compile_support(checkpointer: Any = None) -> Any:
    """The workflow compiled with its approval policy (and ``checkpointer``)."""
    return build().compile(checkpointer=checkpointer, approval_policy=POLICY)


graph = compile_support()
