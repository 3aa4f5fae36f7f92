"""Circuit breakers, shared by name within a process.

A breaker watches the calls to one dependency. Closed: calls go through and
consecutive failures are counted. At ``failure_threshold`` it opens: calls fail
at once with :class:`~trellis.errors.CircuitOpenError` and the node is not
called. After ``recovery_timeout`` seconds the next caller finds it half open and
up to ``half_open_max_calls`` trial calls go through; the first success closes
it, a failure opens it again for another ``recovery_timeout``.

``CircuitBreaker("payments")`` returns the one breaker of that name in the
process, so every node and every graph guarding the same dependency sees the
same state. State changes under a ``threading.Lock`` that is never held while a
node runs or a listener is called, and nothing awaits inside it, so one breaker
serves threads and event loops alike.

>>> breaker = CircuitBreaker("payments", failure_threshold=3, recovery_timeout=10.0)
>>> builder.add_node("charge", charge, circuit=breaker)
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from trellis.errors import CircuitOpenError
from trellis.resilience.retry import ExceptionSpec, matches_exception

__all__ = [
    "BreakerStats",
    "CircuitBreaker",
    "CircuitState",
    "Listener",
    "Transition",
    "get_breaker",
    "reset_breakers",
]

_log = logging.getLogger("trellis.resilience")


class CircuitState(enum.StrEnum):
    """A breaker's state; compares equal to its string value (``"open"``)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


Listener = Callable[[str, CircuitState, CircuitState], None]
"""``listener(breaker_name, old_state, new_state)``, called after each state change."""

