"""Approval gates in running graphs, on every checkpointer: suspend, decide, resume."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any

import pytest
from pydantic import BaseModel
from tests.hitl.conftest import Backend, Clock
from typing_extensions import TypedDict

from trellis import (
    END,
    START,
    Command,
    Overwrite,
    RetryPolicy,
    Send,
    StateGraph,
    add_messages,
    interrupt,
)
from trellis.errors import (
    AlreadyDecidedError,
    ApprovalError,
    ApprovalNotFoundError,
    GraphValidationError,
    InterruptError,
    InvalidUpdateError,
)
from trellis.graph.reducers import REMOVE_ALL_MESSAGES, RemoveMessage
from trellis.hitl import Approval, ApprovalPolicy, ReviewQueue
from trellis.hitl.records import APPROVED, AUTO_APPROVED, EDITED, PENDING, REJECTED


class State(TypedDict, total=False):
    amount: int
    confidence: float
    status: str
    log: Annotated[list[str], operator.add]


class Plain(TypedDict, total=False):
    amount: int


class Graph:
    """prepare -> act (gated) -> after; ``notify`` is where rejections may go."""

    def __init__(
        self,
        saver: Any,
        approval: Approval | None = None,
        *,
        policy: ApprovalPolicy | None = None,
        schema: Any = State,
    ) -> None:
        self.runs: list[Any] = []
        self.saver = saver
        b = StateGraph(schema)
        log = schema is State
        b.add_node("prepare", lambda s: {"log": ["prepare"]} if log else None)
        approval = approval or Approval(risk="high")
        # destinations=: until graph validation reads approval routes itself.
        b.add_node("act", self._act, approval=approval, destinations=approval.destinations)
        b.add_node("after", lambda s: {"log": ["after"]} if log else None)
        b.add_edge(START, "prepare")
        b.add_edge("prepare", "act")
        b.add_edge("act", "after")
        b.add_edge("after", END)
        if "notify" in approval.destinations:
            b.add_node("notify", lambda s: {"log": ["notify"]} if log else None)
            b.add_edge("notify", END)
        options = {} if policy is None else {"approval_policy": policy}
        self.app = b.compile(checkpointer=saver, **options)

    def _act(self, state: Any) -> Any:
        self.runs.append(dict(state))
        return {"log": ["act"], "amount": state["amount"] * 10} if "log" in state else None

    def start(self, thread: str, **state: Any) -> dict[str, Any]:
        return self.app.invoke({"amount": 1, **state}, cfg(thread))  # type: ignore[no-any-return]

    def values(self, thread: str) -> dict[str, Any]:
        return self.app.get_state(cfg(thread)).values  # type: ignore[no-any-return]


def cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def request_id(out: dict[str, Any]) -> str:
    (pending,) = out["__interrupt__"]
    return pending.id  # type: ignore[no-any-return]


def test_a_gate_suspends_before_the_node_and_stores_a_request(
    backend: Backend, clock: Clock
) -> None:
    g = Graph(
        backend.saver(),
        Approval(risk="high", timeout=60, summary=lambda s: f"refund {s['amount']}"),
        policy=ApprovalPolicy(clock=clock),
    )
    out = g.start("t1", confidence=0.4)
    rid = request_id(out)
    assert g.runs == []
    assert out["__interrupt__"][0].value["summary"] == "refund 1"
    assert g.app.get_state(cfg("t1")).next == ("act",)
    request = ReviewQueue(g.saver).get(rid)
    assert (request.thread_id, request.node, request.status) == ("t1", "act", PENDING)
    assert (request.risk, request.confidence) == ("high", 0.4)
    assert (request.created_at, request.deadline) == (clock.now, clock.now + 60)
    assert request.context == {"amount": 1, "confidence": 0.4, "log": ["prepare"]}
    assert request.summary == "refund 1"


def test_approving_with_the_graph_resumes_the_run_at_once(backend: Backend) -> None:
    g = Graph(backend.saver())
    rid = request_id(g.start("t1"))
    queue = ReviewQueue(g.saver, graph=g.app)
    done = queue.approve(rid, reviewer="alice", notes="checked")
    assert done.status == APPROVED
    assert done.decision is not None and (done.decision.reviewer, done.decision.notes) == (
        "alice",
        "checked",
    )
    assert len(g.runs) == 1
    assert g.values("t1")["log"] == ["prepare", "act", "after"]
    assert g.app.get_state(cfg("t1")).next == ()


def test_without_the_graph_the_run_continues_at_the_next_invoke(backend: Backend) -> None:
    g = Graph(backend.saver())
    rid = request_id(g.start("t1"))
    ReviewQueue(g.saver).approve(rid, reviewer="alice")
    assert g.runs == []
    out = g.app.invoke(None, cfg("t1"))
    assert "__interrupt__" not in out
    assert out["log"] == ["prepare", "act", "after"]
    assert len(g.runs) == 1


def test_invoking_while_still_pending_asks_again_without_a_second_request(
    backend: Backend,
) -> None:
    g = Graph(backend.saver())
    rid = request_id(g.start("t1"))
    again = g.app.invoke(None, cfg("t1"))
    assert request_id(again) == rid
    assert g.runs == []
    queue = ReviewQueue(g.saver)
    assert [r.id for r in queue.history("t1")] == [rid]
    assert [r.id for r in queue.pending()] == [rid]


def test_reject_ends_the_run_with_status_rejected(backend: Backend) -> None:
    g = Graph(backend.saver())
    rid = request_id(g.start("t1"))
    done = ReviewQueue(g.saver, graph=g.app).reject(rid, reviewer="bob", notes="too big")
    assert done.status == REJECTED
    assert g.runs == []
    values = g.values("t1")
    assert values["status"] == "rejected"
    assert values["log"] == ["prepare"]  # neither act nor its successor ran
    assert g.app.get_state(cfg("t1")).next == ()


def test_reject_without_a_status_key_only_ends_the_run(backend: Backend) -> None:
    g = Graph(backend.saver(), schema=Plain)
    rid = request_id(g.start("t1"))
    ReviewQueue(g.saver, graph=g.app).reject(rid, reviewer="bob")
    assert g.runs == []
    assert g.values("t1") == {"amount": 1}
    assert g.app.get_state(cfg("t1")).next == ()
    assert ReviewQueue(g.saver).get(rid).status == REJECTED


def test_reject_goes_to_on_reject(backend: Backend) -> None:
    g = Graph(backend.saver(), Approval(risk="medium", on_reject="notify"))
    rid = request_id(g.start("t1"))
    ReviewQueue(g.saver, graph=g.app).reject(rid, reviewer="bob")
    assert g.runs == []
    assert g.values("t1")["log"] == ["prepare", "notify"]
    assert g.values("t1")["status"] == "rejected"


def test_edit_applies_the_update_before_the_node_runs(backend: Backend) -> None:
    g = Graph(backend.saver())
    rid = request_id(g.start("t1"))
    done = ReviewQueue(g.saver, graph=g.app).edit(
        rid, {"amount": 5}, reviewer="carol", notes="partial"
    )
    assert done.status == EDITED
    assert done.decision is not None and done.decision.update == {"amount": 5}
    assert [r["amount"] for r in g.runs] == [5]
    assert g.values("t1")["amount"] == 50


def test_edit_without_the_graph_is_applied_at_the_next_invoke(backend: Backend) -> None:
    g = Graph(backend.saver())
    rid = request_id(g.start("t1"))
    ReviewQueue(g.saver).edit(rid, {"amount": 3}, reviewer="carol")
    assert g.app.invoke(None, cfg("t1"))["amount"] == 30
    assert [r["amount"] for r in g.runs] == [3]


def test_an_edit_that_does_not_fit_the_state_is_refused_and_changes_nothing(
    backend: Backend,
) -> None:
    g = Graph(backend.saver())
    rid = request_id(g.start("t1"))
    before = g.values("t1")
    queue = ReviewQueue(g.saver, graph=g.app)
    with pytest.raises(InvalidUpdateError, match="'amont'"):
        queue.edit(rid, {"amont": 5}, reviewer="carol")
    with pytest.raises(InvalidUpdateError, match="empty"):
        queue.edit(rid, {}, reviewer="carol")
    assert queue.get(rid).status == PENDING
    assert g.values("t1") == before
    assert g.runs == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_edit_of_a_gate_inside_a_subgraph_is_checked_before_it_is_stored(
    backend: Backend, mode: str
) -> None:
    inner = StateGraph(State)
    inner.add_node("charge", lambda s: {"log": ["charged"]}, approval=Approval())
    inner.add_edge(START, "charge")
    outer = StateGraph(State)
    outer.add_node("pay", inner.compile())
    outer.add_edge(START, "pay")
    saver = backend.saver()
    app = outer.compile(checkpointer=saver)
    rid = request_id(app.invoke({"amount": 1}, cfg("t1")))
    queue = ReviewQueue(saver, graph=app)
    bad = {"log": 5}  # the reducer adds lists
    with pytest.raises(InvalidUpdateError, match="does not fit the state of node 'charge'"):
        if mode == "sync":
            queue.edit(rid, bad, reviewer="bob")
        else:
            asyncio.run(queue.aedit(rid, bad, reviewer="bob"))
    assert queue.get(rid).status == PENDING  # nothing stored: a reviewer can still decide
    queue.edit(rid, {"log": ["edited"]}, reviewer="bob")
    assert app.get_state(cfg("t1")).values["log"] == ["edited", "charged"]


def test_an_edit_of_a_gate_on_a_subgraph_node_itself_is_checked(backend: Backend) -> None:
    # The gate asks before the subgraph starts: the subgraph has no state to walk into.
    inner = StateGraph(State)
    inner.add_node("charge", lambda s: {"log": ["charged"]})
    inner.add_edge(START, "charge")
    outer = StateGraph(State)
    outer.add_node("pay", inner.compile(), approval=Approval())
    outer.add_edge(START, "pay")
    saver = backend.saver()
    app = outer.compile(checkpointer=saver)
    rid = request_id(app.invoke({"amount": 1}, cfg("t1")))
    queue = ReviewQueue(saver, graph=app)
    with pytest.raises(InvalidUpdateError, match="does not fit the state of node 'pay'"):
        queue.edit(rid, {"log": 5}, reviewer="bob")
    queue.edit(rid, {"amount": 2}, reviewer="bob")
    assert app.get_state(cfg("t1")).values == {"amount": 2, "log": ["charged"]}


def test_a_raw_edit_of_a_gate_on_a_send_target_keeps_its_argument(backend: Backend) -> None:
    # A Send's task runs on the argument it was sent (here of its own schema), not
    # on the state: an edit of the state is not checked against that argument.
    class Item(BaseModel):
        name: str  # not a state key

    ran: list[str] = []

    def refund(item: Item) -> dict[str, Any]:
        ran.append(item.name)
        return {"log": [item.name]}

    b = StateGraph(State)
    b.add_node("fan", lambda s: None)
    b.add_node("refund", refund, approval=Approval(), input_schema=Item)
    b.add_edge(START, "fan")
    b.add_conditional_edges("fan", lambda s: [Send("refund", Item(name="x"))], ["refund"])
    app = b.compile(checkpointer=backend.saver())
    rid = request_id(app.invoke({"amount": 1}, cfg("t1")))
    edit = {"action": "edit", "update": {"amount": 5}}
    out = app.invoke(Command(resume={rid: edit}), cfg("t1"))
    assert (out["amount"], out["log"], ran) == (5, ["x"], ["x"])


def test_deciding_an_unknown_request_is_a_named_error(backend: Backend) -> None:
    queue = ReviewQueue(backend.saver())
    with pytest.raises(ApprovalNotFoundError):
        queue.approve("0" * 32, reviewer="x")
    with pytest.raises(ApprovalNotFoundError):
        queue.get("0" * 32)


def test_a_second_decision_is_refused_and_the_node_runs_once(backend: Backend) -> None:
    g = Graph(backend.saver())
    rid = request_id(g.start("t1"))
    queue = ReviewQueue(g.saver, graph=g.app)
    queue.approve(rid, reviewer="alice")
    with pytest.raises(AlreadyDecidedError) as info:
        queue.reject(rid, reviewer="bob")
    assert info.value.status == APPROVED
    assert len(g.runs) == 1


def test_low_risk_and_confident_passes_without_a_person(backend: Backend) -> None:
    policy = ApprovalPolicy(auto_approve_threshold=0.9)
    g = Graph(backend.saver(), Approval(risk="low"), policy=policy)
    out = g.start("t1", confidence=0.9)
    assert "__interrupt__" not in out
    assert len(g.runs) == 1
    (request,) = ReviewQueue(g.saver).history("t1")
    assert request.status == AUTO_APPROVED
    assert request.decision is not None and request.decision.reviewer == "policy"


@pytest.mark.parametrize(
    ("risk", "confidence", "policy"),
    [
        ("low", 0.89, ApprovalPolicy(auto_approve_threshold=0.9)),
        ("medium", 0.99, ApprovalPolicy(auto_approve_threshold=0.9)),
        ("low", None, ApprovalPolicy(auto_approve_threshold=0.9)),
        ("low", 0.99, None),
    ],
)
def test_everything_else_waits_for_a_person(
    backend: Backend, risk: Any, confidence: float | None, policy: ApprovalPolicy | None
) -> None:
    g = Graph(backend.saver(), Approval(risk=risk), policy=policy)
    extra = {} if confidence is None else {"confidence": confidence}
    out = g.start("t1", **extra)
    assert "__interrupt__" in out
    assert g.runs == []


def test_the_confidence_key_is_configurable(backend: Backend) -> None:
    policy = ApprovalPolicy(auto_approve_threshold=0.8, confidence_key="amount")
    g = Graph(backend.saver(), Approval(risk="low"), policy=policy)
    assert "__interrupt__" not in g.start("t1", amount=1)


def test_a_raw_resume_value_is_recorded_as_a_decision(backend: Backend) -> None:
    g = Graph(backend.saver())
    rid = request_id(g.start("t1"))
    g.app.invoke(Command(resume={rid: {"action": "edit", "update": {"amount": 2}}}), cfg("t1"))
    assert [r["amount"] for r in g.runs] == [2]
    request = ReviewQueue(g.saver).get(rid)
    assert request.status == EDITED
    assert request.decision is not None and request.decision.reviewer is None


def test_a_bare_resume_value_works_like_langgraph(backend: Backend) -> None:
    g = Graph(backend.saver())
    g.start("t1")
    g.app.invoke(Command(resume=False), cfg("t1"))
    assert g.runs == []
    assert g.values("t1")["status"] == "rejected"


def test_an_unreadable_resume_value_fails_and_the_queue_still_decides(backend: Backend) -> None:
    g = Graph(backend.saver())
    rid = request_id(g.start("t1"))
    with pytest.raises(ApprovalError, match="cannot read"):
        g.app.invoke(Command(resume={rid: 42}), cfg("t1"))
    assert g.runs == []
    queue = ReviewQueue(g.saver)
    assert queue.get(rid).status == PENDING
    queue.approve(rid, reviewer="alice")
    g.app.invoke(None, cfg("t1"))
    assert len(g.runs) == 1


def test_a_raw_edit_that_does_not_fit_is_refused_before_it_is_stored(backend: Backend) -> None:
    g = Graph(backend.saver())
    rid = request_id(g.start("t1"))
    before = g.app.get_state(cfg("t1"))
    edit = {"action": "edit", "update": {"log": 5}}  # the reducer adds lists: 5 is no list
    with pytest.raises(InvalidUpdateError, match=f"edit of approval request {rid!r}"):
        g.app.invoke(Command(resume={rid: edit}), cfg("t1"))
    assert g.app.get_state(cfg("t1")).values == before.values
    queue = ReviewQueue(g.saver, graph=g.app)
    assert queue.get(rid).status == PENDING  # a reviewer can still decide it
    queue.approve(rid, reviewer="alice")
    assert len(g.runs) == 1


def test_resuming_with_an_unknown_interrupt_id_changes_nothing(backend: Backend) -> None:
    g = Graph(backend.saver())
    rid = request_id(g.start("t1"))
    before = g.app.get_state(cfg("t1"))
    with pytest.raises(InterruptError, match="thread .t1.: resume map names unknown interrupt id"):
        g.app.invoke(Command(resume={"f" * 32: True}), cfg("t1"))
    after = g.app.get_state(cfg("t1"))
    assert (after.values, after.next, after.config) == (before.values, before.next, before.config)
    assert ReviewQueue(g.saver).get(rid).status == PENDING
    assert g.runs == []


def test_resuming_a_thread_with_nothing_pending_is_a_named_error(backend: Backend) -> None:
    g = Graph(backend.saver())
    rid = request_id(g.start("t1"))
    ReviewQueue(g.saver, graph=g.app).approve(rid, reviewer="alice")
    before = g.app.get_state(cfg("t1"))
    with pytest.raises(InterruptError, match="thread 't1' has no pending interrupt"):
        g.app.invoke(Command(resume={rid: True}), cfg("t1"))
    assert g.app.get_state(cfg("t1")).config == before.config
    assert len(g.runs) == 1


def _edited(backend: Backend, act: Any, edit: dict[str, Any]) -> Any:
    """prepare -> act (gated) on thread t1, run to the gate, then ``edit``ed by a reviewer."""
    b = StateGraph(State)
    b.add_node("prepare", lambda s: {"log": ["prepare"]})
    b.add_node("act", act, approval=Approval(risk="high"))
    b.add_edge(START, "prepare")
    b.add_edge("prepare", "act")
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    rid = request_id(app.invoke({"amount": 1}, cfg("t1")))
    ReviewQueue(saver, graph=app).edit(rid, edit, reviewer="carol")
    return app


@pytest.mark.parametrize("returns", ["nothing", "its own log", "a bare Command"])
def test_an_edit_goes_through_the_reducers_whatever_the_node_returns(
    backend: Backend, returns: str
) -> None:
    seen: list[dict[str, Any]] = []

    def act(state: State) -> Any:
        seen.append(dict(state))
        if returns == "its own log":
            return {"log": ["act"]}
        return Command() if returns == "a bare Command" else None

    app = _edited(backend, act, {"amount": 5, "log": ["edited"]})
    assert seen == [{"amount": 5, "log": ["prepare", "edited"]}]
    own = ["act"] if returns == "its own log" else []
    assert app.get_state(cfg("t1")).values == {"amount": 5, "log": ["prepare", "edited", *own]}


@pytest.mark.parametrize(
    "replacement",
    [
        Overwrite(["clean"]),
        {"__overwrite__": ["clean"]},
        {"type": "__overwrite__", "value": ["clean"]},  # what JSON makes of an Overwrite
    ],
    ids=["Overwrite", "dict form", "JSON form"],
)
def test_an_edit_may_replace_a_reducer_key_and_the_node_writes_after_it(
    backend: Backend, replacement: Any
) -> None:
    seen: list[dict[str, Any]] = []

    def act(state: State) -> Any:
        seen.append(dict(state))
        return {"log": ["act"]}

    app = _edited(backend, act, {"log": replacement})
    assert seen == [{"amount": 1, "log": ["clean"]}]
    assert app.get_state(cfg("t1")).values == {"amount": 1, "log": ["clean", "act"]}


@pytest.mark.parametrize("own", ["two Commands", "update pairs", "an Overwrite last"])
def test_every_write_of_the_node_folds_into_a_replaced_key(backend: Backend, own: str) -> None:
    def act(state: State) -> Any:
        if own == "two Commands":
            return [Command(update={"log": ["act1"]}), Command(update={"log": ["act2"]})]
        if own == "update pairs":
            return Command(update=[("log", ["act1"]), ("log", ["act2"])])
        return [Command(update={"log": ["act1"]}), Command(update={"log": Overwrite(["own"])})]

    app = _edited(backend, act, {"log": {"__overwrite__": ["clean"]}})
    expected = ["own"] if own == "an Overwrite last" else ["clean", "act1", "act2"]
    assert app.get_state(cfg("t1")).values["log"] == expected


def _two_gated_nodes(backend: Backend, n: int = 2) -> tuple[Any, ReviewQueue]:
    """prepare, then act1 .. act<n> in one step, each gated; run to the gates on t1."""
    b = StateGraph(State)
    b.add_node("prepare", lambda s: {"log": ["prepare"]})
    for name in (f"act{i}" for i in range(1, n + 1)):
        b.add_node(name, (lambda n: lambda s: {"log": [n]})(name), approval=Approval())
        b.add_edge("prepare", name)
    b.add_edge(START, "prepare")
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    app.invoke({"amount": 1}, cfg("t1"))
    return app, ReviewQueue(saver, graph=app)


def test_two_reviewers_replacing_one_key_in_one_step_both_take_effect(backend: Backend) -> None:
    """Each edit replaces the key in turn (task order); the step still commits."""
    app, queue = _two_gated_nodes(backend)
    for request in queue.pending():
        replaced = {"log": {"__overwrite__": [f"clean-{request.node}"]}}
        queue.edit(request.id, replaced, reviewer="carol")
    state = app.get_state(cfg("t1"))
    assert state.next == () and state.values["log"] == ["clean-act2", "act2"]


class Order(BaseModel):
    amount: int = 0
    done: bool = False


def test_an_edit_reaches_a_pydantic_node_and_is_checked_against_its_types(
    backend: Backend,
) -> None:
    seen: list[int] = []
    b = StateGraph(Order)
    b.add_node("act", lambda s: seen.append(s.amount) or {"done": True}, approval=Approval())
    b.add_edge(START, "act")
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    rid = request_id(app.invoke({"amount": 1}, cfg("t1")))
    queue = ReviewQueue(saver, graph=app)
    with pytest.raises(InvalidUpdateError, match=f"{rid}.*'act'"):
        queue.edit(rid, {"amount": "lots"}, reviewer="carol")
    assert queue.get(rid).status == PENDING and seen == []
    queue.edit(rid, {"amount": 5}, reviewer="carol")
    assert seen == [5]
    assert app.get_state(cfg("t1")).values == {"amount": 5, "done": True}


def test_a_bad_edit_stored_without_the_graph_fails_the_run_and_writes_nothing(
    backend: Backend,
) -> None:
    b = StateGraph(Order)
    b.add_node("act", lambda s: {"done": True}, approval=Approval())
    b.add_edge(START, "act")
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    rid = request_id(app.invoke({"amount": 1}, cfg("t1")))
    ReviewQueue(saver).edit(rid, {"amount": "lots"}, reviewer="carol")  # no schema to check
    with pytest.raises(InvalidUpdateError, match="does not fit"):
        app.invoke(None, cfg("t1"))
    assert app.get_state(cfg("t1")).values == {"amount": 1}


def test_a_retried_gated_node_asks_its_own_question(backend: Backend) -> None:
    """The gate's answer is not the node's: a retry policy must not renumber them."""
    b = StateGraph(State)
    b.add_node(
        "act",
        lambda s: {"amount": interrupt("how much?")},
        approval=Approval(risk="high"),
        retry_policy=RetryPolicy(max_attempts=2),
    )
    b.add_edge(START, "act")
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    rid = request_id(app.invoke({"amount": 1}, cfg("t1")))
    ReviewQueue(saver).approve(rid, reviewer="alice")
    out = app.invoke(None, cfg("t1"))
    assert [i.value for i in out["__interrupt__"]] == ["how much?"]
    assert app.invoke(Command(resume=7), cfg("t1"))["amount"] == 7


def test_an_interrupt_inside_the_gated_node_resumes_after_the_gate(backend: Backend) -> None:
    asked: list[Any] = []

    def act(state: State) -> dict[str, Any]:
        answer = interrupt("how much?")
        asked.append(answer)
        return {"amount": answer}

    b = StateGraph(State)
    b.add_node("act", act, approval=Approval(risk="high"))
    b.add_edge(START, "act")
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    rid = request_id(app.invoke({"amount": 1}, cfg("t1")))
    ReviewQueue(saver).approve(rid, reviewer="alice")
    out = app.invoke(None, cfg("t1"))  # the gate passes; the node asks its own question
    node_iid = request_id(out)
    assert node_iid != rid and out["__interrupt__"][0].value == "how much?"
    assert app.invoke(Command(resume={node_iid: 7}), cfg("t1"))["amount"] == 7
    assert asked == [7]


def test_parallel_gates_are_decided_one_by_one(backend: Backend) -> None:
    ran: list[str] = []
    b = StateGraph(State)
    b.add_node("a", lambda s: ran.append("a") or {"log": ["a"]}, approval=Approval())
    b.add_node("b", lambda s: ran.append("b") or {"log": ["b"]}, approval=Approval())
    b.add_edge(START, "a")
    b.add_edge(START, "b")
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    out = app.invoke({"amount": 1}, cfg("t1"))
    ids = {i.value["node"]: i.id for i in out["__interrupt__"]}
    queue = ReviewQueue(saver, graph=app)
    queue.approve(ids["b"], reviewer="x")
    assert ran == ["b"]
    assert [r.id for r in queue.pending()] == [ids["a"]]
    assert app.get_state(cfg("t1")).next == ("a",)
    queue.approve(ids["a"], reviewer="x")
    assert sorted(ran) == ["a", "b"]
    assert sorted(app.get_state(cfg("t1")).values["log"]) == ["a", "b"]


def test_without_a_checkpointer_a_person_cannot_be_asked() -> None:
    g = Graph(None)
    with pytest.raises(InterruptError, match="checkpointer"):
        g.app.invoke({"amount": 1})
    auto = Graph(None, Approval(risk="low"), policy=ApprovalPolicy())
    assert auto.app.invoke({"amount": 1, "confidence": 1.0})["amount"] == 10


def test_without_a_checkpointer_one_runs_approval_never_opens_another_gate() -> None:
    """Task ids repeat across checkpoint-less runs; requests must not."""
    low = Graph(None, Approval(risk="low"), policy=ApprovalPolicy())
    high = Graph(None, Approval(risk="high"), policy=ApprovalPolicy())
    assert low.app.invoke({"amount": 1, "confidence": 1.0})["amount"] == 10
    for graph in (low, high):
        with pytest.raises(InterruptError, match="checkpointer"):
            graph.app.invoke({"amount": 1, "confidence": 0.1})
    assert len(low.runs) == 1 and high.runs == []


def test_on_reject_naming_no_node_is_caught_at_compile(backend: Backend) -> None:
    b = StateGraph(State)
    b.add_node("act", lambda s: {"amount": 2}, approval=Approval(on_reject="nowhere"))
    b.add_edge(START, "act")
    with pytest.raises(GraphValidationError, match="approval of node 'act' names unknown node"):
        b.compile(checkpointer=backend.saver())


def test_approval_options_are_checked() -> None:
    with pytest.raises(ValueError, match="risk"):
        Approval(risk="extreme")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        Approval(timeout=0)
    with pytest.raises(ValueError, match="threshold"):
        ApprovalPolicy(auto_approve_threshold=1.5)
    assert Approval(on_reject="notify", on_timeout="escalate").destinations == (
        "notify",
        "escalate",
    )


async def test_async_graphs_and_the_async_queue(backend: Backend) -> None:
    runs: list[int] = []

    async def act(state: State) -> dict[str, Any]:
        runs.append(state["amount"])
        return {"amount": state["amount"] + 1}

    b = StateGraph(State)
    b.add_node("act", act, approval=Approval(risk="high"))
    b.add_edge(START, "act")
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    out = await app.ainvoke({"amount": 1}, cfg("t1"))
    await ReviewQueue(saver, graph=app).aedit(request_id(out), {"amount": 4}, reviewer="x")
    assert runs == [4]
    assert (await app.aget_state(cfg("t1"))).values["amount"] == 5


def test_time_travel_to_before_an_approved_gate_asks_for_a_new_approval(
    backend: Backend,
) -> None:
    """A replayed branch is a new run of the gated node: the old decision approved
    the old branch only (it used to be reused)."""
    g = Graph(backend.saver())
    queue = ReviewQueue(g.saver, graph=g.app)
    queue.approve(request_id(g.start("t1")), reviewer="alice")
    before_act = next(h for h in g.app.get_state_history(cfg("t1")) if h.next == ("act",))
    again = g.app.invoke(None, before_act.config)
    fresh = request_id(again)
    assert queue.get(fresh).status == PENDING and len(g.runs) == 1
    queue.approve(fresh, reviewer="bob")
    assert len(g.runs) == 2 and g.values("t1")["log"] == ["prepare", "act", "after"]


def test_text_the_checkpoints_keep_is_kept_by_every_store(backend: Backend) -> None:
    """A lone surrogate or a NUL in state or summary must not break the request."""
    b = StateGraph(State)
    b.add_node(
        "act",
        lambda s: {"log": ["act"]},
        approval=Approval(summary=lambda s: f"pay {s['status']}\x00"),
    )
    b.add_edge(START, "act")
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    queue = ReviewQueue(saver)
    request = queue.get(request_id(app.invoke({"status": "\ud800 \x00"}, cfg("t1"))))
    assert request.context["status"] == "\ud800 \x00"
    assert request.summary == "pay \ufffd \ufffd\ufffd"
    queue.approve(request.id, reviewer="al\x00ice", notes="seen \ud800")
    decision = queue.get(request.id).decision
    assert decision is not None and (decision.reviewer, decision.notes) == (
        "al\ufffdice",
        "seen \ufffd",
    )


@pytest.mark.parametrize("with_graph", [True, False])
def test_a_decision_made_before_update_state_does_not_answer_the_new_request(
    backend: Backend, with_graph: bool
) -> None:
    """The reviewer approved what the request showed (amount 1); once the state
    says 2, the run waits on a request of its own, with or without the graph."""
    g = Graph(backend.saver())
    first = request_id(g.start("t1"))
    g.app.update_state(cfg("t1"), {"amount": 2})
    queue = ReviewQueue(g.saver, graph=g.app if with_graph else None)
    queue.approve(first, reviewer="alice")
    if not with_graph:
        g.app.invoke(None, cfg("t1"))
    assert g.runs == []
    (waiting,) = queue.pending()
    assert waiting.id != first and waiting.context["amount"] == 2
    ReviewQueue(g.saver, graph=g.app).approve(waiting.id, reviewer="bob")
    assert [r["amount"] for r in g.runs] == [2]
    assert [(r.status, r.decision and r.decision.reviewer) for r in queue.history("t1")] == [
        (APPROVED, "alice"),
        (APPROVED, "bob"),
    ]


class Chat(TypedDict, total=False):
    messages: Annotated[list[Any], add_messages]


@pytest.mark.parametrize(
    ("removes", "left"),
    [("m1", [("m2", "edited"), ("m9", "done")]), (REMOVE_ALL_MESSAGES, [("m9", "done")])],
)
def test_an_edit_and_the_nodes_message_removals_apply_in_order(
    backend: Backend, removes: str, left: list[tuple[str, str]]
) -> None:
    """The edit rewrites m2; then the node removes a message of the state (or all)."""
    b = StateGraph(Chat)
    reply = {"role": "ai", "content": "done", "id": "m9"}
    b.add_node(
        "act", lambda s: {"messages": [RemoveMessage(id=removes), reply]}, approval=Approval()
    )
    b.add_edge(START, "act")
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    said = [{"role": "user", "content": c, "id": i} for i, c in (("m1", "hi"), ("m2", "x"))]
    rid = request_id(app.invoke({"messages": said}, cfg("t1")))
    edit = {"messages": [{"role": "user", "content": "edited", "id": "m2"}]}
    ReviewQueue(saver, graph=app).edit(rid, edit, reviewer="carol")
    messages = app.get_state(cfg("t1")).values["messages"]
    assert [(m.id, m.content) for m in messages] == left  # LangChain's, as in LangGraph


@pytest.mark.parametrize("route", ["error_handler", "on_error"])
def test_an_edit_stands_when_the_node_fails_and_its_failure_is_routed(
    backend: Backend, route: str
) -> None:
    """The reviewer's edit is applied before the node runs; a failure routed
    elsewhere does not take it back."""
    seen: list[int] = []

    def act(state: State) -> Any:
        seen.append(state["amount"])
        raise ValueError("payment API down")

    def handled(state: State) -> dict[str, Any]:
        seen.append(state["amount"])
        return {"log": ["handled"]}

    b = StateGraph(State)
    options: dict[str, Any] = (
        {"error_handler": handled} if route == "error_handler" else {"on_error": "fallback"}
    )
    b.add_node("act", act, approval=Approval(risk="high"), **options)
    b.add_node("fallback", handled)
    b.add_edge(START, "act")
    if route == "error_handler":
        b.add_edge("fallback", END)
        b.add_edge(START, "fallback")
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    rid = request_id(app.invoke({"amount": 1}, cfg("t1")))
    ReviewQueue(saver, graph=app).edit(rid, {"amount": 50}, reviewer="carol")
    assert app.get_state(cfg("t1")).values["amount"] == 50
    assert seen[-2:] == [50, 50]


def test_a_gate_that_fails_is_not_the_nodes_failure_to_route(backend: Backend) -> None:
    """An edit stored without the graph that does not fit the state fails the run
    when the gate applies it, as without a handler: the node never ran."""
    handled: list[str] = []
    b = StateGraph(Order)
    b.add_node(
        "act",
        lambda s: {"done": True},
        approval=Approval(),
        error_handler=lambda s: handled.append("handled") or {"done": False},
    )
    b.add_edge(START, "act")
    saver = backend.saver()
    app = b.compile(checkpointer=saver)
    rid = request_id(app.invoke({"amount": 1}, cfg("t1")))
    ReviewQueue(saver).edit(rid, {"amount": "lots"}, reviewer="carol")  # no graph to check it
    with pytest.raises(InvalidUpdateError, match=rid):
        app.invoke(None, cfg("t1"))
    assert handled == []


def test_a_replacement_reads_back_as_the_overwrite_it_was(backend: Backend) -> None:
    """What a task wrote after a reviewer replaced a key shows as an Overwrite (its
    public form), not as the engine's own marker."""
    app, queue = _two_gated_nodes(backend)
    first = next(r for r in queue.pending() if r.node == "act1")
    queue.edit(first.id, {"log": {"__overwrite__": ["clean"]}}, reviewer="carol")
    done = next(t for t in app.get_state(cfg("t1")).tasks if t.name == "act1")
    assert done.result == {"log": Overwrite(["clean", "act1"])}  # act2 still waits


def test_the_state_of_a_step_waiting_after_two_replacements_reads_as_it_commits(
    backend: Backend,
) -> None:
    """get_state (which the queue's own edit reads) merges a waiting step's finished
    writes by the rules its commit uses: two replacements are not two Overwrites."""
    app, queue = _two_gated_nodes(backend, n=3)
    by_node = {r.node: r.id for r in queue.pending()}
    for node in ("act1", "act2"):
        queue.edit(by_node[node], {"log": {"__overwrite__": [f"clean-{node}"]}}, reviewer="c")
    assert app.get_state(cfg("t1")).values["log"] == ["clean-act2", "act2"]
    queue.edit(by_node["act3"], {"amount": 7}, reviewer="c")
    assert app.get_state(cfg("t1")).values["log"] == ["clean-act2", "act2", "act3"]
