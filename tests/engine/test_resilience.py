"""Retries, timeouts, circuit breakers and ``on_error`` routing, seen through real graphs.

Retry intervals are zero or a millisecond and breakers run on an injected clock,
so nothing here waits on wall time; counts (attempts, body calls) are asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typing_extensions import TypedDict

from trellis import (
    END,
    START,
    CircuitBreaker,
    Command,
    MemorySaver,
    RetryPolicy,
    StateGraph,
    interrupt,
)
from trellis.errors import CircuitOpenError, NodeError, NodeTimeoutError
from trellis.observe import MemorySink
from trellis.resilience.circuit import CircuitState

FAST = {"initial_interval": 0.0, "jitter": False}


class S(TypedDict, total=False):
    n: int
    trail: Annotated[list[str], operator.add]
    attempts: list[int]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Flaky:
    """A node body that fails ``fails`` times with ``exc`` and then succeeds."""

    def __init__(self, fails: int, exc: type[Exception] = ConnectionError) -> None:
        self.fails = fails
        self.exc = exc
        self.attempts: list[int] = []

    def __call__(self, state: S, runtime: Any) -> dict[str, Any]:
        self.attempts.append(runtime.execution_info.node_attempt)
        if len(self.attempts) <= self.fails:
            raise self.exc(f"failure {len(self.attempts)}")
        return {"trail": ["flaky"], "attempts": list(self.attempts)}


def graph_of(fn: Any, *, after: Any = None, compile_options: Any = None, **options: Any) -> Any:
    """START -> node(fn, **options) [-> after] -> END."""
    builder = StateGraph(S)
    builder.add_node("node", fn, **options)
    builder.add_edge(START, "node")
    if after is not None:
        builder.add_node("after", after)
        builder.add_edge("node", "after")
        builder.add_edge("after", END)
    else:
        builder.add_edge("node", END)
    return builder.compile(**(compile_options or {}))


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Hung nodes wait on this; set at teardown so abandoned threads end."""
    event = threading.Event()
    yield event
    event.set()


@dataclass
class WatchdogReport:
    crashes: list[str] = field(default_factory=list)
    survived: bool = True


@contextlib.contextmanager
def contained_watchdog() -> Iterator[WatchdogReport]:
    """Catch crashes of the timeout watchdog thread instead of letting them escape.

    A crash (one was found and fixed: an empty heap after finished deadlines)
    would otherwise surface as an unhandled-thread warning in whichever later
    test happens to be running, and leave every later test without a watchdog. On exit: waits
    until the watchdog has handled every deadline due within the next second (so
    a crash caused here is caught here), records whether it survived, and if it
    did not, installs a fresh one, as ``timeout.py`` itself does after a fork.
    Peeks at the watchdog's heap: test-only.
    """
    from trellis.resilience import timeout as timeout_module

    report = WatchdogReport()
    previous = threading.excepthook

    def hook(args: Any) -> None:
        if args.thread is not None and args.thread.name == "trellis-watchdog":
            report.crashes.append(f"{args.exc_type.__name__}: {args.exc_value}")
            return
        previous(args)

    threading.excepthook = hook
    try:
        yield report
        watchdog = timeout_module._watchdog
        thread = watchdog._thread
        horizon = time.monotonic() + 1.0
        while (
            thread is not None
            and thread.is_alive()
            and any(when <= horizon for when, _, _ in list(watchdog._heap))
            and time.monotonic() < horizon + 2.0
        ):
            time.sleep(0.005)
        if thread is not None:
            thread.join(0.05)  # a crash is reported by the dying thread itself
            report.survived = thread.is_alive()
            if not report.survived:
                timeout_module._watchdog = timeout_module._Watchdog()
    finally:
        threading.excepthook = previous


@pytest.fixture
def watchdog() -> Iterator[WatchdogReport]:
    """For tests with async timeouts: contain the watchdog's crash to this test."""
    with contained_watchdog() as report:
        yield report


