"""Exactly-once decisions under real concurrency, and decisions across process restarts.

The gated node writes one line to a file per run, so "ran once" is counted,
not inferred. Assertions never depend on timing: whoever wins, exactly one does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tests.hitl.conftest import Backend
from typing_extensions import TypedDict

from trellis import START, StateGraph
from trellis.errors import AlreadyDecidedError
from trellis.hitl import Approval, ReviewQueue
from trellis.hitl.records import APPROVED, PENDING

SCRIPT = Path(__file__).with_name("proc_graph.py")
ROOT = Path(__file__).resolve().parents[2]


class State(TypedDict, total=False):
    user_id: str
    deleted: bool


def cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def test_two_reviewers_in_threads_one_decision_and_one_run(db_backend: Backend) -> None:
    effects: list[str] = []
    lock = threading.Lock()

    def delete(state: State) -> dict[str, Any]:
        with lock:
            effects.append(state["user_id"])
        return {"deleted": True}

    b = StateGraph(State)
    b.add_node("delete", delete, approval=Approval(risk="high"))
    b.add_edge(START, "delete")
    saver = db_backend.saver()
    app = b.compile(checkpointer=saver)
    rounds = 5
    for n in range(rounds):
        rid = app.invoke({"user_id": f"u{n}"}, cfg(f"t{n}"))["__interrupt__"][0].id
        # Each reviewer has its own connection: the database, not a Python lock, decides.
        reviewers = [ReviewQueue(store=db_backend.store(), graph=app) for _ in range(2)]
        barrier = threading.Barrier(2)
        outcomes: dict[str, str] = {}
        threads = [
            threading.Thread(target=_review, args=(q, rid, name, barrier, outcomes))
            for name, q in zip(("alice", "bob"), reviewers, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes.values()) == ["lost", "won"]
        winner = next(name for name, o in outcomes.items() if o == "won")
        request = reviewers[0].get(rid)
        assert request.status == APPROVED
        assert request.decision is not None and request.decision.reviewer == winner
        assert len(reviewers[0].history(f"t{n}")) == 1
    assert effects == [f"u{n}" for n in range(rounds)]


def _review(
    queue: ReviewQueue, rid: str, name: str, barrier: threading.Barrier, outcomes: dict[str, str]
) -> None:
    barrier.wait()
    try:
        queue.approve(rid, reviewer=name, notes=f"by {name}")
        outcomes[name] = "won"
    except AlreadyDecidedError:
        outcomes[name] = "lost"


def _run(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _db_args(backend: Backend, effects: Path) -> list[str]:
    return ["--db", backend.db, "--schema", backend.schema, "--effects", str(effects)]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow
def test_two_reviewer_processes_one_decision_and_one_run(
    db_backend: Backend, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.txt"
    common = _db_args(db_backend, effects)
    rid = _run("start", *common, "--thread", "t1")["request_id"]
    go_at = f"{time.time() + 1.0:.3f}"  # both are starting up until then
    procs = [
        _spawn("approve", *common, "--id", rid, "--reviewer", name, "--go-at", go_at)
        for name in ("alice", "bob")
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["result"] for r in results) == ["lost", "won"]
    loser = next(r for r in results if r["result"] == "lost")
    assert loser["status"] == APPROVED
    assert [line.split()[0] for line in _lines(effects)] == ["t1"]
    queue = ReviewQueue(store=db_backend.store())
    decision = queue.get(rid).decision
    assert decision is not None
    assert decision.reviewer == next(r["reviewer"] for r in results if r["result"] == "won")


@pytest.mark.slow
def test_restart_between_request_and_decision(db_backend: Backend, tmp_path: Path) -> None:
    effects = tmp_path / "effects.txt"
    common = _db_args(db_backend, effects)
    rid = _run("start", *common, "--thread", "t1")["request_id"]  # the process exits here
    assert _lines(effects) == []
    queue = ReviewQueue(store=db_backend.store())
    assert [r.id for r in queue.pending()] == [rid]
    assert queue.get(rid).status == PENDING
    assert _run("approve", *common, "--id", rid, "--reviewer", "alice")["result"] == "won"
    assert len(_lines(effects)) == 1
    # The run finished in the approving process: resuming again runs nothing twice.
    resumed = _run("resume", *common, "--thread", "t1")
    assert resumed["state"] == {
        "user_id": "t1", "validated": True, "deleted": True, "confirmed": True,
    }  # fmt: skip
    assert len(_lines(effects)) == 1


@pytest.mark.slow
def test_restart_decide_without_the_graph_then_resume_elsewhere(
    db_backend: Backend, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.txt"
    common = _db_args(db_backend, effects)
    rid = _run("start", *common, "--thread", "t1")["request_id"]
    assert _run("approve", *common, "--id", rid, "--no-graph")["result"] == "won"
    assert _lines(effects) == []  # decided, but nobody has resumed the run yet
    final = _run("resume", *common, "--thread", "t1")["output"]
    assert final["deleted"] is True and final["confirmed"] is True
    assert len(_lines(effects)) == 1
