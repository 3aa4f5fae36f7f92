"""Deadlines (on_timeout, expire_due, lazy expiry at resume) and per-node metrics."""

from __future__ import annotations

import asyncio
import operator
import threading
from typing import Annotated, Any

import pytest
from tests.hitl.conftest import Backend, Clock
from typing_extensions import TypedDict

from trellis import END, START, StateGraph
from trellis.errors import AlreadyDecidedError, ApprovalError
from trellis.hitl import Approval, ApprovalPolicy, ReviewQueue
from trellis.hitl.metrics import compute_metrics, percentile
from trellis.hitl.records import APPROVED, PENDING, TIMED_OUT


class State(TypedDict, total=False):
    amount: int
    confidence: float
    status: str
    log: Annotated[list[str], operator.add]


def cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def build(saver: Any, clock: Clock, approval: Approval, runs: list[str]) -> Any:
    b = StateGraph(State)

    def act(state: State) -> dict[str, Any]:
        runs.append("act")
        return {"log": ["act"]}

    b.add_node("act", act, approval=approval, destinations=approval.destinations)
    b.add_edge(START, "act")
    b.add_edge("act", END)
    if "escalate" in approval.destinations:
        b.add_node("escalate", lambda s: {"log": ["escalate"]})
        b.add_edge("escalate", END)
    return b.compile(checkpointer=saver, approval_policy=ApprovalPolicy(clock=clock))


@pytest.mark.parametrize(
    ("on_timeout", "log", "status", "acted"),
    [
        ("reject", [], "rejected", False),
        ("approve", ["act"], None, True),
        ("escalate", ["escalate"], "timed_out", False),
    ],
)
def test_expire_due_resolves_by_on_timeout_and_resumes(
    backend: Backend,
    clock: Clock,
    on_timeout: str,
    log: list[str],
    status: str | None,
    acted: bool,
) -> None:
    runs: list[str] = []
    saver = backend.saver()
    app = build(saver, clock, Approval(timeout=60, on_timeout=on_timeout), runs)
    app.invoke({"amount": 1}, cfg("t1"))
    queue = ReviewQueue(saver, graph=app, clock=clock)
    clock.advance(59)
    assert queue.expire_due() == []
    clock.advance(1)
    (resolved,) = queue.expire_due()
    assert resolved.status == TIMED_OUT
    assert resolved.decision is not None and resolved.decision.resolution == on_timeout
    values = app.get_state(cfg("t1")).values
    assert values["log"] == log
    assert values.get("status") == status
    assert runs == (["act"] if acted else [])
    assert queue.expire_due() == []  # each request is resolved once


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_sweep_resumes_a_thread_waiting_on_two_gates_once(
    backend: Backend, clock: Clock, mode: str
) -> None:
    # Both requests of a thread time out together: one resume answers both; a
    # second would find the thread finished and fail a sweep that succeeded.
    runs: list[str] = []
    gate = Approval(timeout=60, on_timeout="approve")
    b = StateGraph(State)
    b.add_node("a", lambda s: runs.append("a") or {"log": ["a"]}, approval=gate)
    b.add_node("b", lambda s: runs.append("b") or {"log": ["b"]}, approval=gate)
    b.add_edge(START, "a")
    b.add_edge(START, "b")
    saver = backend.saver()
    app = b.compile(checkpointer=saver, approval_policy=ApprovalPolicy(clock=clock))
    app.invoke({"amount": 1}, cfg("t1"))
    app.invoke({"amount": 2}, cfg("t2"))
    queue = ReviewQueue(saver, graph=app, clock=clock)
    clock.advance(60)
    done = queue.expire_due() if mode == "sync" else asyncio.run(queue.aexpire_due())
    assert sorted((r.thread_id, r.node) for r in done) == [
        ("t1", "a"), ("t1", "b"), ("t2", "a"), ("t2", "b"),
    ]  # fmt: skip
    assert sorted(runs) == ["a", "a", "b", "b"]
    for thread in ("t1", "t2"):
        state = app.get_state(cfg(thread))
        assert sorted(state.values["log"]) == ["a", "b"] and state.next == ()


def test_a_swept_request_resumes_at_the_next_invoke_without_a_graph(
    backend: Backend, clock: Clock
) -> None:
    runs: list[str] = []
    saver = backend.saver()
    app = build(saver, clock, Approval(timeout=10, on_timeout="approve"), runs)
    app.invoke({"amount": 1}, cfg("t1"))
    clock.advance(10)
    assert len(ReviewQueue(saver, clock=clock).expire_due()) == 1
    assert runs == []
    app.invoke(None, cfg("t1"))
    assert runs == ["act"]


