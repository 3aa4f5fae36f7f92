"""Engine invariants, checked on random graphs with hypothesis.

1. Merge order is deterministic: pull tasks by node name, then Sends in send order,
   whatever the completion order.
2. A run stopped by interrupt_after and resumed with invoke(None) ends in the same
   state, with the same values stream, as an uninterrupted run.
3. The sync and async drivers give identical results.
"""

from __future__ import annotations

import asyncio
import operator
import random
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typing_extensions import TypedDict

from trellis import END, START, Send, StateGraph
from trellis.persist.memory import MemorySaver

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class S(TypedDict, total=False):
    count: int
    log: Annotated[list[str], operator.add]


_names = st.lists(
    st.text(alphabet="abcdefgh", min_size=1, max_size=3).map(lambda s: "n_" + s),
    min_size=1,
    max_size=5,
    unique=True,
)
_delay = st.sampled_from([0.0, 0.0, 0.001, 0.003])


def sync_node(name: str, delay: float) -> Any:
    def node(state: Any) -> dict[str, Any]:
        if delay:
            time.sleep(delay)
        return {"log": [name]}

    return node


def async_node(name: str, delay: float) -> Any:
    async def node(state: Any) -> dict[str, Any]:
        await asyncio.sleep(delay)
        return {"log": [name]}

    return node


def sync_worker(arg: tuple[str, float]) -> dict[str, Any]:
    tag, delay = arg
    if delay:
        time.sleep(delay)
    return {"log": [f"w:{tag}"]}


async def async_worker(arg: tuple[str, float]) -> dict[str, Any]:
    tag, delay = arg
    await asyncio.sleep(delay)
    return {"log": [f"w:{tag}"]}


# -- 1. deterministic merge order ------------------------------------------------------


@dataclass
class FanOut:
    static: list[tuple[str, float]]  # node name, its sleep; in add_node order
    sends: list[tuple[str, float]]  # Send args
    route: list[Any]  # what the router returns: names and Sends, interleaved


@st.composite
def fan_outs(draw: st.DrawFn) -> FanOut:
    names = draw(_names)
    static = [(n, draw(_delay)) for n in names]
    sends = [(f"s{i}", draw(_delay)) for i in range(draw(st.integers(0, 4)))]
    # Interleave names and Sends randomly; the route's order is the send order.
    items: list[Any] = [n for n, _ in static]
    for send in sends:
        items.insert(draw(st.integers(0, len(items))), Send("w", send))
    names_order = draw(st.permutations([i for i in items if isinstance(i, str)]))
    it = iter(names_order)
    route = [next(it) if isinstance(i, str) else i for i in items]
    return FanOut(static, sends, route)


def fan_out_graph(case: FanOut, make_node: Any, worker: Any) -> Any:
    builder = StateGraph(S)
    builder.add_node("src", lambda s: {"log": ["src"]})
    builder.add_node("w", worker)
    for name, delay in case.static:
        builder.add_node(name, make_node(name, delay))
    builder.add_edge(START, "src")
    builder.add_conditional_edges("src", lambda s: list(case.route))
    return builder.compile()


def expected_order(case: FanOut) -> list[str]:
    sent = [f"w:{item.arg[0]}" for item in case.route if isinstance(item, Send)]
    return ["src", *sorted(n for n, _ in case.static), *sent]


@SETTINGS
@given(fan_outs())
def test_merge_order_is_names_then_sends_whatever_finishes_first(case: FanOut) -> None:
    graph = fan_out_graph(case, sync_node, sync_worker)
    assert graph.invoke({})["log"] == expected_order(case)


@SETTINGS
@given(fan_outs())
def test_merge_order_is_the_same_on_the_async_driver(case: FanOut) -> None:
    graph = fan_out_graph(case, async_node, async_worker)
    assert asyncio.run(graph.ainvoke({}))["log"] == expected_order(case)


@SETTINGS
@given(_names, st.randoms(use_true_random=False))
def test_parallel_start_edges_merge_by_name_in_any_declaration_order(
    names: list[str], rng: random.Random
) -> None:
    builder = StateGraph(S)
    shuffled = list(names)
    rng.shuffle(shuffled)
    for name in shuffled:
        builder.add_node(name, sync_node(name, 0.0))
    rng.shuffle(shuffled)
    for name in shuffled:
        builder.add_edge(START, name)
    assert builder.compile().invoke({})["log"] == sorted(names)


# -- 2. resume equals an uninterrupted run ------------------------------------------------


@dataclass
class LoopCase:
    length: int  # nodes in the chain
    rounds: int  # how many times the chain runs
    stop_after: int  # index of the interrupt_after node
    parallel: bool  # whether node 0 also fans out to a side node
    durability: str  # when checkpoints are written: every step, in the background, at exit


@st.composite
def loop_cases(draw: st.DrawFn) -> LoopCase:
    length = draw(st.integers(1, 4))
    return LoopCase(
        length=length,
        rounds=draw(st.integers(1, 3)),
        stop_after=draw(st.integers(0, length - 1)),
        parallel=draw(st.booleans()),
        durability=draw(st.sampled_from(["sync", "async", "exit"])),
    )


