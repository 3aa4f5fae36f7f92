"""Retries: pure decisions plus two thin loops (sync and async) that apply them.

Every decision — which policy applies, how long to wait, whether to give up —
lives in pure functions over an immutable :class:`RetryState`. The state is a
plain JSON-able dict away from a checkpoint, so a run that crashes after
attempt 2 of 5 resumes with attempt 3 and sleeps only what is left of the
backoff. The loops only sleep, call, and report.

Clock: retry times are wall-clock seconds (``time.time``) because they are
persisted and must mean the same thing in the process that resumes the run; a
monotonic clock restarts with the machine. A clock that jumps is harmless: the
wait before an attempt is clamped to ``[0, max_interval]``.

>>> policy = RetryPolicy(initial_interval=1.0, jitter=False)
>>> [backoff_delay(policy, n) for n in (1, 2, 3)]
[1.0, 2.0, 4.0]
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from trellis.types import RetryPolicy

__all__ = [
    "JITTER_FRACTION",
    "OnAttempt",
    "Policies",
    "RetryState",
    "arun_with_retry",
    "backoff_delay",
    "normalize_policies",
    "matches_exception",
    "run_with_retry",
    "select_policy",
]

T = TypeVar("T")

Policies = RetryPolicy | Sequence[RetryPolicy] | None
"""What ``retry_policy=`` accepts: one policy, several (first match wins), or none."""

ExceptionSpec = (
    type[BaseException] | Sequence[type[BaseException]] | Callable[[BaseException], bool]
)
"""Which exceptions a ``retry_on`` (or a breaker's ``failure_on``) covers."""

OnAttempt = Callable[["RetryState", BaseException | None], None]
"""``on_attempt(state, exc)``; see :func:`run_with_retry` for the three cases."""

AsyncOnAttempt = Callable[["RetryState", BaseException | None], Awaitable[None] | None]
"""``arun_with_retry``'s ``on_attempt``: it may also be a coroutine function (to
persist the state with a saver's async methods), and is awaited then."""

JITTER_FRACTION = 0.25
"""Jitter adds up to this fraction of the backoff delay (never past ``max_interval``)."""

_MAX_ERROR_CHARS = 500  # keeps a persisted RetryState small whatever the exception says


def normalize_policies(policies: Policies) -> tuple[RetryPolicy, ...]:
    """Turn ``retry_policy=`` into a tuple of policies.

    ``RetryPolicy`` is a NamedTuple, so a lone policy must be recognised before
    it is mistaken for a sequence of its own fields.

    >>> normalize_policies(RetryPolicy(max_attempts=5))[0].max_attempts
    5
    """
    if policies is None:
        return ()
    if isinstance(policies, RetryPolicy):
        return (policies,)
    result = tuple(policies)
    for policy in result:
        if not isinstance(policy, RetryPolicy):
            raise TypeError(f"retry_policy items must be RetryPolicy, got {policy!r}")
    return result


def matches_exception(spec: ExceptionSpec, exc: BaseException) -> bool:
    """Whether ``spec`` (an exception type, a sequence of them, or a predicate) covers ``exc``.

    >>> matches_exception((KeyError, IndexError), IndexError())
    True
    """
    if isinstance(spec, type):
        return isinstance(exc, spec)
    if isinstance(spec, Sequence):
        types = tuple(spec)
        for item in types:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise TypeError(f"a sequence of exception types was expected, got {item!r}")
        return isinstance(exc, types)
    if callable(spec):
        return bool(spec(exc))
    raise TypeError(f"expected an exception type, a sequence of them or a predicate, got {spec!r}")


def select_policy(policies: Policies, exc: BaseException) -> RetryPolicy | None:
    """The first policy whose ``retry_on`` matches ``exc``, or ``None`` (do not retry).

    >>> select_policy([RetryPolicy(retry_on=KeyError), RetryPolicy()], KeyError()).retry_on
    <class 'KeyError'>
    """
    for policy in normalize_policies(policies):
        if matches_exception(policy.retry_on, exc):
            return policy
    return None


def backoff_delay(
    policy: RetryPolicy, attempt: int, *, random: Callable[[], float] = _random.random
) -> float:
    """Seconds to wait after attempt number ``attempt`` (1-based) failed.

    ``min(max_interval, initial_interval * backoff_factor ** (attempt - 1))``; with
    ``jitter`` that delay is stretched by ``random() * JITTER_FRACTION`` of itself
    and capped at ``max_interval`` again. Why proportional rather than
    LangGraph's absolute ``uniform(0, 1)`` seconds: one second of noise swamps a
    50 ms backoff and is lost in a 60 s one, while a fraction spreads callers
    evenly at every scale. The price of the cap is that delays already at
    ``max_interval`` get no jitter — ``max_interval`` is a promise.

    >>> backoff_delay(RetryPolicy(initial_interval=2.0), 1, random=lambda: 1.0)
    2.5
    """
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    try:
        base = policy.initial_interval * policy.backoff_factor ** (attempt - 1)
    except OverflowError:
        base = float("inf")
    delay = min(policy.max_interval, base)
    if policy.jitter:
        delay = min(policy.max_interval, delay * (1.0 + JITTER_FRACTION * random()))
    return max(0.0, delay)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


@dataclass(frozen=True, slots=True)
class RetryState:
    """Where a node's retries stand; small and JSON-able so a checkpoint can keep it.

    ``attempt`` is the 1-based number of the attempt that runs next (what the
    node reads as its attempt number), so the state saved after attempt 2 failed
    has ``attempt == 3``. ``next_attempt_at`` is the wall-clock time that attempt
    may start (``None``: at once); ``last_error`` describes the latest failure.

    >>> s = RetryState.start(now=100.0)
    >>> s = s.after_failure(RetryPolicy(jitter=False), ConnectionError("down"), now=101.0)
    >>> (s.attempt, s.next_attempt_at, s.last_error)
    (2, 101.5, 'ConnectionError: down')
    """

    attempt: int
    first_attempt_at: float
    next_attempt_at: float | None = None
    last_error: str | None = None

    @classmethod
    def start(cls, now: float) -> RetryState:
        """The state before attempt 1."""
        return cls(attempt=1, first_attempt_at=now)

    def after_failure(
        self,
        policy: RetryPolicy | None,
        exc: BaseException,
        now: float,
        *,
        random: Callable[[], float] = _random.random,
    ) -> RetryState | None:
        """The state for the next attempt, or ``None`` to give up.

        ``policy`` is the one :func:`select_policy` chose for ``exc`` (``None``: no
        policy covers it). Gives up when this was attempt ``policy.max_attempts``.
        """
        if policy is None or self.attempt >= policy.max_attempts:
            return None
        delay = backoff_delay(policy, self.attempt, random=random)
        return RetryState(
            attempt=self.attempt + 1,
            first_attempt_at=self.first_attempt_at,
            next_attempt_at=now + delay,
            last_error=_describe(exc),
        )

    def gave_up(self, exc: BaseException) -> RetryState:
        """This state marked final: the failure of ``attempt`` is not retried."""
        return replace(self, next_attempt_at=None, last_error=_describe(exc))

    def wait_before(self, now: float, policies: Policies) -> float:
        """Seconds to sleep before this attempt, clamped to ``[0, max max_interval]``.

        The clamp keeps a wall clock that jumped back (or a state written by a
        machine whose clock was ahead) from stalling a run for hours.
        """
        if self.next_attempt_at is None:
            return 0.0
        bound = max((p.max_interval for p in normalize_policies(policies)), default=0.0)
        return min(max(self.next_attempt_at - now, 0.0), bound)

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict; :meth:`from_dict` reverses it."""
        return {
            "attempt": self.attempt,
            "first_attempt_at": self.first_attempt_at,
            "next_attempt_at": self.next_attempt_at,
            "last_error": self.last_error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetryState:
        """Rebuild a state from :meth:`to_dict` output; ``ValueError`` if malformed."""
        try:
            attempt = data["attempt"]
            first = data["first_attempt_at"]
            next_at = data.get("next_attempt_at")
            last_error = data.get("last_error")
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a RetryState dict: {data!r}") from exc
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValueError(f"RetryState attempt must be an int >= 1, got {attempt!r}")
        if not _is_number(first) or not (next_at is None or _is_number(next_at)):
            raise ValueError(f"RetryState times must be numbers, got {data!r}")
        if last_error is not None and not isinstance(last_error, str):
            raise ValueError(f"RetryState last_error must be a string, got {last_error!r}")
        return cls(
            attempt=attempt,
            first_attempt_at=float(first),
            next_attempt_at=None if next_at is None else float(next_at),
            last_error=last_error,
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def run_with_retry(
    fn: Callable[[RetryState], T],
    policies: Policies,
    *,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.time,
    random: Callable[[], float] = _random.random,
    on_attempt: OnAttempt | None = None,
    state: RetryState | None = None,
) -> T:
    """Call ``fn(state)`` until it returns, retrying as ``policies`` allow.

    ``fn`` receives the :class:`RetryState` of the attempt (``state.attempt`` is
    the attempt number). ``on_attempt(state, exc)`` is called:

    - ``(state, None)`` just before each attempt;
    - ``(next_state, exc)`` after a failure that will be retried —
      ``next_state.next_attempt_at`` is set; persist it to survive a crash;
    - ``(final_state, exc)`` after the failure that ends the retries —
      ``final_state.next_attempt_at is None`` and ``final_state.attempt`` is the
      number of attempts made.

    Pass a restored ``state`` to resume: only the remaining attempts run, after
    only the remaining part of the backoff. When retries run out the last
    exception is re-raised unchanged. Only ``Exception`` is retried; cancellation
    and other ``BaseException``\\ s pass straight through.

    >>> run_with_retry(lambda s: s.attempt, RetryPolicy())
    1
    """
    policies = normalize_policies(policies)
    current = state if state is not None else RetryState.start(clock())
    while True:
        delay = current.wait_before(clock(), policies)
        if delay > 0:
            sleep(delay)
        if on_attempt is not None:
            on_attempt(current, None)
        try:
            return fn(current)
        except Exception as exc:
            following, reported = _failed(current, policies, exc, clock, random)
            if on_attempt is not None:
                on_attempt(reported, exc)
            if following is None:
                raise
            current = following


async def arun_with_retry(
    fn: Callable[[RetryState], Awaitable[T]],
    policies: Policies,
    *,
    sleep: Callable[[float], Awaitable[object]] | None = None,
    clock: Callable[[], float] = time.time,
    random: Callable[[], float] = _random.random,
    on_attempt: AsyncOnAttempt | None = None,
    state: RetryState | None = None,
) -> T:
    """The async twin of :func:`run_with_retry`: same decisions, ``await``\\ s instead.

    >>> async def node(state): return state.attempt
    >>> asyncio.run(arun_with_retry(node, RetryPolicy()))
    1
    """
    if sleep is None:
        import asyncio  # here, not at import time: asyncio is slow to import

        sleep = asyncio.sleep
    policies = normalize_policies(policies)
    current = state if state is not None else RetryState.start(clock())
    while True:
        delay = current.wait_before(clock(), policies)
        if delay > 0:
            await sleep(delay)
        if on_attempt is not None:
            await _awaited(on_attempt(current, None))
        try:
            return await fn(current)
        except Exception as exc:
            following, reported = _failed(current, policies, exc, clock, random)
            if on_attempt is not None:
                await _awaited(on_attempt(reported, exc))
            if following is None:
                raise
            current = following


async def _awaited(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


def _failed(
    current: RetryState,
    policies: tuple[RetryPolicy, ...],
    exc: Exception,
    clock: Callable[[], float],
    random: Callable[[], float],
) -> tuple[RetryState | None, RetryState]:
    """The failure step both loops share: the state of the next attempt (None when
    retries are over) and the state ``on_attempt`` is told of."""
    following = current.after_failure(select_policy(policies, exc), exc, clock(), random=random)
    return following, following if following is not None else current.gave_up(exc)