def test_an_overdue_request_is_resolved_when_the_run_is_resumed(
    backend: Backend, clock: Clock
) -> None:
    runs: list[str] = []
    saver = backend.saver()
    app = build(saver, clock, Approval(timeout=10, on_timeout="reject"), runs)
    out = app.invoke({"amount": 1}, cfg("t1"))
    rid = out["__interrupt__"][0].id
    clock.advance(11)
    out = app.invoke(None, cfg("t1"))
    assert "__interrupt__" not in out and out["status"] == "rejected"
    queue = ReviewQueue(saver, clock=clock)
    assert queue.get(rid).status == TIMED_OUT
    assert queue.expire_due() == []
    assert runs == []


def test_deciding_after_the_deadline_is_refused_and_changes_nothing(
    backend: Backend, clock: Clock
) -> None:
    runs: list[str] = []
    saver = backend.saver()
    app = build(saver, clock, Approval(timeout=10), runs)
    rid = app.invoke({"amount": 1}, cfg("t1"))["__interrupt__"][0].id
    before = app.get_state(cfg("t1"))
    clock.advance(10)
    queue = ReviewQueue(saver, graph=app, clock=clock)
    with pytest.raises(AlreadyDecidedError, match="expired"):
        queue.approve(rid, reviewer="late")
    assert queue.get(rid).status == PENDING
    assert app.get_state(cfg("t1")).config == before.config
    (resolved,) = queue.expire_due()
    with pytest.raises(AlreadyDecidedError, match="timed_out"):
        queue.approve(resolved.id, reviewer="late")
    assert runs == []


def test_concurrent_sweepers_resolve_each_request_exactly_once(
    db_backend: Backend, clock: Clock
) -> None:
    runs: list[str] = []
    saver = db_backend.saver()
    app = build(saver, clock, Approval(timeout=5, on_timeout="approve"), runs)
    for i in range(6):
        app.invoke({"amount": i}, cfg(f"t{i}"))
    clock.advance(5)
    sweepers = [ReviewQueue(store=db_backend.store(), clock=clock) for _ in range(4)]
    barrier = threading.Barrier(len(sweepers))
    resolved: list[str] = []
    lock = threading.Lock()

    def sweep(queue: ReviewQueue) -> None:
        barrier.wait()
        ids = [r.id for r in queue.expire_due()]
        with lock:
            resolved.extend(ids)

    threads = [threading.Thread(target=sweep, args=(q,)) for q in sweepers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(resolved) == 6 == len(set(resolved))
    for i in range(6):
        app.invoke(None, cfg(f"t{i}"))
    assert runs == ["act"] * 6


def test_metrics_per_gated_node(backend: Backend, clock: Clock) -> None:
    saver = backend.saver()
    policy = ApprovalPolicy(clock=clock, auto_approve_threshold=0.9)
    b = StateGraph(State)
    b.add_node("act", lambda s: {"log": ["act"]}, approval=Approval(risk="low", timeout=100))
    b.add_edge(START, "act")
    app = b.compile(checkpointer=saver, approval_policy=policy)
    queue = ReviewQueue(saver, clock=clock)
    ids = []
    for i in range(6):
        out = app.invoke({"amount": i, "confidence": 0.5}, cfg(f"t{i}"))
        ids.append(out["__interrupt__"][0].id)
    app.invoke({"amount": 9, "confidence": 0.95}, cfg("auto"))

    def edit(rid: str, reviewer: str) -> Any:
        return queue.edit(rid, {"amount": 1}, reviewer=reviewer)

    for i, decide in enumerate((queue.approve, queue.approve, queue.reject, edit)):
        clock.advance(10)  # decided 10, 20, 30 and 40 seconds after the request
        decide(ids[i], reviewer="r")
    clock.advance(100)
    queue.expire_due()  # ids[4] and ids[5] time out
    m = queue.metrics()["act"]
    assert (m.requests, m.auto_approved, m.approved, m.rejected, m.edited, m.timed_out) == (
        7, 1, 2, 1, 1, 2,
    )  # fmt: skip
    assert m.pending == 0
    assert m.median_time_to_decision == 25.0
    assert m.p95_time_to_decision == 40.0
    assert m.approval_rate == 0.75
    assert queue.metrics(node="nope") == {}


def test_metric_math() -> None:
    assert percentile([], 95) is None
    assert percentile([1.0], 95) == 1.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 95) == 95.0
    assert percentile(values, 50) == 50.0
    rows = [("n", APPROVED, 0.0, 3.0), ("n", APPROVED, 0.0, 1.0), ("n", PENDING, 0.0, None)]
    m = compute_metrics(rows)["n"]
    assert (m.requests, m.pending, m.median_time_to_decision) == (3, 1, 2.0)


