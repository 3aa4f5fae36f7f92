"""Per-attempt timeouts: hanging sync nodes, cancelled async nodes, loop-blocking nodes.

Hung nodes wait on events the test releases afterwards, so abandoned threads
always finish and nothing depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
import time
from collections.abc import Iterator

import pytest

from trellis.errors import NodeError, NodeTimeoutError
from trellis.resilience import timeout as timeout_module
from trellis.resilience.retry import RetryState, run_with_retry
from trellis.resilience.timeout import (
    acall_sync_with_timeout,
    acall_with_timeout,
    call_with_timeout,
)
from trellis.types import RetryPolicy, default_retry_on

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event hung nodes wait on; set at teardown so abandoned threads end."""
    event = threading.Event()
    yield event
    event.set()


def pool_threads() -> int:
    return sum(t.name.startswith("trellis-timeout-") for t in threading.enumerate())


# -- sync nodes -----------------------------------------------------------------------


def test_hanging_sync_node_times_out_quickly_and_is_abandoned(gate: threading.Event) -> None:
    finished = threading.Event()

    def hang() -> str:
        gate.wait(10)
        finished.set()
        return "too late"

    start = time.monotonic()
    with pytest.raises(NodeTimeoutError) as info:
        call_with_timeout(hang, (), {}, 0.05, node="hang")
    assert time.monotonic() - start < 1.0
    assert isinstance(info.value, NodeError)
    assert (info.value.node, info.value.timeout) == ("hang", 0.05)
    assert "'hang' timed out after 0.05s" in str(info.value)
    assert not finished.is_set()  # the thread is still running: abandoned, not killed
    gate.set()
    assert finished.wait(5)


def test_sync_results_and_errors_pass_through() -> None:
    assert call_with_timeout(divmod, (17, 5), {}, 1.0, node="n") == (3, 2)
    assert call_with_timeout(dict, (), {"a": 1}, 1.0, node="n") == {"a": 1}
    error = KeyError("missing")

    def fail() -> None:
        raise error

    with pytest.raises(KeyError) as info:
        call_with_timeout(fail, (), {}, 1.0, node="n")
    assert info.value is error


def test_a_timeout_error_raised_by_the_node_is_not_a_node_timeout() -> None:
    def fail() -> None:
        raise TimeoutError("upstream said so")

    with pytest.raises(TimeoutError, match="upstream") as info:
        call_with_timeout(fail, (), {}, 1.0, node="n")
    assert not isinstance(info.value, NodeTimeoutError)


def test_context_variables_reach_the_worker_thread() -> None:
    token = request_id.set("req-42")
    try:
        seen = call_with_timeout(request_id.get, (), {}, 1.0, node="n")
        where = call_with_timeout(threading.current_thread, (), {}, 1.0, node="n")
    finally:
        request_id.reset(token)
    assert seen == "req-42"
    assert where is not threading.current_thread()


def test_no_timeout_runs_inline() -> None:
    assert call_with_timeout(threading.current_thread, (), {}, None, node="n") is (
        threading.current_thread()
    )


@pytest.mark.parametrize("bad", [0, -1.0, math.nan])
def test_timeout_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        call_with_timeout(int, (), {}, bad, node="n")


def test_sequential_calls_reuse_one_worker() -> None:
    call_with_timeout(int, (), {}, 1.0, node="warm-up")
    before = pool_threads()
    for i in range(20):
        assert call_with_timeout(abs, (-i,), {}, 1.0, node="n") == i
    assert pool_threads() <= before + 1


def test_hung_workers_do_not_starve_later_calls(gate: threading.Event) -> None:
    for _ in range(3):
        with pytest.raises(NodeTimeoutError):
            call_with_timeout(gate.wait, (10,), {}, 0.02, node="hang")
    assert call_with_timeout(str.upper, ("ok",), {}, 5.0, node="next") == "OK"


def test_timeout_is_retried_by_the_default_policy(gate: threading.Event) -> None:
    assert default_retry_on(NodeTimeoutError("n", 0.05))
    sleeps: list[float] = []

    def attempt(state: RetryState) -> object:
        body = (lambda: gate.wait(10)) if state.attempt == 1 else (lambda: "done")
        return call_with_timeout(body, (), {}, 0.05, node="flaky")

    result = run_with_retry(
        attempt, RetryPolicy(jitter=False), sleep=sleeps.append, clock=lambda: 0.0
    )
    assert result == "done"
    assert sleeps == [0.5]  # one retry after the timed-out first attempt


# -- async nodes ------------------------------------------------------------------------


