"""Approval gates: a person (or a policy) says yes before a risky node runs.

``add_node("delete", delete, approval=Approval(risk="high", timeout=3600))``
puts a gate in front of ``delete``. When the run reaches it, the gate

1. finds or creates the durable request for this task (its id is the id of
   the interrupt the run suspends on, so re-running the gate after a crash or
   a resume never makes a second request);
2. passes at once when the graph's ``ApprovalPolicy`` auto-approves it
   (low risk, confidence at or above the threshold), recorded as such;
3. otherwise suspends the run with ``interrupt()`` until somebody decides
   through a ``ReviewQueue`` (or the deadline passes), then runs the node,
   runs it with the reviewer's edit applied, or routes to ``on_reject``.

The store, not the resume value, is the authority: a decision is read back
from it, so a run resumed by ``invoke(None, config)`` after a decision made
elsewhere acts on that decision, and a raw ``Command(resume=True)`` is
recorded as a decision (exactly once) before it takes effect.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from trellis.engine.interrupts import GraphInterrupt, interrupt, interrupt_id, on_abandoned
from trellis.engine.task import PULL
from trellis.errors import (
    AlreadyDecidedError,
    ApprovalError,
    InterruptError,
    InvalidUpdateError,
    RoutingError,
)
from trellis.hitl.records import (
    APPROVED,
    AUTO_APPROVED,
    EDITED,
    HUMAN,
    PENDING,
    REJECTED,
    SUPERSEDED,
    TIMED_OUT,
    ApprovalRequest,
    Decision,
    Risk,
    check_risk,
    storable_text,
)
from trellis.hitl.store import (
    ApprovalStore,
    attach_store,
    blocks_event_loop,
    existing_store_for,
    store_for,
)
from trellis.hitl.store_memory import MemoryApprovalStore
from trellis.jsonable import to_jsonable
from trellis.observe.events import EventKind
from trellis.types import END, Interrupt

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trellis.engine.loop import RunLoop
    from trellis.engine.plan import GraphPlan, NodePlan
    from trellis.engine.task import Task

__all__ = [
    "Approval",
    "ApprovalPolicy",
    "ApprovalRequest",
    "Decision",
    "GateOutcome",
    "decision_from_answer",
]

POLICY_REVIEWER = "policy"
CLOCK_REVIEWER = "clock"
THREAD_REVIEWER = "thread"


@dataclass(frozen=True, slots=True)
class GateOutcome:
    """What the engine does after the gate: ``update`` first, then ``goto`` (or the node)."""

    update: dict[str, Any] | None = None
    goto: str | None = None


_PASS = GateOutcome()


@dataclass(frozen=True, eq=False)
class ApprovalPolicy:
    """Graph-wide rules for gates: ``compile(approval_policy=ApprovalPolicy(...))``.

    A *low*-risk gate whose state ``confidence_key`` is at or above
    ``auto_approve_threshold`` passes without a person (the request is stored
    as ``auto_approved``, decided by ``"policy"``). Without a policy, every gate
    waits for a person. When a rejection stops or diverts the run, the state's
    ``status_key`` (if the state has that key) is set to ``"rejected"`` (or
    ``"timed_out"`` when a timeout routed it to a node). ``clock`` is "now".
    ``store`` puts requests in a given ``ApprovalStore`` instead of next to
    the checkpoints (e.g. one PostgreSQL queue for runs checkpointed in SQLite).

    >>> graph = builder.compile(checkpointer=saver,
    ...                         approval_policy=ApprovalPolicy(auto_approve_threshold=0.9))
    """

    auto_approve_threshold: float | None = 0.9
    confidence_key: str = "confidence"
    status_key: str | None = "status"
    clock: Callable[[], float] = field(default=time.time)
    store: ApprovalStore | None = None

    def __post_init__(self) -> None:
        threshold = self.auto_approve_threshold
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"auto_approve_threshold must be in [0, 1], got {threshold!r}")

    def auto_approves(self, risk: str, confidence: float | None) -> bool:
        threshold = self.auto_approve_threshold
        return (
            risk == "low"
            and threshold is not None
            and confidence is not None
            and confidence >= threshold
        )


_NO_POLICY = ApprovalPolicy(auto_approve_threshold=None)


@dataclass(frozen=True, eq=False)
class Approval:
    """A human approval gate in front of a node: ``add_node(..., approval=Approval(...))``.

    - ``risk``: ``"low"``, ``"medium"`` or ``"high"``; only low risk can be
      auto-approved (see ``ApprovalPolicy``).
    - ``timeout``: seconds (or a ``timedelta``) a person has; None waits forever.
    - ``on_timeout``: ``"reject"``, ``"approve"`` or a node to go to when it passes.
    - ``on_reject``: the node a rejected run goes to; ``END`` (default) stops it.
    - ``summary``: a string or ``fn(state) -> str`` shown to reviewers.
    - ``context``: ``fn(state) -> dict`` of what reviewers see (default: the
      node's input).

    >>> builder.add_node("delete", delete_data,
    ...                  approval=Approval(risk="high", timeout=3600, on_reject="notify"))
    """

    risk: Risk = "high"
    timeout: float | timedelta | None = None
    on_timeout: str = "reject"
    on_reject: str = END
    summary: str | Callable[[Any], str] | None = None
    context: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        check_risk(self.risk, "Approval(risk=...)")
        timeout = self.timeout
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
            object.__setattr__(self, "timeout", timeout)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
        ):
            raise ValueError(f"Approval timeout must be positive seconds, got {self.timeout!r}")
        for name in ("on_timeout", "on_reject"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"Approval {name} must be a node name or keyword, got {value!r}")

    @property
    def seconds(self) -> float | None:
        """The timeout in seconds (None: no deadline)."""
        return None if self.timeout is None else float(self.timeout)  # type: ignore[arg-type]

    @property
    def destinations(self) -> tuple[str, ...]:
        """The nodes this gate may send a run to instead of its own node."""
        out = [self.on_reject] if self.on_reject != END else []
        if self.on_timeout not in ("reject", "approve", END) and self.on_timeout not in out:
            out.append(self.on_timeout)
        return tuple(out)

    # -- the gate (called by the engine before the node runs) --------------

    def gate(self, task: Task) -> GateOutcome:
        """Decide whether ``task``'s node runs; may suspend the run (``interrupt``)."""
        loop = task.loop
        policy = policy_of(loop.options)
        index = task.interrupt_count
        if loop.saver is None:
            # Without checkpoints no run comes back to this gate, and task ids
            # repeat across runs and graphs: every pass is a request of its own
            # (one run's auto-approval must never open another run's gate), kept
            # only in the policy's store if it has one.
            rid = uuid.uuid4().hex
            store = policy.store if policy.store is not None else MemoryApprovalStore()
        else:
            rid = interrupt_id(task.id, index)
            if policy.store is not None:
                store = policy.store
                attach_store(loop.saver, store)  # the saver's thread deletions reach it
            else:
                store = store_for(loop.saver)
        now = policy.clock()
        request = store.get(rid)
        if request is None:
            request = store.create(self._request(task, rid, policy, now))
            _observe(task, EventKind.APPROVAL_REQUESTED, request)
        if request.overdue(now):
            request = _time_out(store, rid, now)
        if request.pending:
            answer = interrupt(request.as_interrupt())  # the run stops here until answered
            if _for_another_request(answer, rid):
                # A queue decided the request this task made before update_state
                # changed what it would run on: that decision stays with what it
                # showed, and this request waits for a decision of its own.
                task.resume = list(task.resume or [])[:index]
                raise GraphInterrupt(Interrupt(value=request.as_interrupt(), id=rid))
            request = _record(task, store, rid, answer, policy)
        else:
            _take_slot(task, index, request)
        _observe(task, EventKind.APPROVAL_DECIDED, request)
        return self._outcome(task, request, policy)

    async def agate(self, task: Task) -> GateOutcome:
        """``gate`` for an async run: in a worker thread when its store's calls wait
        on the network, so the event loop runs other work meanwhile."""
        loop = task.loop
        if loop.saver is not None and blocks_event_loop(loop.saver, policy_of(loop.options).store):
            import asyncio  # the task's context (its interrupts) goes with it

            return await asyncio.to_thread(self.gate, task)
        return self.gate(task)

    def _request(self, task: Task, rid: str, policy: ApprovalPolicy, now: float) -> ApprovalRequest:
        loop = task.loop
        state = task.input
        confidence = _confidence(task, policy.confidence_key)
        auto = policy.auto_approves(self.risk, confidence)
        if not auto and loop.saver is None:
            raise InterruptError(
                f"node {task.name!r} needs approval but the graph has no checkpointer; "
                "compile(checkpointer=...) so the run can wait for a reviewer"
            )
        context = self.context(state) if self.context is not None else state
        context = to_jsonable(context)
        seconds = self.seconds
        decision = None
        if auto:
            note = f"{policy.confidence_key}={confidence:g} >= {policy.auto_approve_threshold:g}"
            decision = Decision(rid, AUTO_APPROVED, POLICY_REVIEWER, note, now)
        return ApprovalRequest(
            id=rid,
            thread_id=str(loop.thread_id) if loop.thread_id is not None else "",
            node=task.name,
            summary=self._summary(state, task.name),
            context=context if isinstance(context, dict) else {"value": context},
            risk=self.risk,
            confidence=confidence,
            created_at=now,
            deadline=None if seconds is None else now + seconds,
            status=AUTO_APPROVED if auto else PENDING,
            on_timeout=self.on_timeout,
            state_keys=tuple(sorted(loop.plan.writable)),
            checkpoint_id=loop.checkpoint_id,
            decided_at=now if auto else None,
            decision=decision,
        )

    def _summary(self, state: Any, node: str) -> str:
        summary = self.summary
        if summary is None:
            return f"{node}: {self.risk}-risk action awaiting approval"
        return storable_text(summary if isinstance(summary, str) else str(summary(state)))

    def _outcome(self, task: Task, request: ApprovalRequest, policy: ApprovalPolicy) -> GateOutcome:
        status, rid = request.status, request.id
        decision = request.decision
        if status in (APPROVED, AUTO_APPROVED):
            return _PASS
        if status == EDITED:
            update = decision.update if decision is not None else None
            if not update:
                return _PASS
            if task.path[0] == PULL:  # a Send's task keeps the argument it was sent
                task.input = edited_input(
                    task.loop.plan, task.node, task.loop.state_at(task.step), update, rid
                )
            return GateOutcome(update=dict(update))
        if status == REJECTED:
            return _route(task, self.on_reject, policy, REJECTED)
        if status == TIMED_OUT:
            how = (decision.resolution if decision else None) or request.on_timeout
            if how == "approve":
                return _PASS
            if how in ("reject", END):
                return _route(task, self.on_reject if how == "reject" else END, policy, REJECTED)
            return _route(task, how, policy, TIMED_OUT)
        if status == SUPERSEDED:
            raise ApprovalError(
                f"approval request {rid!r} of node {task.name!r} was superseded: thread "
                f"{request.thread_id!r} moved on without an answer; run it from its latest "
                "checkpoint (the gate asks anew there)"
            )
        raise ApprovalError(f"approval request {rid!r} has unknown status {status!r}")


def policy_of(options: Mapping[str, Any]) -> ApprovalPolicy:
    policy = options.get("approval_policy")
    if policy is None:
        return _NO_POLICY
    if not isinstance(policy, ApprovalPolicy):
        raise TypeError(f"approval_policy must be an ApprovalPolicy, got {policy!r}")
    return policy


def _confidence(task: Task, key: str) -> float | None:
    value: Any = None
    for source in (task.input, task.loop.values):
        value = source.get(key) if isinstance(source, Mapping) else getattr(source, key, None)
        if value is not None:
            break
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _record(
    task: Task, store: ApprovalStore, rid: str, answer: Any, policy: ApprovalPolicy
) -> ApprovalRequest:
    """The run was resumed: use the stored decision, or record the resume value as one.

    The queue resumes a run only after storing its decision, so a pending
    request here means a raw ``Command(resume=...)``. An edit in it is checked as
    the queue checks one, before it is stored: a decision that cannot apply would
    leave the request decided and the thread stuck at the gate.
    """
    now = policy.clock()
    current = store.get(rid)
    if current is None:
        raise ApprovalError(f"approval request {rid!r} disappeared from the store")
    if not current.pending:
        return current
    if current.overdue(now):
        return _time_out(store, rid, now)
    decision = decision_from_answer(rid, answer, now)
    if decision.update is not None:
        check_update(decision.update, current.state_keys, rid)
        if task.path[0] == PULL:  # as _outcome: a Send's task keeps the argument it was sent
            edited_input(
                task.loop.plan, task.node, task.loop.state_at(task.step), decision.update, rid
            )
    try:
        return store.decide(decision, now=now)
    except AlreadyDecidedError:  # decided through the queue meanwhile: that one counts
        after = store.get(rid)
        assert after is not None
        return _time_out(store, rid, now) if after.pending else after


def _for_another_request(answer: Any, rid: str) -> bool:
    """Whether ``answer`` is a queue's resume payload for a request other than ``rid``."""
    return isinstance(answer, Mapping) and answer.get("request_id", rid) != rid


def timeout_decision(request_id: str, now: float) -> Decision:
    """The audit record of a request the clock resolved at ``now``."""
    return Decision(request_id, TIMED_OUT, CLOCK_REVIEWER, "deadline passed", now)


def _time_out(store: ApprovalStore, rid: str, now: float) -> ApprovalRequest:
    """Resolve an overdue request by its ``on_timeout`` (or read who beat us to it)."""
    try:
        return store.decide(timeout_decision(rid, now), now=now)
    except AlreadyDecidedError:
        found = store.get(rid)
        assert found is not None
        return found


@on_abandoned
def _supersede(loop: RunLoop, interrupt_ids: Sequence[str]) -> None:
    """The thread's head moved past interrupts it waited on: the requests still
    pending for them can no longer resume it, so reviewers stop seeing them."""
    policy = policy_of(loop.options)
    store = policy.store if policy.store is not None else existing_store_for(loop.saver)
    if store is None:
        return
    now = policy.clock()
    note = f"thread {loop.thread_id!r} moved on without an answer"
    for rid in interrupt_ids:
        if store.get(rid) is None:  # a plain interrupt(), not a gate's
            continue
        try:
            store.decide(Decision(rid, SUPERSEDED, THREAD_REVIEWER, note, now), now=now)
        except AlreadyDecidedError:  # decided already, by a reviewer or the clock
            continue


def _observe(task: Task, kind: EventKind, request: ApprovalRequest) -> None:
    observer = task.loop.observer
    if observer is not None:
        data = {"request_id": request.id, "risk": request.risk, "confidence": request.confidence}
        observer.instant(kind, task, status=request.status, data=data)


def _take_slot(task: Task, index: int, request: ApprovalRequest) -> None:
    """Occupy the gate's interrupt index though nobody needs to be asked.

    The gate always owns its task's first interrupt, decided or not, so an
    ``interrupt()`` in the node itself is numbered (and resumed) the same way
    on every run of the task. With no resume value at that index (a decision
    read from the store, an auto-approval), the stored outcome is filed there.
    """
    resume = list(task.resume or [])
    if len(resume) <= index:
        resume.extend([None] * (index - len(resume)))
        resume.append({"request_id": request.id, "status": request.status})
        task.resume = resume
    task.interrupt_count = index + 1


def _route(task: Task, target: str, policy: ApprovalPolicy, status: str) -> GateOutcome:
    if target != END and target not in task.loop.plan.nodes:
        raise RoutingError(
            f"the approval gate of node {task.name!r} routes to {target!r}, which is no node"
        )
    key = policy.status_key
    update = {key: status} if key is not None and key in task.loop.plan.writable else None
    return GateOutcome(update=update, goto=target)


_YES = frozenset({"approve", "approved", "yes", "y", "ok", "accept", "accepted"})
_NO = frozenset({"reject", "rejected", "no", "n", "deny", "denied"})
_ACTIONS = {"approve": APPROVED, "reject": REJECTED, "edit": EDITED}


def decision_from_answer(rid: str, answer: Any, now: float) -> Decision:
    """Read a resume value as a decision.

    Accepted: ``True``/``False``; ``"approve"``/``"reject"`` (and yes/no);
    ``{"action": "approve"|"reject"|"edit", "update": {...}, "reviewer": ..., "notes": ...}``
    (``"status"`` works in place of ``"action"``); ``{"update": {...}}`` is an edit.
    """
    if isinstance(answer, bool):
        return Decision(rid, APPROVED if answer else REJECTED, None, None, now)
    if isinstance(answer, str) and answer.strip().lower() in _YES | _NO:
        verdict = APPROVED if answer.strip().lower() in _YES else REJECTED
        return Decision(rid, verdict, None, None, now)
    if isinstance(answer, Mapping):
        action = answer.get("action", answer.get("status"))
        status: str | None = _ACTIONS.get(action, action) if isinstance(action, str) else None
        update = answer.get("update")
        if status is None and update is not None:
            status = EDITED
        if status is not None and status in HUMAN:
            edit: dict[str, Any] | None = None
            if status == EDITED:
                if not isinstance(update, Mapping):
                    raise InvalidUpdateError(
                        f"edit of approval request {rid!r} needs an update dict"
                    )
                edit = dict(update)
            reviewer, notes = answer.get("reviewer"), answer.get("notes")
            return Decision(
                rid, status, None if reviewer is None else str(reviewer),
                None if notes is None else str(notes), now, update=edit,
            )  # fmt: skip
    raise ApprovalError(
        f"cannot read {answer!r:.80} as a decision on approval request {rid!r}; resume with "
        "True/False, 'approve'/'reject' or {'action': 'approve'|'reject'|'edit', ...}, "
        "or decide through ReviewQueue"
    )


def edited_input(
    plan: GraphPlan, node: NodePlan, values: Mapping[str, Any], update: Mapping[str, Any], rid: str
) -> Any:
    """The input ``node`` runs with once the edit of request ``rid`` is applied to
    ``values``; InvalidUpdateError when a value does not fit the node's state type."""
    try:
        return plan.input_after(node, values, update)
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise InvalidUpdateError(
            f"edit of approval request {rid!r} does not fit the state of node {node.name!r}: {exc}"
        ) from exc


def check_update(update: Mapping[str, Any], state_keys: tuple[str, ...], rid: str) -> None:
    """An edit may only set keys the run's state has."""
    if not update:
        raise InvalidUpdateError(
            f"edit of approval request {rid!r} has an empty update; use approve instead"
        )
    bad = [k for k in update if not isinstance(k, str) or (state_keys and k not in state_keys)]
    if bad:
        raise InvalidUpdateError(
            f"edit of approval request {rid!r} sets unknown state key(s) "
            f"{', '.join(map(repr, bad))}; the state has {', '.join(state_keys)}"
        )