# -- retries -----------------------------------------------------------------------


@pytest.mark.parametrize("fails", [0, 1, 3])
def test_a_node_is_retried_until_it_succeeds_and_sees_its_attempt_number(fails: int) -> None:
    body = Flaky(fails)
    out = graph_of(body, retry_policy=RetryPolicy(max_attempts=4, **FAST)).invoke({"n": 1})
    assert body.attempts == list(range(1, fails + 2))
    assert out["attempts"] == body.attempts


@settings(max_examples=30, deadline=None)
@given(fails=st.integers(0, 6), max_attempts=st.integers(1, 5))
def test_attempts_made_are_min_of_failures_plus_one_and_max_attempts(
    fails: int, max_attempts: int
) -> None:
    body = Flaky(fails)
    graph = graph_of(body, retry_policy=RetryPolicy(max_attempts=max_attempts, **FAST))
    if fails < max_attempts:
        assert graph.invoke({"n": 1})["attempts"] == list(range(1, fails + 2))
    elif max_attempts == 1:  # never retried: the node's own exception, as LangGraph
        with pytest.raises(body.exc):
            graph.invoke({"n": 1})
    else:
        with pytest.raises(NodeError) as info:
            graph.invoke({"n": 1})
        assert info.value.attempts == max_attempts
    assert len(body.attempts) == min(fails + 1, max_attempts)


async def test_an_async_node_is_retried_too() -> None:
    attempts: list[int] = []

    async def node(state: S, runtime: Any) -> dict[str, Any]:
        attempts.append(runtime.execution_info.node_attempt)
        await asyncio.sleep(0)
        if len(attempts) < 3:
            raise ConnectionError("flaky")
        return {"n": len(attempts)}

    graph = graph_of(node, retry_policy=RetryPolicy(max_attempts=3, **FAST))
    assert (await graph.ainvoke({"n": 0}))["n"] == 3
    assert attempts == [1, 2, 3]


class Transient(Exception):
    """Not a builtin: the default retry_on retries it."""


def test_exhausted_retries_raise_node_error_with_the_original_as_cause() -> None:
    body = Flaky(99, Transient)
    with pytest.raises(NodeError) as info:
        graph_of(body, retry_policy=RetryPolicy(max_attempts=3, **FAST)).invoke({"n": 1})
    err = info.value
    assert (err.node, err.attempts) == ("node", 3)
    assert isinstance(err.__cause__, Transient) and err.error is err.__cause__
    assert str(err.__cause__) == "failure 3"
    assert "node" in str(err) and "3" in str(err)
    assert body.attempts == [1, 2, 3]


@pytest.mark.parametrize("exc", [ValueError, TypeError, KeyError])
def test_the_default_policy_does_not_retry_programming_errors(exc: type[Exception]) -> None:
    body = Flaky(99, exc)
    with pytest.raises(exc) as info:  # not retried: raised as is, as LangGraph
        graph_of(body, retry_policy=RetryPolicy()).invoke({"n": 1})
    assert not isinstance(info.value, NodeError)
    assert body.attempts == [1]


def test_the_default_policy_retries_connection_errors() -> None:
    body = Flaky(2, ConnectionError)
    graph_of(body, retry_policy=RetryPolicy(initial_interval=0.001)).invoke({"n": 1})
    assert body.attempts == [1, 2, 3]


def test_with_a_list_of_policies_the_first_matching_one_decides() -> None:
    policies = [
        RetryPolicy(max_attempts=2, retry_on=KeyError, **FAST),
        RetryPolicy(max_attempts=4, retry_on=(ConnectionError, KeyError), **FAST),
    ]
    key_body = Flaky(99, KeyError)
    with pytest.raises(NodeError) as info:
        graph_of(key_body, retry_policy=policies).invoke({"n": 1})
    assert info.value.attempts == 2 and key_body.attempts == [1, 2]

    conn_body = Flaky(99, ConnectionError)
    with pytest.raises(NodeError) as info:
        graph_of(conn_body, retry_policy=policies).invoke({"n": 1})
    assert info.value.attempts == 4

    other = Flaky(99, OSError)  # matches neither: not retried at all, raised as is
    with pytest.raises(OSError, match="failure 1"):
        graph_of(other, retry_policy=policies).invoke({"n": 1})
    assert other.attempts == [1]


