"""Data deletion with a human approval gate: validate -> delete -> confirm.

Deleting a user's data cannot be undone, so ``delete`` is a high-risk node: the
run stops in front of it and a durable approval request waits in the review
queue, with the user, the reason and the number of records for the reviewer.
Nothing holds a thread or a process while it waits. A reviewer approves (the
data is deleted and the user is told), rejects (the run ends with status
``"rejected"``), or lets the 24-hour deadline pass (the request is rejected by
``expire_due``, e.g. from a cron job).

>>> from trellis import SqliteSaver
>>> from trellis.hitl import ReviewQueue
>>> saver = SqliteSaver.from_path("deletions.db")
>>> app = build().compile(checkpointer=saver, approval_policy=POLICY)
>>> config = {"configurable": {"thread_id": "gdpr-12345"}}
>>> app.invoke({"user_id": "12345", "reason": "GDPR erasure request"}, config)["__interrupt__"]
[Interrupt(value={'type': 'approval', 'node': 'delete', 'risk': 'high', ...}, id='...')]
>>> queue = ReviewQueue(saver, graph=app)
>>> request = queue.pending(node="delete")[0]
>>> queue.approve(request.id, reviewer="dpo@example.com", notes="identity verified")

From the shell (``trellis run`` adds a SQLite checkpointer by itself)::

    trellis run examples.data_deletion:graph --thread gdpr-12345 \\
        --input '{"user_id": "12345", "reason": "GDPR erasure request"}'
    trellis approvals list
    trellis approvals approve <id> --notes "identity verified"
    trellis run examples.data_deletion:graph --thread gdpr-12345   # continues the run

Run this file to see both outcomes: ``python examples/data_deletion.py``.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

from trellis import END, START, StateGraph
from trellis.hitl import Approval, ApprovalPolicy, ReviewQueue

__all__ = ["POLICY", "DeletionInput", "DeletionState", "UserDirectory", "build", "graph"]

POLICY = ApprovalPolicy(auto_approve_threshold=0.9, confidence_key="confidence")
"""Only low-risk, confident actions pass unreviewed; a deletion is high risk: never."""

APPROVAL_HOURS = 24


class DeletionInput(TypedDict):
    user_id: str
    reason: str
    requested_by: NotRequired[str]


class DeletionState(TypedDict, total=False):
    user_id: str
    reason: str
    requested_by: str
    records: int
    validated: bool
    confidence: float
    deleted: bool
    confirmation_sent: bool
    status: Literal["invalid", "deleted", "rejected"]


class UserDirectory:
    """A stand-in for the systems that hold user data; counts what it deletes."""

    def __init__(self, users: dict[str, int] | None = None) -> None:
        self._lock = threading.Lock()
        self.records = dict(users if users is not None else {"12345": 42, "67890": 7})
        self.deleted: list[str] = []
        self.sent: list[str] = []

    def count(self, user_id: str) -> int | None:
        return self.records.get(user_id)

    def delete(self, user_id: str) -> int:
        with self._lock:
            self.deleted.append(user_id)
            return self.records.pop(user_id, 0)

    def notify(self, user_id: str, text: str) -> None:
        with self._lock:
            self.sent.append(f"{user_id}: {text}")


def build(users: UserDirectory | None = None) -> StateGraph[DeletionState, None]:
    """The deletion workflow over ``users`` (a fresh demo directory by default)."""
    directory = users if users is not None else UserDirectory()

    def validate(state: DeletionState) -> dict[str, Any]:
        records = directory.count(state["user_id"])
        if records is None:
            return {"validated": False, "status": "invalid", "records": 0}
        # The notebook's validator is 80% sure; high risk means a person looks anyway.
        return {"validated": True, "records": records, "confidence": 0.8}

    def after_validate(state: DeletionState) -> Literal["delete", "__end__"]:
        return "delete" if state["validated"] else "__end__"  # END

    def delete(state: DeletionState) -> dict[str, Any]:
        directory.delete(state["user_id"])
        return {"deleted": True, "status": "deleted"}

    def confirm(state: DeletionState) -> dict[str, Any]:
        directory.notify(state["user_id"], f"{state['records']} records deleted")
        return {"confirmation_sent": True}

    builder: StateGraph[DeletionState, None] = StateGraph(DeletionState, input_schema=DeletionInput)
    builder.add_node("validate", validate)
    builder.add_node(
        "delete",
        delete,
        approval=Approval(
            risk="high",
            timeout=APPROVAL_HOURS * 3600,
            on_timeout="reject",
            summary=lambda s: f"Delete all {s['records']} records of user {s['user_id']}",
            context=lambda s: {
                "user_id": s["user_id"],
                "reason": s["reason"],
                "records": s["records"],
                "requested_by": s.get("requested_by", "unknown"),
            },
        ),
    )
    builder.add_node("confirm", confirm)
    builder.add_edge(START, "validate")
    builder.add_conditional_edges("validate", after_validate)
    builder.add_edge("delete", "confirm")
    builder.add_edge("confirm", END)
    return builder


graph = build().compile(approval_policy=POLICY)
"""Compiled without a checkpointer: ``trellis run`` adds one; in code, compile your own."""


def main() -> None:
    from trellis.persist.sqlite import SqliteSaver

    users = UserDirectory()
    with tempfile.TemporaryDirectory() as tmp:
        saver = SqliteSaver.from_path(Path(tmp) / "deletions.db")
        app = build(users).compile(checkpointer=saver, approval_policy=POLICY)
        for user, reason in (("12345", "GDPR erasure request"), ("67890", "duplicate account")):
            out = app.invoke({"user_id": user, "reason": reason}, _config(user))
            print(
                f"user {user}: waiting for approval -> {out['__interrupt__'][0].value['summary']}"
            )
        queue = ReviewQueue(saver, graph=app)
        for request in queue.pending(node="delete"):
            print(f"  pending {request.id[:8]} risk={request.risk} context={request.context}")
        first, second = queue.pending(node="delete")
        queue.approve(first.id, reviewer="dpo@example.com", notes="identity verified")
        queue.reject(second.id, reviewer="dpo@example.com", notes="account still in use")
        for user in ("12345", "67890"):
            values = app.get_state(_config(user)).values
            print(f"user {user}: status={values['status']} deleted={values.get('deleted', False)}")
        print(f"deleted: {users.deleted}; notified: {users.sent}")
        for m in queue.metrics().values():
            print(f"metrics {m.node}: {m.requests} requests, {m.approved} approved, "
                  f"{m.rejected} rejected")  # fmt: skip
        saver.close()


def _config(user: str) -> Any:
    return {"configurable": {"thread_id": f"gdpr-{user}"}}


if __name__ == "__main__":
    main()
