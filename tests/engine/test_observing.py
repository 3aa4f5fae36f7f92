"""What the engine tells observers: the events of a run, when and how they arrive."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from typing_extensions import TypedDict

from trellis import START, Command, MemorySaver, RetryPolicy, SqliteSaver, StateGraph, interrupt
from trellis.errors import NodeError
from trellis.observe import Event, MemorySink, build_timeline
from trellis.persist.events import event_log_for


class S(TypedDict, total=False):
    x: int


def _one_node(fn: Any, **options: Any) -> Any:
    """START -> work (``fn``), compiled with ``options``."""
    builder = StateGraph(S)
    builder.add_node("work", fn)
    builder.add_edge(START, "work")
    return builder.compile(**options)


def _recording_graph(seen: list[str], *, is_async: bool = False) -> Any:
    """One node that notes, in ``seen``, when it runs."""

    def work(state: S) -> dict[str, int]:
        seen.append("node ran")
        return {"x": 1}

    async def awork(state: S) -> dict[str, int]:
        return work(state)

    return _one_node(awork if is_async else work)


def test_streamed_events_arrive_as_the_run_goes_not_at_its_end() -> None:
    seen: list[str] = []
    for mode, chunk in _recording_graph(seen).stream({}, stream_mode=["updates", "events"]):
        seen.append(f"{mode}:{chunk.kind.value}" if mode == "events" else f"{mode}")
    work_starts = seen.index("events:task_start")
    assert seen[0] == "events:run_start"
    assert work_starts < seen.index("node ran") < seen.index("events:task_end")
    assert seen.index("events:task_end") < seen.index("updates") < seen.index("events:run_end")


async def test_streamed_events_arrive_as_the_run_goes_in_async_runs_too() -> None:
    seen: list[str] = []
    graph = _recording_graph(seen, is_async=True)
    async for event in graph.astream({}, stream_mode="events"):
        seen.append(event.kind.value)
        await asyncio.sleep(0)
    assert seen.index("task_start") < seen.index("node ran") < seen.index("task_end")


def _kinds(sink: MemorySink, node: str | None = None) -> list[tuple[str, str | None]]:
    return [(e.kind.value, e.status) for e in sink.events if node is None or e.node == node]


def test_a_timeout_under_a_retry_policy_is_reported_and_counted_as_a_timeout() -> None:
    builder = StateGraph(S)
    builder.add_node(
        "slow",
        lambda s: time.sleep(0.3),
        timeout=0.02,
        retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.01),
    )
    builder.add_edge(START, "slow")
    sink = MemorySink()
    graph = builder.compile(observers=[sink], metrics=True)
    with pytest.raises(NodeError):
        graph.invoke({})
    assert ("task_error", "timeout") in _kinds(sink, "slow")
    node = graph.metrics()["nodes"]["slow"]
    assert (node["failures"], node["timeouts"], node["retries"]) == (1, 1, 1)


class TimeoutSettingInvalid(ValueError):
    """A user's error whose name mentions a timeout but which is not one."""


@pytest.mark.parametrize(
    ("raised", "counted"),
    [(TimeoutSettingInvalid("bad setting"), "failures"), (TimeoutError("socket"), "timeouts")],
)
def test_only_a_real_timeout_is_counted_as_one(raised: Exception, counted: str) -> None:
    def work(state: S) -> dict[str, int]:
        raise raised

    sink = MemorySink()
    graph = _one_node(work, observers=[sink], metrics=True)
    with pytest.raises(type(raised)):
        graph.invoke({})
    node = graph.metrics()["nodes"]["work"]
    assert (node["failures"], node["timeouts"]) == (1, 1 if counted == "timeouts" else 0)
    status = "timeout" if counted == "timeouts" else "error"
    assert ("task_error", status) in _kinds(sink, "work")


