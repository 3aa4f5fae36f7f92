"""examples/support.py: intent routing, and escalation of the 3rd refund on a thread."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from trellis import Command, MemorySaver, ReviewQueue
from trellis.errors import InvalidUpdateError

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
support = importlib.import_module("examples.support")

REFUND = {"message": "I want a refund for order 1234", "customer_id": "c-42"}


def path_of(graph: Any, value: Any, config: Any = None) -> list[str]:
    """The nodes that ran, in order."""
    return [name for chunk in graph.stream(value, config) for name in chunk]


@pytest.mark.parametrize(
    ("message", "handler", "reply"),
    [
        (
            "I want a refund for order 1234",
            "refund",
            "Your refund for order 1234 has been started.",
        ),
        ("Where is my parcel 5678?", "tracking", "Order 5678 has shipped"),
        ("Can I track my order?", "tracking", "Send us your order number"),
        ("Do you sell gift cards?", "general", "an agent will answer"),
    ],
)
def test_each_intent_goes_to_its_handler_then_respond(
    message: str, handler: str, reply: str
) -> None:
    assert path_of(support.graph, {"message": message}) == ["classify", handler, "respond"]
    result = support.graph.invoke({"message": message})
    assert result["intent"] == handler
    assert reply in result["reply"]
    assert result["transcript"] == [f"customer: {message}", f"agent: {result['reply']}"]


def test_the_third_refund_on_a_thread_is_escalated_to_a_human() -> None:
    graph = support.compile_support(MemorySaver())
    config = {"configurable": {"thread_id": "c-42"}}
    for attempt in (1, 2):
        result = graph.invoke(REFUND, config)
        assert result["refund_attempts"] == attempt
        assert result["escalated"] is False
        assert "__interrupt__" not in result

    third = graph.invoke(REFUND, config)
    (pending,) = third["__interrupt__"]
    assert pending.value["reason"] == "3 refund requests on this thread"
    assert pending.value["customer_id"] == "c-42"
    assert graph.get_state(config).next == ("human_escalation",)

    done = graph.invoke(Command(resume="refund approved manually"), config)
    assert done["escalated"] is True
    assert done["reply"] == "A support agent reviewed your case: refund approved manually"
    assert done["refund_attempts"] == 3
    assert len(done["transcript"]) == 6  # three messages, three answers

    # Another customer's thread counts from zero.
    other = graph.invoke(REFUND, {"configurable": {"thread_id": "c-7"}})
    assert other["refund_attempts"] == 1 and other["escalated"] is False


def test_escalation_survives_a_restart_with_sqlite(tmp_path: Path) -> None:
    sqlite = pytest.importorskip("trellis.persist.sqlite", reason="SqliteSaver not available yet")
    config = {"configurable": {"thread_id": "c-42"}}
    db = tmp_path / "support.db"
    for _ in range(3):  # a fresh saver and graph each time: a new process per message
        with sqlite.SqliteSaver.from_path(db) as saver:
            result = support.compile_support(saver).invoke(REFUND, config)
    assert "__interrupt__" in result
    with sqlite.SqliteSaver.from_path(db) as saver:
        done = support.compile_support(saver).invoke(Command(resume="ok"), config)
    assert done["escalated"] is True and done["refund_attempts"] == 3


def test_other_intents_do_not_count_as_refund_attempts() -> None:
    graph = support.compile_support(MemorySaver())
    config = {"configurable": {"thread_id": "c-1"}}
    graph.invoke(REFUND, config)
    graph.invoke({"message": "where is my parcel?"}, config)
    result = graph.invoke(REFUND, config)
    assert result["refund_attempts"] == 2
    assert "__interrupt__" not in result


def test_input_outside_the_input_schema_is_rejected() -> None:
    with pytest.raises(InvalidUpdateError, match="refund_attempts"):
        support.graph.invoke({"message": "refund", "refund_attempts": 5})


def test_a_refund_without_an_order_waits_for_a_reviewer_and_resumes_on_approval() -> None:
    saver = MemorySaver()
    graph = support.compile_support(saver)
    config = {"configurable": {"thread_id": "unclear-refund"}}
    waiting = graph.invoke({"message": "I want my money back"}, config)
    [request] = ReviewQueue(saver).pending()
    assert waiting["__interrupt__"] and request.node == "refund" and request.risk == "low"
    ReviewQueue(saver, graph=graph).approve(request.id, reviewer="ana", notes="valid")
    done = graph.get_state(config).values
    assert done["reply"] == "Your refund for your last order has been started."
    assert done["refund_attempts"] == 1


def test_a_rejected_refund_is_answered_without_refunding() -> None:
    saver = MemorySaver()
    graph = support.compile_support(saver)
    config = {"configurable": {"thread_id": "rejected-refund"}}
    graph.invoke({"message": "refund please"}, config)
    [request] = ReviewQueue(saver).pending()
    ReviewQueue(saver, graph=graph).reject(request.id, reviewer="ana", notes="no purchase found")
    done = graph.get_state(config).values
    assert done["reply"].startswith("We could not approve this refund")
    assert done.get("refund_attempts", 0) == 0
    [decided] = ReviewQueue(saver).history("rejected-refund")
    assert decided.status == "rejected" and decided.decision.reviewer == "ana"
