"""RemainingSteps and IsLastStep: filled in for each step, never stored or written.
(How they count, against LangGraph: tests/differential/test_managed_values.py.)"""

from __future__ import annotations

import operator
import uuid
from typing import Annotated, Any, NotRequired

import pydantic
import pytest
from typing_extensions import TypedDict

from trellis import END, START, IsLastStep, MemorySaver, RemainingSteps, StateGraph
from trellis.errors import InvalidUpdateError


class S(TypedDict, total=False):
    n: int
    log: Annotated[list[Any], operator.add]
    remaining_steps: NotRequired[RemainingSteps]  # as create_react_agent's state
    is_last_step: IsLastStep


class Counter(TypedDict, total=False):
    n: int


def _seen(state: S) -> dict[str, Any]:
    return {"n": state["n"] + 1, "log": [(state["remaining_steps"], state["is_last_step"])]}


def _typed_loop(fn: Any) -> Any:
    builder = StateGraph(S)
    builder.add_node("a", fn)
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", lambda s: END if s["n"] >= 3 else "a")
    return builder


def test_a_node_reads_the_steps_left_and_whether_this_is_the_last() -> None:
    out = _typed_loop(_seen).compile().invoke({"n": 0}, {"recursion_limit": 4})
    assert out["log"] == [(3, False), (2, False), (1, True)]


def test_managed_keys_are_never_stored_or_returned() -> None:
    graph = _typed_loop(_seen).compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    chunks = list(graph.stream({"n": 0}, config, stream_mode="values"))
    assert all(set(c) <= {"n", "log"} for c in chunks)
    assert set(graph.get_state(config).values) == {"n", "log"}


def test_a_router_can_stop_before_the_limit() -> None:
    builder = StateGraph(S)
    builder.add_node("a", lambda s: {"n": s["n"] + 1})
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", lambda s: END if s["remaining_steps"] <= 2 else "a")
    assert builder.compile().invoke({"n": 0}, {"recursion_limit": 10})["n"] == 8


def test_a_node_that_writes_a_managed_key_is_told_it_is_managed() -> None:
    graph = _typed_loop(lambda s: {"n": 3, "remaining_steps": 99}).compile()
    with pytest.raises(InvalidUpdateError, match=r"'remaining_steps' is managed") as info:
        graph.invoke({"n": 0})
    assert "node 'a'" in str(info.value)


def test_an_input_naming_a_managed_key_is_refused() -> None:
    with pytest.raises(InvalidUpdateError, match=r"'is_last_step' is managed"):
        _typed_loop(_seen).compile().invoke({"n": 0, "is_last_step": True})


def test_a_node_whose_input_schema_has_no_managed_key_is_not_given_one() -> None:
    seen: list[dict[str, Any]] = []

    def count(state: Counter) -> dict[str, Any]:
        seen.append(dict(state))
        return {"n": state["n"] + 1}

    _typed_loop(count).compile().invoke({"n": 2})
    assert seen == [{"n": 2}]


class Agent(pydantic.BaseModel):
    n: int = 0
    remaining_steps: RemainingSteps = 25


def test_a_pydantic_state_is_given_the_steps_left() -> None:
    def step(state: Agent) -> dict[str, Any]:
        assert isinstance(state, Agent)
        return {"n": state.remaining_steps}

    builder = StateGraph(Agent)
    builder.add_node("a", step)
    builder.add_edge(START, "a")
    assert builder.compile().invoke({"n": 0}, {"recursion_limit": 7}) == {"n": 6}


def test_langgraphs_own_markers_work_too() -> None:
    managed = pytest.importorskip("langgraph.managed")
    schema = TypedDict(  # type: ignore[operator]  # noqa: UP013
        "schema", {"n": int, "remaining_steps": managed.RemainingSteps}, total=False
    )
    builder = StateGraph(schema)
    builder.add_node("a", lambda s: {"n": s["remaining_steps"]})
    builder.add_edge(START, "a")
    assert builder.compile().invoke({"n": 0}, {"recursion_limit": 5}) == {"n": 4}


def test_a_gated_node_run_with_a_reviewers_edit_still_reads_the_steps_left() -> None:
    from trellis import Approval, Command

    builder = StateGraph(S)
    builder.add_node("a", lambda s: {"log": [(s["n"], s["remaining_steps"])]}, approval=Approval())
    builder.add_edge(START, "a")
    graph = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": 5}
    (pending,) = graph.invoke({"n": 0}, config)["__interrupt__"]
    edit = {"action": "edit", "update": {"n": 7}}
    assert graph.invoke(Command(resume={pending.id: edit}), config)["log"] == [(7, 6)]
