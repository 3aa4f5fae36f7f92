"""Approval requests in a dict, for ``MemorySaver`` runs and tests.

Behaves like the SQL stores (the conformance suite runs on all three): the
context goes through JSON and an edit's update through the serializer, so what
fails to store on disk fails here too, and readers get copies.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from trellis.errors import ApprovalNotFoundError
from trellis.hitl.records import (
    PENDING,
    SUPERSEDED,
    TIMED_OUT,
    ApprovalRequest,
    Decision,
    from_json,
    to_json,
)
from trellis.hitl.store import StatRow, refusal_for
from trellis.persist.serde import Serializer

__all__ = ["MemoryApprovalStore"]


@dataclass(slots=True)
class _Row:
    request: ApprovalRequest  # context and state keys as given to create (JSON-clean)
    context: str
    decision: Decision | None = None
    update: tuple[str, bytes] | None = None


def _key(r: ApprovalRequest) -> tuple[float, float, str]:
    return (math.inf if r.deadline is None else r.deadline, r.created_at, r.id)


class MemoryApprovalStore:
    """An in-process approval store; thread-safe.

    >>> store = MemoryApprovalStore()
    >>> queue = ReviewQueue(store=store)
    """

    def __init__(self, *, serde: Any = None) -> None:
        self.serde = serde if serde is not None else Serializer()
        self._lock = threading.Lock()
        self._rows: dict[str, _Row] = {}
        # Pending requests sorted like the SQL index: (deadline, created_at, id).
        self._queue: list[tuple[float, float, str]] = []

    def setup(self) -> None:
        """Nothing to create."""

    def close(self) -> None:
        """Nothing to release."""

    def create(self, request: ApprovalRequest) -> ApprovalRequest:
        context = to_json(request.context)
        update = self._encode(request.decision)
        with self._lock:
            if request.id not in self._rows:
                clean = replace(request, context={}, decision=None)
                self._rows[request.id] = _Row(clean, context, request.decision, update)
                if request.status == PENDING:
                    bisect.insort(self._queue, _key(request))
            return self._read(self._rows[request.id])

    def decide(self, decision: Decision, *, now: float) -> ApprovalRequest:
        timeout = decision.status == TIMED_OUT
        update = self._encode(decision)
        with self._lock:
            row = self._rows.get(decision.request_id)
            if row is None:
                raise ApprovalNotFoundError(f"no approval request {decision.request_id!r}")
            r = row.request
            deadline = math.inf if r.deadline is None else r.deadline
            in_time = (
                True
                if decision.status == SUPERSEDED
                else (deadline <= now if timeout else deadline > now)
            )
            if r.status != PENDING or not in_time:
                raise refusal_for(r.id, r.status, deadline, timeout)
            if timeout:
                decision = replace(decision, resolution=r.on_timeout)
            self._queue.remove(_key(r))
            row.request = replace(r, status=decision.status, decided_at=decision.decided_at)
            row.decision = decision
            row.update = update
            return self._read(row)

    def get(self, request_id: str) -> ApprovalRequest | None:
        with self._lock:
            row = self._rows.get(request_id)
            return None if row is None else self._read(row)

    def pending(
        self,
        *,
        risk: Sequence[str] | None = None,
        node: Sequence[str] | None = None,
        created_before: float | None = None,
        limit: int | None = None,
    ) -> list[ApprovalRequest]:
        out: list[ApprovalRequest] = []
        if limit is not None and limit <= 0:
            return out
        with self._lock:
            for _, _, rid in self._queue:
                r = self._rows[rid].request
                if risk is not None and r.risk not in risk:
                    continue
                if node is not None and r.node not in node:
                    continue
                if created_before is not None and r.created_at > created_before:
                    continue
                out.append(self._read(self._rows[rid]))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def due(self, now: float, *, limit: int | None = None) -> list[ApprovalRequest]:
        with self._lock:
            end = bisect.bisect_right(self._queue, (now, math.inf, "\uffff"))
            keys = self._queue[:end] if limit is None else self._queue[: min(end, limit)]
            return [self._read(self._rows[rid]) for _, _, rid in keys]

    def forget_thread(self, thread_id: str) -> None:
        """Delete the requests (and their decisions) of a deleted thread."""
        with self._lock:
            gone = {rid for rid, row in self._rows.items() if row.request.thread_id == thread_id}
            for rid in gone:
                del self._rows[rid]
            self._queue = [key for key in self._queue if key[2] not in gone]

    def history(self, thread_id: str) -> list[ApprovalRequest]:
        with self._lock:
            rows = [row for row in self._rows.values() if row.request.thread_id == thread_id]
            rows.sort(key=lambda row: (row.request.created_at, row.request.id))
            return [self._read(row) for row in rows]

    def stats(self, node: str | None = None) -> list[StatRow]:
        with self._lock:
            return [
                (r.node, r.status, r.created_at, r.decided_at)
                for r in (row.request for row in self._rows.values())
                if node is None or r.node == node
            ]

    def _encode(self, decision: Decision | None) -> tuple[str, bytes] | None:
        if decision is None or decision.update is None:
            return None
        codec, data = self.serde.dumps(decision.update, key="update")
        return codec, data

    def _read(self, row: _Row) -> ApprovalRequest:
        decision = row.decision
        if decision is not None and row.update is not None:
            update = self.serde.loads(*row.update, key="update")
            decision = replace(decision, update=update)
        return replace(row.request, context=from_json(row.context), decision=decision)
