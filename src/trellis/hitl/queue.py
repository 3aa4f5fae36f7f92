"""``ReviewQueue``: list what waits for a person, decide it, sweep deadlines.

>>> queue = ReviewQueue(saver, graph=app)         # resumes runs as it decides
>>> for request in queue.pending(risk="high"):
...     print(request.id, request.node, request.summary)
>>> queue.approve(request.id, reviewer="alice", notes="checked the ticket")

Without ``graph=`` the decision is only stored; the run continues at the next
``app.invoke(None, {"configurable": {"thread_id": ...}})`` of that thread, in
whichever process holds the graph. Every decision is exactly-once: of two
reviewers deciding the same request at the same time, one wins and the other
gets ``AlreadyDecidedError`` — and only the winner resumes the run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from trellis.engine.task import PULL
from trellis.errors import AlreadyDecidedError, ApprovalError, ApprovalNotFoundError
from trellis.hitl.approval import check_update, edited_input, policy_of, timeout_decision
from trellis.hitl.metrics import NodeApprovalMetrics, compute_metrics
from trellis.hitl.records import (
    APPROVED,
    EDITED,
    REJECTED,
    ApprovalRequest,
    Decision,
    check_risk,
)
from trellis.hitl.store import ApprovalStore, names, open_store, store_for
from trellis.types import Command, StateSnapshot

__all__ = ["ReviewQueue"]


class ReviewQueue:
    """The approval requests of every thread behind one checkpointer.

    ``ReviewQueue(saver)`` reads and decides; ``ReviewQueue(saver, graph=app)``
    (or just ``graph=app``, using its checkpointer) also resumes each run as
    soon as its request is decided. ``store=`` uses an ``ApprovalStore``
    directly (by default the graph's ``ApprovalPolicy(store=...)``, else the
    one beside the checkpoints); ``clock`` is what "now" means (deadlines,
    ``older_than``): by default the graph's ``ApprovalPolicy(clock=...)``, which
    set the deadlines, else the wall clock.

    With a graph, the decision is stored first and the run resumed after; if
    the resumed run raises, the decision stands and the error propagates (the
    thread can be resumed later with ``invoke(None, config)``).

    >>> queue = ReviewQueue(SqliteSaver.from_path("runs.db"))
    >>> queue.pending(node="delete", older_than=timedelta(hours=1))
    """

    def __init__(
        self,
        checkpointer: Any = None,
        *,
        graph: Any = None,
        store: ApprovalStore | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if checkpointer is None and graph is not None:
            checkpointer = graph.checkpointer
        policy = policy_of(graph.options) if graph is not None else None
        if store is None and policy is not None:  # where the graph's gates keep requests
            store = policy.store
        if clock is None:  # the clock the graph's gates set deadlines by, else the wall's
            clock = policy.clock if policy is not None else time.time
        if store is None:
            if checkpointer is None:
                raise ValueError("ReviewQueue needs a checkpointer, a graph with one, or a store")
            store = store_for(checkpointer)
        self.store = store
        self.graph = graph
        self.clock = clock
        self._owns_store = False

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ReviewQueue:
        """A queue over a database named by a PostgreSQL URL or a SQLite path.

        >>> ReviewQueue.from_url("runs.db").pending()
        """
        queue = cls(store=open_store(url), **kwargs)
        queue._owns_store = True
        return queue

    # -- reading ---------------------------------------------------------------

    def pending(
        self,
        *,
        risk: str | Iterable[str] | None = None,
        node: str | Iterable[str] | None = None,
        older_than: float | timedelta | datetime | None = None,
        limit: int | None = 100,
    ) -> list[ApprovalRequest]:
        """Waiting requests across all threads, soonest deadline first (none last).

        ``older_than``: seconds or a ``timedelta`` of age, or a ``datetime``
        the request was created at or before. At most ``limit`` requests (a
        page: the first 100 by default); ``limit=None`` returns all of them.

        >>> queue.pending(risk=["medium", "high"], older_than=600)
        """
        risks = names(risk)
        for r in risks or ():  # a typo would otherwise list nothing, as if none were waiting
            check_risk(r, "pending(risk=...)")
        return self.store.pending(
            risk=risks,
            node=names(node),
            created_before=self._cutoff(older_than),
            limit=_page(limit),
        )

    def get(self, request_id: str) -> ApprovalRequest:
        """One request, with its decision once it has one."""
        request = self.store.get(request_id)
        if request is None:
            raise ApprovalNotFoundError(f"no approval request {request_id!r}")
        return request

    def history(self, thread_id: str) -> list[ApprovalRequest]:
        """Every request of a thread, oldest first, each with its decision (the audit trail)."""
        return self.store.history(thread_id)

    def metrics(self, node: str | None = None) -> dict[str, NodeApprovalMetrics]:
        """Per gated node: requests, outcomes, median and p95 time to a person's decision."""
        return compute_metrics(self.store.stats(node))

    # -- deciding --------------------------------------------------------------

    def approve(
        self, request_id: str, *, reviewer: str, notes: str | None = None
    ) -> ApprovalRequest:
        """Let the gated node run. Returns the decided request.

        Raises ``ApprovalNotFoundError`` for an unknown id and
        ``AlreadyDecidedError`` when it was decided, timed out, or is past its
        deadline (status ``"expired"``); then nothing is stored or resumed.
        """
        return self._decide(Decision(request_id, APPROVED, reviewer, notes, self.clock()))

    def reject(
        self, request_id: str, *, reviewer: str, notes: str | None = None
    ) -> ApprovalRequest:
        """Do not run the node: the run goes to the gate's ``on_reject`` (or ends)."""
        return self._decide(Decision(request_id, REJECTED, reviewer, notes, self.clock()))

    def edit(
        self,
        request_id: str,
        update: Mapping[str, Any],
        *,
        reviewer: str,
        notes: str | None = None,
    ) -> ApprovalRequest:
        """Approve with a state update, applied before the node runs.

        An update naming a key the run's state lacks raises
        ``InvalidUpdateError`` and stores nothing.

        >>> queue.edit(rid, {"amount": 50}, reviewer="bob", notes="partial refund only")
        """
        return self._decide(self._edit(request_id, update, reviewer, notes))

    def _edit(
        self, request_id: str, update: Mapping[str, Any], reviewer: str, notes: str | None
    ) -> Decision:
        request = self.get(request_id)
        check_update(update, request.state_keys, request_id)
        if self.graph is not None:
            # With the graph, values are checked against the node's types too,
            # before anything is stored.
            gate = _gate_of(self.graph, request)
            if gate is not None:
                plan, node, values = gate
                edited_input(plan, node, values, update, request_id)
        return Decision(request_id, EDITED, reviewer, notes, self.clock(), update=dict(update))

    def expire_due(
        self, now: float | None = None, *, limit: int | None = None
    ) -> list[ApprovalRequest]:
        """Resolve every request past its deadline by its ``on_timeout``; each exactly once.

        Safe to run from several processes at once (a cron job, a worker
        loop): a request another sweeper or a reviewer resolved first is
        skipped. Returns the requests this call resolved. A run that fails
        when resumed does not stop the sweep: every due request is resolved,
        then the failures are raised together as an ``ExceptionGroup``.
        """
        self._check_can_resume("sweep")
        resolved = self._expire(now, limit)
        failures: list[Exception] = []
        for group in _by_thread(resolved):
            try:
                self._resume(*group)
            except Exception as exc:
                failures.append(_resuming_after_timeout(exc, group))
        _raise_together(failures)
        return resolved

    async def aexpire_due(
        self, now: float | None = None, *, limit: int | None = None
    ) -> list[ApprovalRequest]:
        """The async twin of ``expire_due`` (resumes with ``graph.ainvoke``)."""
        resolved = await asyncio.to_thread(self._expire, now, limit)
        failures: list[Exception] = []
        for group in _by_thread(resolved):
            try:
                await self._aresume(*group)
            except Exception as exc:
                failures.append(_resuming_after_timeout(exc, group))
        _raise_together(failures)
        return resolved

    def _expire(self, now: float | None, limit: int | None) -> list[ApprovalRequest]:
        """Resolve what is due (each exactly once); resuming is the caller's."""
        now = self.clock() if now is None else now
        resolved = []
        for request in self.store.due(now, limit=_page(limit)):
            try:
                resolved.append(self.store.decide(timeout_decision(request.id, now), now=now))
            except AlreadyDecidedError:
                continue
        return resolved

    def _decide(self, decision: Decision) -> ApprovalRequest:
        self._check_can_resume("decide")
        done = self.store.decide(decision, now=decision.decided_at)
        self._resume(done)
        return done

    def _check_can_resume(self, what: str) -> None:
        """Refuse, before anything is stored, a sync call that could not resume
        the graph: one with async nodes, called inside a running event loop."""
        if self.graph is None or not self.graph.needs_async:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop here: _resume runs one of its own
        raise ApprovalError(
            f"cannot {what} with a sync ReviewQueue method inside a running event loop: "
            f"graph {self.graph.name!r} has async nodes; await aapprove / areject / aedit "
            "/ aexpire_due"
        )

    def _resume(self, *requests: ApprovalRequest) -> None:
        """Resume the thread of ``requests`` (one thread's), answering them all."""
        graph = self.graph
        if graph is None:
            return
        if graph.needs_async:
            # A graph with async nodes only runs under ainvoke; from sync code
            # (a script, the CLI) that means an event loop of its own.
            asyncio.run(self._aresume(*requests))
        else:
            graph.invoke(*_resume_args(requests))

    async def _aresume(self, *requests: ApprovalRequest) -> None:
        if self.graph is not None:
            await self.graph.ainvoke(*_resume_args(requests))

    # -- async twins -------------------------------------------------------------

    async def aapprove(
        self, request_id: str, *, reviewer: str, notes: str | None = None
    ) -> ApprovalRequest:
        """The async twin of ``approve`` (resumes with ``graph.ainvoke``)."""
        return await self._adecide(Decision(request_id, APPROVED, reviewer, notes, self.clock()))

    async def areject(
        self, request_id: str, *, reviewer: str, notes: str | None = None
    ) -> ApprovalRequest:
        """The async twin of ``reject``."""
        return await self._adecide(Decision(request_id, REJECTED, reviewer, notes, self.clock()))

    async def aedit(
        self,
        request_id: str,
        update: Mapping[str, Any],
        *,
        reviewer: str,
        notes: str | None = None,
    ) -> ApprovalRequest:
        """The async twin of ``edit``."""
        decision = await asyncio.to_thread(self._edit, request_id, update, reviewer, notes)
        return await self._adecide(decision)

    async def _adecide(self, decision: Decision) -> ApprovalRequest:
        done = await asyncio.to_thread(self.store.decide, decision, now=decision.decided_at)
        await self._aresume(done)
        return done

    # -- helpers ---------------------------------------------------------------

    def _cutoff(self, older_than: float | timedelta | datetime | None) -> float | None:
        if older_than is None:
            return None
        if isinstance(older_than, datetime):
            return older_than.timestamp()
        age = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        return self.clock() - float(age)

    def close(self) -> None:
        """Release the connections of a store this queue opened (``from_url``).

        A store shared with a checkpointer's runs stays open.
        """
        if self._owns_store:
            self.store.close()


