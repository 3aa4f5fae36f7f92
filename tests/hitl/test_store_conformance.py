"""The ApprovalStore contract, run against every backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trellis.errors import (
    AlreadyDecidedError,
    ApprovalError,
    ApprovalNotFoundError,
    SerializationError,
)
from trellis.hitl.records import (
    APPROVED,
    AUTO_APPROVED,
    EDITED,
    PENDING,
    REJECTED,
    TIMED_OUT,
    ApprovalRequest,
    Decision,
)
from trellis.hitl.store import ApprovalStore
from trellis.hitl.store_memory import MemoryApprovalStore
from trellis.hitl.store_sqlite import SqliteApprovalStore

T0 = 1_700_000_000.0
MakeStore = Callable[[], ApprovalStore]


def req(rid: str, **kw: Any) -> ApprovalRequest:
    fields: dict[str, Any] = {
        "id": rid,
        "thread_id": "t1",
        "node": "delete",
        "summary": f"delete for {rid}",
        "context": {"user": rid, "n": 1},
        "risk": "high",
        "confidence": 0.5,
        "created_at": T0,
        "deadline": T0 + 100,
        "status": PENDING,
        "on_timeout": "reject",
        "state_keys": ("n", "status", "user"),
    }
    fields.update(kw)
    return ApprovalRequest(**fields)


def test_create_stores_every_field_and_get_reads_it_back(make_store: MakeStore) -> None:
    store = make_store()
    original = req("a", confidence=None, deadline=None, checkpoint_id="cp1")
    stored = store.create(original)
    assert stored == original
    assert store.get("a") == original
    assert store.get("missing") is None


def test_create_is_idempotent_and_keeps_the_first_request(make_store: MakeStore) -> None:
    store = make_store()
    store.create(req("a", summary="first"))
    again = store.create(req("a", summary="second", created_at=T0 + 5))
    assert again.summary == "first"
    assert [r.id for r in store.pending(limit=None)] == ["a"]
    assert len(store.history("t1")) == 1


def test_context_is_stored_as_json_for_reviewers(make_store: MakeStore) -> None:
    store = make_store()
    when = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    store.create(req("a", context={"when": when, "tags": {"b", "a"}, "pair": (1, 2)}))
    got = store.get("a")
    assert got is not None
    assert got.context == {"when": "2025-01-02T03:04:05+00:00", "tags": ["a", "b"], "pair": [1, 2]}


def test_a_decision_is_stored_with_who_when_and_notes(make_store: MakeStore) -> None:
    store = make_store()
    store.create(req("a"))
    done = store.decide(Decision("a", APPROVED, "alice", "looks right", T0 + 10), now=T0 + 10)
    assert done.status == APPROVED
    assert done.decided_at == T0 + 10
    assert done.decision == Decision("a", APPROVED, "alice", "looks right", T0 + 10)
    assert store.get("a") == done
    assert store.pending(limit=None) == []


def test_an_edit_keeps_its_update_with_types(make_store: MakeStore) -> None:
    store = make_store()
    store.create(req("a"))
    when = dt.datetime(2025, 5, 6, tzinfo=dt.UTC)
    update = {"n": 7, "when": when, "pair": (1, 2)}
    store.decide(Decision("a", EDITED, "bob", None, T0 + 1, update=update), now=T0 + 1)
    got = store.get("a")
    assert got is not None and got.decision is not None
    assert got.decision.update == update


def test_an_update_without_a_codec_fails_and_stores_nothing(make_store: MakeStore) -> None:
    store = make_store()
    store.create(req("a"))

    class Opaque:
        pass

    with pytest.raises(SerializationError):
        store.decide(Decision("a", EDITED, "bob", None, T0, update={"n": Opaque()}), now=T0)
    got = store.get("a")
    assert got is not None and got.status == PENDING and got.decision is None


def test_deciding_twice_raises_and_keeps_the_first(make_store: MakeStore) -> None:
    store = make_store()
    store.create(req("a"))
    store.decide(Decision("a", REJECTED, "alice", "no", T0 + 1), now=T0 + 1)
    with pytest.raises(AlreadyDecidedError) as info:
        store.decide(Decision("a", APPROVED, "bob", "yes", T0 + 2), now=T0 + 2)
    assert info.value.status == REJECTED
    got = store.get("a")
    assert got is not None and got.decision is not None
    assert (got.status, got.decision.reviewer) == (REJECTED, "alice")


def test_deciding_an_unknown_request_raises_not_found(make_store: MakeStore) -> None:
    with pytest.raises(ApprovalNotFoundError):
        make_store().decide(Decision("nope", APPROVED, "alice", None, T0), now=T0)


def test_a_person_cannot_decide_past_the_deadline(make_store: MakeStore) -> None:
    store = make_store()
    store.create(req("a", deadline=T0 + 100))
    with pytest.raises(AlreadyDecidedError) as info:
        store.decide(Decision("a", APPROVED, "alice", None, T0 + 100), now=T0 + 100)
    assert info.value.status == "expired"
    got = store.get("a")
    assert got is not None and got.status == PENDING


def test_a_timeout_applies_only_when_due_and_records_on_timeout(make_store: MakeStore) -> None:
    store = make_store()
    store.create(req("a", deadline=T0 + 100, on_timeout="escalate"))
    with pytest.raises(ApprovalError, match="not due"):
        store.decide(Decision("a", TIMED_OUT, "clock", None, T0 + 99), now=T0 + 99)
    done = store.decide(Decision("a", TIMED_OUT, "clock", None, T0 + 100), now=T0 + 100)
    assert done.status == TIMED_OUT
    assert done.decision is not None and done.decision.resolution == "escalate"
    with pytest.raises(AlreadyDecidedError):
        store.decide(Decision("a", TIMED_OUT, "clock", None, T0 + 101), now=T0 + 101)


def test_a_request_without_deadline_never_times_out(make_store: MakeStore) -> None:
    store = make_store()
    store.create(req("a", deadline=None))
    assert store.due(1e18) == []
    with pytest.raises(ApprovalError, match="not due"):
        store.decide(Decision("a", TIMED_OUT, "clock", None, 1e18), now=1e18)


def test_an_auto_approved_request_is_created_decided(make_store: MakeStore) -> None:
    store = make_store()
    decision = Decision("a", AUTO_APPROVED, "policy", "confidence=0.95 >= 0.9", T0)
    store.create(req("a", status=AUTO_APPROVED, decided_at=T0, decision=decision))
    got = store.get("a")
    assert got is not None and got.decision == decision
    assert store.pending(limit=None) == []
    with pytest.raises(AlreadyDecidedError):
        store.decide(Decision("a", APPROVED, "bob", None, T0), now=T0)


def test_pending_is_ordered_by_deadline_and_filtered(make_store: MakeStore) -> None:
    store = make_store()
    store.create(req("never", deadline=None, created_at=T0))
    store.create(req("late", deadline=T0 + 300, created_at=T0 + 2, risk="low"))
    store.create(req("soon-b", deadline=T0 + 100, created_at=T0 + 3, node="refund"))
    store.create(req("soon-a", deadline=T0 + 100, created_at=T0 + 3, risk="medium"))
    store.create(req("first", deadline=T0 + 100, created_at=T0 + 1))
    store.create(req("done", deadline=T0 + 50))
    store.decide(Decision("done", APPROVED, "x", None, T0), now=T0)

    def ids(**kw: Any) -> list[str]:
        return [r.id for r in store.pending(**kw)]

    assert ids() == ["first", "soon-a", "soon-b", "late", "never"]
    assert ids(limit=2) == ["first", "soon-a"]
    assert ids(limit=0) == []
    assert ids(risk=["low", "medium"]) == ["soon-a", "late"]
    assert ids(node=["refund"]) == ["soon-b"]
    assert ids(node=[]) == []
    assert ids(created_before=T0 + 1) == ["first", "never"]
    assert ids(risk=["high"], node=["delete"], created_before=T0 + 1) == ["first", "never"]


def test_due_lists_overdue_pending_requests_by_deadline(make_store: MakeStore) -> None:
    store = make_store()
    store.create(req("b", deadline=T0 + 20))
    store.create(req("a", deadline=T0 + 10))
    store.create(req("c", deadline=T0 + 30))
    store.create(req("x", deadline=T0 + 5))
    store.decide(Decision("x", REJECTED, "r", None, T0), now=T0)
    assert [r.id for r in store.due(T0 + 20)] == ["a", "b"]
    assert [r.id for r in store.due(T0 + 20, limit=1)] == ["a"]
    assert store.due(T0) == []


def test_history_is_one_threads_requests_oldest_first(make_store: MakeStore) -> None:
    store = make_store()
    store.create(req("b", created_at=T0 + 2))
    store.create(req("a", created_at=T0 + 1))
    store.create(req("other", thread_id="t2"))
    store.decide(Decision("a", APPROVED, "alice", "ok", T0 + 3), now=T0 + 3)
    history = store.history("t1")
    assert [r.id for r in history] == ["a", "b"]
    assert history[0].decision is not None and history[0].decision.reviewer == "alice"
    assert history[1].decision is None
    assert store.history("nobody") == []


def test_stats_rows_feed_the_metrics(make_store: MakeStore) -> None:
    store = make_store()
    store.create(req("a"))
    store.create(req("b", node="refund"))
    store.decide(Decision("a", APPROVED, "alice", None, T0 + 30), now=T0 + 30)
    assert sorted(store.stats()) == [
        ("delete", APPROVED, T0, T0 + 30),
        ("refund", PENDING, T0, None),
    ]
    assert store.stats("refund") == [("refund", PENDING, T0, None)]


def test_two_connections_deciding_at_once_store_exactly_one_decision(
    make_store: MakeStore,
) -> None:
    first = make_store()
    first.create(req("a", deadline=None))
    contenders = [first] + [
        first if isinstance(first, MemoryApprovalStore) else make_store() for _ in range(7)
    ]
    barrier = threading.Barrier(len(contenders))
    outcomes: list[str] = []
    lock = threading.Lock()

    def decide(i: int, store: ApprovalStore) -> None:
        barrier.wait()
        try:
            store.decide(Decision("a", APPROVED, f"r{i}", None, T0 + i), now=T0)
            result = f"won:{i}"
        except AlreadyDecidedError:
            result = "lost"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=decide, args=(i, s)) for i, s in enumerate(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("lost") == len(contenders) - 1
    got = first.get("a")
    assert got is not None and got.decision is not None
    assert got.decision.reviewer == "r" + winners[0].split(":")[1]


# -- invariant: pending() always equals a model of the requests -------------------

_actions = st.lists(
    st.tuples(
        st.sampled_from(["create", "approve", "timeout"]),
        st.integers(0, 7),  # request number
        st.one_of(st.none(), st.integers(0, 5)),  # deadline slot (None: no deadline)
        st.integers(0, 6),  # clock
    ),
    max_size=25,
)


def _check_model(store: ApprovalStore, actions: list[tuple[str, int, int | None, int]]) -> None:
    model: dict[str, ApprovalRequest] = {}
    for action, n, slot, t in actions:
        rid, now = f"r{n}", T0 + t * 10
        if action == "create":
            deadline = None if slot is None else T0 + slot * 10
            made = req(rid, deadline=deadline, created_at=T0 + n, risk=["low", "high"][n % 2])
            model.setdefault(rid, made)
            store.create(made)
            continue
        status = APPROVED if action == "approve" else TIMED_OUT
        cur = model.get(rid)
        deadline = math.inf if cur is None or cur.deadline is None else cur.deadline
        ok = cur is not None and cur.status == PENDING
        ok = ok and (deadline > now if status == APPROVED else deadline <= now)
        try:
            store.decide(Decision(rid, status, "x", None, now), now=now)
            assert ok, f"{action} {rid} should have been refused"
            assert cur is not None
            model[rid] = dataclasses.replace(cur, status=status)
        except (ApprovalError, ApprovalNotFoundError):
            assert not ok, f"{action} {rid} should have succeeded"
    waiting = [r for r in model.values() if r.status == PENDING]
    waiting.sort(key=lambda r: (math.inf if r.deadline is None else r.deadline, r.created_at, r.id))
    assert [r.id for r in store.pending(limit=None)] == [r.id for r in waiting]
    assert [r.id for r in store.pending(risk=["low"], limit=None)] == [
        r.id for r in waiting if r.risk == "low"
    ]
    due = [r.id for r in waiting if r.deadline is not None and r.deadline <= T0 + 30]
    assert [r.id for r in store.due(T0 + 30)] == due


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=_actions)
def test_pending_matches_a_model_in_memory(actions: list[tuple[str, int, int | None, int]]) -> None:
    _check_model(MemoryApprovalStore(), actions)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=_actions)
def test_pending_matches_a_model_in_sqlite(actions: list[tuple[str, int, int | None, int]]) -> None:
    store = SqliteApprovalStore(":memory:")
    try:
        _check_model(store, actions)
    finally:
        store.close()


@pytest.mark.postgres
def test_a_postgres_store_url_may_name_its_schema(pg_url: str, pg_schema: str) -> None:
    from trellis.hitl.store_postgres import PostgresApprovalStore

    sep = "&" if "?" in pg_url else "?"
    store = PostgresApprovalStore(f"{pg_url}{sep}schema={pg_schema}")
    try:
        assert store.schema == pg_schema
        store.create(req("a"))
        assert [r.id for r in store.pending()] == ["a"]
    finally:
        store.close()
