"""A request the thread moved on from is superseded: reviewers stop seeing it, and
deciding it is refused before anything is stored or resumed."""

from __future__ import annotations

from typing import Any

import pytest
from tests.hitl.conftest import Backend
from tests.hitl.test_gate import Graph, State, cfg, request_id

from trellis import END, START, Command, StateGraph
from trellis.errors import AlreadyDecidedError, ApprovalError, GraphRecursionError
from trellis.hitl import Approval, ReviewQueue
from trellis.hitl.records import APPROVED, PENDING, SUPERSEDED


def _statuses(queue: ReviewQueue, thread: str) -> list[tuple[str, str]]:
    return [(r.id, r.status) for r in queue.history(thread)]


def test_new_input_on_a_waiting_thread_supersedes_its_request(backend: Backend) -> None:
    g = Graph(backend.saver())
    queue = ReviewQueue(g.saver, graph=g.app)
    old = request_id(g.start("t1"))
    new = request_id(g.start("t1", amount=7))  # the thread starts over with new input
    assert [r.id for r in queue.pending()] == [new]
    assert _statuses(queue, "t1") == [(old, SUPERSEDED), (new, PENDING)]
    decision = queue.get(old).decision
    assert decision is not None and decision.reviewer == "thread"
    with pytest.raises(AlreadyDecidedError, match="superseded"):
        queue.approve(old, reviewer="alice")
    assert g.runs == []  # the refused approval ran nothing
    queue.approve(new, reviewer="alice")
    assert [r["amount"] for r in g.runs] == [7]
    metrics = queue.metrics()["act"]
    assert (metrics.superseded, metrics.approved, metrics.pending) == (1, 1, 0)


def test_update_state_past_the_gate_supersedes_its_request(backend: Backend) -> None:
    g = Graph(backend.saver())
    queue = ReviewQueue(g.saver, graph=g.app)
    rid = request_id(g.start("t1"))
    g.app.update_state(cfg("t1"), {"log": ["by hand"]}, as_node="act")
    assert g.app.get_state(cfg("t1")).next == ("after",)
    assert queue.pending() == []
    assert queue.get(rid).status == SUPERSEDED
    with pytest.raises(AlreadyDecidedError):
        queue.approve(rid, reviewer="alice")
    assert g.runs == []


def test_an_update_that_keeps_the_gate_waiting_keeps_its_request(backend: Backend) -> None:
    """Until the run asks anew (on the updated state), the request stays; then the
    new one replaces it."""
    g = Graph(backend.saver())
    queue = ReviewQueue(g.saver, graph=g.app)
    old = request_id(g.start("t1"))
    g.app.update_state(cfg("t1"), {"amount": 2})
    assert [r.id for r in queue.pending()] == [old]
    new = request_id(g.app.invoke(None, cfg("t1")))
    assert new != old
    assert [(r.id, r.context["amount"]) for r in queue.pending()] == [(new, 2)]
    assert queue.get(old).status == SUPERSEDED


def test_forking_a_waiting_thread_supersedes_what_its_head_waited_on(backend: Backend) -> None:
    g = Graph(backend.saver())
    queue = ReviewQueue(g.saver, graph=g.app)
    old = request_id(g.start("t1"))
    first = list(g.app.get_state_history(cfg("t1")))[-1]  # the input checkpoint
    forked = g.app.invoke({"amount": 3}, first.config)
    new = request_id(forked)
    assert _statuses(queue, "t1") == [(old, SUPERSEDED), (new, PENDING)]


def test_a_decided_request_keeps_its_decision_when_the_thread_moves_on(
    backend: Backend,
) -> None:
    g = Graph(backend.saver())
    queue = ReviewQueue(g.saver)  # decides without resuming the run
    rid = request_id(g.start("t1"))
    queue.approve(rid, reviewer="alice")
    g.start("t1", amount=5)  # new input instead of resuming: the approval is not used
    assert queue.get(rid).status == APPROVED