def test_an_uncovered_exception_after_a_retry_propagates_as_is() -> None:
    attempts: list[int] = []

    def node(state: S, runtime: Any) -> dict[str, Any]:
        attempts.append(runtime.execution_info.node_attempt)
        if len(attempts) == 1:
            raise ConnectionError("retried")
        raise KeyError("a bug, which the policy does not retry")

    with pytest.raises(KeyError) as info:
        graph_of(node, retry_policy=RetryPolicy(max_attempts=5, **FAST)).invoke({"n": 1})
    assert not isinstance(info.value, NodeError) and attempts == [1, 2]


def test_a_graph_wide_policy_applies_to_nodes_without_their_own() -> None:
    plain, own = Flaky(3), Flaky(99)
    builder = StateGraph(S)
    builder.add_node("plain", plain)
    builder.add_node("own", own, retry_policy=RetryPolicy(max_attempts=2, **FAST))
    builder.add_edge(START, "plain")
    builder.add_edge("plain", "own")
    graph = builder.compile(retry_policy=RetryPolicy(max_attempts=4, **FAST))
    with pytest.raises(NodeError) as info:
        graph.invoke({"n": 1})
    assert plain.attempts == [1, 2, 3, 4], "the graph-wide policy gave plain 4 attempts"
    assert (info.value.node, info.value.attempts) == ("own", 2), "own kept its own policy"


def test_resuming_a_failed_run_gives_the_node_its_full_retry_budget(saver_factory: Any) -> None:
    body = Flaky(99)
    graph = graph_of(
        body,
        retry_policy=RetryPolicy(max_attempts=3, **FAST),
        compile_options={"checkpointer": saver_factory.make()},
    )
    cfg = {"configurable": {"thread_id": uuid.uuid4().hex}}
    with pytest.raises(NodeError):
        graph.invoke({"n": 1}, cfg)
    assert body.attempts == [1, 2, 3]
    body.attempts.clear()
    with pytest.raises(NodeError):
        graph.invoke(None, cfg)  # the upstream is still down: a fresh round of retries
    assert body.attempts == [1, 2, 3]


# -- timeouts -----------------------------------------------------------------------


def test_a_hung_sync_node_times_out(gate: threading.Event) -> None:
    started = threading.Event()

    def hang(state: S) -> dict[str, Any]:
        started.set()
        gate.wait(30)
        return {"n": 2}

    with pytest.raises(NodeTimeoutError) as info:
        graph_of(hang, timeout=0.05).invoke({"n": 1})
    assert started.is_set()
    assert info.value.node == "node" and info.value.timeout == 0.05


async def test_a_hung_sync_node_times_out_under_ainvoke(
    gate: threading.Event, watchdog: WatchdogReport
) -> None:
    def hang(state: S) -> dict[str, Any]:
        gate.wait(30)
        return {"n": 2}

    with pytest.raises(NodeTimeoutError):
        await graph_of(hang, timeout=0.05).ainvoke({"n": 1})


async def test_a_hung_async_node_times_out(watchdog: WatchdogReport) -> None:
    cancelled = asyncio.Event()

    async def hang(state: S) -> dict[str, Any]:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {"n": 2}

    with pytest.raises(NodeTimeoutError) as info:
        await graph_of(hang, timeout=0.05).ainvoke({"n": 1})
    assert info.value.node == "node"
    assert cancelled.is_set(), "the node was cancelled at its await"


