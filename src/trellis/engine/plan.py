"""The compile step: turn a builder into flat tables the engine loops over.

Everything that can be decided before a run is decided here — how each node
is called, what it may write, where it leads, which reducer each key uses —
so a super-step does a few dictionary lookups and little else.
"""

from __future__ import annotations

import hashlib
import inspect
import operator
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from trellis.engine.task import PULL
from trellis.graph.node import BranchSpec, NodeSpec, call_shape
from trellis.graph.reducers import ABSENT, DROPPED, SPECIAL_WRITES, add_messages, reduce_write
from trellis.graph.schema import Channel, SchemaInfo, schema_info
from trellis.resilience.retry import normalize_policies
from trellis.types import END, START

if TYPE_CHECKING:
    from trellis.graph.builder import StateGraph

__all__ = ["BranchPlan", "GraphPlan", "JoinPlan", "NodePlan", "build_plan"]

InputMaker = Callable[[Mapping[str, Any]], Any]


@dataclass(slots=True)
class BranchPlan:
    """A conditional edge, ready to run."""

    router: Callable[..., Any]
    path_map: dict[Hashable, str] | None
    fallback: str | None
    takes_state: bool
    injected: tuple[str, ...]
    is_async: bool


@dataclass(slots=True)
class JoinPlan:
    """``add_edge([a, b], c)``: ``c`` runs once every source has finished."""

    index: int
    sources: frozenset[str]
    target: str


