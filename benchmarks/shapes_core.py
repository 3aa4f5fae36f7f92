"""In-memory engine overhead: the 100-node chain, Send fan-out, 200-key state.

Graphs are written once with LangGraph's builder API and compiled by either
engine (``api(engine)``); pydantic-graph gets its own rendering from
``shapes_pydantic``. Nodes do trivial work so the numbers are engine overhead.

>>> bench = chain_factories(100, is_async=False)["langgraph"]()  # doctest: +SKIP
>>> bench.call()
{'n': 100}
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from benchmarks import shapes_pydantic as pg
from benchmarks.engines import api, run_config
from benchmarks.harness import Bench, Config, Row, Shape, SmokeCase, Target, measure

Factories = dict[str, Callable[[], Bench]]


# --- 1. chain -------------------------------------------------------------------------


class ChainState(TypedDict):
    n: int


def inc(state: ChainState) -> dict[str, int]:
    return {"n": state["n"] + 1}


async def ainc(state: ChainState) -> dict[str, int]:
    return {"n": state["n"] + 1}


def chain_builder(mod: Any, n: int, node: Callable[..., Any] = inc, state: Any = ChainState) -> Any:
    """START -> n0 -> n1 -> ... -> n{n-1} -> END, every node running ``node``."""
    g = mod.StateGraph(state)
    names = [f"n{i}" for i in range(n)]
    for name in names:
        g.add_node(name, node)
    g.add_edge(mod.START, names[0])
    for a, b in zip(names, names[1:], strict=False):
        g.add_edge(a, b)
    g.add_edge(names[-1], mod.END)
    return g


def chain_factories(n: int, *, is_async: bool) -> Factories:
    """One Bench per engine running the ``n``-node chain once per call."""

    def lg_like(engine: str) -> Callable[[], Bench]:
        def make() -> Bench:
            graph = chain_builder(api(engine), n, ainc if is_async else inc).compile()
            config = run_config()
            if is_async:
                return Bench(
                    call=lambda: graph.ainvoke({"n": 0}, config),
                    units=n,
                    is_async=True,
                    expected={"n": n},
                )
            return Bench(call=lambda: graph.invoke({"n": 0}, config), units=n, expected={"n": n})

        return make

    def pydantic() -> Bench:
        graph = pg.chain_graph(n)
        if is_async:
            call: Callable[[], Any] = lambda: graph.run(state=pg.ChainState(), infer_name=False)  # noqa: E731
        else:
            call = lambda: graph.run_sync(state=pg.ChainState(), infer_name=False)  # noqa: E731
        return Bench(
            call=call, units=n, is_async=is_async, expected={"n": n}, normalize=lambda v: {"n": v}
        )

    return {
        "trellis": lg_like("trellis"),
        "langgraph": lg_like("langgraph"),
        "pydantic_graph": pydantic,
    }


CHAIN_TARGETS = [Target("speedup", 30, "langgraph"), Target("speedup", 10, "pydantic_graph")]


def run_chain(cfg: Config) -> list[Row]:
    return [
        Row(
            "chain",
            "100-node chain, invoke (no checkpointer)",
            "µs/step",
            measure(cfg, chain_factories(100, is_async=False)),
            CHAIN_TARGETS,
            note="PG: run_sync",
        )
    ]


def run_chain_async(cfg: Config) -> list[Row]:
    return [
        Row(
            "chain_async",
            "100-node chain, ainvoke (async nodes)",
            "µs/step",
            measure(cfg, chain_factories(100, is_async=True)),
            CHAIN_TARGETS,
            note="PG: await graph.run",
        )
    ]


# --- 2. Send fan-out and join -----------------------------------------------------------


class FanState(TypedDict):
    results: Annotated[list[int], operator.add]
    count: int


def fanout_builder(mod: Any, width: int) -> Any:
    """START -router-> width x Send("work", i) -> join -> END; work returns [i*2]."""

    def router(state: FanState) -> list[Any]:
        return [mod.Send("work", i) for i in range(width)]

    def work(x: Any) -> dict[str, list[int]]:
        return {"results": [x * 2]}

    def join(state: FanState) -> dict[str, int]:
        return {"count": len(state["results"])}

    g = mod.StateGraph(FanState)
    g.add_node("work", work)
    g.add_node("join", join)
    g.add_conditional_edges(mod.START, router, ["work"])
    g.add_edge("work", "join")
    g.add_edge("join", mod.END)
    return g


def fanout_expected(width: int) -> dict[str, Any]:
    return {"results": [i * 2 for i in range(width)], "count": width}


def fanout_factories(width: int) -> Factories:
    expected = fanout_expected(width)

    def lg_like(engine: str) -> Callable[[], Bench]:
        def make() -> Bench:
            graph = fanout_builder(api(engine), width).compile()
            config = run_config()
            return Bench(
                call=lambda: graph.invoke({"results": [], "count": 0}, config),
                units=width,
                expected=expected,
            )

        return make

    def pydantic() -> Bench:
        graph = pg.fanout_graph(width)

        def call() -> tuple[list[int], pg.FanoutState]:
            state = pg.FanoutState()
            return graph.run_sync(state=state, infer_name=False), state

        return Bench(
            call=call,
            units=width,
            expected=expected,
            normalize=lambda r: {"results": r[0], "count": r[1].count},
        )

    return {
        "trellis": lg_like("trellis"),
        "langgraph": lg_like("langgraph"),
        "pydantic_graph": pydantic,
    }


def run_fanout(cfg: Config) -> list[Row]:
    return [
        Row(
            "fanout",
            "100 Sends + join, invoke",
            "µs/branch",
            measure(cfg, fanout_factories(100)),
            [Target("speedup", 30, "langgraph")],
            note="PG: map + reduce_list_append join",
        )
    ]


# --- 3. 200-key state ---------------------------------------------------------------------

WIDE_KEYS, WIDE_NODES, WIDE_PER_NODE = 200, 10, 5


def wide_typeddict(keys: int) -> Any:
    """A TypedDict with ``keys`` int keys ``k0..k{keys-1}`` (built at run time)."""
    fields = {f"k{i}": int for i in range(keys)}
    return TypedDict("WideState", fields)  # type: ignore[operator]


WideState = wide_typeddict(WIDE_KEYS)


def wide_updates(keys: int, nodes: int, per_node: int) -> list[list[str]]:
    """Node i touches ``per_node`` consecutive keys starting at ``i*per_node`` (mod keys)."""
    return [[f"k{(i * per_node + j) % keys}" for j in range(per_node)] for i in range(nodes)]


def wide_expected(keys: int, updates: list[list[str]]) -> dict[str, int]:
    out = {f"k{i}": 0 for i in range(keys)}
    for names in updates:
        for name in names:
            out[name] += 1
    return out


def wide_builder(mod: Any, state: Any, updates: list[list[str]]) -> Any:
    def make(names: list[str]) -> Callable[[Any], dict[str, int]]:
        def bump(s: Any) -> dict[str, int]:
            return {k: s[k] + 1 for k in names}

        return bump

    g = mod.StateGraph(state)
    for i, names in enumerate(updates):
        g.add_node(f"n{i}", make(names))
    g.add_edge(mod.START, "n0")
    for i in range(len(updates) - 1):
        g.add_edge(f"n{i}", f"n{i + 1}")
    g.add_edge(f"n{len(updates) - 1}", mod.END)
    return g


def wide_factories(keys: int = WIDE_KEYS, nodes: int = WIDE_NODES) -> Factories:
    updates = wide_updates(keys, nodes, WIDE_PER_NODE)
    expected = wide_expected(keys, updates)
    state = WideState if keys == WIDE_KEYS else wide_typeddict(keys)
    start = {f"k{i}": 0 for i in range(keys)}

    def lg_like(engine: str) -> Callable[[], Bench]:
        def make() -> Bench:
            graph = wide_builder(api(engine), state, updates).compile()
            config = run_config()
            return Bench(call=lambda: graph.invoke(start, config), units=nodes, expected=expected)

        return make

    def pydantic() -> Bench:
        state_type = pg.wide_state_type(keys)
        graph = pg.wide_graph(state_type, updates)

        def call() -> Any:
            s = state_type()
            graph.run_sync(state=s, infer_name=False)
            return s

        return Bench(call=call, units=nodes, expected=expected, normalize=dataclasses.asdict)

    return {
        "trellis": lg_like("trellis"),
        "langgraph": lg_like("langgraph"),
        "pydantic_graph": pydantic,
    }


def run_wide(cfg: Config) -> list[Row]:
    return [
        Row(
            "wide_state",
            f"{WIDE_KEYS}-key state, {WIDE_NODES}-node chain, {WIDE_PER_NODE} keys/node",
            "µs/step",
            measure(cfg, wide_factories()),
            [Target("speedup", 30, "langgraph")],
            note="PG: setattr on a 200-field dataclass",
        )
    ]


SHAPES = [
    Shape("chain", "core", "100-node chain, sync", run_chain),
    Shape("chain_async", "core", "100-node chain, async", run_chain_async),
    Shape("fanout", "core", "100-way Send fan-out + join", run_fanout),
    Shape("wide_state", "core", "200-key state", run_wide),
]


def smoke_cases() -> list[SmokeCase]:
    return [
        SmokeCase("chain", chain_factories(5, is_async=False)),
        SmokeCase("chain_async", chain_factories(5, is_async=True)),
        SmokeCase("fanout", fanout_factories(7)),
        SmokeCase("wide_state", wide_factories(keys=12, nodes=4)),
    ]
