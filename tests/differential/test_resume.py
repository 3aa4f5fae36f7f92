"""Resume values at their edges, on LangGraph 1.2 and Trellis alike."""

import operator
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


class S(TypedDict, total=False):
    log: Annotated[list[Any], operator.add]


def _run(engine: str, resume: Any) -> tuple[list[Any], list[Any]]:
    if engine == "langgraph":
        from langgraph.checkpoint.memory import InMemorySaver as Saver
        from langgraph.graph import START, StateGraph
        from langgraph.types import Command, interrupt
    else:
        from trellis import START, Command, StateGraph, interrupt
        from trellis import MemorySaver as Saver

    def ask(state: S) -> dict[str, Any]:
        return {"log": [interrupt("q")]}

    g = StateGraph(S)
    g.add_node("ask", ask)
    g.add_edge(START, "ask")
    app = g.compile(checkpointer=Saver())
    cfg = {"configurable": {"thread_id": "t"}}
    app.invoke({"log": []}, cfg)
    out = app.invoke(Command(resume=resume), cfg)
    return out["log"], [i.value for i in out.get("__interrupt__", ())]


@pytest.mark.parametrize("resume", [{}, [], "", 0, {"answer": 1}], ids=repr)
def test_a_resume_value_answers_as_in_langgraph(resume: Any) -> None:
    """An empty map answers nothing (the node asks again); other values are the answer."""
    assert _run("trellis", resume) == _run("langgraph", resume)