async def test_a_task_stopped_because_a_sibling_failed_is_not_its_failure() -> None:
    async def bad(state: S) -> dict[str, int]:
        raise ValueError("bad input")

    async def slow(state: S) -> dict[str, int]:
        await asyncio.sleep(1)
        return {"x": 1}

    builder = StateGraph(S)
    builder.add_node("bad", bad)
    builder.add_node("slow", slow)
    builder.add_edge(START, "bad")
    builder.add_edge(START, "slow")
    graph = builder.compile(metrics=True)
    with pytest.raises(ValueError, match="bad input"):
        await graph.ainvoke({})
    slow_metrics = graph.metrics()["nodes"]["slow"]
    assert (slow_metrics["failures"], slow_metrics["cancelled"]) == (0, 1)
    assert slow_metrics["success_rate"] is None
    assert graph.metrics()["nodes"]["bad"]["failures"] == 1


def test_a_resumed_retry_starts_at_the_attempt_it_was_cut_short_at() -> None:
    # Attempts 1 and 2 fail, attempt 3 is cut short (a SystemExit stands in for a
    # crash); the resumed run's task_start must say 3, as its retry events do.
    attempts: list[int] = []

    def flaky(state: S, runtime: Any) -> dict[str, int]:
        attempts.append(runtime.execution_info.node_attempt)
        if len(attempts) == 3:
            raise SystemExit("the process goes down")
        if len(attempts) < 5:
            raise ConnectionError("flaky")
        return {"x": len(attempts)}

    sink = MemorySink()
    policy = RetryPolicy(max_attempts=6, initial_interval=0, jitter=False)
    builder = StateGraph(S)
    builder.add_node("work", flaky, retry_policy=policy)
    builder.add_edge(START, "work")
    graph = builder.compile(checkpointer=MemorySaver(), observers=[sink])
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(SystemExit):
        graph.invoke({}, config)
    sink.events.clear()
    assert graph.invoke(None, config) == {"x": 5}
    starts = [e.attempt for e in sink.events if e.kind == "task_start"]
    assert starts == [3] and attempts == [1, 2, 3, 3, 4]


@pytest.mark.parametrize("debug", [False, True])
def test_the_input_checkpoint_is_the_runs_and_a_steps_checkpoint_the_steps(debug: bool) -> None:
    # The input's checkpoint is saved with the first step's (one commit), unless
    # debug streaming shows each as it is saved: either way it is the run's.
    sink = MemorySink()
    graph = _one_node(lambda s: {"x": 1}, checkpointer=MemorySaver(), observers=[sink])
    config = {"configurable": {"thread_id": "t"}}
    if debug:
        list(graph.stream({"x": 0}, config, stream_mode="debug"))
    else:
        graph.invoke({"x": 0}, config)
    (run,) = [e for e in sink.events if e.kind == "run_start"]
    steps = {e.span_id: e.step for e in sink.events if e.kind == "step_start"}
    # An instant event sits in the span it names: the run's, or a step's.
    saved = [(e.step, e.span_id) for e in sink.events if e.kind == "checkpoint_saved"]
    assert saved[0] == (-1, run.span_id)
    assert all(steps.get(span) == step for step, span in saved[1:]), saved


def test_a_traced_parent_keeps_the_history_of_its_subgraphs_runs(tmp_path: Path) -> None:
    # compile(trace=True) on the parent only: `trellis trace` must show what ran
    # inside its subgraph too, as it shows the parent's own tasks.
    inner = StateGraph(S)
    inner.add_node("deep", lambda s: {"x": 2})
    inner.add_edge(START, "deep")
    outer = StateGraph(S)
    outer.add_node("sub", inner.compile(name="inner"))
    outer.add_edge(START, "sub")
    saver = SqliteSaver.from_path(tmp_path / "runs.db")
    outer.compile(checkpointer=saver, trace=True, name="outer").invoke(
        {"x": 0}, {"configurable": {"thread_id": "t"}}
    )
    rows = event_log_for(saver).list("t")
    ended = {(r["graph"], r.get("node")) for r in rows if r["kind"] == "task_end"}
    assert ended == {("outer", "sub"), ("inner", "deep")}


def test_a_failed_step_says_what_it_failed_of() -> None:
    # A step span's status description (OpenTelemetry) and a log line of step_end
    # come from these fields: "error" alone would not tell a reader why.
    def bad(state: S) -> dict[str, int]:
        raise ValueError("bad input")

    sink = MemorySink()
    with pytest.raises(ValueError):
        _one_node(bad, observers=[sink]).invoke({})
    (step_end,) = [e for e in sink.events if e.kind == "step_end" and e.status == "error"]
    assert (step_end.error_type, step_end.error_message) == ("ValueError", "bad input")
    (run_end,) = [e for e in sink.events if e.kind == "run_end"]
    assert (run_end.error_type, run_end.error_message) == ("ValueError", "bad input")