async def test_an_async_node_that_blocks_the_event_loop_still_times_out(
    watchdog: WatchdogReport,
) -> None:
    async def blocks(state: S) -> dict[str, Any]:
        time.sleep(0.3)  # holds the loop: only the watchdog thread can notice
        return {"n": 2}

    with pytest.raises(NodeTimeoutError):
        await graph_of(blocks, timeout=0.05).ainvoke({"n": 1})


def test_a_timed_out_attempt_is_retried(gate: threading.Event) -> None:
    attempts: list[int] = []

    def slow_once(state: S, runtime: Any) -> dict[str, Any]:
        attempts.append(runtime.execution_info.node_attempt)
        if len(attempts) == 1:
            gate.wait(30)
        return {"n": len(attempts)}

    policy = RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False)
    out = graph_of(slow_once, timeout=0.25, retry_policy=policy).invoke({"n": 0})
    assert out["n"] == 2 and attempts == [1, 2]


@pytest.mark.parametrize("nested", [False, True])
def test_a_timed_out_subgraph_stops_writing_so_the_retry_owns_its_checkpoints(
    saver_factory: Any, nested: bool
) -> None:
    # The first attempt's thread is abandoned, not killed: once its node returns it
    # would commit the subgraph's step into the namespace the retry is running in,
    # and the retry's own commit would then fail as a concurrent update. Nested,
    # the run that hangs is a subgraph of the subgraph the timed-out node runs.
    calls: list[str] = []
    inner = _hangs_on_its_first_attempt(calls)
    if nested:
        middle = StateGraph(S)
        middle.add_node("inner", inner.compile())
        middle.add_edge(START, "inner")
        inner = middle
    outer = StateGraph(S)
    # The retry sleeps 0.2 s and runs nested subgraphs on PostgreSQL within its timeout:
    # 1.5 s keeps a loaded CI machine from timing it out too.
    outer.add_node("sub", inner.compile(), timeout=1.5, retry_policy=TIMEOUT_RETRY)
    outer.add_edge(START, "sub")
    outer.add_edge("sub", END)
    saver = saver_factory.make()
    app = outer.compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "t"}}
    assert app.invoke({"n": 0}, cfg)["trail"] == ["first", "second"]
    assert len(calls) == 2
    (task,) = next(s for s in app.get_state_history(cfg) if s.next == ("sub",)).tasks
    inside = {"configurable": {"thread_id": "t", "checkpoint_ns": f"sub:{task.id}"}}
    if nested:
        (task,) = next(s for s in app.get_state_history(inside) if s.next == ("inner",)).tasks
        ns = inside["configurable"]["checkpoint_ns"]
        inside = {"configurable": {"thread_id": "t", "checkpoint_ns": f"{ns}|inner:{task.id}"}}
    steps = [s.metadata["step"] for s in app.get_state_history(inside)]
    assert steps == [2, 1, 0, -1], "one run's checkpoints, none from the abandoned one"


TIMEOUT_RETRY = RetryPolicy(
    max_attempts=2, initial_interval=0.001, jitter=False, retry_on=Exception
)


def _hangs_on_its_first_attempt(calls: list[str]) -> StateGraph[S, None]:
    """first -> second, whose ``first`` hangs on the first call until the second
    call lets it go, and the second call waits until the first has returned."""
    released, returned = threading.Event(), threading.Event()

    def first(state: S) -> dict[str, Any]:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            released.wait(30)  # the first attempt hangs until the retry lets it go
            returned.set()
        else:
            released.set()
            returned.wait(30)
            time.sleep(0.2)  # the abandoned run's commit, had it made one, is in by now
        return {"trail": ["first"]}

    inner = StateGraph(S)
    inner.add_node("first", first)
    inner.add_node("second", lambda s: {"trail": ["second"]})
    inner.add_edge(START, "first")
    inner.add_edge("first", "second")
    inner.add_edge("second", END)
    return inner