Transition = tuple[CircuitState, CircuitState]
"""``(old_state, new_state)``: one state change."""
_NO_MOVES: tuple[Transition, ...] = ()


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A consistent reading of a breaker, for metrics and health pages."""

    name: str
    state: CircuitState
    failure_count: int
    success_count: int
    rejected_count: int
    opened_at: float | None


_registry: dict[str, CircuitBreaker] = {}
_registry_lock = threading.Lock()


def _same_callable(a: object, b: object) -> bool:
    # The same lambda evaluated twice (a graph built twice) shares its code object.
    if a is b or a == b:
        return True
    code = getattr(a, "__code__", None)
    return code is not None and code is getattr(b, "__code__", None)


class CircuitBreaker:
    """A circuit breaker; constructing one with a name already in use returns that breaker.

    Settings given for an existing name must match the registered ones, or
    ``ValueError`` names the breaker and each differing setting. ``failure_on``
    says which exceptions count as failures (default: every ``Exception``); any
    other exception means the dependency answered and counts as a success.

    >>> breaker = CircuitBreaker("search", failure_threshold=2, recovery_timeout=5.0)
    >>> breaker is CircuitBreaker("search", failure_threshold=2, recovery_timeout=5.0)
    True
    >>> with breaker.guard("lookup"):
    ...     result = call_search_api()
    """

    name: str
    failure_threshold: int
    recovery_timeout: float
    half_open_max_calls: int

    def __new__(
        cls,
        name: str,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        failure_on: ExceptionSpec | None = None,
    ) -> CircuitBreaker:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a circuit breaker needs a non-empty name, got {name!r}")
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int):
            raise TypeError(f"failure_threshold must be an int, got {failure_threshold!r}")
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if not recovery_timeout >= 0:
            raise ValueError(f"recovery_timeout must be >= 0 seconds, got {recovery_timeout!r}")
        if isinstance(half_open_max_calls, bool) or not isinstance(half_open_max_calls, int):
            raise TypeError(f"half_open_max_calls must be an int, got {half_open_max_calls!r}")
        if half_open_max_calls < 1:
            raise ValueError(f"half_open_max_calls must be >= 1, got {half_open_max_calls}")
        settings: dict[str, Any] = {
            "failure_threshold": failure_threshold,
            "recovery_timeout": float(recovery_timeout),
            "half_open_max_calls": half_open_max_calls,
            "clock": clock,
            "failure_on": failure_on,
        }
        with _registry_lock:
            existing = _registry.get(name)
            if existing is not None:
                existing._check_same(cls, settings)
                return existing
            self = super().__new__(cls)
            self._setup(name, settings)
            _registry[name] = self
            return self

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        failure_on: ExceptionSpec | None = None,
    ) -> None:
        # Everything happens in __new__: re-running setup here would wipe the
        # state of the shared breaker that __new__ may have returned.
        pass

    def _setup(self, name: str, settings: dict[str, Any]) -> None:
        self.name = name
        self.failure_threshold = settings["failure_threshold"]
        self.recovery_timeout = settings["recovery_timeout"]
        self.half_open_max_calls = settings["half_open_max_calls"]
        self._clock: Callable[[], float] = settings["clock"]
        self._failure_on: ExceptionSpec | None = settings["failure_on"]
        self._lock = threading.Lock()
        # Reentrant: a listener may itself cause a transition and so a dispatch.
        self._dispatch_lock = threading.RLock()
        self._pending: deque[tuple[CircuitState, CircuitState]] = deque()
        self._listeners: tuple[Listener, ...] = ()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._successes = 0
        self._rejected = 0
        self._opened_at: float | None = None
        self._trials = 0
        # Bumped on every transition; an outcome from an older epoch is stale.
        self._epoch = 0

    def _check_same(self, cls: type, settings: dict[str, Any]) -> None:
        wanted = {
            "failure_threshold": self.failure_threshold,
            "recovery_timeout": self.recovery_timeout,
            "half_open_max_calls": self.half_open_max_calls,
            "clock": self._clock,
            "failure_on": self._failure_on,
        }
        diffs = [
            f"{key}={settings[key]!r} (registered: {value!r})"
            for key, value in wanted.items()
            if not _same_callable(settings[key], value)
        ]
        if type(self) is not cls:
            diffs.append(f"class {cls.__name__} (registered: {type(self).__name__})")
        if diffs:
            raise ValueError(
                f"circuit breaker {self.name!r} already exists with other settings: "
                + ", ".join(diffs)
            )

    # -- reading ------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state. ``OPEN`` turns ``HALF_OPEN`` at the next call, not by itself."""
        return self._state

    @property
    def failure_count(self) -> int:
        """Consecutive failures; a success or closing resets it."""
        return self._failures

    @property
    def success_count(self) -> int:
        """Successful calls since the breaker was created or reset."""
        return self._successes

    @property
    def rejected_count(self) -> int:
        """Calls refused with ``CircuitOpenError`` since the breaker was created or reset."""
        return self._rejected

    @property
    def opened_at(self) -> float | None:
        """Clock reading when the breaker last opened; ``None`` when closed."""
        return self._opened_at

    def stats(self) -> BreakerStats:
        """All counters read at one instant."""
        with self._lock:
            return BreakerStats(
                self.name,
                self._state,
                self._failures,
                self._successes,
                self._rejected,
                self._opened_at,
            )

    # -- calling ------------------------------------------------------------

    def before_call(self, node: str | None = None) -> int:
        """Admit a call or raise ``CircuitOpenError``; returns a permit for the outcome.

        Pass the permit to :meth:`record_success` / :meth:`record_failure` so an
        outcome that arrives after the breaker moved on (a call admitted before it
        opened) does not drive it.
        """
        return self.admit(node)[0]

    def admit(self, node: str | None = None) -> tuple[int, tuple[Transition, ...]]:
        """:meth:`before_call`, also returning the state change admitting the call
        made (open to half open), if any.

        Each change is returned to the one call that made it, so callers that
        report changes (the engine's run events) report each once, however many
        calls share the breaker.
        """
        moved = _NO_MOVES
        with self._lock:
            now = self._clock()
            if self._state is CircuitState.OPEN:
                assert self._opened_at is not None
                wait = self._opened_at + self.recovery_timeout - now
                if wait > 0:
                    self._rejected += 1
                    raise CircuitOpenError(self.name, node, wait)
                moved = (self._move(CircuitState.HALF_OPEN),)
            if self._state is CircuitState.HALF_OPEN:
                if self._trials >= self.half_open_max_calls:
                    self._rejected += 1
                    # No time to promise: the trial in flight decides.
                    raise CircuitOpenError(self.name, node, 0.0, trial_in_flight=True)
                self._trials += 1
            permit = self._epoch
            notify = bool(self._pending)
        if notify:
            self._dispatch()
        return permit, moved

    def record_success(self, permit: int | None = None) -> tuple[Transition, ...]:
        """The call succeeded: closes a half-open breaker, resets the failure streak.

        Returns the state change this outcome made, if any (see :meth:`admit`).
        """
        moved = _NO_MOVES
        with self._lock:
            self._successes += 1
            if permit is not None and permit != self._epoch:
                return moved
            if self._state is CircuitState.HALF_OPEN:
                moved = (self._move(CircuitState.CLOSED),)
            elif self._state is CircuitState.CLOSED:
                self._failures = 0
            notify = bool(self._pending)
        if notify:
            self._dispatch()
        return moved

    def record_failure(
        self, exc: BaseException | None = None, permit: int | None = None
    ) -> tuple[Transition, ...]:
        """The call failed with ``exc``; one that ``failure_on`` excludes counts as a success.

        Returns the state change this outcome made, if any (see :meth:`admit`).
        """
        failure_on = self._failure_on
        if exc is not None and failure_on is not None and not matches_exception(failure_on, exc):
            return self.record_success(permit)
        moved = _NO_MOVES
        with self._lock:
            if permit is not None and permit != self._epoch:
                return moved
            if self._state is CircuitState.HALF_OPEN:
                self._failures += 1
                moved = (self._move(CircuitState.OPEN),)
            elif self._state is CircuitState.CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    moved = (self._move(CircuitState.OPEN),)
            notify = bool(self._pending)
        if notify:
            self._dispatch()
        return moved

    def release(self, permit: int) -> None:
        """The call ended with no verdict (cancelled): free its half-open trial slot."""
        with self._lock:
            if permit == self._epoch and self._state is CircuitState.HALF_OPEN:
                self._trials = max(0, self._trials - 1)

    def guard(self, node: str | None = None) -> _Guard:
        """A ``with`` / ``async with`` block that is one call through the breaker.

        >>> async with breaker.guard("charge"):
        ...     await charge_card()
        """
        return _Guard(self, node)

    def reset(self) -> None:
        """Close the breaker and zero its counters (an operator's manual override)."""
        with self._lock:
            if self._state is not CircuitState.CLOSED:
                self._move(CircuitState.CLOSED)
            self._failures = self._successes = self._rejected = 0
            notify = bool(self._pending)
        if notify:
            self._dispatch()

    # -- events -------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(name, old_state, new_state)`` after every state change."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        with self._lock:
            self._listeners = tuple(item for item in self._listeners if item != listener)

    def _move(self, new: CircuitState) -> Transition:
        # Caller holds self._lock.
        old, self._state = self._state, new
        self._epoch += 1
        self._trials = 0
        if new is CircuitState.OPEN:
            self._opened_at = self._clock()
        elif new is CircuitState.CLOSED:
            self._opened_at = None
            self._failures = 0
        self._pending.append((old, new))
        return old, new

    def _dispatch(self) -> None:
        # One dispatcher at a time, draining a FIFO: listeners see transitions in
        # the order they happened even when several threads cause them.
        with self._dispatch_lock:
            while True:
                with self._lock:
                    if not self._pending:
                        return
                    old, new = self._pending.popleft()
                    listeners = self._listeners
                for listener in listeners:
                    try:
                        listener(self.name, old, new)
                    except Exception:
                        _log.exception("circuit breaker %r listener failed", self.name)

    # -- identity -----------------------------------------------------------

    def __copy__(self) -> CircuitBreaker:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> CircuitBreaker:
        return self  # copying a graph's nodes must not split a shared breaker

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.name!r}, state={self._state.value}, "
            f"failures={self._failures}/{self.failure_threshold})"
        )


class _Guard:
    """One call through a breaker, as a sync or async context manager."""

    __slots__ = ("_breaker", "_node", "_permit")

    def __init__(self, breaker: CircuitBreaker, node: str | None) -> None:
        self._breaker = breaker
        self._node = node
        self._permit = -1

    def __enter__(self) -> CircuitBreaker:
        self._permit = self._breaker.before_call(self._node)
        return self._breaker

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self._breaker.record_success(self._permit)
        elif isinstance(exc, Exception):
            self._breaker.record_failure(exc, self._permit)
        else:  # cancelled or interrupted: no verdict on the dependency
            self._breaker.release(self._permit)

    async def __aenter__(self) -> CircuitBreaker:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def get_breaker(name: str) -> CircuitBreaker | None:
    """The breaker registered under ``name``, if any."""
    with _registry_lock:
        return _registry.get(name)


def reset_breakers() -> None:
    """Close every breaker and forget them all, so names can be reused with new settings.

    Meant for tests; a breaker still referenced elsewhere keeps working on its own.
    """
    with _registry_lock:
        breakers = list(_registry.values())
        _registry.clear()
    for breaker in breakers:
        breaker.reset()