def loop_graph(case: LoopCase, **compile_options: Any) -> Any:
    names = [f"n{i}" for i in range(case.length)]
    builder = StateGraph(S)
    for name in names:
        builder.add_node(name, lambda s, name=name: {"log": [name], "count": s.get("count", 0) + 1})
    builder.add_edge(START, names[0])
    for a, b in zip(names, names[1:], strict=False):
        builder.add_edge(a, b)
    if case.parallel:
        builder.add_node("side", lambda s: {"log": ["side"]})
        builder.add_edge(names[0], "side")
    total = case.length * case.rounds
    builder.add_conditional_edges(
        names[-1], lambda s: names[0] if s["count"] < total else END, [names[0], END]
    )
    return builder.compile(checkpointer=MemorySaver(), **compile_options)


@SETTINGS
@given(loop_cases())
def test_resume_after_interrupt_after_equals_an_uninterrupted_run(case: LoopCase) -> None:
    plain = loop_graph(case)
    plain_config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    full = list(plain.stream({"count": 0}, plain_config, stream_mode="values"))

    stopping = loop_graph(case, interrupt_after=[f"n{case.stop_after}"])
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    durability = case.durability
    pieces = [
        list(stopping.stream({"count": 0}, config, stream_mode="values", durability=durability))
    ]
    while stopping.get_state(config).next:
        assert len(pieces) <= case.rounds + 1, "never finishes"
        pieces.append(
            list(stopping.stream(None, config, stream_mode="values", durability=durability))
        )
    # It stops after every run of the node, except a last run with nothing after it.
    last_has_successor = case.stop_after < case.length - 1 or (
        case.stop_after == 0 and case.parallel
    )
    assert len(pieces) - 1 == case.rounds - (0 if last_has_successor else 1)
    # A resumed stream may first repeat the saved state (LangGraph does); every chunk
    # here differs from the one before (count grows), so a repeat is easy to drop.
    joined = list(pieces[0])
    for piece in pieces[1:]:
        joined += piece[1:] if piece and joined and piece[0] == joined[-1] else piece
    assert joined == full
    assert full[len(full) - len(pieces[-1]) :] == pieces[-1]  # the last piece is a suffix
    assert stopping.get_state(config).values == plain.get_state(plain_config).values == full[-1]


# -- 3. sync and async drivers agree ----------------------------------------------------


@dataclass
class DagCase:
    nodes: list[str]
    edges: list[tuple[str, str]]  # forward edges only, so runs terminate
    joins: list[tuple[tuple[str, str], str]]
    senders: dict[str, list[str]]  # node -> Send tags it fans out to the worker


@st.composite
def dags(draw: st.DrawFn) -> DagCase:
    n = draw(st.integers(1, 6))
    nodes = [f"n{i}" for i in range(n)]
    pairs = [(nodes[i], nodes[j]) for i in range(n) for j in range(i + 1, n)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=8)) if pairs else []
    entries = draw(st.lists(st.sampled_from(nodes), min_size=1, max_size=3, unique=True))
    edges += [(START, e) for e in entries]
    joins: list[tuple[tuple[str, str], str]] = []
    if n >= 3 and draw(st.booleans()):
        pair = draw(st.lists(st.sampled_from(nodes[:-1]), min_size=2, max_size=2, unique=True))
        joins.append(((pair[0], pair[1]), nodes[-1]))
    # Every node needs a way in, or compile rightly rejects it as unreachable.
    entered = {b for _, b in edges} | {t for _, t in joins}
    edges += [(START, name) for name in nodes if name not in entered]
    senders = {
        name: [f"{name}.{k}" for k in range(draw(st.integers(1, 3)))]
        for name in draw(st.lists(st.sampled_from(nodes), max_size=2, unique=True))
    }
    return DagCase(nodes, edges, joins, senders)


def dag_graph(case: DagCase, *, is_async: bool) -> Any:
    make = async_node if is_async else sync_node
    builder = StateGraph(S)
    for name in case.nodes:
        builder.add_node(name, make(name, 0.0))
    if case.senders:
        builder.add_node("w", async_worker if is_async else sync_worker)
    for a, b in case.edges:
        builder.add_edge(a, b)
    for sources, target in case.joins:
        builder.add_edge(list(sources), target)
    for name, tags in case.senders.items():
        builder.add_conditional_edges(
            name, lambda s, tags=tags: [Send("w", (t, 0.0)) for t in tags]
        )
    return builder.compile()


@SETTINGS
@given(dags())
def test_sync_and_async_drivers_agree(case: DagCase) -> None:
    sync_graph = dag_graph(case, is_async=False)
    async_graph = dag_graph(case, is_async=True)
    modes = ["updates", "values", "custom"]
    sync_chunks = list(sync_graph.stream({}, stream_mode=modes))

    async def run() -> tuple[Any, list[Any], Any]:
        chunks = [c async for c in async_graph.astream({}, stream_mode=modes)]
        return await async_graph.ainvoke({}), chunks, await sync_graph.ainvoke({})

    async_out, async_chunks, sync_graph_async_out = asyncio.run(run())
    sync_out = sync_graph.invoke({})
    assert async_out == sync_out == sync_graph_async_out
    assert async_chunks == sync_chunks