@pytest.mark.parametrize("how", ["on_error", "error_handler"])
def test_a_failure_routed_elsewhere_is_still_reported_as_a_failure(how: str) -> None:
    def charge(state: S) -> dict[str, int]:
        raise ConnectionError("card service down")

    builder = StateGraph(S)
    if how == "on_error":
        builder.add_node("charge", charge, on_error="review")
    else:
        builder.add_node("charge", charge, error_handler=lambda s: {"x": -1})
        builder.add_edge("charge", "review")
    builder.add_node("review", lambda s: {"x": 1})
    builder.add_edge(START, "charge")
    sink = MemorySink()
    graph = builder.compile(observers=[sink], metrics=True)
    assert graph.invoke({})["x"] == (1 if how == "on_error" else -1)  # the route worked
    (end,) = [e for e in sink.events if e.node == "charge" and e.kind.value.startswith("task_e")]
    assert (end.kind.value, end.status, end.error_type) == (
        "task_error",
        "error",
        "ConnectionError",
    )
    assert graph.metrics()["nodes"]["charge"]["success_rate"] == 0.0


def test_compensations_are_events_in_the_stream_the_sinks_and_the_history(
    tmp_path: Path,
) -> None:
    builder = StateGraph(S)
    builder.add_node("reserve", lambda s: {"x": 1}, compensate=lambda s: None)
    builder.add_node("charge", lambda s: 1 / 0)
    builder.add_edge(START, "reserve")
    builder.add_edge("reserve", "charge")
    sink = MemorySink()
    saver = SqliteSaver.from_path(tmp_path / "runs.db")
    graph = builder.compile(checkpointer=saver, observers=[sink], trace=True)
    streamed: list[str] = []
    with pytest.raises(ZeroDivisionError):
        for event in graph.stream({}, {"configurable": {"thread_id": "t"}}, stream_mode="events"):
            streamed.append(event.kind.value)
    assert streamed[-2:] == ["run_end", "compensation"]
    assert ("compensation", "ok") in _kinds(sink, "reserve")
    stored = [e["kind"] for e in event_log_for(saver).list("t")]
    assert stored[-1] == "compensation"


CLOSED_AS_CANCELLED = [
    ("task_end", "cancelled"),
    ("step_end", "cancelled"),
    ("run_end", "cancelled"),
]


async def test_a_cancelled_run_closes_its_step_and_task_as_cancelled() -> None:
    async def forever(state: S) -> dict[str, int]:
        await asyncio.sleep(5)
        return {}

    sink = MemorySink()
    graph = _one_node(forever, observers=[sink])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(graph.ainvoke({}), 0.1)
    assert _kinds(sink)[-3:] == CLOSED_AS_CANCELLED


def test_a_stream_abandoned_inside_a_step_closes_it() -> None:
    sink = MemorySink()
    stream = _one_node(lambda s: {"x": 1}, observers=[sink]).stream({}, stream_mode="events")
    for event in stream:
        if event.kind.value == "task_start" and event.node == "work":
            break
    stream.close()
    assert _kinds(sink)[-3:] == CLOSED_AS_CANCELLED


@pytest.mark.parametrize("mode", ["updates", "values"])
def test_a_stream_left_at_its_interrupt_counts_as_interrupted(mode: str) -> None:
    """Breaking out at the ``__interrupt__`` chunk is how a caller waits for a human."""
    sink = MemorySink()
    graph = _one_node(
        lambda s: {"x": interrupt("ok?")},
        checkpointer=MemorySaver(),
        observers=[sink],
        metrics=True,
    )
    config = {"configurable": {"thread_id": "t"}}
    for chunk in graph.stream({}, config, stream_mode=mode):
        if "__interrupt__" in chunk:
            break
    assert [e.status for e in sink.events if e.kind.value == "run_end"] == ["interrupted"]
    metrics = graph.metrics()
    assert (metrics["runs_interrupted"], metrics["runs_failed"]) == (1, 0)
    assert graph.invoke(Command(resume=7), config) == {"x": 7}