def test_a_timed_out_subgraph_without_retries_stops_writing_once_the_run_failed(
    saver_factory: Any,
) -> None:
    released, returned = threading.Event(), threading.Event()

    def first(state: S) -> dict[str, Any]:
        released.wait(30)
        return {"trail": ["first"]}

    def second(state: S) -> dict[str, Any]:
        returned.set()  # reached only if the abandoned run carried on
        return {"trail": ["second"]}

    inner = StateGraph(S)
    inner.add_node("first", first)
    inner.add_node("second", second)
    inner.add_edge(START, "first")
    inner.add_edge("first", "second")
    outer = StateGraph(S)
    outer.add_node("sub", inner.compile(), timeout=0.3)
    outer.add_edge(START, "sub")
    app = outer.compile(checkpointer=saver_factory.make())
    cfg = {"configurable": {"thread_id": "t"}}
    with pytest.raises(NodeTimeoutError):
        app.invoke({"n": 0}, cfg)
    (task,) = app.get_state(cfg).tasks
    inside = {"configurable": {"thread_id": "t", "checkpoint_ns": f"sub:{task.id}"}}
    before = [s.metadata["step"] for s in app.get_state_history(inside)]
    released.set()  # the abandoned thread's node returns now
    assert not returned.wait(0.5), "the abandoned run went on to its next node"
    assert [s.metadata["step"] for s in app.get_state_history(inside)] == before == [0, -1]


async def test_a_sync_node_timed_out_under_ainvoke_stops_the_graph_it_runs(
    watchdog: WatchdogReport,
) -> None:
    calls: list[str] = []
    saver = MemorySaver()
    inner = _hangs_on_its_first_attempt(calls).compile(checkpointer=saver)
    mine = {"configurable": {"thread_id": "inner"}}

    def node(state: S) -> dict[str, Any]:  # runs a checkpointed graph of its own
        started = bool(inner.get_state(mine).next)  # a retry carries on where it stands
        return {"trail": inner.invoke(None if started else {"n": 0}, mine)["trail"]}

    out = await graph_of(node, timeout=0.5, retry_policy=TIMEOUT_RETRY).ainvoke({"n": 0})
    assert out["trail"] == ["first", "second"] and len(calls) == 2
    steps = [c.metadata["step"] for c in saver.list("inner")]
    assert steps == [2, 1, 0, -1], "one run's checkpoints, none from the abandoned thread"


async def test_a_timed_out_async_attempt_is_retried(watchdog: WatchdogReport) -> None:
    attempts: list[int] = []

    async def slow_once(state: S, runtime: Any) -> dict[str, Any]:
        attempts.append(runtime.execution_info.node_attempt)
        if len(attempts) == 1:
            await asyncio.sleep(30)
        return {"n": len(attempts)}

    policy = RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False)
    out = await graph_of(slow_once, timeout=0.25, retry_policy=policy).ainvoke({"n": 0})
    assert out["n"] == 2 and attempts == [1, 2]


async def test_the_watchdog_survives_an_async_node_that_finished_in_time() -> None:
    from trellis.resilience import timeout as timeout_module

    async def quick(state: S) -> dict[str, Any]:
        return {"n": 2}

    assert timeout_module._watchdog._thread is None or timeout_module._watchdog._thread.is_alive()
    with contained_watchdog() as report:
        assert (await graph_of(quick, timeout=0.05).ainvoke({"n": 1}))["n"] == 2
    assert report.crashes == []
    assert report.survived


# -- circuit breakers shared by name ---------------------------------------------------


