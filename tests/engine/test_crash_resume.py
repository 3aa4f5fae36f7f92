"""SIGKILL a real worker process mid-run, resume in a new process, count what re-ran.

The workers (``_crash_worker.py``) write every node body execution to a ledger
file before doing anything else, so the ledger sees the execution that was
killed too. Backends: SQLite and PostgreSQL (a memory saver dies with its
process). The same graphs also run uninterrupted, in-process, for comparison.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, Command, RetryPolicy, StateGraph, interrupt
from trellis.errors import NodeError


def config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def uninterrupted(scenarios: ModuleType, crash: Any, name: str, directory: Path) -> Any:
    """The scenario run start to finish, in-process, on a fresh thread of the same store."""
    graph = scenarios.build(name, scenarios.Ctl(directory)).compile(
        checkpointer=crash.factory.make()
    )
    thread = config(f"clean-{uuid.uuid4().hex}")
    return graph.invoke(scenarios.INPUTS[name], thread), graph.get_state(thread).values


def inspector(scenarios: ModuleType, crash: Any, name: str, directory: Path) -> Any:
    """The scenario's graph over the crashed thread's store, for get_state/history."""
    return scenarios.build(name, scenarios.Ctl(directory)).compile(
        checkpointer=crash.factory.make()
    )


def pids(events: list[dict[str, Any]]) -> list[int]:
    return list(dict.fromkeys(e["pid"] for e in events))


# -- 1. kill -9 inside a node of a seven-node chain -----------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("driver", ["sync", "async"])
def test_sigkill_inside_a_node_then_a_new_process_finishes_the_run(
    crash: Any, scenarios: ModuleType, tmp_path: Path, driver: str
) -> None:
    crash.kill_at("chain", "E", "--driver", driver)
    assert [e["node"] for e in crash.events("node")] == ["A", "B", "C", "D", "E"]

    # What the dead process left: D committed, E still to run.
    graph = inspector(scenarios, crash, "chain", tmp_path / "inspect")
    snap = graph.get_state(config(crash.thread))
    assert snap.next == ("E",)
    assert snap.values["trail"] == ["A", "B", "C", "D"]

    out = crash.run("chain", "resume", "--driver", driver)
    assert out["ok"], out
    ran = Counter(e["node"] for e in crash.events("node"))
    assert ran == {"A": 1, "B": 1, "C": 1, "D": 1, "E": 2, "F": 1, "G": 1}
    e_runs = [e for e in crash.events("node") if e["node"] == "E"]
    assert len(pids(e_runs)) == 2, "E ran once in each process"

    clean_result, clean_values = uninterrupted(scenarios, crash, "chain", tmp_path / "clean")
    assert out["result"] == clean_result
    assert graph.get_state(config(crash.thread)).values == clean_values
    assert clean_result["trail"].count("E") == 1  # one committed result

    # No step was committed twice: one checkpoint per step, input (-1) to G (7).
    steps = [s.metadata["step"] for s in graph.get_state_history(config(crash.thread))]
    assert sorted(steps) == list(range(-1, len(scenarios.CHAIN) + 1))


@pytest.mark.slow
def test_the_killed_task_keeps_its_task_id_in_the_new_process(crash: Any) -> None:
    crash.kill_at("chain", "E")
    assert crash.run("chain", "resume")["ok"]
    by_node: dict[str, set[str]] = {}
    for e in crash.events("node"):
        by_node.setdefault(e["node"], set()).add(e["task_id"])
    assert len(by_node["E"]) == 1, "E's task id changed across the crash"
    ids = [next(iter(v)) for v in by_node.values()]
    assert len(set(ids)) == len(ids) == 7, "every task has its own id"


# -- 2. a parallel step: one branch finished, the other was killed ---------------------


@pytest.mark.slow
def test_a_sibling_that_finished_before_the_kill_is_not_run_again(crash: Any) -> None:
    saver = crash.factory.make()
    x_seen_at: list[float] = []

    def x_is_durable() -> bool:
        # X's body ran; now give the engine a moment to persist X's writes. A fixed
        # engine makes this true within milliseconds; the deadline bounds the wait.
        if not any(e["node"] == "X" for e in crash.events("node")):
            return False
        x_seen_at.append(time.monotonic())
        head = saver.get_tuple(crash.thread)
        if head is not None and any(w.task_name == "X" for w in head.pending_writes):
            return True
        return time.monotonic() - x_seen_at[0] > 1.0

    crash.kill_at("parallel", "Y", also=x_is_durable)
    out = crash.run("parallel", "resume")
    assert out["ok"], out
    assert out["result"]["trail"] == ["X", "Y", "Z"]
    ran = Counter(e["node"] for e in crash.events("node"))
    assert ran == {"X": 1, "Y": 2, "Z": 1}


# -- 3 and 6. retries and the task id survive a crash --------------------------------


@pytest.mark.slow
def test_retry_attempts_and_task_id_survive_a_crash(crash: Any) -> None:
    crash.kill_at("retry", "R3")
    first = [e for e in crash.events("node") if e["node"] == "R"]
    assert [e["attempt"] for e in first] == [1, 2, 3]

    out = crash.run("retry", "resume")
    assert out["ok"], out
    runs = [e for e in crash.events("node") if e["node"] == "R"]
    second = [e["attempt"] for e in runs if e["pid"] != first[0]["pid"]]
    assert second == [3, 4, 5], "the new process continues at the attempt that was cut short"
    # R writes its attempt number (5), then B appends its digit (2).
    assert out["result"] == {"trail": ["A", "R", "B"], "total": 52}
    assert sorted({e["attempt"] for e in runs}) == [1, 2, 3, 4, 5]
    assert len({e["task_id"] for e in runs}) == 1, "one task id across attempts and processes"
    assert Counter(e["node"] for e in crash.events("node") if e["node"] != "R") == {
        "A": 1,
        "B": 1,
    }


# -- 6. task ids, in-process ---------------------------------------------------------


class S(TypedDict, total=False):
    seen: list[str]
    n: int


def test_task_id_is_the_same_in_config_and_runtime_and_across_retries() -> None:
    ids: list[tuple[str, str, str, int]] = []

    def record(name: str, fail_first: int) -> Any:
        def node(state: S, config: Any, runtime: Any) -> dict[str, Any]:
            info = runtime.execution_info
            ids.append((name, info.task_id, config["configurable"]["task_id"], info.node_attempt))
            if info.node_attempt <= fail_first:
                raise ConnectionError("flaky")
            return {}

        return node

    policy = RetryPolicy(max_attempts=4, initial_interval=0.001, jitter=False)
    builder = StateGraph(S)
    builder.add_node("a", record("a", 2), retry_policy=policy)
    builder.add_node("b", record("b", 0))
    builder.add_node("c", record("c", 1), retry_policy=policy)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    builder.add_edge("a", "c")
    builder.add_edge("c", END)
    builder.compile().invoke({"n": 1})

    assert [(n, a) for n, _, _, a in ids if n == "a"] == [("a", 1), ("a", 2), ("a", 3)]
    assert all(from_runtime == from_config for _, from_runtime, from_config, _ in ids)
    per_node = {name: {tid for n, tid, _, _ in ids if n == name} for name in "abc"}
    assert all(len(v) == 1 for v in per_node.values()), per_node
    assert len(set.union(*per_node.values())) == 3, "a, b (same step) and c differ"


def test_task_id_is_the_same_after_a_failed_run_is_resumed(saver_factory: Any) -> None:
    ids: list[str] = []
    broken = [True]

    def node(state: S, runtime: Any) -> dict[str, Any]:
        ids.append(runtime.execution_info.task_id)
        if broken[0]:
            raise KeyError("missing")
        return {"n": 2}

    builder = StateGraph(S)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    graph = builder.compile(checkpointer=saver_factory.make())
    cfg = config(uuid.uuid4().hex)
    with pytest.raises(KeyError):
        graph.invoke({"n": 1}, cfg)
    broken[0] = False
    assert graph.invoke(None, cfg)["n"] == 2
    assert len(ids) == 2 and ids[0] == ids[1]


def test_task_id_is_the_same_across_interrupt_and_resume_but_not_across_runs(
    saver_factory: Any,
) -> None:
    ids: list[str] = []

    def ask(state: S, runtime: Any) -> dict[str, Any]:
        ids.append(runtime.execution_info.task_id)
        return {"seen": [interrupt("ok?")]}

    builder = StateGraph(S)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    graph = builder.compile(checkpointer=saver_factory.make())
    cfg = config(uuid.uuid4().hex)
    graph.invoke({"n": 1}, cfg)
    assert graph.invoke(Command(resume="yes"), cfg)["seen"] == ["yes"]
    assert len(ids) == 2 and ids[0] == ids[1]
    graph.invoke({"n": 2}, cfg)  # a new run on the same thread: a new task
    assert ids[2] != ids[0]


def test_a_node_that_fails_for_good_reports_its_attempts() -> None:
    def node(state: S) -> dict[str, Any]:
        raise ConnectionError("down")

    builder = StateGraph(S)
    builder.add_node("node", node, retry_policy=RetryPolicy(max_attempts=2, initial_interval=0))
    builder.add_edge(START, "node")
    with pytest.raises(NodeError) as info:
        builder.compile().invoke({"n": 1})
    assert (info.value.node, info.value.attempts) == ("node", 2)
