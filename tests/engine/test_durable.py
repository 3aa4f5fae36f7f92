"""Checkpoint bookkeeping seen from a graph: graph versions and concurrent writers."""

from __future__ import annotations

import operator
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import START, Command, SqliteSaver, StateGraph, interrupt
from trellis.errors import ConcurrentUpdateError, GraphVersionError


class S(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def _ask(state: S) -> dict[str, Any]:
    return {"log": [f"ask:{interrupt('ok?')}"]}


def _graph(saver: Any, *, second: str = "ask") -> Any:
    builder = StateGraph(S)
    builder.add_node("first", lambda s: {"log": ["first"]})
    builder.add_node(second, _ask)
    builder.add_edge(START, "first")
    builder.add_edge("first", second)
    return builder.compile(checkpointer=saver)


def test_resuming_on_a_graph_without_the_pending_node_names_it(tmp_path: Path) -> None:
    saver = SqliteSaver.from_path(tmp_path / "runs.db")
    config = {"configurable": {"thread_id": "t"}}
    assert _graph(saver).invoke({"log": []}, config)["__interrupt__"]
    renamed = _graph(saver, second="confirm")  # the new version renamed "ask"
    with pytest.raises(GraphVersionError, match="'ask'") as caught:
        renamed.invoke(Command(resume="yes"), config)
    assert "thread 't'" in str(caught.value)
    # Nothing was written: the original graph still resumes where it stopped.
    assert _graph(saver).invoke(Command(resume="yes"), config)["log"] == ["first", "ask:yes"]


class _BothReadFirst(SqliteSaver):
    """A real SQLite saver whose head reads wait for each other while ``racing`` is set,
    so both runs hold the same head before either writes."""

    racing: threading.Barrier | None = None

    def get_tuple(self, *args: Any, **kwargs: Any) -> Any:
        found = super().get_tuple(*args, **kwargs)
        if self.racing is not None:
            self.racing.wait(timeout=10)
        return found


def test_two_runs_racing_on_one_thread_cannot_both_commit(tmp_path: Path) -> None:
    saver = _BothReadFirst.from_path(tmp_path / "runs.db")
    config = {"configurable": {"thread_id": "shared"}}
    builder = StateGraph(S)
    builder.add_node("step", lambda s: {"log": ["step"]})
    builder.add_edge(START, "step")
    graph = builder.compile(checkpointer=saver)
    graph.invoke({"log": []}, config)
    head = graph.get_state(config).config["configurable"]["checkpoint_id"]
    saver.racing = threading.Barrier(2)
    outcomes: list[BaseException | None] = []

    def run_again() -> None:
        try:
            graph.invoke({"log": ["again"]}, config)
            outcomes.append(None)
        except BaseException as exc:
            outcomes.append(exc)

    runs = [threading.Thread(target=run_again) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=20)
    saver.racing = None
    assert sorted(type(o).__name__ for o in outcomes) == ["ConcurrentUpdateError", "NoneType"]
    loser = next(o for o in outcomes if o is not None)
    assert isinstance(loser, ConcurrentUpdateError) and "shared" in str(loser)
    history = list(graph.get_state_history(config))
    parents = [h.parent_config["configurable"]["checkpoint_id"] for h in history if h.parent_config]
    assert parents.count(head) == 1, "exactly one run's checkpoints hang off the shared head"
    assert graph.get_state(config).values["log"] == ["step", "again", "step"]


class _Routed(TypedDict, total=False):
    go: str
    log: Annotated[list[str], operator.add]


def _half_join(saver: Any, *, extra: bool = False) -> Any:
    """START routes to a or b (by ``go``); c waits for both (a join)."""
    builder = StateGraph(_Routed)
    for name in ("a", "b", "c"):
        builder.add_node(name, lambda s, name=name: {"log": [name]})
    if extra:  # a later version of the graph
        builder.add_node("audit", lambda s: {"log": ["audit"]})
        builder.add_edge("c", "audit")
    builder.add_conditional_edges(START, lambda s: s["go"], ["a", "b"])
    builder.add_edge(["a", "b"], "c")
    return builder.compile(checkpointer=saver)


def test_a_join_half_met_by_one_run_completes_in_a_later_run(tmp_path: Path) -> None:
    """As in LangGraph: the join's progress belongs to the thread, not to one run."""
    saver = SqliteSaver.from_path(tmp_path / "runs.db")
    graph = _half_join(saver)
    config = {"configurable": {"thread_id": "t"}}
    assert graph.invoke({"go": "a"}, config)["log"] == ["a"]
    assert graph.invoke({"go": "b"}, config)["log"] == ["a", "b", "c"]
    assert graph.invoke({"go": "b"}, config)["log"] == ["a", "b", "c", "b"]
    # Another thread starts with nothing met.
    assert graph.invoke({"go": "b"}, {"configurable": {"thread_id": "u"}})["log"] == ["b"]


def test_a_half_met_join_is_not_carried_into_another_version_of_the_graph(
    tmp_path: Path,
) -> None:
    saver = SqliteSaver.from_path(tmp_path / "runs.db")
    config = {"configurable": {"thread_id": "t"}}
    assert _half_join(saver).invoke({"go": "a"}, config)["log"] == ["a"]
    # Join positions are the saving graph's: a changed graph starts them afresh.
    assert _half_join(saver, extra=True).invoke({"go": "b"}, config)["log"] == ["a", "b"]


def _chat_stored(schema: Any, reply: Any, saver_factory: Any) -> list[Any]:
    """The messages a one-node chat graph over ``schema`` checkpointed, as another
    process's saver reads them back."""
    from langchain_core.messages import HumanMessage

    b = StateGraph(schema)
    b.add_node("bot", lambda state: {"messages": [reply]})
    b.add_edge(START, "bot")
    config = {"configurable": {"thread_id": "chat"}}
    b.compile(checkpointer=saver_factory.make()).invoke({"messages": [HumanMessage("hi")]}, config)
    stored = b.compile(checkpointer=saver_factory.make()).get_state(config).values["messages"]
    return list(stored)


def test_langchain_messages_in_an_add_messages_key_are_checkpointed(saver_factory: Any) -> None:
    # The everyday LangGraph agent: MessagesState (list[Any]) holding LangChain's
    # message objects. Ported by changing imports, it must checkpoint them as they are.
    messages = pytest.importorskip("langchain_core.messages")
    from trellis import MessagesState

    usage = {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}
    reply = messages.AIMessage("hello", usage_metadata=usage, tool_calls=[])
    stored = _chat_stored(MessagesState, reply, saver_factory)
    assert [type(m).__name__ for m in stored] == ["HumanMessage", "AIMessage"]
    assert stored[1].content == "hello" and stored[1].usage_metadata["total_tokens"] == 3


def test_a_key_typed_with_base_message_checkpoints_its_subclasses(saver_factory: Any) -> None:
    # LangGraph's classic agent state: a Sequence[BaseMessage] added to with
    # operator.add. The schema names the base class; the state holds its subclasses.
    messages = pytest.importorskip("langchain_core.messages")

    # The functional form: under postponed annotations a class body's hints could
    # not see the module imported in this function.
    agent_state = TypedDict(  # noqa: UP013
        "agent_state", {"messages": Annotated[Sequence[messages.BaseMessage], operator.add]}
    )
    stored = _chat_stored(agent_state, messages.AIMessage("hello"), saver_factory)
    assert [(type(m).__name__, m.content) for m in stored] == [
        ("HumanMessage", "hi"),
        ("AIMessage", "hello"),
    ]
