"""The run history (``persist/events.py``) on every backend."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from typing_extensions import TypedDict

from trellis import START, SqliteSaver, StateGraph
from trellis.errors import InvalidConfigError
from trellis.persist.events import event_log_for, open_event_log


class S(TypedDict, total=False):
    n: int


def test_traced_runs_are_kept_per_thread_in_order(saver: Any) -> None:
    """Runs on every backend (the ``saver`` fixture)."""
    builder = StateGraph(S)
    builder.add_sequence([("a", lambda s: {"n": 1}), ("b", lambda s: {"n": 2})])
    builder.add_edge(START, "a")
    graph = builder.compile(checkpointer=saver, trace=True)
    for thread in ("t1", "t1", "t2"):
        graph.invoke({"n": 0}, {"configurable": {"thread_id": thread}})
    log = event_log_for(saver)
    events = log.list("t1")
    assert len(log.runs("t1")) == 2 and len(log.runs("t2")) == 1
    assert [e["kind"] for e in events].count("run_start") == 2
    assert [e["node"] for e in events if e["kind"] == "task_end"] == ["a", "b", "a", "b"]
    first_run = log.runs("t1")[0]
    assert all(e["run_id"] == first_run for e in log.list("t1", run_id=first_run))
    assert log.list("nobody") == []


def test_retention_drops_whole_runs_that_ended_before_the_cutoff(saver: Any) -> None:
    """Runs on every backend (the ``saver`` fixture)."""
    getattr(saver, "setup", lambda: None)()  # the schema the log's table goes in
    log = event_log_for(saver)

    def run(run_id: str, *stamps: float) -> list[dict[str, Any]]:
        return [{"kind": "task_end", "run_id": run_id, "ts": ts} for ts in stamps]

    log.append("t1", run("old", 100.0, 110.0) + run("straddles", 150.0, 250.0))
    log.append("t2", run("old-too", 120.0) + run("new", 300.0))
    # A thread's latest run may yet continue (paused at a gate, or failed): it stays.
    log.append("t3", run("paused", 90.0))
    assert log.prune(200.0) == 2
    assert log.runs("t1") == ["straddles"] and len(log.list("t1")) == 2
    assert log.runs("t2") == ["new"] and log.runs("t3") == ["paused"]
    assert log.prune(200.0) == 0


def test_a_schema_name_is_never_spliced_into_sql() -> None:
    with pytest.raises(InvalidConfigError, match="lowercase identifier"):
        open_event_log(
            "postgresql://postgres@127.0.0.1:5432/test",
            schema='public".trellis_events (x int); DROP TABLE victim; --',
        )


def test_an_untraced_graph_keeps_no_history(tmp_path: Path) -> None:
    saver = SqliteSaver.from_path(tmp_path / "runs.db")
    builder = StateGraph(S)
    builder.add_node("a", lambda s: {"n": 1})
    builder.add_edge(START, "a")
    builder.compile(checkpointer=saver).invoke({"n": 0}, {"configurable": {"thread_id": "t"}})
    assert event_log_for(saver).list("t") == []


def test_a_thread_paused_at_a_breakpoint_survives_retention(tmp_path: Path) -> None:
    saver = SqliteSaver.from_path(tmp_path / "runs.db")
    builder = StateGraph(S)
    builder.add_sequence([("a", lambda s: {"n": 1}), ("ship", lambda s: {"n": 2})])
    builder.add_edge(START, "a")
    graph = builder.compile(checkpointer=saver, interrupt_before=["ship"])
    config = {"configurable": {"thread_id": "paused"}}
    graph.invoke({"n": 0}, config)
    saver.prune(ttl=3600, now=time.time() + 7200)
    assert graph.get_state(config).next == ("ship",)
    assert graph.invoke(None, config) == {"n": 2}