def test_a_run_that_fails_where_it_resumed_keeps_the_other_gate_waiting(
    backend: Backend,
) -> None:
    """Parallel gates; the approved node fails. The head is unchanged and the other
    gate's run will ask the very same request again: it must stay pending."""
    b = StateGraph(State)

    def broken(state: Any) -> Any:
        raise RuntimeError("boom")

    b.add_node("a", lambda s: {"log": ["a"]}, approval=Approval())
    b.add_node("b", broken, approval=Approval())
    b.add_edge(START, "a")
    b.add_edge(START, "b")
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    ids = {i.value["node"]: i.id for i in app.invoke({"amount": 1}, cfg("t1"))["__interrupt__"]}
    queue = ReviewQueue(saver, graph=app)
    with pytest.raises(RuntimeError, match="boom"):
        queue.approve(ids["b"], reviewer="x")
    assert [r.id for r in queue.pending()] == [ids["a"]]
    waiting = {i.id for t in app.get_state(cfg("t1")).tasks for i in t.interrupts}
    assert ids["a"] in waiting


def test_a_run_that_moves_on_and_then_fails_still_supersedes(backend: Backend) -> None:
    b = StateGraph(State)
    b.add_node("gated", lambda s: {"log": ["gated"]}, approval=Approval())
    b.add_node("boom", lambda s: (_ for _ in ()).throw(RuntimeError("boom")))
    b.add_conditional_edges(START, lambda s: "boom" if s.get("status") == "go" else "gated")
    b.add_edge("gated", END)
    b.add_edge("boom", END)
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    rid = request_id(app.invoke({"amount": 1}, cfg("t1")))
    with pytest.raises(RuntimeError, match="boom"):
        app.invoke({"status": "go"}, cfg("t1"))
    assert ReviewQueue(saver).get(rid).status == SUPERSEDED


def test_resuming_a_superseded_request_by_its_checkpoint_is_a_named_error(
    backend: Backend,
) -> None:
    g = Graph(backend.saver())
    rid = request_id(g.start("t1"))
    waiting = g.app.get_state(cfg("t1")).config
    g.start("t1", amount=2)
    with pytest.raises(ApprovalError, match="superseded"):
        g.app.invoke(Command(resume=True), waiting)
    assert ReviewQueue(g.saver).get(rid).status == SUPERSEDED


def test_plain_interrupts_touch_no_approval_tables(tmp_path: Any) -> None:
    """Moving past a plain interrupt() creates no approval store in the database."""
    import sqlite3

    from trellis import SqliteSaver, interrupt

    b = StateGraph(State)
    b.add_node("ask", lambda s: {"status": interrupt("ok?")})
    b.add_edge(START, "ask")
    path = tmp_path / "runs.db"
    with SqliteSaver.from_path(path) as saver:
        app = b.compile(checkpointer=saver)
        app.invoke({"amount": 1}, cfg("t1"))
        app.invoke({"amount": 2}, cfg("t1"))
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert not any(t.startswith("trellis_approval") for t in tables)


def test_a_run_that_moves_on_and_runs_out_of_steps_still_supersedes(backend: Backend) -> None:
    b = StateGraph(State)
    b.add_node("gated", lambda s: {"log": ["gated"]}, approval=Approval())
    b.add_node("spin", lambda s: {"log": ["spin"]})
    b.add_conditional_edges(START, lambda s: "spin" if s.get("status") == "go" else "gated")
    b.add_edge("spin", "spin")
    b.add_edge("gated", END)
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    rid = request_id(app.invoke({"amount": 1}, cfg("t1")))
    with pytest.raises(GraphRecursionError):
        app.invoke({"status": "go"}, {**cfg("t1"), "recursion_limit": 4})
    assert ReviewQueue(saver).get(rid).status == SUPERSEDED


def test_a_stream_the_caller_stops_reading_still_supersedes(backend: Backend) -> None:
    """New input, then the caller breaks out of the stream once the run moved on."""
    g = Graph(backend.saver())
    old = request_id(g.start("t1"))
    for chunk in g.app.stream({"amount": 3}, cfg("t1"), stream_mode="updates"):
        if "prepare" in chunk:
            break
    assert ReviewQueue(g.saver).get(old).status == SUPERSEDED
