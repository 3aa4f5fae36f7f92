"""``output_keys=`` of invoke / stream / astream, run on LangGraph and on Trellis.

One graph (START -> a -> c -> d, d asks an ``interrupt()``), run to the question
and resumed, for every shape of ``output_keys`` and every ``values`` / ``updates``
stream: Trellis must yield what LangGraph yields. Interrupts are compared by value
(each engine derives its own ids).
"""

import asyncio
from types import SimpleNamespace
from typing import Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")

KEYS = [["x"], ["y"], "x", "y", ["y", "x"]]
MODES = ["values", "updates", ["values", "updates"]]


class S(TypedDict, total=False):
    x: int
    y: int


def langgraph_api() -> SimpleNamespace:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import START, StateGraph
    from langgraph.types import Command, interrupt

    return SimpleNamespace(
        StateGraph=StateGraph,
        START=START,
        Command=Command,
        interrupt=interrupt,
        Saver=InMemorySaver,
    )


def trellis_api() -> SimpleNamespace:
    from trellis import START, Command, MemorySaver, StateGraph, interrupt

    return SimpleNamespace(
        StateGraph=StateGraph, START=START, Command=Command, interrupt=interrupt, Saver=MemorySaver
    )


def build(api: SimpleNamespace) -> Any:
    b = api.StateGraph(S)
    b.add_node("a", lambda s: {"x": 1, "y": 2})
    b.add_node("c", lambda s: {"y": 3})  # writes y only: no x chunk for this step
    b.add_node("d", lambda s: {"x": api.interrupt("q")})
    b.add_edge(api.START, "a")
    b.add_edge("a", "c")
    b.add_edge("c", "d")
    return b.compile(checkpointer=api.Saver())


def plain(value: Any) -> Any:
    """``value`` with interrupts as their values, tuples as lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if type(value).__name__ == "Interrupt":
        return ("interrupt", value.value)
    return value


def observe(api: SimpleNamespace, keys: Any, mode: Any) -> list[Any]:
    graph = build(api)
    seen: list[Any] = []
    for thread, call in enumerate(["stream", "invoke", "astream", "ainvoke"]):
        config = {"configurable": {"thread_id": str(thread)}}
        for value in ({"y": 0}, api.Command(resume=5)):
            if call == "stream":
                out: Any = list(graph.stream(value, config, output_keys=keys, stream_mode=mode))
            elif call == "invoke":
                out = graph.invoke(value, config, output_keys=keys)
            elif call == "astream":

                async def collect(value: Any = value, config: Any = config) -> list[Any]:
                    stream = graph.astream(value, config, output_keys=keys, stream_mode=mode)
                    return [chunk async for chunk in stream]

                out = asyncio.run(collect())
            else:
                out = asyncio.run(graph.ainvoke(value, config, output_keys=keys))
            seen.append((call, plain(out)))
    return seen


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("keys", KEYS, ids=str)
def test_output_keys_match_langgraph(keys: Any, mode: Any) -> None:
    assert observe(trellis_api(), keys, mode) == observe(langgraph_api(), keys, mode)


def test_an_unknown_output_key_is_named() -> None:
    from trellis.errors import InvalidConfigError

    graph = build(trellis_api())
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(InvalidConfigError, match="output_keys names unknown state key.*'z'"):
        graph.invoke({"y": 0}, config, output_keys=["x", "z"])
    assert graph.get_state(config).values == {}  # refused before anything ran


class D(TypedDict, total=False):
    d: dict[str, int]
    n: int


def later_runs(api: SimpleNamespace) -> list[Any]:
    """Runs on a thread whose keys an earlier run wrote, and a key holding {}."""
    b = api.StateGraph(D)
    b.add_node("x", lambda s: {"d": {}})
    b.add_edge(api.START, "x")
    graph = b.compile(checkpointer=api.Saver())
    config = {"configurable": {"thread_id": "t"}}
    return [
        graph.invoke({"n": 5}, config, output_keys=["n"]),
        graph.invoke({"d": {"k": 1}}, config, output_keys=["n"]),  # n not written this run
        graph.invoke({"d": {"k": 1}}, config, output_keys="n"),
        list(graph.stream({"d": {"k": 1}}, config, output_keys=["n"], stream_mode="values")),
        graph.invoke(None, config, output_keys=["n"]),  # a resumed run shows where it is
        graph.invoke({"n": 1}, config, output_keys="d"),  # a key whose value is {}
    ]


def test_output_keys_of_later_runs_match_langgraph() -> None:
    assert later_runs(trellis_api()) == later_runs(langgraph_api())
