"""Every exception Trellis raises, as one tree.

Each class also subclasses the builtin a caller would naturally catch, so
``except ValueError`` around a bad update or ``except RuntimeError`` around a
failed run keeps working. Where LangGraph has the same error, the name is the
same.

::

    TrellisError
    ├── GraphValidationError      (ValueError)   compile time; lists every problem
    ├── InvalidUpdateError        (ValueError)   bad node return, unknown key, two writes
    ├── RoutingError              (ValueError)   a router named no node
    ├── GraphRecursionError       (RecursionError) recursion_limit reached
    ├── NodeError                 (RuntimeError) a node failed after its retries
    │   ├── NodeTimeoutError                     a node exceeded its timeout
    │   └── NodeCancelledError                   a node raised asyncio.CancelledError
    ├── CircuitOpenError          (RuntimeError) the node's breaker is open
    ├── EmptyInputError           (ValueError)   no input and nothing to resume
    ├── InvalidConfigError        (ValueError)   e.g. no thread_id with a checkpointer
    ├── InterruptError            (RuntimeError) interrupt/resume misuse
    ├── CheckpointError           (RuntimeError)
    │   ├── CheckpointCorruptError               a stored blob cannot be decoded
    │   ├── CheckpointNotFoundError (+LookupError) unknown thread or checkpoint
    │   ├── ConcurrentUpdateError                the thread's head moved underneath
    │   ├── GraphVersionError                    the graph lacks a pending node
    │   ├── SchemaVersionError                   the database is from a newer Trellis
    │   └── SerializationError (+TypeError)      a value has no codec
    └── ApprovalError             (RuntimeError)
        ├── AlreadyDecidedError                  a request was decided already
        └── ApprovalNotFoundError (+LookupError) unknown or expired request
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyDecidedError",
    "ApprovalError",
    "ApprovalNotFoundError",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CircuitOpenError",
    "ConcurrentUpdateError",
    "EmptyInputError",
    "GraphRecursionError",
    "GraphValidationError",
    "GraphVersionError",
    "InterruptError",
    "InvalidConfigError",
    "InvalidUpdateError",
    "NodeCancelledError",
    "NodeError",
    "NodeTimeoutError",
    "RoutingError",
    "SchemaVersionError",
    "SerializationError",
    "TrellisError",
]


class TrellisError(Exception):
    """Base of every Trellis error."""


class GraphValidationError(TrellisError, ValueError):
    """The graph is malformed; ``problems`` lists every issue found at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"graph is invalid ({len(self.problems)} problem(s)):\n{lines}")


class InvalidUpdateError(TrellisError, ValueError):
    """A node returned something the state cannot take.

    Raised for a return value of the wrong type, a key the schema lacks, input
    that does not fit the input schema, and two writes to a last-value key in
    one step.
    """


class RoutingError(TrellisError, ValueError):
    """A router returned a value that names no node and no fallback applies."""


class GraphRecursionError(TrellisError, RecursionError):
    """The run reached ``recursion_limit`` super-steps without finishing."""


class NodeError(TrellisError, RuntimeError):
    """A node failed for good (after its retries).

    ``node`` is the node's name, ``attempts`` how many times it ran; the
    original exception is chained as ``__cause__``.
    """

    def __init__(
        self,
        node: str,
        attempts: int,
        error: BaseException | None = None,
        *,
        message: str | None = None,
    ) -> None:
        self.node = node
        self.attempts = attempts
        self.error = error
        if message is None:
            detail = f": {type(error).__name__}: {error}" if error is not None else ""
            message = f"node {node!r} failed after {attempts} attempt(s){detail}"
        super().__init__(message)

    @property
    def original(self) -> BaseException:
        """What the node raised (this error itself when it is its own cause, a timeout).

        >>> NodeError("fetch", 3, ConnectionError("down")).original
        ConnectionError('down')
        """
        return self.error if self.error is not None else self


class NodeCancelledError(NodeError):
    """A node raised ``asyncio.CancelledError`` itself, though nothing cancelled
    its run: it fails like any error, rather than pass for a cancellation.

    >>> NodeCancelledError("fetch").node
    'fetch'
    """

    def __init__(self, node: str) -> None:
        super().__init__(node, 1, message=f"node {node!r} raised asyncio.CancelledError")


class NodeTimeoutError(NodeError):
    """A node attempt ran longer than its ``timeout``."""

    def __init__(self, node: str, timeout: float, attempts: int = 1) -> None:
        self.timeout = timeout
        super().__init__(node, attempts, message=f"node {node!r} timed out after {timeout:g}s")


class CircuitOpenError(TrellisError, RuntimeError):
    """The circuit breaker guarding a node is open; the node was not called.

    ``trial_in_flight``: the breaker is half open and its trial calls are all
    taken; ``retry_after`` is then 0, as their outcome, not a time, decides.
    """

    def __init__(
        self,
        breaker: str,
        node: str | None = None,
        retry_after: float = 0.0,
        *,
        trial_in_flight: bool = False,
    ) -> None:
        self.breaker = breaker
        self.node = node
        self.retry_after = retry_after
        self.trial_in_flight = trial_in_flight
        where = f" for node {node!r}" if node else ""
        if trial_in_flight:
            message = (
                f"circuit {breaker!r} is half open{where} and every trial call is taken; "
                "the trials in flight decide whether it closes"
            )
        else:
            message = (
                f"circuit {breaker!r} is open{where}; next trial in {max(retry_after, 0.0):.3g}s"
            )
        super().__init__(message)


class EmptyInputError(TrellisError, ValueError):
    """``invoke(None)`` on a thread with nothing to resume."""


class InvalidConfigError(TrellisError, ValueError):
    """The ``config`` of a call is missing something or has a wrong value."""


class InterruptError(TrellisError, RuntimeError):
    """``interrupt()`` or ``Command(resume=...)`` used where it cannot work."""


class CheckpointError(TrellisError, RuntimeError):
    """Base of persistence errors."""


class CheckpointCorruptError(CheckpointError):
    """A stored blob cannot be decoded; nothing in it was executed."""

    def __init__(
        self, message: str, *, thread_id: str | None = None, key: str | None = None
    ) -> None:
        self.thread_id = thread_id
        self.key = key
        super().__init__(message)


class CheckpointNotFoundError(CheckpointError, LookupError):
    """An unknown thread id or checkpoint id."""


class ConcurrentUpdateError(CheckpointError):
    """Another writer advanced the thread first; nothing was overwritten."""


class GraphVersionError(CheckpointError):
    """A checkpoint names a node the current graph does not have."""


class SchemaVersionError(CheckpointError):
    """The database schema is newer than this version of Trellis understands."""


class SerializationError(CheckpointError, TypeError):
    """A value has no codec. ``key`` and ``type_name`` say which."""

    def __init__(
        self, message: str, *, key: str | None = None, type_name: str | None = None
    ) -> None:
        self.key = key
        self.type_name = type_name
        super().__init__(message)


class ApprovalError(TrellisError, RuntimeError):
    """Base of approval-queue errors."""


class AlreadyDecidedError(ApprovalError):
    """The approval request was decided (or expired) before this decision."""

    def __init__(self, request_id: str, status: Any = None) -> None:
        self.request_id = request_id
        self.status = status
        super().__init__(f"approval request {request_id!r} is already {status or 'decided'}")


class ApprovalNotFoundError(ApprovalError, LookupError):
    """No approval request has that id."""