@dataclass(slots=True)
class NodePlan:
    """One node, with every per-call decision already made."""

    name: str
    fn: Callable[..., Any]
    takes_state: bool
    injected: tuple[str, ...]
    is_async: bool
    make_input: InputMaker
    static_next: tuple[str, ...]
    joins: tuple[JoinPlan, ...]
    branches: tuple[BranchPlan, ...]
    spec: NodeSpec | None = None
    defer: bool = False
    max_visits: int | None = None
    fallback: str | None = None
    to_update: Callable[[Any], dict[str, Any] | None] | None = None
    subgraph: Any = None
    # Resilience: filled from the spec; None means the plain fast path.
    policies: tuple[Any, ...] = ()
    timeout: float | None = None
    circuit: Any = None
    on_error: str | None = None
    compensate: Callable[..., Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    approval: Any = None
    error_handler: Callable[..., Any] | None = None
    handler_takes_error: bool = False  # error_handler(state, error), not (state)

    # Retries, a timeout, a breaker or an approval gate: the node is called through
    # engine/guard.py. Decided here, once, so plain nodes take the direct path.
    guarded: bool = False
    # An async node taking only the state, with no options and no routers: the async
    # driver awaits it inline.
    plain_async: bool = False
    pull_path: tuple[str, str] = ("", "")
    pull_triggers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.pull_path = (PULL, self.name)  # shared by every task of this node
        self.pull_triggers = (f"branch:to:{self.name}",)  # LangGraph's, for config()
        self.plain_async = (
            self.is_async
            and self.takes_state
            and not self.injected
            and not self.guarded
            and not self.branches
            and self.subgraph is None
        )


@dataclass(slots=True)
class GraphPlan:
    """Everything the engine needs to run one compiled graph."""

    nodes: dict[str, NodePlan]
    start: NodePlan
    command_start: NodePlan
    """START without its edges: what a ``Command`` given as the input of a thread
    that has a checkpoint goes through. As in LangGraph, it applies ``update`` and
    runs ``goto`` only; the graph does not start over from its entry."""
    channels: dict[str, Channel]
    reducers: dict[str, Callable[[Any, Any], Any]]
    writable: frozenset[str]
    initial: dict[str, Callable[[], Any]]
    input_info: SchemaInfo
    output_keys: tuple[str, ...]
    router_input: InputMaker
    append_channels: frozenset[str]
    fingerprint: str
    schemas: tuple[Any, ...] = ()
    compensating: bool = False
    """Some node has a ``compensate`` action (else commit skips that bookkeeping)."""
    join_targets: frozenset[str] = frozenset()
    """Nodes that ``add_edge([a, b], c)`` runs once all its sources have finished."""
    needs_async: bool = False
    """A node or router (or a subgraph's) is async: only ainvoke/astream run it."""
    managed: dict[str, Callable[[int], Any]] = field(default_factory=dict)
    """``RemainingSteps``, ``IsLastStep``: keys filled in for each step, from the
    steps left (empty for most graphs: the loop then gives nodes the state as is)."""

    def apply(
        self, values: dict[str, Any], update: Mapping[str, Any], overwritten: set[str] | None = None
    ) -> set[str] | None:
        """Fold one update into ``values`` through the reducers.

        ``overwritten``: the reducer keys an ``Overwrite`` already set this step
        (shared by the step's updates); their other writes are dropped. Returns
        it, made on the step's first ``Overwrite``, for the step's next update.
        """
        reducers = self.reducers
        for key, value in update.items():
            reducer = reducers.get(key)
            if reducer is None:
                values[key] = value
            elif overwritten is None and type(value) not in SPECIAL_WRITES:
                old = values.get(key, ABSENT)  # the common case, without a call
                values[key] = value if old is ABSENT else reducer(old, value)
            else:
                new, overwritten = reduce_write(
                    reducer, key, values.get(key, ABSENT), value, overwritten
                )
                if new is not DROPPED:
                    values[key] = new
        return overwritten

    def input_after(
        self, node: NodePlan, values: Mapping[str, Any], update: Mapping[str, Any]
    ) -> Any:
        """What ``node`` is given when ``update`` is applied to ``values`` first,
        through the reducers (an approval edit). Raises what the node's input
        schema raises for a value that does not fit it."""
        view = dict(values)
        self.apply(view, update)
        return node.make_input(view)

    def upcoming(self, names: Iterable[str], sends: bool, deferred: Iterable[str]) -> list[str]:
        """The nodes the next step runs, of the triggered ``names``: the eager ones;
        or, when only deferred nodes are left and no ``Send`` waits, every
        deferred node (the loop releases them all at once)."""
        names = list(names)
        eager = [n for n in names if not self.nodes[n].defer]
        if eager or sends:
            return eager
        return sorted({*names, *deferred})


def _input_maker(
    info: SchemaInfo, all_channels: frozenset[str], all_managed: Collection[str]
) -> InputMaker:
    """What a node reading ``info`` is given, from the state (and, where the graph
    has managed keys, their values for the step: see RunLoop.state_at)."""
    keys = tuple(info.channels) if info.kind != "dict" else tuple(sorted(all_channels))
    keys += tuple(info.managed)
    if info.kind in ("typeddict", "dict"):
        if frozenset(keys) == all_channels | frozenset(all_managed):
            # The common case: the node sees the whole state. A copy, so a node
            # that mutates its input cannot change the state behind our back.
            return dict.copy  # type: ignore[return-value]
        return lambda values: {k: values[k] for k in keys if k in values}
    cls = info.schema
    return lambda values: cls(**{k: values[k] for k in keys if k in values})


def _branch_plan(spec: BranchSpec) -> BranchPlan:
    takes_state, injected, is_async = call_shape(spec.router)
    return BranchPlan(spec.router, spec.path_map, spec.fallback, takes_state, injected, is_async)


def _is_append_reducer(reducer: Callable[[Any, Any], Any] | None, channel: Channel) -> bool:
    """Reducers whose result is always ``old + new`` for lists: stored as deltas."""
    if reducer is add_messages:
        return True
    base = getattr(channel.annotation, "__origin__", channel.annotation)
    return reducer is operator.add and base is list


def _fingerprint(builder: StateGraph[Any, Any]) -> str:
    parts = sorted(builder.nodes)
    parts += sorted(f"{a}->{b}" for a, b in builder.edges)
    parts += sorted(f"{sorted(s)}=>{t}" for s, t in builder.joins)
    parts += sorted(
        f"{b.source}?{sorted(map(str, (b.path_map or {}).values()))}" for b in builder.branches
    )
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest()


def build_plan(builder: StateGraph[Any, Any], *, retry_policy: Any = None) -> GraphPlan:
    """Compile ``builder`` into a ``GraphPlan`` (the builder is already validated).

    ``retry_policy`` is the graph-wide default for nodes that set none.
    """
    channels = dict(builder.channels)
    output_keys = tuple(builder.output_info.channels)
    if any(n.on_error for n in builder.nodes.values()) and "errors" not in channels:
        # on_error records failures in a reserved, append-only "errors" key.
        channels["errors"] = Channel("errors", list, operator.add, list)
        output_keys += ("errors",)
    all_channels = frozenset(channels)
    reducers = {k: c.reducer for k, c in channels.items() if c.reducer is not None}
    initial = {k: c.initial for k, c in channels.items() if c.initial is not None}
    nexts: dict[str, list[str]] = {}
    for a, b in builder.edges:
        if b != END:
            nexts.setdefault(a, []).append(b)
    joins = tuple(
        JoinPlan(i, frozenset(sources), target) for i, (sources, target) in enumerate(builder.joins)
    )
    branches: dict[str, list[BranchPlan]] = {}
    for spec in builder.branches:
        branches.setdefault(spec.source, []).append(_branch_plan(spec))

    def links(name: str) -> dict[str, Any]:
        return {
            "static_next": tuple(dict.fromkeys(nexts.get(name, ()))),
            "joins": tuple(j for j in joins if name in j.sources),
            "branches": tuple(branches.get(name, ())),
        }

    nodes: dict[str, NodePlan] = {}
    for name, node_spec in builder.nodes.items():
        nodes[name] = _node_plan(builder, node_spec, all_channels, links(name), retry_policy)
    start = NodePlan(
        name=START,
        fn=lambda value: value,
        takes_state=True,
        injected=(),
        is_async=False,
        make_input=dict.copy,  # type: ignore[arg-type]
        **links(START),
    )
    append_channels = frozenset(k for k, c in channels.items() if _is_append_reducer(c.reducer, c))
    schemas = tuple(
        s
        for s in {
            builder.state_schema,
            builder.input_info.schema,
            builder.output_info.schema,
            *(n.input_schema for n in builder.nodes.values()),
        }
        if s is not None and s is not dict
    )
    return GraphPlan(
        nodes=nodes,
        start=start,
        command_start=replace(start, static_next=(), joins=(), branches=()),
        channels=channels,
        reducers=reducers,
        writable=all_channels,
        initial=initial,
        input_info=builder.input_info,
        output_keys=output_keys or tuple(sorted(all_channels)),
        router_input=_input_maker(builder.state_info, all_channels, builder.managed),
        append_channels=append_channels,
        fingerprint=_fingerprint(builder),
        compensating=any(n.compensate is not None for n in nodes.values()),
        join_targets=frozenset(j.target for j in joins),
        needs_async=any(_needs_async(n) for n in (start, *nodes.values())),
        schemas=schemas,
        managed=dict(builder.managed),
    )


def _needs_async(node: NodePlan) -> bool:
    return (
        node.is_async
        or any(b.is_async for b in node.branches)
        or (node.subgraph is not None and node.subgraph.graph.plan.needs_async)
    )


def _node_plan(
    builder: StateGraph[Any, Any],
    spec: NodeSpec,
    all_channels: frozenset[str],
    links: dict[str, Any],
    default_retry: Any = None,
) -> NodePlan:
    info = schema_info(spec.input_schema) if spec.input_schema is not None else builder.state_info
    fn = spec.fn
    subgraph = None
    if spec.is_subgraph:
        from trellis.engine.subgraph import SubgraphNode

        subgraph = SubgraphNode(fn, spec.name)
        fn = subgraph
        takes_state, is_async = True, False
        injected: tuple[str, ...] = ("config",)
    else:
        takes_state, injected, is_async = call_shape(fn)
    to_update = None
    if builder.state_info.kind in ("dataclass", "pydantic"):
        to_update = builder.state_info.to_update
    try:
        policies = normalize_policies(
            spec.retry_policy if spec.retry_policy is not None else default_retry
        )
    except TypeError as exc:  # found now, not when the node first fails
        raise TypeError(f"node {spec.name!r}: {exc}") from None
    guarded = bool(
        policies or spec.timeout is not None or spec.circuit is not None or spec.approval
    )
    return NodePlan(
        name=spec.name,
        fn=fn,
        guarded=guarded,
        takes_state=takes_state,
        injected=injected,
        is_async=is_async,
        make_input=_input_maker(info, all_channels, builder.managed),
        spec=spec,
        defer=spec.defer,
        max_visits=spec.max_visits,
        fallback=spec.fallback,
        to_update=to_update,
        subgraph=subgraph,
        policies=policies,
        timeout=spec.timeout,
        circuit=spec.circuit,
        on_error=spec.on_error,
        compensate=spec.compensate,
        metadata=spec.metadata,
        approval=spec.approval,
        error_handler=spec.error_handler,
        handler_takes_error=(
            spec.error_handler is not None
            and len(inspect.signature(spec.error_handler).parameters) >= 2
        ),
        **links,
    )