async def test_async_node_is_cancelled_at_the_deadline() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    start = time.monotonic()
    with pytest.raises(NodeTimeoutError) as info:
        await acall_with_timeout(slow, (), {}, 0.05, node="slow")
    assert time.monotonic() - start < 1.0
    assert info.value.node == "slow"
    assert cancelled.is_set()


async def test_async_results_and_errors_pass_through() -> None:
    async def add(a: int, *, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    async def fail() -> None:
        raise TimeoutError("upstream")

    assert await acall_with_timeout(add, (1,), {"b": 2}, 1.0, node="n") == 3
    assert await acall_with_timeout(add, (1,), {"b": 2}, None, node="n") == 3
    with pytest.raises(TimeoutError, match="upstream") as info:
        await acall_with_timeout(fail, (), {}, 1.0, node="n")
    assert not isinstance(info.value, NodeTimeoutError)


async def test_time_sleep_in_an_async_node_still_times_out() -> None:
    async def blocks_the_loop() -> str:
        time.sleep(0.3)  # asyncio.timeout alone would let this return normally
        return "stale"

    with pytest.raises(NodeTimeoutError):
        await acall_with_timeout(blocks_the_loop, (), {}, 0.05, node="blocker")


async def test_watchdog_reports_a_blocked_loop_while_it_is_blocked() -> None:
    expired = threading.Event()
    reports: list[tuple[str, float, bool]] = []
    loop_thread = threading.current_thread()

    def on_expired(node: str, timeout: float) -> None:
        reports.append((node, timeout, threading.current_thread() is loop_thread))
        expired.set()

    async def blocks_until_reported() -> str:
        # Holds the loop until the watchdog speaks: only a thread outside it can.
        assert expired.wait(5), "watchdog never fired"
        return "stale"

    with pytest.raises(NodeTimeoutError):
        await acall_with_timeout(
            blocks_until_reported, (), {}, 0.02, node="blocker", on_expired=on_expired
        )
    assert reports == [("blocker", 0.02, False)]


async def test_watchdog_catches_a_cpu_bound_loop() -> None:
    expired = threading.Event()

    async def spins() -> int:
        n = 0
        give_up = time.monotonic() + 5
        while not expired.is_set() and time.monotonic() < give_up:
            n += 1
        return n

    with pytest.raises(NodeTimeoutError):
        await acall_with_timeout(
            spins, (), {}, 0.02, node="spin", on_expired=lambda *_: expired.set()
        )
    assert expired.is_set()


async def test_an_error_raised_after_blocking_past_the_deadline_is_kept() -> None:
    async def blocks_then_fails() -> None:
        time.sleep(0.1)
        raise ValueError("real problem")

    with pytest.raises(ValueError, match="real problem"):
        await acall_with_timeout(blocks_then_fails, (), {}, 0.02, node="n")


async def test_fast_calls_never_reach_the_watchdog_callback() -> None:
    fired: list[str] = []

    async def quick() -> int:
        return 1

    results = await asyncio.gather(
        *(
            acall_with_timeout(
                quick, (), {}, 0.2, node=f"q{i}", on_expired=lambda n, _: fired.append(n)
            )
            for i in range(50)
        )
    )
    assert results == [1] * 50
    await asyncio.sleep(0.3)  # well past every deadline
    assert fired == []


async def test_one_watchdog_thread_serves_every_call() -> None:
    async def quick(i: int) -> int:
        await asyncio.sleep(0)
        return i

    results = await asyncio.gather(
        *(acall_with_timeout(quick, (i,), {}, 30.0, node="n") for i in range(300))
    )
    assert results == list(range(300))
    names = [t.name for t in threading.enumerate()]
    assert names.count("trellis-watchdog") == 1
    # Finished entries are dropped lazily; the heap does not keep one per call forever.
    assert len(timeout_module._watchdog._heap) < 100


async def test_sync_node_from_async_code_times_out_without_blocking_the_loop(
    gate: threading.Event,
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    try:
        with pytest.raises(NodeTimeoutError):
            await acall_sync_with_timeout(gate.wait, (10,), {}, 0.1, node="sync-hang")
    finally:
        task.cancel()
    assert ticks > 1  # the loop kept running while the sync node hung
    token = request_id.set("ctx")
    try:
        assert await acall_sync_with_timeout(request_id.get, (), {}, 1.0, node="n") == "ctx"
        assert await acall_sync_with_timeout(pow, (2, 5), {}, None, node="n") == 32
    finally:
        request_id.reset(token)