def test_a_breaker_shared_by_two_graphs_opens_for_both_and_recovers() -> None:
    clock = FakeClock()
    name = f"payments-{uuid.uuid4().hex}"

    def breaker() -> CircuitBreaker:
        return CircuitBreaker(name, failure_threshold=3, recovery_timeout=30.0, clock=clock)

    down = Flaky(99)
    policy = RetryPolicy(max_attempts=3, retry_on=ConnectionError, **FAST)
    graph1 = graph_of(down, circuit=breaker(), retry_policy=policy)
    calls: list[int] = []

    async def charge(state: S) -> dict[str, Any]:
        calls.append(1)
        return {"n": 2}

    graph2 = graph_of(charge, circuit=breaker())

    with pytest.raises(NodeError):
        graph1.invoke({"n": 1})
    assert down.attempts == [1, 2, 3]
    assert breaker().state == CircuitState.OPEN

    with pytest.raises(CircuitOpenError) as info:
        asyncio.run(graph2.ainvoke({"n": 1}))
    assert calls == [], "an open breaker does not call the node"
    assert info.value.breaker == name and info.value.retry_after == pytest.approx(30.0)

    clock.now += 30.5  # past recovery_timeout: one trial call goes through
    assert asyncio.run(graph2.ainvoke({"n": 1}))["n"] == 2
    assert calls == [1]
    assert breaker().state == CircuitState.CLOSED


def test_a_failed_trial_call_opens_the_breaker_again() -> None:
    clock = FakeClock()
    name = f"search-{uuid.uuid4().hex}"
    breaker = CircuitBreaker(name, failure_threshold=1, recovery_timeout=5.0, clock=clock)
    body = Flaky(2)
    graph = graph_of(body, circuit=breaker)
    with pytest.raises(ConnectionError):
        graph.invoke({"n": 1})
    clock.now += 6
    with pytest.raises(ConnectionError):  # the trial fails
        graph.invoke({"n": 1})
    with pytest.raises(CircuitOpenError):
        graph.invoke({"n": 1})
    assert len(body.attempts) == 2
    clock.now += 6
    graph.invoke({"n": 1})
    assert breaker.state == CircuitState.CLOSED and len(body.attempts) == 3


class TrialCall:
    """An async node body that hangs (until cancelled) while ``hang`` is set."""

    def __init__(self) -> None:
        self.hang = True
        self.running = asyncio.Event()  # set once a hanging call has started
        self.calls = 0

    async def __call__(self, state: S) -> dict[str, Any]:
        self.calls += 1
        if self.hang:
            self.running.set()
            await asyncio.Event().wait()
        return {"n": 2}