def test_no_event_is_its_own_parent() -> None:
    sink = MemorySink()
    graph = _one_node(lambda s: {"x": 1}, checkpointer=MemorySaver(), observers=[sink])
    list(graph.stream({}, {"configurable": {"thread_id": "t"}}, stream_mode="debug"))
    saves = [e for e in sink.events if e.kind.value == "checkpoint_saved"]
    assert len(saves) == 3  # the input's, and one after each step
    assert all(e.span_id != e.parent_span_id for e in sink.events)


def test_a_subgraph_counts_its_metrics_under_a_durable_parent() -> None:
    """The parent runs the subgraph over its checkpointer, as a twin of it."""
    sub = _one_node(lambda s: {"x": 1}, metrics=True)
    parent = StateGraph(S)
    parent.add_node("sub", sub)
    parent.add_edge(START, "sub")
    durable = parent.compile(checkpointer=MemorySaver())
    durable.invoke({}, {"configurable": {"thread_id": "t"}})
    assert sub.metrics()["nodes"]["work"]["calls"] == 1
    assert sub.with_checkpointer(MemorySaver()).metrics() == sub.metrics()


def test_a_subgraphs_run_is_a_child_of_the_task_that_ran_it() -> None:
    sink = MemorySink()
    sub = _one_node(lambda s: {"x": 1}, observers=[sink], name="sub")
    parent = StateGraph(S)
    parent.add_node("call_sub", sub)
    parent.add_edge(START, "call_sub")
    parent.compile(observers=[sink], name="parent").invoke({})
    assert len({e.trace_id for e in sink.events}) == 1
    runs = {e.graph: e for e in sink.events if e.kind.value == "run_start"}
    (task,) = [e for e in sink.events if e.kind.value == "task_start" and e.node == "call_sub"]
    assert runs["sub"].parent_span_id == task.span_id
    assert runs["parent"].parent_span_id is None


@pytest.mark.parametrize("durable", [False, True])
def test_a_parents_observers_and_metrics_see_inside_its_subgraphs(durable: bool) -> None:
    own = MemorySink()
    sub = _one_node(lambda s: {"x": 1}, observers=[own], name="research")
    parent = StateGraph(S)
    parent.add_node("call_research", sub)
    parent.add_edge(START, "call_research")
    sink = MemorySink()
    options: dict[str, Any] = {"checkpointer": MemorySaver()} if durable else {}
    graph = parent.compile(observers=[sink, own], metrics=True, **options)
    for i in range(3):
        graph.invoke({}, {"configurable": {"thread_id": f"t{i}"}})
    inside = [e for e in sink.events if e.graph == "research"]
    assert [e.node for e in inside if e.kind.value == "task_end"] == ["work"] * 3
    # A sink of both graphs gets each of the subgraph's events once.
    assert [e.kind for e in own.events].count(inside[0].kind) == 3 * 2  # 3 runs, 2 graphs
    metrics = graph.metrics()
    assert (metrics["runs_started"], list(metrics["nodes"])) == (3, ["call_research"])
    research = metrics["subgraphs"]["research"]
    assert (research["runs_started"], research["nodes"]["work"]["calls"]) == (3, 3)


def test_a_subgraph_named_as_its_parent_is_counted_under_its_node() -> None:
    sub = _one_node(lambda s: {"x": 1})  # both graphs keep the default name
    parent = StateGraph(S)
    parent.add_node("call_sub", sub)
    parent.add_edge(START, "call_sub")
    graph = parent.compile(metrics=True)
    graph.invoke({})
    graph.invoke({})
    metrics = graph.metrics()
    assert (metrics["runs_started"], list(metrics["nodes"])) == (2, ["call_sub"])
    assert metrics["subgraphs"]["call_sub"]["nodes"]["work"]["calls"] == 2


