"""examples/data_deletion.py: validate -> delete (high risk, needs approval) -> confirm."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from trellis.hitl import ApprovalPolicy, ReviewQueue
from trellis.persist.sqlite import SqliteSaver

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
example = importlib.import_module("examples.data_deletion")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def cfg(user: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": f"gdpr-{user}"}}


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    users = example.UserDirectory()
    saver = SqliteSaver.from_path(tmp_path / "deletions.db")
    clock = Clock()
    policy = ApprovalPolicy(auto_approve_threshold=0.9, clock=clock)
    app = example.build(users).compile(checkpointer=saver, approval_policy=policy)
    yield users, saver, app, clock
    saver.close()


def test_deletion_waits_for_a_person_then_deletes_once(setup: Any) -> None:
    users, saver, app, clock = setup
    out = app.invoke({"user_id": "12345", "reason": "GDPR erasure"}, cfg("12345"))
    (pending,) = out["__interrupt__"]
    assert pending.value["summary"] == "Delete all 42 records of user 12345"
    assert users.deleted == []
    queue = ReviewQueue(saver, graph=app, clock=clock)
    (request,) = queue.pending(node="delete", risk="high")
    assert request.id == pending.id
    assert request.context == {
        "user_id": "12345", "reason": "GDPR erasure", "records": 42, "requested_by": "unknown",
    }  # fmt: skip
    queue.approve(request.id, reviewer="dpo", notes="identity verified")
    values = app.get_state(cfg("12345")).values
    assert values["status"] == "deleted" and values["confirmation_sent"] is True
    assert users.deleted == ["12345"]
    assert users.sent == ["12345: 42 records deleted"]
    audit = queue.history("gdpr-12345")[0].decision
    assert audit is not None and (audit.reviewer, audit.notes) == ("dpo", "identity verified")


def test_a_rejected_deletion_deletes_nothing(setup: Any) -> None:
    users, saver, app, clock = setup
    rid = app.invoke({"user_id": "67890", "reason": "dup"}, cfg("67890"))["__interrupt__"][0].id
    ReviewQueue(saver, graph=app, clock=clock).reject(rid, reviewer="dpo", notes="account in use")
    values = app.get_state(cfg("67890")).values
    assert values["status"] == "rejected"
    assert "deleted" not in values and "confirmation_sent" not in values
    assert users.deleted == [] and users.sent == []


def test_an_unknown_user_never_reaches_the_gate(setup: Any) -> None:
    users, saver, app, _ = setup
    out = app.invoke({"user_id": "nobody", "reason": "x"}, cfg("nobody"))
    assert out["status"] == "invalid" and "__interrupt__" not in out
    assert ReviewQueue(saver).history("gdpr-nobody") == []


def test_nobody_deciding_within_a_day_rejects_the_deletion(setup: Any) -> None:
    users, saver, app, clock = setup
    app.invoke({"user_id": "12345", "reason": "GDPR"}, cfg("12345"))
    queue = ReviewQueue(saver, graph=app, clock=clock)
    clock.now += example.APPROVAL_HOURS * 3600 - 1
    assert queue.expire_due() == []
    clock.now += 1
    (expired,) = queue.expire_due()
    assert expired.status == "timed_out"
    assert app.get_state(cfg("12345")).values["status"] == "rejected"
    assert users.deleted == []


def test_the_module_graph_runs_under_trellis_run(tmp_path: Path) -> None:
    # `trellis run` recompiles `graph` with a SQLite saver and the same options.
    saver = SqliteSaver.from_path(tmp_path / "cli.db")
    app = example.graph.builder.compile(checkpointer=saver, **example.graph.options)
    out = app.invoke({"user_id": "12345", "reason": "GDPR"}, cfg("12345"))
    assert out["__interrupt__"][0].value["risk"] == "high"
    saver.close()


def test_the_demo_prints_both_outcomes(capsys: pytest.CaptureFixture[str]) -> None:
    example.main()
    text = capsys.readouterr().out
    assert "user 12345: status=deleted deleted=True" in text
    assert "user 67890: status=rejected deleted=False" in text
    assert "deleted: ['12345']" in text