def half_open_breaker() -> CircuitBreaker:
    """A breaker that a failed call opened, now past its recovery timeout."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        f"payments-{uuid.uuid4().hex}", failure_threshold=1, recovery_timeout=10.0, clock=clock
    )
    with pytest.raises(ConnectionError):
        graph_of(Flaky(1), circuit=breaker).invoke({"n": 1})
    assert breaker.state == CircuitState.OPEN
    clock.now += 10.0
    return breaker


async def test_a_trial_call_cancelled_by_a_failing_sibling_does_not_jam_the_breaker() -> None:
    breaker, body = half_open_breaker(), TrialCall()

    async def sibling(state: S) -> dict[str, Any]:
        await body.running.wait()
        raise ValueError("sibling failed")

    builder = StateGraph(S)
    builder.add_node("charge", body, circuit=breaker)
    builder.add_node("sibling", sibling)
    builder.add_edge(START, "charge")
    builder.add_edge(START, "sibling")
    with pytest.raises(ValueError, match="sibling failed"):
        await builder.compile().ainvoke({"n": 1})

    body.hang = False
    out = await graph_of(body, circuit=breaker).ainvoke({"n": 1})
    assert out["n"] == 2, "the cancelled trial gave its slot back: this call was the trial"
    assert breaker.state == CircuitState.CLOSED and body.calls == 2


async def test_a_trial_call_whose_run_the_caller_cancels_does_not_jam_the_breaker() -> None:
    breaker, body = half_open_breaker(), TrialCall()
    graph = graph_of(body, circuit=breaker)
    run = asyncio.ensure_future(graph.ainvoke({"n": 1}))
    await body.running.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    body.hang = False
    assert (await graph.ainvoke({"n": 1}))["n"] == 2
    assert breaker.state == CircuitState.CLOSED


def test_a_trial_call_that_interrupts_does_not_jam_the_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        f"crm-{uuid.uuid4().hex}", failure_threshold=1, recovery_timeout=10.0, clock=clock
    )
    down = [True]

    def lookup(state: S) -> dict[str, Any]:
        if down[0]:
            raise ConnectionError("crm down")
        return {"n": 2 if interrupt("is this the customer?") else 0}

    graph = graph_of(lookup, circuit=breaker, compile_options={"checkpointer": MemorySaver()})
    with pytest.raises(ConnectionError):
        graph.invoke({"n": 1}, {"configurable": {"thread_id": "first"}})
    clock.now += 10.0
    down[0] = False
    cfg = {"configurable": {"thread_id": "second"}}
    assert "__interrupt__" in graph.invoke({"n": 1}, cfg)
    # An interrupt is no verdict on the dependency: the breaker stays half open,
    # with its trial slot free for the resumed node, whose success closes it.
    assert breaker.state == CircuitState.HALF_OPEN
    assert graph.invoke(Command(resume=True), cfg)["n"] == 2
    assert breaker.state == CircuitState.CLOSED


def test_two_tasks_sharing_a_breaker_report_each_of_its_changes_once() -> None:
    """b's failure is judged first but held until a's has opened the breaker; b's
    verdict then comes too late to move it. Only a's call changed the state."""
    b_judged, opened = threading.Event(), threading.Event()

    class DownA(Exception):
        pass

    class DownB(Exception):
        pass

    def failure_on(exc: BaseException) -> bool:
        if isinstance(exc, DownB):
            b_judged.set()
            opened.wait(10.0)
        return True

    breaker = CircuitBreaker(
        f"shared-{uuid.uuid4().hex}",
        failure_threshold=1,
        recovery_timeout=60.0,
        clock=FakeClock(),
        failure_on=failure_on,
    )
    changes: list[tuple[str, str]] = []
    breaker.add_listener(lambda name, old, new: (changes.append((old, new)), opened.set()))

    def a(state: S) -> dict[str, Any]:
        b_judged.wait(10.0)
        raise DownA("a down")

    def b(state: S) -> dict[str, Any]:
        raise DownB("b down")

    sink = MemorySink()
    builder = StateGraph(S)
    builder.add_node("a", a, circuit=breaker)
    builder.add_node("b", b, circuit=breaker)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    with pytest.raises((DownA, DownB)):
        builder.compile(observers=[sink]).invoke({"n": 1})
    assert changes == [("closed", "open")]
    reported = [
        (e.node, e.data["from"], e.data["to"]) for e in sink.events if e.kind == "circuit_state"
    ]
    assert reported == [("a", "closed", "open")]


# -- on_error routing --------------------------------------------------------------


def review(state: S) -> dict[str, Any]:
    return {"trail": ["review"]}


def test_on_error_records_the_failure_and_continues_at_the_named_node() -> None:
    body = Flaky(99, ConnectionError)
    builder = StateGraph(S)
    builder.add_node(
        "node", body, retry_policy=RetryPolicy(max_attempts=3, **FAST), on_error="review"
    )
    builder.add_node("next", lambda s: {"trail": ["next"]})
    builder.add_node("review", review)
    builder.add_edge(START, "node")
    builder.add_edge("node", "next")
    builder.add_edge("next", END)
    builder.add_edge("review", END)
    before = time.time()
    out = builder.compile().invoke({"n": 1})
    assert out["trail"] == ["review"], "the failed node's own edges are not followed"
    [error] = out["errors"]
    assert error["node"] == "node"
    assert error["error_type"] == "ConnectionError"
    assert error["message"] == "failure 3"
    assert error["attempts"] == 3
    assert before <= error["time"] <= time.time()


