"""``update_state(config, values, as_node="__copy__")``: a fork of a checkpoint, as in
LangGraph 1.2 (the values given are not applied), which a run then continues."""

import asyncio
import operator
from types import SimpleNamespace
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


class S(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def langgraph_api() -> SimpleNamespace:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, interrupt

    return SimpleNamespace(
        StateGraph=StateGraph, START=START, END=END, Saver=InMemorySaver, Command=Command,
        interrupt=interrupt,
    )  # fmt: skip


def trellis_api() -> SimpleNamespace:
    from trellis import END, START, Command, MemorySaver, StateGraph, interrupt

    return SimpleNamespace(
        StateGraph=StateGraph, START=START, END=END, Saver=MemorySaver, Command=Command,
        interrupt=interrupt,
    )  # fmt: skip


def _view(snapshot: Any) -> dict[str, Any]:
    md = snapshot.metadata or {}
    return {
        "values": snapshot.values,
        "next": snapshot.next,
        "source": md.get("source"),
        "step": md.get("step"),
        "interrupts": [i.value for i in snapshot.interrupts],
    }


def observe(api: SimpleNamespace, asks: bool, is_async: bool) -> list[Any]:
    g = api.StateGraph(S)
    g.add_node("a", lambda s: {"log": ["a"]})
    if asks:
        g.add_node("b", lambda s: {"log": [f"b:{api.interrupt('ok?')}"]})
    else:
        g.add_node("b", lambda s: {"log": ["b"]})
    g.add_edge(api.START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", api.END)
    app = g.compile(checkpointer=api.Saver())
    cfg = {"configurable": {"thread_id": "t"}}
    app.invoke({"log": []}, cfg)
    past = next(h for h in app.get_state_history(cfg) if h.next == ("b",))
    if is_async:
        copied = asyncio.run(app.aupdate_state(past.config, {"log": ["x"]}, as_node="__copy__"))
    else:
        copied = app.update_state(past.config, {"log": ["x"]}, as_node="__copy__")
    seen = [_view(app.get_state(copied)), _view(app.get_state(cfg))]
    out = app.invoke(None, copied)  # the copy runs b again: asking, b asks anew
    seen.append({k: v for k, v in out.items() if k != "__interrupt__"})
    if asks:
        seen.append(app.invoke(api.Command(resume="yes"), cfg))
    seen.append([_view(h) for h in app.get_state_history(cfg)])
    return seen


@pytest.mark.parametrize("asks", [False, True], ids=["chain", "interrupt"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_copy_forks_the_checkpoint_as_in_langgraph(asks: bool, is_async: bool) -> None:
    reference = observe(langgraph_api(), asks, is_async)
    assert reference[0]["source"] == "fork"
    assert observe(trellis_api(), asks, is_async) == reference
