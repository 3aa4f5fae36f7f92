from __future__ import annotations

import json
import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trellis.observe import (
    Event,
    EventKind,
    MemorySink,
    Observers,
    Outcome,
    RunEvents,
    new_span_id,
    new_trace_id,
)


class FakeClock:
    """Wall and monotonic clocks a test moves by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds

    def wall(self) -> float:
        return self.now

    def perf(self) -> float:
        return self.mono


def test_ids_are_w3c_shaped_and_distinct() -> None:
    traces = {new_trace_id() for _ in range(1000)}
    spans = {new_span_id() for _ in range(1000)}
    assert len(traces) == 1000 and len(spans) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) and int(t, 16) for t in traces)
    assert all(re.fullmatch(r"[0-9a-f]{16}", s) and int(s, 16) for s in spans)


def test_event_kind_values_are_the_wire_names() -> None:
    assert EventKind("task_end") is EventKind.TASK_END
    assert str(EventKind.CIRCUIT_STATE) == "circuit_state"
    assert {k.value for k in EventKind} == {
        "run_start", "run_end", "step_start", "step_end", "task_start", "task_end",
        "task_error", "retry", "interrupt", "approval_requested", "approval_decided",
        "checkpoint_saved", "compensation", "circuit_state",
    }  # fmt: skip


_opt_text = st.none() | st.text(max_size=20)
_json_scalar = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
_finite = st.floats(allow_nan=False, allow_infinity=False)

events = st.builds(
    Event,
    kind=st.sampled_from(EventKind),
    trace_id=st.just(new_trace_id()),
    span_id=st.just(new_span_id()),
    parent_span_id=st.none() | st.just(new_span_id()),
    ts=_finite,
    duration=st.none() | _finite,
    thread_id=_opt_text,
    run_id=_opt_text,
    graph=_opt_text,
    step=st.none() | st.integers(-1, 10_000),
    node=_opt_text,
    task_id=_opt_text,
    attempt=st.none() | st.integers(1, 10),
    status=st.none() | st.sampled_from(["ok", "error", "timeout", "interrupted"]),
    error_type=_opt_text,
    error_message=_opt_text,
    data=st.dictionaries(st.text(max_size=8), _json_scalar, max_size=4),
)


@given(events)
def test_event_survives_a_json_round_trip(event: Event) -> None:
    text = json.dumps(event.to_dict())
    assert Event.from_dict(json.loads(text)) == event


def test_to_dict_leaves_out_empty_fields() -> None:
    e = Event(EventKind.RUN_START, "a" * 32, "b" * 16, ts=1.5)
    assert e.to_dict() == {
        "kind": "run_start",
        "trace_id": "a" * 32,
        "span_id": "b" * 16,
        "ts": 1.5,
    }


def test_events_are_immutable() -> None:
    e = Event(EventKind.RUN_START, "a" * 32, "b" * 16)
    with pytest.raises(AttributeError):
        e.node = "x"  # type: ignore[misc]


def test_a_failing_sink_is_logged_once_and_does_not_stop_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("sink down")

    mem = MemorySink()
    bus = Observers([broken, mem])
    with caplog.at_level(logging.ERROR, logger="trellis.observe"):
        for _ in range(3):
            bus.emit(Event(EventKind.STEP_START, "a" * 32, "b" * 16))
    assert len(mem.events) == 3
    failures = [r for r in caplog.records if "failed on a step_start event" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None


def test_observers_truthiness_tells_whether_to_build_events() -> None:
    assert not Observers()
    bus = Observers()
    bus.add(MemorySink())
    assert bus and len(bus) == 1


def test_run_events_parent_ids_durations_and_fields() -> None:
    clock = FakeClock()
    mem = MemorySink()
    run = RunEvents(
        mem, graph="g", thread_id="t1", run_id="r1", clock=clock.wall, perf_clock=clock.perf
    )
    run.run_start()
    step = run.step_start(0)
    clock.advance(0.1)
    task = run.task_start(step, "fetch", attempt=1, task_id="task-1")
    clock.advance(0.25)
    run.task_error(task, TimeoutError("slow"), status=Outcome.TIMEOUT)
    run.retry(task, 0.5)
    again = run.task_start(step, "fetch", attempt=2, task_id="task-1")
    clock.advance(0.05)
    run.task_end(again)
    run.step_end(step)
    run.run_end(Outcome.OK)

    kinds = [e.kind.value for e in mem.events]
    assert kinds == [
        "run_start", "step_start", "task_start", "task_error", "retry",
        "task_start", "task_end", "step_end", "run_end",
    ]  # fmt: skip
    assert {e.trace_id for e in mem.events} == {run.trace_id}
    assert all(e.thread_id == "t1" and e.graph == "g" and e.run_id == "r1" for e in mem.events)
    by_kind = {e.kind: e for e in mem.events}
    run_span = by_kind[EventKind.RUN_START].span_id
    assert by_kind[EventKind.RUN_START].parent_span_id is None
    assert by_kind[EventKind.STEP_START].parent_span_id == run_span
    assert by_kind[EventKind.TASK_ERROR].parent_span_id == step.span_id
    failed = by_kind[EventKind.TASK_ERROR]
    assert failed.duration == pytest.approx(0.25)
    assert failed.start_ts == pytest.approx(1_700_000_000.1)
    assert (failed.error_type, failed.error_message, failed.status) == (
        "TimeoutError",
        "slow",
        "timeout",
    )
    assert failed.node == "fetch" and failed.step == 0 and failed.attempt == 1
    assert by_kind[EventKind.RETRY].data == {"delay": 0.5}
    assert by_kind[EventKind.RETRY].span_id == failed.span_id
    ok = by_kind[EventKind.TASK_END]
    assert ok.span_id != failed.span_id and ok.attempt == 2 and ok.task_id == "task-1"
    assert by_kind[EventKind.RUN_END].duration == pytest.approx(0.4)


def test_run_events_error_message_is_bounded() -> None:
    mem = MemorySink()
    run = RunEvents(mem, join_otel=False)
    run.run_end(Outcome.ERROR, ValueError("x" * 10_000))
    message = mem.events[0].error_message
    assert message is not None and len(message) == 2000 and message.endswith("...")


def test_engine_and_hand_built_events_describe_an_error_the_same_way() -> None:
    from typing_extensions import TypedDict

    from trellis import START, StateGraph

    class N(TypedDict):
        n: int

    class Huge(Exception):
        pass

    def boom(state: N) -> dict[str, int]:
        raise Huge("x" * 5000)

    sink = MemorySink()
    builder = StateGraph(N)
    builder.add_node("boom", boom)
    builder.add_edge(START, "boom")
    with pytest.raises(Huge):
        builder.compile(observers=[sink]).invoke({"n": 0})
    [failed] = sink.of_kind("task_error")
    hand = MemorySink()
    run = RunEvents(hand, graph="g")
    run.run_start()
    run.task_error(run.task_start(run.step_start(0), "boom"), Huge("x" * 5000))
    [built] = hand.of_kind("task_error")
    assert (failed.error_type, failed.error_message) == (built.error_type, built.error_message)
    assert failed.error_message is not None and failed.error_message.endswith("...")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_failed_run_ends_with_the_nodes_own_error(asynchronous: bool) -> None:
    from typing_extensions import TypedDict

    from trellis import START, StateGraph

    class N(TypedDict):
        n: int

    def bad(state: N) -> dict[str, int]:
        raise ValueError("bad thing")

    sink = MemorySink()
    builder = StateGraph(N)
    builder.add_node("bad", bad)
    builder.add_edge(START, "bad")
    graph = builder.compile(observers=[sink])
    with pytest.raises(ValueError, match="bad thing"):
        if asynchronous:
            await graph.ainvoke({"n": 0})
        else:
            graph.invoke({"n": 0})
    [end] = sink.of_kind("run_end")
    assert (end.status, end.error_type, end.error_message) == ("error", "ValueError", "bad thing")
