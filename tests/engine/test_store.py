"""compile(store=...): a LangGraph store reaches nodes as LangGraph hands it over, as
the ``store`` parameter, ``runtime.store`` and ``get_store()``, subgraphs included."""

from __future__ import annotations

from typing import Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, MemorySaver, Runtime, StateGraph, get_store
from trellis.errors import InvalidConfigError

memory = pytest.importorskip("langgraph.store.memory", reason="LangGraph's store is not installed")
from langgraph.store.base import BaseStore  # noqa: E402


class S(TypedDict, total=False):
    user: str
    notes: list[str]


def _remember(state: S, store: BaseStore) -> S:
    store.put(("users", state["user"]), f"note-{len(state.get('notes') or [])}", {"text": "hi"})
    return {}


def _recall(state: S, runtime: Runtime[Any]) -> S:
    found = runtime.store.search(("users", state["user"]))
    return {"notes": sorted(item.key for item in found)}


def _build(api: Any, store: Any, **compile_options: Any) -> Any:
    b = api.StateGraph(S)
    b.add_node("remember", _remember)
    b.add_node("recall", _recall)
    b.add_edge(api.START, "remember")
    b.add_edge("remember", "recall")
    b.add_edge("recall", api.END)
    return b.compile(store=store, **compile_options)


def test_nodes_share_the_store_across_threads_as_in_langgraph(graph_apis: dict[str, Any]) -> None:
    got = {}
    for lib, api in graph_apis.items():
        graph = _build(api, memory.InMemoryStore())
        first = graph.invoke({"user": "ada"})
        second = graph.invoke({"user": "ada", "notes": ["x"]})  # a new run, the same store
        got[lib] = (first, second)
    assert got["trellis"] == ({"user": "ada", "notes": ["note-0"]},
                              {"user": "ada", "notes": ["note-0", "note-1"]})  # fmt: skip
    if "langgraph" in got:
        assert got["trellis"] == got["langgraph"]


def test_get_store_and_a_subgraph_see_the_parents_store() -> None:
    store = memory.InMemoryStore()
    seen: list[Any] = []

    def inner(state: S) -> S:
        seen.append(get_store())
        get_store().put(("inner",), "k", {"v": 1})
        return {}

    child = StateGraph(S)
    child.add_node("inner", inner)
    child.add_edge(START, "inner")
    parent = StateGraph(S)
    parent.add_node("sub", child.compile())
    parent.add_edge(START, "sub")
    parent.add_edge("sub", END)
    graph = parent.compile(store=store, checkpointer=MemorySaver())
    graph.invoke({"user": "ada"}, {"configurable": {"thread_id": "t"}})
    assert seen == [store]
    assert store.get(("inner",), "k").value == {"v": 1}
    durable = graph.with_checkpointer(MemorySaver())  # a recompiled twin keeps it
    durable.invoke({"user": "bob"}, {"configurable": {"thread_id": "u"}})
    assert seen == [store, store]


def test_without_a_store_nodes_get_none_and_a_wrong_store_is_refused() -> None:
    got: list[Any] = []
    b = StateGraph(S)
    b.add_node("n", lambda state, store: got.append((store, get_store())) or {})
    b.add_edge(START, "n")
    b.compile().invoke({})
    assert got == [(None, None)]
    with pytest.raises(InvalidConfigError, match="dict has no put, search"):
        b.compile(store={})
    with pytest.raises(InvalidConfigError, match="cache"):
        b.compile(cache=object())
    with pytest.raises(RuntimeError, match="get_store"):
        get_store()
