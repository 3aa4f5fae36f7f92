"""Retry decisions and the sync/async retry loops, with injected clock, sleep and random."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trellis.errors import NodeTimeoutError
from trellis.resilience.retry import (
    JITTER_FRACTION,
    RetryState,
    arun_with_retry,
    backoff_delay,
    matches_exception,
    normalize_policies,
    run_with_retry,
    select_policy,
)
from trellis.types import RetryPolicy, default_retry_on


class FakeTime:
    """A wall clock that only moves when the code under test sleeps (or a test says so)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so no retry loop catches it."""


def flaky(
    failures: int, exc: Callable[[], BaseException] = lambda: ConnectionError("down")
) -> tuple[Callable[[RetryState], int], list[int]]:
    """A node body that fails ``failures`` times, then returns its attempt number."""
    calls: list[int] = []

    def body(state: RetryState) -> int:
        calls.append(state.attempt)
        if len(calls) <= failures:
            raise exc()
        return state.attempt

    return body, calls


def run(mode: str, body: Callable[[RetryState], Any], policies: Any, t: FakeTime, **kw: Any) -> Any:
    """Run ``body`` under the sync loop or, wrapped in a coroutine, under the async one."""
    if mode == "sync":
        return run_with_retry(body, policies, sleep=t.sleep, clock=t.clock, **kw)

    async def abody(state: RetryState) -> Any:
        await asyncio.sleep(0)
        return body(state)

    return asyncio.run(arun_with_retry(abody, policies, sleep=t.asleep, clock=t.clock, **kw))


modes = pytest.mark.parametrize("mode", ["sync", "async"])
NO_JITTER = RetryPolicy(initial_interval=0.1, backoff_factor=2.0, max_interval=10.0, jitter=False)


# -- the schedule ---------------------------------------------------------------


def test_backoff_schedule_without_jitter_doubles_then_caps() -> None:
    policy = RetryPolicy(initial_interval=1.0, backoff_factor=2.0, max_interval=10.0, jitter=False)
    assert [backoff_delay(policy, n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_jitter_is_proportional_and_capped() -> None:
    policy = RetryPolicy(initial_interval=1.0, backoff_factor=2.0, max_interval=10.0)
    top = [backoff_delay(policy, n, random=lambda: 1.0) for n in range(1, 6)]
    assert top == [1.25, 2.5, 5.0, 10.0, 10.0]  # 8 * 1.25 would pass the cap
    half = [backoff_delay(policy, n, random=lambda: 0.5) for n in range(1, 4)]
    assert half == [1.125, 2.25, 4.5]
    assert backoff_delay(policy, 1, random=lambda: 0.0) == 1.0


def test_backoff_defaults_match_langgraph_without_jitter() -> None:
    policy = RetryPolicy(jitter=False)
    assert [backoff_delay(policy, n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert backoff_delay(policy, 1000) == 128.0  # no OverflowError far down the schedule


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        backoff_delay(RetryPolicy(), 0)


@given(
    initial=st.floats(0.0, 100.0),
    factor=st.floats(1.0, 10.0),
    maximum=st.floats(0.0, 1000.0),
    attempt=st.integers(1, 200),
    r=st.floats(0.0, 1.0, exclude_max=True),
)
def test_backoff_bounds(
    initial: float, factor: float, maximum: float, attempt: int, r: float
) -> None:
    policy = RetryPolicy(initial_interval=initial, backoff_factor=factor, max_interval=maximum)
    plain = backoff_delay(policy._replace(jitter=False), attempt)
    jittered = backoff_delay(policy, attempt, random=lambda: r)
    assert 0.0 <= plain <= maximum
    assert plain <= jittered <= min(maximum, plain * (1 + JITTER_FRACTION))


# -- choosing a policy ------------------------------------------------------------


def test_first_matching_policy_wins() -> None:
    by_type = RetryPolicy(retry_on=KeyError, max_attempts=2)
    by_tuple = RetryPolicy(retry_on=(LookupError, ZeroDivisionError), max_attempts=3)
    by_predicate = RetryPolicy(retry_on=lambda e: "flaky" in str(e), max_attempts=4)
    policies = [by_type, by_tuple, by_predicate]
    assert select_policy(policies, KeyError("k")) is by_type
    assert select_policy(policies, IndexError()) is by_tuple
    assert select_policy(policies, ZeroDivisionError()) is by_tuple
    assert select_policy(policies, RuntimeError("flaky api")) is by_predicate
    assert select_policy(policies, RuntimeError("bug")) is None
    assert select_policy([], KeyError()) is None
    assert select_policy(None, KeyError()) is None


def test_a_single_policy_is_not_mistaken_for_a_sequence() -> None:
    policy = RetryPolicy(max_attempts=7)
    assert normalize_policies(policy) == (policy,)
    assert select_policy(policy, ConnectionError()) is policy
    with pytest.raises(TypeError, match="RetryPolicy"):
        normalize_policies([policy, {"max_attempts": 2}])  # type: ignore[list-item]


def test_bad_retry_on_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="exception types"):
        matches_exception(["ValueError"], ValueError())  # type: ignore[list-item]
    with pytest.raises(TypeError, match="predicate"):
        matches_exception(42, ValueError())  # type: ignore[arg-type]


def test_default_policy_skips_programming_errors_but_retries_transient_ones() -> None:
    policy = RetryPolicy()
    for exc in (ValueError(), TypeError(), KeyError("k"), ZeroDivisionError()):
        assert select_policy(policy, exc) is None, exc
    assert select_policy(policy, ConnectionError()) is policy
    assert select_policy(policy, NodeTimeoutError("n", 1.0)) is policy
    assert default_retry_on(NodeTimeoutError("n", 1.0))


# -- the state ----------------------------------------------------------------------


def test_after_failure_counts_attempts_and_gives_up_at_max() -> None:
    policy = RetryPolicy(max_attempts=3, initial_interval=1.0, jitter=False)
    s1 = RetryState.start(now=50.0)
    s2 = s1.after_failure(policy, ConnectionError("a"), now=51.0)
    assert s2 == RetryState(2, 50.0, 52.0, "ConnectionError: a")
    s3 = s2.after_failure(policy, ConnectionError("b"), now=60.0) if s2 else None
    assert s3 == RetryState(3, 50.0, 62.0, "ConnectionError: b")
    assert s3 is not None and s3.after_failure(policy, ConnectionError("c"), now=70.0) is None
    assert s1.after_failure(None, ValueError(), now=51.0) is None


def test_state_round_trips_through_json() -> None:
    state = RetryState.start(0.0).after_failure(
        RetryPolicy(jitter=False), ConnectionError("x" * 2000), 1.0
    )
    assert state is not None and state.last_error is not None
    assert len(state.last_error) <= 500  # huge messages do not bloat checkpoints
    assert RetryState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@given(
    attempt=st.integers(1, 10**6),
    first=st.floats(allow_nan=False, allow_infinity=False),
    nxt=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    err=st.none() | st.text(),
)
def test_state_round_trip_property(
    attempt: int, first: float, nxt: float | None, err: str | None
) -> None:
    state = RetryState(attempt, first, nxt, err)
    assert RetryState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"attempt": 0, "first_attempt_at": 1.0},
        {"attempt": True, "first_attempt_at": 1.0},
        {"attempt": 2, "first_attempt_at": "yesterday"},
        {"attempt": 2, "first_attempt_at": 1.0, "last_error": 3},
        None,
    ],
)
def test_malformed_state_is_rejected(data: Any) -> None:
    with pytest.raises(ValueError, match="RetryState"):
        RetryState.from_dict(data)


# -- the loops (each test runs the sync loop and its async twin) ----------------------


@modes
def test_fails_k_times_then_succeeds(mode: str) -> None:
    t = FakeTime()
    body, calls = flaky(2)
    policy = NO_JITTER._replace(max_attempts=5)
    assert run(mode, body, policy, t) == 3
    assert calls == [1, 2, 3]
    assert t.sleeps == pytest.approx([0.1, 0.2])


@modes
def test_exhausted_retries_reraise_the_original_exception(mode: str) -> None:
    t = FakeTime()
    raised: list[Exception] = []

    def body(state: RetryState) -> None:
        raised.append(ConnectionError(f"attempt {state.attempt}"))
        raise raised[-1]

    with pytest.raises(ConnectionError) as info:
        run(mode, body, NO_JITTER._replace(max_attempts=4), t)
    assert len(raised) == 4
    assert info.value is raised[-1]
    assert t.sleeps == pytest.approx([0.1, 0.2, 0.4])


@modes
def test_non_retryable_error_runs_once(mode: str) -> None:
    t = FakeTime()
    body, calls = flaky(1, lambda: ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        run(mode, body, RetryPolicy(max_attempts=5), t)
    assert calls == [1]
    assert t.sleeps == []


@modes
def test_each_exception_uses_the_policy_that_matches_it(mode: str) -> None:
    t = FakeTime()
    errors = iter([KeyError("a"), ConnectionError("b"), ConnectionError("c")])

    def body(state: RetryState) -> str:
        err = next(errors, None)
        if err is not None:
            raise err
        return "ok"

    policies = [
        RetryPolicy(retry_on=KeyError, initial_interval=5.0, jitter=False, max_attempts=9),
        RetryPolicy(retry_on=ConnectionError, initial_interval=1.0, jitter=False, max_attempts=9),
    ]
    assert run(mode, body, policies, t) == "ok"
    # attempt 1 -> KeyError policy (5 * 2**0); attempts 2, 3 -> ConnectionError policy
    assert t.sleeps == pytest.approx([5.0, 2.0, 4.0])


@modes
def test_jitter_comes_from_the_injected_random(mode: str) -> None:
    t = FakeTime()
    body, _ = flaky(2)
    policy = RetryPolicy(initial_interval=1.0, max_interval=100.0, max_attempts=3)
    run(mode, body, policy, t, random=lambda: 0.4)
    assert t.sleeps == pytest.approx([1.1, 2.2])


@modes
def test_on_attempt_reports_starts_retries_and_giving_up(mode: str) -> None:
    t = FakeTime(now=0.0)
    events: list[tuple[int, float | None, str | None]] = []

    def on_attempt(state: RetryState, exc: BaseException | None) -> None:
        events.append((state.attempt, state.next_attempt_at, None if exc is None else str(exc)))

    body, _ = flaky(5, lambda: ConnectionError("x"))
    with pytest.raises(ConnectionError):
        run(mode, body, NO_JITTER._replace(initial_interval=1.0), t, on_attempt=on_attempt)
    assert events == [
        (1, None, None),  # attempt 1 starts
        (2, 1.0, "x"),  # it failed; attempt 2 is due at t=1
        (2, 1.0, None),  # attempt 2 starts
        (3, 3.0, "x"),
        (3, 3.0, None),
        (3, None, "x"),  # attempt 3 failed for good: next_attempt_at is None
    ]


@modes
def test_resume_after_attempt_2_of_5_runs_exactly_3_more(mode: str) -> None:
    policy = RetryPolicy(initial_interval=1.0, backoff_factor=2.0, max_attempts=5, jitter=False)
    checkpoint: dict[str, Any] = {}

    def persist(state: RetryState, exc: BaseException | None) -> None:
        if exc is not None:
            checkpoint["retry"] = json.dumps(state.to_dict())

    t = FakeTime(now=0.0)

    def crash_in_second_backoff(seconds: float) -> None:
        if len(t.sleeps) == 1:  # attempt 2 failed and we are waiting for attempt 3
            t.now += 0.5  # half a second into a 2 s wait...
            raise Crash
        t.sleep(seconds)

    first_run, first_calls = flaky(99)
    with pytest.raises(Crash):
        if mode == "sync":
            run_with_retry(
                first_run, policy, sleep=crash_in_second_backoff, clock=t.clock, on_attempt=persist
            )
        else:

            async def asleep(seconds: float) -> None:
                crash_in_second_backoff(seconds)

            async def abody(state: RetryState) -> int:
                return first_run(state)

            asyncio.run(
                arun_with_retry(abody, policy, sleep=asleep, clock=t.clock, on_attempt=persist)
            )
    assert first_calls == [1, 2]

    # ...a new process restores the state and finishes the job.
    restored = RetryState.from_dict(json.loads(checkpoint["retry"]))
    assert restored.attempt == 3 and restored.next_attempt_at == 3.0
    t2 = FakeTime(now=t.now)
    second_run, second_calls = flaky(99)
    with pytest.raises(ConnectionError):
        run(mode, second_run, policy, t2, state=restored)
    assert second_calls == [3, 4, 5]
    # 1.5 s left of the 2 s wait, then the full 4 s and 8 s waits.
    assert t2.sleeps == pytest.approx([1.5, 4.0, 8.0])


@modes
def test_resume_when_the_retry_time_has_passed_does_not_sleep(mode: str) -> None:
    t = FakeTime(now=500.0)
    body, calls = flaky(0)
    state = RetryState(attempt=4, first_attempt_at=1.0, next_attempt_at=400.0, last_error="x")
    assert run(mode, body, RetryPolicy(max_attempts=5), t, state=state) == 4
    assert calls == [4]
    assert t.sleeps == []


@modes
def test_a_clock_that_jumped_back_waits_at_most_max_interval(mode: str) -> None:
    t = FakeTime(now=0.0)
    body, _ = flaky(0)
    state = RetryState(attempt=2, first_attempt_at=0.0, next_attempt_at=86_400.0)
    run(mode, body, NO_JITTER, t, state=state)
    assert t.sleeps == pytest.approx([10.0])


@modes
def test_no_policy_means_one_attempt(mode: str) -> None:
    t = FakeTime()
    body, calls = flaky(1)
    with pytest.raises(ConnectionError):
        run(mode, body, None, t)
    assert calls == [1]


@modes
def test_base_exceptions_are_never_retried(mode: str) -> None:
    t = FakeTime()
    body, calls = flaky(1, Crash)
    with pytest.raises(Crash):
        run(mode, body, RetryPolicy(retry_on=lambda e: True), t)
    assert calls == [1]


async def test_async_cancellation_during_backoff_propagates() -> None:
    async def body(state: RetryState) -> None:
        raise ConnectionError

    task = asyncio.ensure_future(arun_with_retry(body, RetryPolicy(initial_interval=60.0)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