def _async_graph(saver: Any, clock: Clock, runs: list[str]) -> Any:
    async def act(state: State) -> dict[str, Any]:
        runs.append("act")
        return {"log": ["act"]}

    b = StateGraph(State)
    b.add_node("act", act, approval=Approval(risk="high", timeout=60, on_timeout="approve"))
    b.add_edge(START, "act")
    return b.compile(checkpointer=saver, approval_policy=ApprovalPolicy(clock=clock))


async def test_the_async_sweep_resumes_graphs_with_async_nodes(
    backend: Backend, clock: Clock
) -> None:
    runs: list[str] = []
    app = _async_graph(backend.saver(), clock, runs)
    await app.ainvoke({"amount": 1}, cfg("t1"))
    queue = ReviewQueue(graph=app, clock=clock)
    clock.advance(61)
    (done,) = await queue.aexpire_due()
    assert done.status == TIMED_OUT and runs == ["act"]
    assert (await app.aget_state(cfg("t1"))).values["log"] == ["act"]


def test_sync_deciding_and_sweeping_resume_graphs_with_async_nodes(
    backend: Backend, clock: Clock
) -> None:
    """A script or the CLI has no event loop; the queue runs the graph in one of its own."""
    runs: list[str] = []
    app = _async_graph(backend.saver(), clock, runs)
    queue = ReviewQueue(graph=app, clock=clock)
    for thread in ("t1", "t2"):
        asyncio.run(app.ainvoke({"amount": 1}, cfg(thread)))
    first = next(r for r in queue.pending() if r.thread_id == "t1")
    queue.approve(first.id, reviewer="alice")
    assert runs == ["act"]
    clock.advance(61)
    assert [r.thread_id for r in queue.expire_due()] == ["t2"]
    assert runs == ["act", "act"]


@pytest.mark.parametrize("limit", [-1, 1.5, True])
def test_a_page_size_must_be_a_count(backend: Backend, limit: Any) -> None:
    queue = ReviewQueue(backend.saver())
    with pytest.raises(ValueError, match="limit"):
        queue.pending(limit=limit)
    with pytest.raises(ValueError, match="limit"):
        queue.expire_due(limit=limit)


def test_a_sync_queue_resumes_a_graph_whose_router_is_async(backend: Backend) -> None:
    async def route(state: State) -> str:
        return "after"

    b = StateGraph(State)
    b.add_node("act", lambda s: {"log": ["act"]}, approval=Approval(risk="high"))
    b.add_node("after", lambda s: {"log": ["after"]})
    b.add_edge(START, "act")
    b.add_conditional_edges("act", route, ["after"])
    app = b.compile(checkpointer=backend.saver())
    assert app.needs_async
    asyncio.run(app.ainvoke({"amount": 1}, cfg("t1")))
    queue = ReviewQueue(graph=app)
    (waiting,) = queue.pending()
    queue.approve(waiting.id, reviewer="alice")
    assert app.get_state(cfg("t1")).values["log"] == ["act", "after"]


async def test_a_sync_decision_inside_an_event_loop_is_refused_before_it_is_stored(
    backend: Backend, clock: Clock
) -> None:
    """Only aapprove can resume an async graph from async code: approve says so,
    and stores nothing."""
    runs: list[str] = []
    app = _async_graph(backend.saver(), clock, runs)
    await app.ainvoke({"amount": 1}, cfg("t1"))
    queue = ReviewQueue(graph=app, clock=clock)
    (waiting,) = queue.pending()
    with pytest.raises(ApprovalError, match="aapprove"):
        queue.approve(waiting.id, reviewer="alice")
    assert queue.get(waiting.id).status == PENDING
    await queue.aapprove(waiting.id, reviewer="alice")
    assert runs == ["act"]


def test_a_queue_with_the_graph_tells_time_by_the_policys_clock(
    backend: Backend, clock: Clock
) -> None:
    """The gate set the deadline by ApprovalPolicy(clock=...); the queue checks it by
    the same clock unless given its own."""
    runs: list[str] = []
    saver = backend.saver()
    app = build(saver, clock, Approval(timeout=60, on_timeout="reject"), runs)
    app.invoke({"amount": 1}, cfg("t1"))
    queue = ReviewQueue(saver, graph=app)  # no clock= of its own
    assert queue.expire_due() == []  # the wall clock is years past the policy's deadline
    clock.advance(60)
    (resolved,) = queue.expire_due()
    assert resolved.status == TIMED_OUT and runs == []
