"""Human in the loop: approval gates in front of risky nodes, and a durable review queue.

>>> builder.add_node("delete", delete_data, approval=Approval(risk="high", timeout=3600))
>>> app = builder.compile(checkpointer=saver, approval_policy=ApprovalPolicy())
>>> queue = ReviewQueue(saver, graph=app)
>>> queue.approve(queue.pending()[0].id, reviewer="alice")
"""

from trellis.hitl.approval import Approval, ApprovalPolicy, GateOutcome
from trellis.hitl.metrics import NodeApprovalMetrics
from trellis.hitl.queue import ReviewQueue
from trellis.hitl.records import ApprovalRequest, Decision
from trellis.hitl.store import ApprovalStore, open_store, store_for

__all__ = [
    "Approval",
    "ApprovalPolicy",
    "ApprovalRequest",
    "ApprovalStore",
    "Decision",
    "GateOutcome",
    "NodeApprovalMetrics",
    "ReviewQueue",
    "open_store",
    "store_for",
]
