"""Small values shared by every layer: control flow, snapshots, policies.

A leaf module: it imports nothing else from Trellis, so anything may import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, NamedTuple, TypeVar

from typing_extensions import TypedDict

__all__ = [
    "END",
    "START",
    "Command",
    "Durability",
    "ExecutionInfo",
    "Interrupt",
    "Overwrite",
    "RetryPolicy",
    "RunnableConfig",
    "Runtime",
    "Send",
    "StateSnapshot",
    "StateTask",
    "StreamMode",
    "StreamWriter",
    "default_retry_on",
]

START = "__start__"
"""The virtual node a run enters from: ``add_edge(START, "first")``."""
END = "__end__"
"""The virtual node a run leaves to: ``add_edge("last", END)``."""

StreamMode = Literal["values", "updates", "custom", "debug", "events"]
Durability = Literal["sync", "async", "exit"]
StreamWriter = Callable[[Any], None]

N = TypeVar("N", bound=Hashable)
ContextT = TypeVar("ContextT")


class RunnableConfig(TypedDict, total=False):
    """The per-call configuration dict, shaped as in LangGraph.

    >>> config: RunnableConfig = {"configurable": {"thread_id": "t1"}, "recursion_limit": 50}
    """

    configurable: dict[str, Any]
    recursion_limit: int
    metadata: dict[str, Any]
    tags: list[str]
    run_id: Any
    run_name: str
    max_concurrency: int
    callbacks: Any


@dataclass(frozen=True, slots=True)
class Send:
    """Schedule ``node`` in the next step with ``arg`` as its whole input.

    >>> def fan_out(state):
    ...     return [Send("work", {"item": x}) for x in state["items"]]
    """

    node: str
    arg: Any

    def __repr__(self) -> str:
        return f"Send(node={self.node!r}, arg={self.arg!r})"


@dataclass(frozen=True, slots=True)
class Command(Generic[N]):
    """Update the state and choose what runs next, from a node or as input.

    >>> def decide(state):
    ...     return Command(update={"tries": state["tries"] + 1}, goto="retry")

    As graph input, ``Command(resume=value)`` answers a pending ``interrupt``.
    """

    graph: str | None = None
    update: Any = None
    resume: Any = None
    goto: Send | Sequence[Send | N] | N = ()

    PARENT: ClassVar[Literal["__parent__"]] = "__parent__"

    def goto_list(self) -> list[Any]:
        """``goto`` as a list, whatever form it was given in."""
        goto = self.goto
        if isinstance(goto, (str, Send)):
            return [goto]
        if not goto:
            return []
        return list(goto)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Interrupt:
    """A pending ``interrupt(value)``; resume it with ``Command(resume=...)``.

    ``id`` is unique per interrupt call, so parallel interrupts resume by id.
    """

    value: Any
    id: str = ""


@dataclass(frozen=True, slots=True)
class Overwrite:
    """Write ``value`` to a key with a reducer as is, bypassing the reducer.

    >>> def reset(state):
    ...     return {"messages": Overwrite([])}

    The other writes to that key in the same step are dropped; two
    ``Overwrite``s of one key in one step raise ``InvalidUpdateError``. As in
    LangGraph, the dict forms ``{"__overwrite__": value}`` and
    ``{"type": "__overwrite__", "value": value}`` (what JSON makes of an
    ``Overwrite``) count as one too.
    """

    value: Any
    type: Literal["__overwrite__"] = "__overwrite__"


@dataclass(frozen=True, slots=True)
class Replaced:
    """A reviewer's edit that replaced a reducer key's value (an ``Overwrite`` in the
    edit): the node's own writes, and the step's after it, fold into ``value``
    rather than being kept out. Made by the engine, never by a node."""

    value: Any


class RetryPolicy(NamedTuple):
    """How a failing node is retried; fields and defaults as in LangGraph.

    >>> builder.add_node("call_api", call_api, retry_policy=RetryPolicy(max_attempts=5))
    """

    initial_interval: float = 0.5
    backoff_factor: float = 2.0
    max_interval: float = 128.0
    max_attempts: int = 3
    jitter: bool = True
    retry_on: (
        type[BaseException] | Sequence[type[BaseException]] | Callable[[BaseException], bool]
    ) = lambda exc: default_retry_on(exc)


_NEVER_RETRY: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    ArithmeticError,
    ImportError,
    LookupError,
    NameError,
    SyntaxError,
    RuntimeError,
    ReferenceError,
    StopIteration,
    StopAsyncIteration,
    OSError,
)


def default_retry_on(exc: BaseException) -> bool:
    """LangGraph's default: retry transient failures, never programming errors.

    Connection errors and HTTP 5xx responses are retried; ``ValueError``,
    ``TypeError``, ``KeyError`` and the other programming errors are not.
    """
    if isinstance(exc, ConnectionError):
        return True
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return 500 <= status < 600
    # A NodeTimeoutError subclasses RuntimeError but is transient by nature.
    if type(exc).__name__ == "NodeTimeoutError":
        return True
    return not isinstance(exc, _NEVER_RETRY)


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    """Facts about the running task, readable as ``runtime.execution_info``."""

    task_id: str
    thread_id: str | None
    checkpoint_id: str | None
    node: str
    step: int
    node_attempt: int = 1
    node_first_attempt_time: float | None = None
    run_id: str | None = None
    checkpoint_ns: str = ""  # "" for the top graph, "node:task" inside a subgraph


@dataclass(frozen=True, slots=True)
class Runtime(Generic[ContextT]):
    """What a node may ask for by declaring a ``runtime`` parameter.

    >>> def greet(state, runtime: Runtime[MyContext]):
    ...     return {"text": f"hello {runtime.context.user}"}
    """

    context: ContextT = None  # type: ignore[assignment]
    stream_writer: StreamWriter = lambda _chunk: None
    execution_info: ExecutionInfo | None = None
    store: Any = None
    previous: Any = None

    def override(self, **changes: Any) -> Runtime[ContextT]:
        return dataclasses.replace(self, **changes)


class StateTask(NamedTuple):
    """A task that is next to run (or failed or interrupted) at a checkpoint.

    A named tuple, as LangGraph's: ``task.name`` or ``task[1]``.

    >>> StateTask("f3a9", "review")._asdict()["name"]
    'review'
    """

    id: str
    name: str
    path: tuple[Any, ...] = ()
    error: Any = None
    interrupts: tuple[Interrupt, ...] = ()
    state: Any = None
    result: Any = None


class StateSnapshot(NamedTuple):
    """The state of a thread at one checkpoint, as ``get_state`` returns it.

    A named tuple, as LangGraph's: ``snapshot.values``, ``snapshot[0]``,
    ``values, next_nodes, *_ = snapshot`` and ``snapshot._asdict()`` all work.

    >>> graph.get_state({"configurable": {"thread_id": "t1"}}).next
    ('review',)
    """

    values: dict[str, Any]
    next: tuple[str, ...]
    config: RunnableConfig
    metadata: dict[str, Any] | None
    created_at: str | None
    parent_config: RunnableConfig | None
    tasks: tuple[StateTask, ...] = ()
    interrupts: tuple[Interrupt, ...] = ()


class StateUpdate(NamedTuple):
    """One update of a ``bulk_update_state`` superstep, as LangGraph's.

    ``task_id`` is accepted for LangGraph's signature; Trellis names the task itself.

    >>> StateUpdate({"approved": True}, as_node="review")
    StateUpdate(values={'approved': True}, as_node='review', task_id=None)
    """

    values: dict[str, Any] | None
    as_node: str | None = None
    task_id: str | None = None