def _by_thread(requests: Sequence[ApprovalRequest]) -> list[list[ApprovalRequest]]:
    """``requests`` grouped by thread, in order: a thread waiting on several of them
    (parallel gates) is resumed once, with every answer, not once per request."""
    groups: dict[str, list[ApprovalRequest]] = {}
    for request in requests:
        groups.setdefault(request.thread_id, []).append(request)
    return list(groups.values())


def _resuming_after_timeout(exc: Exception, requests: Sequence[ApprovalRequest]) -> Exception:
    ids = ", ".join(repr(r.id) for r in requests)
    exc.add_note(f"resuming thread {requests[0].thread_id!r} after request(s) {ids} timed out")
    return exc


def _raise_together(failures: list[Exception]) -> None:
    if failures:
        raise ExceptionGroup(f"{len(failures)} timed-out run(s) failed to resume", failures)


def _page(limit: int | None) -> int | None:
    """``limit`` checked: None (everything) or a count of at least 0."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or a whole number >= 0, got {limit!r}")
    return limit


def _gate_of(graph: Any, request: ApprovalRequest) -> tuple[Any, Any, Any] | None:
    """(plan, node, state) of the gate that waits on ``request``, in ``graph`` or in
    the subgraph that asked it; None when no task of the thread waits on it.

    A subgraph's question bubbles up: the parent task that runs the subgraph lists
    it too, and its ``state`` is the subgraph's snapshot, one level down.
    """
    snapshot = graph.get_state(_config(request), subgraphs=True)
    while True:
        task = _waiting(snapshot, request.id)
        if task is None or task.name not in graph.plan.nodes or task.path[:1] != (PULL,):
            return None  # (a Send's task keeps the argument it was sent: not checked)
        node = graph.plan.nodes[task.name]
        inner = task.state
        # Asked inside the subgraph, rather than by a gate on the subgraph node itself
        # (whose subgraph has not started: its snapshot is empty; it is only a config
        # where the subgraph keeps a checkpointer of its own).
        asked_inside = isinstance(inner, StateSnapshot) and _waiting(inner, request.id)
        if node.subgraph is not None and asked_inside:
            graph, snapshot = node.subgraph.graph, inner
            continue
        return graph.plan, node, snapshot.values


def _waiting(snapshot: StateSnapshot, request_id: str) -> Any:
    """The task of ``snapshot`` that waits on ``request_id``, if one does."""
    waits = (t for t in snapshot.tasks if any(i.id == request_id for i in t.interrupts))
    return next(waits, None)


def _config(request: ApprovalRequest) -> dict[str, Any]:
    return {"configurable": {"thread_id": request.thread_id}}


def _resume_args(requests: Sequence[ApprovalRequest]) -> tuple[Command[Any], dict[str, Any]]:
    answers = {r.id: {"request_id": r.id, "status": r.status} for r in requests}
    return Command(resume=answers), _config(requests[0])