def test_on_error_errors_are_kept_in_the_checkpointed_state(saver_factory: Any) -> None:
    builder = StateGraph(S)
    builder.add_node("node", Flaky(99, KeyError), on_error="review")
    builder.add_node("review", review)
    builder.add_edge(START, "node")
    builder.add_edge("review", END)
    graph = builder.compile(checkpointer=saver_factory.make())
    cfg = {"configurable": {"thread_id": uuid.uuid4().hex}}
    graph.invoke({"n": 1}, cfg)
    values = graph.get_state(cfg).values
    assert [e["error_type"] for e in values["errors"]] == ["KeyError"]
    assert values["trail"] == ["review"]


def test_an_open_breaker_with_on_error_routes_without_calling_the_node() -> None:
    clock = FakeClock()
    name = f"crm-{uuid.uuid4().hex}"
    breaker = CircuitBreaker(name, failure_threshold=1, recovery_timeout=60.0, clock=clock)
    body = Flaky(99)
    builder = StateGraph(S)
    builder.add_node("node", body, circuit=breaker, on_error="review")
    builder.add_node("review", review)
    builder.add_edge(START, "node")
    builder.add_edge("review", END)
    graph = builder.compile()

    first = graph.invoke({"n": 1})
    assert first["errors"][0]["error_type"] == "ConnectionError"
    second = graph.invoke({"n": 1})
    assert second["errors"][0]["error_type"] == "CircuitOpenError"
    assert second["trail"] == ["review"]
    assert len(body.attempts) == 1, "the open breaker kept the node from running"


@pytest.mark.parametrize("mode", ["sync", "async", "exit"])
def test_a_retried_node_that_asks_gets_a_full_budget_after_the_answer(
    saver_factory: Any, mode: str
) -> None:
    """Retries that reached an interrupt() are over: the answered node starts again at
    attempt 1 (as LangGraph), whatever the durability mode."""
    from trellis import Command, interrupt

    flaky = [2]
    attempts: list[int] = []

    def node(state: S, runtime: Any) -> dict[str, Any]:
        attempts.append(runtime.execution_info.node_attempt)
        if flaky[0] > 0:
            flaky[0] -= 1
            raise ConnectionError("flaky")
        return {"trail": [str(interrupt("ok?"))]}

    policy = RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False)
    app = graph_of(
        node, retry_policy=policy, compile_options={"checkpointer": saver_factory.make()}
    )
    cfg = {"configurable": {"thread_id": uuid.uuid4().hex}}
    app.invoke({"n": 0}, cfg, durability=mode)
    flaky[0] = 2  # two more transient failures after the answer: within a fresh budget
    assert app.invoke(Command(resume="yes"), cfg, durability=mode)["trail"] == ["yes"]
    assert attempts == [1, 2, 3, 1, 2, 3]


@pytest.mark.parametrize("style", ["get_stream_writer", "injected writer"])
def test_a_timed_out_attempt_writes_nothing_into_the_retrys_custom_stream(style: str) -> None:
    from trellis import get_stream_writer

    calls: list[int] = []
    retry_running, stale_written = threading.Event(), threading.Event()

    def body(write: Any) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            retry_running.wait(30)  # abandoned at its timeout, it runs on meanwhile
            write("stale, from the first attempt")
            stale_written.set()
            return {"n": 1}
        retry_running.set()
        stale_written.wait(30)  # the abandoned thread has written by now
        write("from the retry")
        return {"n": 2}

    def fetched(state: S) -> dict[str, Any]:
        return body(get_stream_writer())

    def injected(state: S, writer: Any) -> dict[str, Any]:  # LangGraph's way
        return body(writer)

    node = fetched if style == "get_stream_writer" else injected
    policy = RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=False)
    app = graph_of(node, timeout=0.2, retry_policy=policy)
    chunks = list(app.stream({"n": 0}, stream_mode="custom"))
    assert chunks == ["from the retry"]
