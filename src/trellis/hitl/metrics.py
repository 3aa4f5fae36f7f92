"""Approval metrics per gated node, computed from the request index.

>>> queue.metrics()["delete"].p95_time_to_decision
412.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from trellis.hitl.records import (
    APPROVED,
    AUTO_APPROVED,
    EDITED,
    HUMAN,
    PENDING,
    REJECTED,
    SUPERSEDED,
    TIMED_OUT,
)
from trellis.hitl.store import StatRow

__all__ = ["NodeApprovalMetrics", "compute_metrics", "percentile"]


@dataclass(frozen=True, slots=True)
class NodeApprovalMetrics:
    """How one gated node's approvals went.

    ``requests`` counts every time the gate was reached (auto-approvals
    included). Times to decision are seconds from request to a *person's*
    decision (approved, rejected, edited); timeouts and auto-approvals are
    not decisions by a person and are left out. None when there is none.
    """

    node: str
    requests: int
    pending: int
    auto_approved: int
    approved: int
    rejected: int
    edited: int
    timed_out: int
    median_time_to_decision: float | None
    p95_time_to_decision: float | None
    superseded: int = 0
    """Requests the thread moved on from without an answer."""

    @property
    def approval_rate(self) -> float | None:
        """Share of a person's decisions that let the node run (approved or edited)."""
        decided = self.approved + self.rejected + self.edited
        return None if decided == 0 else (self.approved + self.edited) / decided


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in [0, 100]) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _median(values: list[float]) -> float | None:
    n = len(values)
    if n == 0:
        return None
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2.0


def compute_metrics(rows: Iterable[StatRow]) -> dict[str, NodeApprovalMetrics]:
    """Fold ``(node, status, created_at, decided_at)`` rows into per-node metrics."""
    counts: dict[str, dict[str, int]] = {}
    waits: dict[str, list[float]] = {}
    for node, status, created_at, decided_at in rows:
        per = counts.setdefault(node, {})
        per[status] = per.get(status, 0) + 1
        if status in HUMAN and decided_at is not None:
            waits.setdefault(node, []).append(max(0.0, decided_at - created_at))
    out = {}
    for node in sorted(counts):
        per = counts[node]
        times = sorted(waits.get(node, []))
        out[node] = NodeApprovalMetrics(
            node=node,
            requests=sum(per.values()),
            pending=per.get(PENDING, 0),
            auto_approved=per.get(AUTO_APPROVED, 0),
            approved=per.get(APPROVED, 0),
            rejected=per.get(REJECTED, 0),
            edited=per.get(EDITED, 0),
            timed_out=per.get(TIMED_OUT, 0),
            median_time_to_decision=_median(times),
            p95_time_to_decision=percentile(times, 95),
            superseded=per.get(SUPERSEDED, 0),
        )
    return out