@pytest.mark.parametrize("stop_at", ["task_end", "step_end", "checkpoint_saved"])
def test_a_stream_abandoned_after_a_step_ran_keeps_that_step(stop_at: str) -> None:
    """The events of a step's end come out once the step is committed and saved:
    a consumer that stops there must not make the step run again."""
    charged: list[int] = []
    builder = StateGraph(S)
    builder.add_node("charge", lambda s: charged.append(1) or {"x": 1})
    builder.add_node("after", lambda s: {"x": 2})
    builder.add_edge(START, "charge")
    builder.add_edge("charge", "after")
    graph = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    stream = graph.stream({}, config, stream_mode=["events", "updates"])
    for mode, chunk in stream:
        if mode == "events" and chunk.kind.value == stop_at and chunk.step == 1:
            break
    stream.close()
    assert graph.get_state(config).next == ("after",)
    assert graph.invoke(None, config)["x"] == 2
    assert charged == [1]


def _one_at_a_time(**options: Any) -> Any:
    """Three nodes of one step, 20 ms each, that must take turns (max_concurrency=1)."""
    builder = StateGraph(S)
    for name in ("a", "b", "c"):
        builder.add_node(name, lambda s: time.sleep(0.02) or {})
        builder.add_edge(START, name)
    return builder.compile(**options)


@pytest.mark.parametrize("is_async", [False, True])
def test_tasks_that_wait_for_a_worker_start_when_their_node_does(is_async: bool) -> None:
    """A step announces its tasks at once; the spans are when each node ran."""
    sink = MemorySink()
    graph = _one_at_a_time(observers=[sink])
    config = {"max_concurrency": 1}
    asyncio.run(graph.ainvoke({}, config)) if is_async else graph.invoke({}, config)
    ends = sorted((e.start_ts, e.ts) for e in sink.events if e.kind.value == "task_end")
    assert len(ends) == 3
    for (_, end), (start, _) in itertools.pairwise(ends):
        assert start >= end - 0.002  # one after the other, not all from the step's start
    rows = sorted((t.start, t.start + t.duration) for t in build_timeline(sink.events)[0].tasks())
    assert [*itertools.chain(*rows)] == pytest.approx([*itertools.chain(*ends)], abs=1e-6)


CRASHING_TRACED_RUN = """
import asyncio, os, sys, time
from typing_extensions import TypedDict
from trellis import START, SqliteSaver, StateGraph

class S(TypedDict, total=False):
    x: int

def die(state):
    os._exit(9)  # no run_end, no flush: the process is gone

b = StateGraph(S)
b.add_node("a", lambda s: {"x": 1})
b.add_node("b", lambda s: time.sleep(0.15) or {"x": 2})
b.add_node("die", die)
b.add_edge(START, "a")
b.add_edge("a", "b")
b.add_edge("b", "die")
graph = b.compile(checkpointer=SqliteSaver.from_path(sys.argv[1]), trace=True)
config = {"configurable": {"thread_id": "t"}}
if sys.argv[2] == "async":
    asyncio.run(graph.ainvoke({}, config))
else:
    graph.invoke({}, config)
"""


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_traced_run_that_crashes_keeps_its_history_up_to_the_crash(
    tmp_path: Path, mode: str
) -> None:
    """A run's events are stored as its steps end (at most every STORE_EVERY s), so the
    history of a process that died shows the run as running, with the steps it made."""
    import subprocess
    import sys

    db = tmp_path / "t.db"
    script = [sys.executable, "-c", CRASHING_TRACED_RUN, str(db), mode]
    assert subprocess.run(script, timeout=60).returncode == 9
    events = event_log_for(SqliteSaver.from_path(db)).list("t")
    ended = [(e["kind"], e.get("node")) for e in events if e["kind"] in ("task_end", "run_end")]
    assert ended == [("task_end", "a"), ("task_end", "b")]
    (run,) = build_timeline(Event.from_dict(e) for e in events)
    assert run.status == "running"


def test_a_task_that_never_began_adds_no_latency_sample() -> None:
    """Left when its stream was abandoned before it ran, it counts as cancelled, and
    its 0 s is not a latency (it would drag the percentiles down)."""
    graph = _one_node(lambda s: {"x": 1}, metrics=True)
    stream = graph.stream({}, stream_mode="events")
    for event in stream:
        if event.kind.value == "task_start" and event.node == "work":
            break
    stream.close()
    work = graph.metrics()["nodes"]["work"]
    assert (work["calls"], work["cancelled"], work["latency"]["count"]) == (1, 1, 0)
