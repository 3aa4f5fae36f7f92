"""Circuit breakers: the state machine on an injected clock, sharing by name, concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trellis.errors import CircuitOpenError
from trellis.resilience.circuit import (
    CircuitBreaker,
    CircuitState,
    get_breaker,
    reset_breakers,
)

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    reset_breakers()
    yield
    reset_breakers()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, name: str = "payments", **settings: Any) -> CircuitBreaker:
    settings = {"failure_threshold": 3, "recovery_timeout": 10.0, **settings}
    return CircuitBreaker(name, clock=clock, **settings)


def recorder(breaker: CircuitBreaker) -> list[tuple[str, str, str]]:
    events: list[tuple[str, str, str]] = []
    breaker.add_listener(lambda name, old, new: events.append((name, old.value, new.value)))
    return events


def call(breaker: CircuitBreaker, fn: Callable[[], Any], node: str = "charge") -> Any:
    with breaker.guard(node):
        return fn()


def boom() -> None:
    raise ConnectionError("payments down")


def fail_times(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(ConnectionError):
            call(breaker, boom)


# -- the state machine ---------------------------------------------------------------


def test_opens_after_threshold_and_rejects_without_calling(clock: FakeClock) -> None:
    breaker = make(clock)
    fail_times(breaker, 2)
    assert (breaker.state, breaker.failure_count) == (CLOSED, 2)
    fail_times(breaker, 1)
    assert breaker.state is OPEN and breaker.state == "open"
    assert breaker.opened_at == 0.0

    clock.now = 4.0
    calls: list[int] = []
    with pytest.raises(CircuitOpenError) as info:
        call(breaker, lambda: calls.append(1), node="charge")
    assert calls == []
    assert (info.value.breaker, info.value.node, info.value.retry_after) == (
        "payments",
        "charge",
        6.0,
    )
    assert isinstance(info.value, RuntimeError)
    assert breaker.rejected_count == 1


def test_a_success_breaks_the_failure_streak(clock: FakeClock) -> None:
    breaker = make(clock)
    fail_times(breaker, 2)
    assert call(breaker, lambda: "ok") == "ok"
    assert (breaker.failure_count, breaker.success_count) == (0, 1)
    fail_times(breaker, 2)
    assert breaker.state is CLOSED


def test_half_open_trial_success_closes(clock: FakeClock) -> None:
    breaker = make(clock)
    events = recorder(breaker)
    fail_times(breaker, 3)
    clock.now = 9.999
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    clock.now = 10.0
    assert call(breaker, lambda: "recovered") == "recovered"
    assert breaker.state is CLOSED
    assert (breaker.failure_count, breaker.opened_at) == (0, None)
    assert events == [
        ("payments", "closed", "open"),
        ("payments", "open", "half_open"),
        ("payments", "half_open", "closed"),
    ]


def test_half_open_trial_failure_reopens_for_another_recovery_timeout(clock: FakeClock) -> None:
    breaker = make(clock)
    events = recorder(breaker)
    fail_times(breaker, 3)
    clock.now = 12.0
    fail_times(breaker, 1)
    assert breaker.state is OPEN
    assert breaker.opened_at == 12.0
    clock.now = 21.0
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call("charge")
    assert info.value.retry_after == pytest.approx(1.0)
    assert [e[1:] for e in events] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
    ]


def test_half_open_admits_only_max_calls_until_a_verdict(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=2)
    fail_times(breaker, 3)
    clock.now = 10.0
    first = breaker.before_call()
    breaker.before_call()
    assert breaker.state is HALF_OPEN
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()
    assert info.value.retry_after == 0.0
    breaker.record_success(first)
    assert breaker.state is CLOSED
    breaker.before_call()  # closed again: no limit


def test_a_call_refused_while_the_trial_runs_says_the_circuit_is_half_open(
    clock: FakeClock,
) -> None:
    breaker = make(clock)
    fail_times(breaker, 3)
    with pytest.raises(CircuitOpenError) as opened:
        call(breaker, lambda: 1)
    assert not opened.value.trial_in_flight
    assert "is open for node 'charge'; next trial in 10s" in str(opened.value)
    clock.now = 10.0
    breaker.before_call("charge")
    with pytest.raises(CircuitOpenError) as refused:
        call(breaker, lambda: 1)
    assert refused.value.trial_in_flight and refused.value.retry_after == 0.0
    message = str(refused.value)
    assert "half open for node 'charge'" in message and "next trial" not in message


def test_a_cancelled_trial_frees_its_slot(clock: FakeClock) -> None:
    breaker = make(clock)
    fail_times(breaker, 3)
    clock.now = 10.0
    with pytest.raises(KeyboardInterrupt), breaker.guard():
        raise KeyboardInterrupt
    assert breaker.state is HALF_OPEN
    assert call(breaker, lambda: 1) == 1  # the slot was released, so this trial runs
    assert breaker.state is CLOSED


def test_a_late_outcome_from_before_the_opening_is_ignored(clock: FakeClock) -> None:
    breaker = make(clock)
    slow_call = breaker.before_call()  # admitted while closed, answers much later
    fail_times(breaker, 3)
    clock.now = 10.0
    trial = breaker.before_call()
    breaker.record_success(slow_call)
    assert breaker.state is HALF_OPEN  # a stale success does not close the breaker
    breaker.record_failure(ConnectionError(), slow_call)
    assert breaker.state is HALF_OPEN
    breaker.record_failure(ConnectionError(), trial)
    assert breaker.state is OPEN


def test_each_call_is_told_the_changes_it_made(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=2)
    late = breaker.before_call()
    assert breaker.record_failure(ConnectionError()) == ()
    assert breaker.record_failure(ConnectionError()) == ((CLOSED, OPEN),)
    assert breaker.record_failure(ConnectionError(), late) == ()  # admitted before it opened
    clock.now = 10.0
    permit, moved = breaker.admit("charge")
    assert moved == ((OPEN, HALF_OPEN),)
    assert breaker.record_success(permit) == ((HALF_OPEN, CLOSED),)
    assert breaker.record_success() == ()


def test_failure_on_decides_what_counts(clock: FakeClock) -> None:
    breaker = make(clock, failure_on=(ConnectionError, TimeoutError))
    for _ in range(5):
        with pytest.raises(ValueError):
            call(breaker, lambda: int("not a number"))
    # A ValueError means the dependency answered: not a failure of the dependency.
    assert (breaker.state, breaker.failure_count, breaker.success_count) == (CLOSED, 0, 5)
    fail_times(breaker, 3)
    assert breaker.state is OPEN


def test_failure_on_accepts_a_predicate(clock: FakeClock) -> None:
    breaker = make(clock, failure_on=lambda e: "503" in str(e))
    breaker.record_failure(RuntimeError("404"))
    assert breaker.failure_count == 0
    breaker.record_failure(RuntimeError("503"))
    assert breaker.failure_count == 1


async def test_async_guard(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1)

    async def flaky() -> None:
        await asyncio.sleep(0)
        raise ConnectionError

    with pytest.raises(ConnectionError):
        async with breaker.guard("n"):
            await flaky()
    with pytest.raises(CircuitOpenError):
        async with breaker.guard("n"):
            pytest.fail("the node must not run while the circuit is open")
    clock.now = 10.0
    async with breaker.guard("n") as guarded:
        assert guarded is breaker
    assert breaker.state is CLOSED


def test_reset_closes_and_zeroes(clock: FakeClock) -> None:
    breaker = make(clock)
    events = recorder(breaker)
    fail_times(breaker, 3)
    breaker.reset()
    stats = breaker.stats()
    assert (stats.state, stats.failure_count, stats.rejected_count, stats.opened_at) == (
        CLOSED,
        0,
        0,
        None,
    )
    assert events[-1] == ("payments", "open", "closed")


def test_listener_errors_are_logged_not_raised(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = make(clock, failure_threshold=1)

    def broken(*_: object) -> None:
        raise RuntimeError("listener bug")

    breaker.add_listener(broken)
    events = recorder(breaker)
    with caplog.at_level(logging.ERROR, logger="trellis.resilience"):
        fail_times(breaker, 1)
    assert breaker.state is OPEN
    assert events == [("payments", "closed", "open")]
    assert "listener failed" in caplog.text
    breaker.remove_listener(broken)
    breaker.reset()
    assert len(events) == 2


def test_a_listener_may_use_the_breaker(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, recovery_timeout=0.0)
    seen: list[tuple[str, str]] = []

    def listener(name: str, old: CircuitState, new: CircuitState) -> None:
        seen.append((old.value, new.value))
        if new is OPEN:
            breaker.record_success(breaker.before_call())  # re-enters: half_open, closed

    breaker.add_listener(listener)
    fail_times(breaker, 1)
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"failure_threshold": 0}, ValueError),
        ({"failure_threshold": 2.5}, TypeError),
        ({"recovery_timeout": -1.0}, ValueError),
        ({"half_open_max_calls": 0}, ValueError),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        CircuitBreaker("x", **kwargs)
    with pytest.raises(ValueError, match="name"):
        CircuitBreaker("")


# -- sharing by name ---------------------------------------------------------------


def test_same_name_is_the_same_breaker(clock: FakeClock) -> None:
    graph_a = make(clock)
    graph_b = make(clock)
    assert graph_a is graph_b
    assert get_breaker("payments") is graph_a
    assert make(clock, name="search") is not graph_a
    fail_times(graph_a, 3)
    with pytest.raises(CircuitOpenError):
        graph_b.before_call("refund")
    assert copy.deepcopy({"circuit": graph_a})["circuit"] is graph_a


def test_conflicting_settings_name_the_breaker_and_the_settings(clock: FakeClock) -> None:
    make(clock, failure_threshold=3)
    with pytest.raises(ValueError, match="'payments'") as info:
        make(clock, failure_threshold=4, half_open_max_calls=2)
    message = str(info.value)
    assert "failure_threshold=4 (registered: 3)" in message
    assert "half_open_max_calls=2 (registered: 1)" in message
    assert "recovery_timeout" not in message


def test_building_a_graph_twice_with_a_lambda_is_not_a_conflict(clock: FakeClock) -> None:
    def build() -> CircuitBreaker:
        return make(clock, failure_on=lambda e: isinstance(e, ConnectionError))

    assert build() is build()


def test_reset_breakers_frees_names(clock: FakeClock) -> None:
    old = make(clock, failure_threshold=1)
    fail_times(old, 1)
    reset_breakers()
    assert get_breaker("payments") is None
    new = make(clock, failure_threshold=7)
    assert new is not old and new.failure_threshold == 7
    assert old.state is CLOSED


def test_two_threads_two_graphs_one_state(clock: FakeClock) -> None:
    threshold = 400
    start = threading.Barrier(2)

    def worker() -> None:
        breaker = make(clock, name="shared", failure_threshold=threshold)  # each "graph" builds it
        start.wait()
        for _ in range(threshold // 2):
            with contextlib.suppress(ConnectionError):
                call(breaker, boom)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared = make(clock, name="shared", failure_threshold=threshold)
    # Each thread alone failed threshold/2 times; only a shared, lossless count opens it.
    assert shared.state is OPEN
    assert shared.failure_count == threshold
    assert shared.rejected_count == 0


@pytest.mark.parametrize("max_calls", [1, 3])
def test_concurrent_callers_get_exactly_max_trial_calls(clock: FakeClock, max_calls: int) -> None:
    breaker = make(clock, half_open_max_calls=max_calls)
    fail_times(breaker, 3)
    clock.now = 10.0
    callers = 16
    start = threading.Barrier(callers)
    all_tried = threading.Barrier(callers)
    admitted: list[int] = []
    rejected: list[int] = []
    lock = threading.Lock()

    def caller(i: int) -> None:
        start.wait()
        try:
            permit = breaker.before_call(f"n{i}")
        except CircuitOpenError:
            with lock:
                rejected.append(i)
            all_tried.wait()
            return
        with lock:
            admitted.append(i)
        all_tried.wait()  # hold the trial until everyone has asked
        breaker.record_success(permit)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == max_calls
    assert len(rejected) == callers - max_calls
    assert breaker.state is CLOSED


# -- invariants over arbitrary histories ------------------------------------------------

ops = st.lists(
    st.one_of(
        st.just(("ok", 0.0)), st.just(("fail", 0.0)), st.tuples(st.just("wait"), st.floats(0, 15))
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(history=ops, threshold=st.integers(1, 4))
def test_state_machine_invariants(history: list[tuple[str, float]], threshold: int) -> None:
    reset_breakers()
    clock = FakeClock()
    breaker = CircuitBreaker("prop", threshold, 10.0, clock=clock)
    events = recorder(breaker)
    calls = 0
    for op, seconds in history:
        if op == "wait":
            clock.now += seconds
            continue
        state_before, opened_at = breaker.state, breaker.opened_at
        ran = False

        def node(op: str = op) -> None:
            nonlocal ran, calls
            ran = True
            calls += 1
            if op == "fail":
                raise ConnectionError

        with contextlib.suppress(ConnectionError, CircuitOpenError):
            call(breaker, node)
        # The node runs unless the breaker is open and still recovering (the deadline
        # computed as the breaker does: in floats, now - opened < 10 may disagree).
        recovering = state_before is OPEN and (opened_at or 0.0) + 10.0 - clock.now > 0
        assert ran is not recovering
        if breaker.state is CLOSED:
            assert breaker.failure_count < threshold and breaker.opened_at is None
        else:
            assert breaker.opened_at is not None
    # Events form a chain ending in the current state, and never repeat a state.
    current = "closed"
    for name, old, new in events:
        assert (name, old) == ("prop", current) and new != old
        current = new
    assert current == breaker.state.value
    assert calls + breaker.rejected_count == sum(op != "wait" for op, _ in history)
