"""``ainvoke`` on PostgreSQL never makes a blocking database call on its event loop.

Each test runs a real PostgreSQL saver (and, for gates, its approval store) whose
blocking entry points are wrapped to note when they run on a thread that has an
event loop running: a server awaiting many runs would stall them all for every
round trip.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, RetryPolicy, StateGraph
from trellis.hitl import Approval, ReviewQueue
from trellis.hitl.store_postgres import PostgresApprovalStore
from trellis.persist.events import SqlEventLog, event_log_for
from trellis.persist.postgres import PostgresSaver

pytestmark = pytest.mark.postgres


class State(TypedDict, total=False):
    n: int
    log: Annotated[list[str], operator.add]


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def blocked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The blocking calls made on an event loop's thread, by name."""
    seen: list[str] = []

    def watch(cls: type, name: str) -> None:
        original: Callable[..., Any] = getattr(cls, name)

        @functools.wraps(original)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if _on_loop():
                seen.append(f"{cls.__name__}.{name}")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    watch(PostgresSaver, "_run")
    watch(PostgresApprovalStore, "_tx")
    watch(PostgresApprovalStore, "__init__")
    watch(SqlEventLog, "append")
    return seen


@pytest.fixture
def saver(pg_url: str, pg_schema: str) -> Iterator[PostgresSaver]:
    with PostgresSaver.from_conn_string(pg_url, schema=pg_schema) as made:
        made.setup()  # before any loop runs: setup is the caller's, not the run's
        yield made


def cfg() -> dict[str, Any]:
    return {"configurable": {"thread_id": uuid.uuid4().hex}}


def one_node(name: str, fn: Any, **options: Any) -> StateGraph:
    """START -> name -> END."""
    b = StateGraph(State)
    b.add_node(name, fn, **options)
    b.add_edge(START, name)
    b.add_edge(name, END)
    return b


def test_a_retried_node_saves_its_retry_state_without_blocking(
    saver: PostgresSaver, blocked: list[str]
) -> None:
    calls = []

    async def flaky(state: State) -> State:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("first call fails")
        return {"log": ["flaky"]}

    b = one_node("flaky", flaky, retry_policy=RetryPolicy(max_attempts=2, initial_interval=0))
    out = asyncio.run(b.compile(checkpointer=saver).ainvoke({"n": 1}, cfg()))
    assert out["log"] == ["flaky"] and len(calls) == 2
    assert blocked == []


def test_a_subgraph_reads_its_own_checkpoint_without_blocking(
    saver: PostgresSaver, blocked: list[str]
) -> None:
    inner = one_node("deep", lambda s: {"log": ["deep"]})
    b = one_node("sub", inner.compile())
    out = asyncio.run(b.compile(checkpointer=saver).ainvoke({"n": 1}, cfg()))
    assert out["log"] == ["deep"]
    assert blocked == []


def test_an_approval_gate_uses_its_store_without_blocking(
    saver: PostgresSaver, blocked: list[str]
) -> None:
    b = one_node("act", lambda s: {"log": ["act"]}, approval=Approval(risk="high"))
    app = b.compile(checkpointer=saver)
    config = cfg()
    paused = asyncio.run(app.ainvoke({"n": 1}, config))
    (pending,) = paused["__interrupt__"]
    queue = ReviewQueue(saver, graph=app)  # made here: a queue is the caller's, not the run's
    asyncio.run(queue.aapprove(pending.id, reviewer="alice"))
    assert app.get_state(config).values["log"] == ["act"]
    assert blocked == []


def test_a_traced_run_stores_its_events_without_blocking(
    saver: PostgresSaver, blocked: list[str]
) -> None:
    b = one_node("work", lambda s: {"log": ["work"]})
    config = cfg()
    asyncio.run(b.compile(checkpointer=saver, trace=True).ainvoke({"n": 1}, config))
    kinds = [row["kind"] for row in event_log_for(saver).list(config["configurable"]["thread_id"])]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end" and "task_end" in kinds
    assert blocked == []


def test_a_traced_runs_compensations_are_stored_without_blocking(
    saver: PostgresSaver, blocked: list[str]
) -> None:
    undone: list[str] = []

    def fail(state: State) -> State:
        raise ValueError("the second step fails")

    b = StateGraph(State)
    b.add_node("book", lambda s: {"log": ["book"]}, compensate=lambda s: undone.append("book"))
    b.add_node("fail", fail)
    b.add_edge(START, "book")
    b.add_edge("book", "fail")
    b.add_edge("fail", END)
    config = cfg()
    with pytest.raises(ValueError, match="second step"):
        asyncio.run(b.compile(checkpointer=saver, trace=True).ainvoke({"n": 1}, config))
    assert undone == ["book"]
    kinds = [row["kind"] for row in event_log_for(saver).list(config["configurable"]["thread_id"])]
    assert kinds[-1] == "compensation"
    assert blocked == []
