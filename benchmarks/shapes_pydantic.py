"""The same shapes written with pydantic-graph's own API (``GraphBuilder``).

pydantic-graph has no reducers over a shared state dict: steps mutate a state
object and pass values along edges. Each program below is the natural
pydantic-graph rendering of the LangGraph shape and returns the same final
values, so the smoke test can compare them. Its steps are always ``async``;
``run_sync`` drives them on an event loop. It has no checkpointers and no
interrupts, so the persistence shapes print "n/a" for it.

>>> graph = chain_graph(100)  # doctest: +SKIP
>>> graph.run_sync(state=ChainState())
100
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, make_dataclass
from typing import Any

from pydantic_graph import GraphBuilder, reduce_list_append


@dataclass
class ChainState:
    n: int = 0


def chain_graph(n: int, *, sleep_s: float | None = None) -> Any:
    """``n`` steps each doing ``state.n += 1`` (after ``asyncio.sleep(sleep_s)`` if given)."""
    g: Any = GraphBuilder(state_type=ChainState, output_type=int, auto_instrument=False)

    if sleep_s is None:

        async def inc(ctx: Any) -> int:
            state: ChainState = ctx.state
            state.n += 1
            return state.n

    else:

        async def inc(ctx: Any) -> int:
            await asyncio.sleep(sleep_s)
            state: ChainState = ctx.state
            state.n += 1
            return state.n

    steps = [g.step(inc, node_id=f"n{i}") for i in range(n)]
    g.add_edge(g.start_node, steps[0])
    for a, b in zip(steps, steps[1:], strict=False):
        g.add_edge(a, b)
    g.add_edge(steps[-1], g.end_node)
    return g.build()


@dataclass
class FanoutState:
    count: int = 0


def fanout_graph(width: int) -> Any:
    """router -> map over ``width`` items -> work (x*2) -> list join -> join step."""
    g: Any = GraphBuilder(state_type=FanoutState, output_type=list[int], auto_instrument=False)

    async def router(ctx: Any) -> list[int]:
        return list(range(width))

    async def work(ctx: Any) -> int:
        x: int = ctx.inputs
        return x * 2

    async def join(ctx: Any) -> list[int]:
        # Map results arrive in completion order; LangGraph orders by Send order.
        results = sorted(ctx.inputs)
        ctx.state.count = len(results)
        return results

    r, w, j = g.step(router), g.step(work), g.step(join)
    collect = g.join(reduce_list_append, initial_factory=list[int])
    g.add(
        g.edge_from(g.start_node).to(r),
        g.edge_from(r).map().to(w),
        g.edge_from(w).to(collect),
        g.edge_from(collect).to(j),
        g.edge_from(j).to(g.end_node),
    )
    return g.build()


def wide_state_type(keys: int) -> type:
    """A dataclass with ``keys`` int fields ``k0..k{keys-1}``, all 0."""
    return make_dataclass("WideState", [(f"k{i}", int, 0) for i in range(keys)])


def wide_graph(state_type: type, updates: list[list[str]]) -> Any:
    """One step per entry of ``updates``; step i adds 1 to the fields it names."""
    g: Any = GraphBuilder(state_type=state_type, auto_instrument=False)

    def make(names: list[str]) -> Any:
        async def bump(ctx: Any) -> None:
            state = ctx.state
            for name in names:
                setattr(state, name, getattr(state, name) + 1)

        return bump

    steps = [g.step(make(updates[i]), node_id=f"n{i}") for i in range(len(updates))]
    g.add_edge(g.start_node, steps[0])
    for a, b in zip(steps, steps[1:], strict=False):
        g.add_edge(a, b)
    g.add_edge(steps[-1], g.end_node)
    return g.build()
