"""Resilience primitives the engine wraps around each node attempt.

- :mod:`~trellis.resilience.retry`: backoff schedule, policy choice, persisted
  :class:`RetryState`, and ``run_with_retry`` / ``arun_with_retry``.
- :mod:`~trellis.resilience.timeout`: per-attempt timeouts for sync and async
  nodes, with a watchdog for nodes that block the event loop.
- :mod:`~trellis.resilience.circuit`: circuit breakers shared by name.
"""

from trellis.resilience.circuit import (
    BreakerStats,
    CircuitBreaker,
    CircuitState,
    get_breaker,
    reset_breakers,
)
from trellis.resilience.retry import (
    RetryState,
    arun_with_retry,
    backoff_delay,
    run_with_retry,
    select_policy,
)
from trellis.resilience.timeout import (
    acall_sync_with_timeout,
    acall_with_timeout,
    call_with_timeout,
)

__all__ = [
    "BreakerStats",
    "CircuitBreaker",
    "CircuitState",
    "RetryState",
    "acall_sync_with_timeout",
    "acall_with_timeout",
    "arun_with_retry",
    "backoff_delay",
    "call_with_timeout",
    "get_breaker",
    "reset_breakers",
    "run_with_retry",
    "select_policy",
]
