"""``StateGraph``: build a graph of nodes over a shared, typed state.

Same names and behaviour as LangGraph's builder, plus Trellis's production
options (``circuit``, ``on_error``, ``compensate``, ``max_visits``/``fallback``,
``approval``). Building only records; ``compile()`` validates everything at
once and prepares the tables the engine runs on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from trellis.graph.node import BranchSpec, NodeSpec, is_compiled_graph, normalize_path_map
from trellis.graph.runnable import is_runnable, runnable_node
from trellis.graph.schema import Channel, SchemaInfo, schema_info
from trellis.types import END, START

if TYPE_CHECKING:
    from trellis.engine.compiled import CompiledStateGraph

__all__ = ["StateGraph"]

StateT = TypeVar("StateT")
ContextT = TypeVar("ContextT")


class StateGraph(Generic[StateT, ContextT]):
    """A graph builder over a typed state.

    >>> class State(TypedDict):
    ...     n: int
    >>> builder = StateGraph(State)
    >>> builder.add_node("inc", lambda s: {"n": s["n"] + 1})
    >>> builder.add_edge(START, "inc")
    >>> graph = builder.compile()
    >>> graph.invoke({"n": 1})
    {'n': 2}
    """

    def __init__(
        self,
        state_schema: Any = None,
        context_schema: Any = None,
        *,
        input_schema: Any = None,
        output_schema: Any = None,
        **legacy: Any,
    ) -> None:
        # LangGraph's deprecated spellings still work.
        input_schema = input_schema or legacy.pop("input", None)
        output_schema = output_schema or legacy.pop("output", None)
        context_schema = context_schema or legacy.pop("config_schema", None)
        if legacy:
            raise TypeError(f"StateGraph() got unexpected keyword(s): {', '.join(legacy)}")
        if state_schema is None and input_schema is None:
            raise ValueError("StateGraph needs a state_schema (a TypedDict, dataclass or model)")
        self.state_schema = state_schema if state_schema is not None else input_schema
        self.context_schema = context_schema
        self.state_info: SchemaInfo = schema_info(self.state_schema)
        self.input_info: SchemaInfo = (
            schema_info(input_schema) if input_schema is not None else self.state_info
        )
        self.output_info: SchemaInfo = (
            schema_info(output_schema) if output_schema is not None else self.state_info
        )
        self.channels: dict[str, Channel] = {}
        self.managed: dict[str, Callable[[int], Any]] = {}  # RemainingSteps, IsLastStep
        for info in (self.state_info, self.input_info, self.output_info):
            self._add_channels(info)
        self.nodes: dict[str, NodeSpec] = {}
        self.edges: list[tuple[str, str]] = []
        self.joins: list[tuple[tuple[str, ...], str]] = []
        self.branches: list[BranchSpec] = []
        self.problems: list[str] = []
        self.compiled = False

    def _add_channels(self, info: SchemaInfo) -> None:
        self.managed.update(info.managed)
        for name, channel in info.channels.items():
            existing = self.channels.get(name)
            # The state schema's reducer wins; other schemas only add keys.
            if existing is None or (existing.reducer is None and channel.reducer is not None):
                self.channels[name] = channel

    # -- nodes -------------------------------------------------------------

    def add_node(
        self, node: str | Callable[..., Any], action: Any = None, **options: Any
    ) -> StateGraph[StateT, ContextT]:
        """Add a node. ``add_node(fn)`` names it after ``fn.__name__``.

        LangGraph's keywords (``retry_policy``, ``timeout``, ``defer``,
        ``metadata``, ``input_schema``, ``destinations``, ``error_handler``)
        and Trellis's (``circuit``, ``on_error``, ``compensate``,
        ``max_visits``, ``fallback``, ``approval``) are accepted.

        >>> builder.add_node("fetch", fetch, retry_policy=RetryPolicy(max_attempts=5))
        """
        if not isinstance(node, str):
            action, name = node, _name_of(node)
        else:
            name = node
        if is_runnable(action):  # a LangChain chain or model: its invoke is the node
            action = runnable_node(action)
        if action is None:
            raise TypeError(f"add_node({name!r}) needs a function or a compiled graph")
        for reserved in (START, END):
            if name == reserved:
                self.problems.append(f"node name {name!r} is reserved")
        if any(ch in name for ch in "|:"):
            self.problems.append(f"node name {name!r} must not contain '|' or ':'")
        if name in self.nodes:
            self.problems.append(f"node {name!r} is added twice")
            return self
        spec = _node_spec(name, action, options)
        returned = _return_schema(action)
        if returned is not None and returned is not self.state_schema:
            self._add_channels(schema_info(returned))  # as LangGraph: `-> Private` adds keys
        if spec.input_schema is not None:
            self._add_channels(schema_info(spec.input_schema))
        else:
            hinted = _first_param_schema(action)
            if hinted is not None and hinted is not self.state_schema:
                spec.input_schema = hinted
                self._add_channels(schema_info(hinted))
        self.nodes[name] = spec
        return self

    def add_edge(
        self, start_key: str | Sequence[str], end_key: str
    ) -> StateGraph[StateT, ContextT]:
        """Run ``end_key`` after ``start_key``; a list of starts waits for all of them.

        >>> builder.add_edge(["style", "security"], "aggregate")
        """
        if isinstance(start_key, str):
            if start_key == END:
                self.problems.append("END cannot be the start of an edge")
            if end_key == START:
                self.problems.append("START cannot be the end of an edge")
            self.edges.append((start_key, end_key))
        else:
            sources = tuple(start_key)
            if START in sources:
                self.problems.append("START cannot be part of a join")
            if end_key == END:
                # Nothing waits at END: the run ends once no task is left, as with
                # an edge to END from each of the sources (LangGraph accepts it too).
                self.edges += [(source, END) for source in sources]
            else:
                self.joins.append((sources, end_key))
        return self

    def add_conditional_edges(
        self,
        source: str,
        path: Callable[..., Any],
        path_map: dict[Hashable, str] | list[str] | None = None,
        *,
        fallback: str | None = None,
    ) -> StateGraph[StateT, ContextT]:
        """After ``source`` runs, ``path`` picks what runs next.

        ``path`` returns a node name, a list of names, ``END``, ``Send``
        objects, or a key of ``path_map``. ``fallback`` is taken when it
        returns ``None`` or names no node (otherwise ``RoutingError``).

        >>> builder.add_conditional_edges("classify", route, {"refund": "refund", "other": END})
        """
        mapping = normalize_path_map(path_map, source)
        self.branches.append(BranchSpec(source, path, mapping, fallback))
        return self

    def add_sequence(self, nodes: Sequence[Any]) -> StateGraph[StateT, ContextT]:
        """Add nodes (functions or ``(name, fn)`` pairs) chained in order."""
        if not nodes:
            raise ValueError("add_sequence needs at least one node")
        previous: str | None = None
        for item in nodes:
            if isinstance(item, tuple):
                name, fn = item
            else:
                fn, name = item, _name_of(item)
            self.add_node(name, fn)
            if previous is not None:
                self.add_edge(previous, name)
            previous = name
        return self

    def set_entry_point(self, key: str) -> StateGraph[StateT, ContextT]:
        """Same as ``add_edge(START, key)``."""
        return self.add_edge(START, key)

    def set_conditional_entry_point(
        self, path: Callable[..., Any], path_map: dict[Hashable, str] | list[str] | None = None
    ) -> StateGraph[StateT, ContextT]:
        """Same as ``add_conditional_edges(START, path, path_map)``."""
        return self.add_conditional_edges(START, path, path_map)

    def set_finish_point(self, key: str) -> StateGraph[StateT, ContextT]:
        """Same as ``add_edge(key, END)``."""
        return self.add_edge(key, END)

    def validate(self) -> StateGraph[StateT, ContextT]:
        """Raise ``GraphValidationError`` listing every problem, or return self."""
        from trellis.graph.validation import validate

        validate(self)  # type: ignore[arg-type]
        return self

    def compile(self, checkpointer: Any = None, **options: Any) -> CompiledStateGraph:
        """Validate the graph and prepare it to run.

        >>> graph = builder.compile(checkpointer=SqliteSaver.from_path("runs.db"))
        """
        from trellis.engine.compiled import CompiledStateGraph

        self.validate()
        self.compiled = True
        return CompiledStateGraph(self._frozen(), checkpointer=checkpointer, **options)

    def _frozen(self) -> StateGraph[StateT, ContextT]:
        """This builder as it is now, for a compiled graph to keep: what it draws and
        recompiles (``with_checkpointer``) stays what it runs, whatever is added here later."""
        twin = copy.copy(self)
        twin.channels, twin.nodes = dict(self.channels), dict(self.nodes)
        twin.managed = dict(self.managed)
        twin.edges, twin.joins = list(self.edges), list(self.joins)
        twin.branches, twin.problems = list(self.branches), list(self.problems)
        return twin


def _name_of(fn: Any) -> str:
    if is_runnable(fn):
        return str(fn.get_name())
    name = getattr(fn, "__name__", None) or getattr(fn, "name", None)
    if name is None and callable(fn):  # a partial or callable instance: as LangGraph
        name = type(fn).__name__
    if not isinstance(name, str) or name == "<lambda>":
        raise ValueError(f"cannot infer a node name from {fn!r}; pass a name")
    return name


_OPTIONS = frozenset(
    {
        "input_schema",
        "retry_policy",
        "retry",
        "timeout",
        "metadata",
        "destinations",
        "defer",
        "circuit",
        "on_error",
        "error_handler",
        "compensate",
        "max_visits",
        "fallback",
        "approval",
        "cache_policy",
        "trace_policy",
        "input",
    }
)


def _node_spec(name: str, action: Any, options: dict[str, Any]) -> NodeSpec:
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(f"add_node({name!r}) got unknown option(s): {', '.join(sorted(unknown))}")
    destinations = options.get("destinations") or ()
    if isinstance(destinations, dict):
        destinations = tuple(destinations)
    timeout = options.get("timeout")
    if timeout is not None and hasattr(timeout, "total_seconds"):
        timeout = timeout.total_seconds()
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(  # not > 0 also catches NaN
            f"add_node({name!r}): timeout must be a positive number of seconds, got {timeout!r}"
        )
    return NodeSpec(
        name=name,
        fn=action,
        input_schema=options.get("input_schema") or options.get("input"),
        retry_policy=options.get("retry_policy") or options.get("retry"),
        timeout=timeout,
        metadata=dict(options.get("metadata") or {}),
        destinations=tuple(destinations),
        defer=bool(options.get("defer", False)),
        circuit=options.get("circuit"),
        on_error=options.get("on_error"),
        error_handler=options.get("error_handler"),
        compensate=options.get("compensate"),
        max_visits=options.get("max_visits"),
        fallback=options.get("fallback"),
        approval=options.get("approval"),
        is_subgraph=is_compiled_graph(action),
    )


def _is_schema(hint: Any) -> bool:
    from typing_extensions import is_typeddict

    return isinstance(hint, type) and (
        is_typeddict(hint) or hasattr(hint, "__dataclass_fields__") or hasattr(hint, "model_fields")
    )


def _return_schema(fn: Any) -> Any:
    """A node's ``-> Schema`` return annotation, when it names a state-like class."""
    import inspect
    import typing

    if not inspect.isroutine(fn):
        return None
    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:
        return None
    return hint if _is_schema(hint) else None


def _first_param_schema(fn: Any) -> Any:
    """A node's own input schema, from its first parameter's annotation."""
    import inspect
    import typing

    if not inspect.isroutine(fn):
        return None
    try:
        params = list(inspect.signature(fn).parameters.values())
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    if not params:
        return None
    hint = hints.get(params[0].name)
    return hint if _is_schema(hint) else None
