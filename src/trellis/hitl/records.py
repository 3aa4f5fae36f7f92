"""The durable records of the review queue: requests and the decisions on them.

A leaf of ``trellis.hitl``: plain values and their JSON forms, no I/O. Every
store (memory, SQLite, PostgreSQL) keeps exactly these fields.

>>> request.status, request.deadline
('pending', 1767225600.0)
>>> request.decision  # None until somebody (or the clock) decides
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from trellis.jsonable import to_jsonable

__all__ = [
    "APPROVED",
    "AUTO_APPROVED",
    "DECIDED",
    "EDITED",
    "HUMAN",
    "PENDING",
    "REJECTED",
    "RISKS",
    "check_risk",
    "SUPERSEDED",
    "TIMED_OUT",
    "ApprovalRequest",
    "Decision",
    "Risk",
    "from_json",
    "storable_text",
    "to_json",
]

Risk = Literal["low", "medium", "high"]
RISKS: Final = ("low", "medium", "high")


def check_risk(risk: str, where: str) -> None:
    """Raise ValueError naming ``risk`` (given as ``where``) unless it is one of RISKS.

    >>> check_risk("urgent", "Approval(risk=...)")
    Traceback (most recent call last):
    ValueError: Approval(risk=...): unknown risk 'urgent'; risks are low, medium, high
    """
    if risk not in RISKS:
        raise ValueError(f"{where}: unknown risk {risk!r}; risks are {', '.join(RISKS)}")


PENDING: Final = "pending"
APPROVED: Final = "approved"
REJECTED: Final = "rejected"
EDITED: Final = "edited"
TIMED_OUT: Final = "timed_out"
AUTO_APPROVED: Final = "auto_approved"
SUPERSEDED: Final = "superseded"
"""The thread moved on without an answer (new input, ``update_state`` past the
gate, a fork, or a new request for the same gate): no decision can resume it."""
HUMAN: Final = frozenset({APPROVED, REJECTED, EDITED})
"""Statuses a person sets through the queue."""
DECIDED: Final = frozenset({*HUMAN, TIMED_OUT, AUTO_APPROVED, SUPERSEDED})


@dataclass(frozen=True, slots=True)
class Decision:
    """Who resolved a request, when, how, and why: one row of the audit trail.

    ``status`` is the request's final status. ``update`` is an edit's state
    update. ``resolution`` says what a timeout did: ``"approve"``,
    ``"reject"`` or the node the run went to.

    >>> queue.get(request_id).decision.reviewer
    'alice'
    """

    request_id: str
    status: str
    reviewer: str | None
    notes: str | None
    decided_at: float
    update: dict[str, Any] | None = None
    resolution: str | None = None

    def __post_init__(self) -> None:
        for name in ("reviewer", "notes"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, storable_text(value))


def storable_text(text: str) -> str:
    """``text`` for a text column: characters no database text type takes (NUL,
    lone surrogates) are shown as U+FFFD.

    >>> storable_text("ok\x00")
    'ok\ufffd'
    """
    return _UNSTORABLE.sub("\ufffd", text)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A run waiting (or having waited) for a person before one node.

    Times are epoch seconds (UTC). ``deadline`` is None for a gate without a
    timeout. ``context`` is a JSON copy of what the reviewer should see (by
    default the node's input). ``state_keys`` are the keys an edit may set.
    ``id`` is the id of the interrupt the run is suspended on, so
    ``Command(resume={request.id: ...})`` resumes exactly this gate.

    >>> [r.node for r in queue.pending(risk="high")]
    ['delete']
    """

    id: str
    thread_id: str
    node: str
    summary: str
    context: dict[str, Any]
    risk: str
    confidence: float | None
    created_at: float
    deadline: float | None
    status: str
    on_timeout: str = "reject"
    state_keys: tuple[str, ...] = ()
    checkpoint_id: str | None = None
    decided_at: float | None = None
    decision: Decision | None = None

    @property
    def pending(self) -> bool:
        """True while nobody (and no deadline) has decided it."""
        return self.status == PENDING

    def overdue(self, now: float) -> bool:
        """True when still pending and ``now`` is at or past the deadline."""
        return self.status == PENDING and self.deadline is not None and now >= self.deadline

    def as_interrupt(self) -> dict[str, Any]:
        """What the run's ``__interrupt__`` value shows for this request."""
        return {
            "type": "approval",
            "request_id": self.id,
            "node": self.node,
            "summary": self.summary,
            "risk": self.risk,
            "confidence": self.confidence,
            "deadline": self.deadline,
            "context": self.context,
        }

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able view (for the CLI and for APIs in front of the queue)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["state_keys"] = list(self.state_keys)
        out["decision"] = dataclasses.asdict(self.decision) if self.decision else None
        return to_jsonable(out)  # type: ignore[no-any-return]


def to_json(value: Any) -> str:
    """Compact JSON of ``to_jsonable(value)``, ASCII only: a lone surrogate or a NUL
    in state (which checkpoints keep) is escaped, so every store can hold it."""
    return json.dumps(to_jsonable(value), separators=(",", ":"))


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
