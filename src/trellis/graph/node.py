"""What the builder records about a node and a conditional edge.

The builder only records; ``trellis.engine.plan`` turns these specs into the
tables the engine runs on.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

__all__ = [
    "BranchSpec",
    "NodeSpec",
    "call_shape",
    "is_compiled_graph",
    "literal_destinations",
]

# Parameter names LangGraph injects; matched by name, as LangGraph does.
INJECTABLE = ("config", "runtime", "writer", "store")


@dataclass(slots=True)
class NodeSpec:
    """One ``add_node`` call, as given."""

    name: str
    fn: Any
    input_schema: Any = None
    retry_policy: Any = None
    timeout: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    destinations: tuple[str, ...] = ()
    defer: bool = False
    circuit: Any = None
    on_error: str | None = None
    error_handler: Any = None
    compensate: Callable[..., Any] | None = None
    max_visits: int | None = None
    fallback: str | None = None
    approval: Any = None
    is_subgraph: bool = False


@dataclass(slots=True)
class BranchSpec:
    """One ``add_conditional_edges`` call, as given."""

    source: str
    router: Callable[..., Any]
    path_map: dict[Hashable, str] | None = None
    fallback: str | None = None

    def destinations(self) -> tuple[str, ...] | None:
        """Every node this branch may go to, or None when it cannot be known."""
        if self.path_map is not None:
            dests = tuple(self.path_map.values())
        else:
            found = literal_destinations(self.router)
            if found is None:
                return None
            dests = found
        return dests + ((self.fallback,) if self.fallback else ())


def normalize_path_map(path_map: Any, source: str) -> dict[Hashable, str] | None:
    if path_map is None:
        return None
    if isinstance(path_map, Mapping):
        return dict(path_map)
    if isinstance(path_map, Sequence) and not isinstance(path_map, str):
        return {name: name for name in path_map}
    raise TypeError(
        f"add_conditional_edges({source!r}): path_map must be a dict or a list of node "
        f"names, got {path_map!r}"
    )


def _return_hint(fn: Any) -> Any:
    target = fn if inspect.isroutine(fn) else type(fn).__call__
    try:
        return typing.get_type_hints(target).get("return")
    except Exception:
        return None


def literal_destinations(fn: Any) -> tuple[str, ...] | None:
    """Node names from a ``Literal[...]`` or ``Command[Literal[...]]`` return hint."""
    hint = _return_hint(fn)
    if hint is None:
        return None
    if get_origin(hint) is not None and getattr(get_origin(hint), "__name__", "") == "Command":
        args = get_args(hint)
        hint = args[0] if args else None
    if get_origin(hint) is Literal:
        return tuple(str(a) for a in get_args(hint))
    return None


def returns_command(fn: Any) -> bool | None:
    """Whether the return hint allows a ``Command``; None when there is no telling."""
    hint = _return_hint(fn)
    if hint is None or hint is Any or hint is object:
        return None
    return "Command" in str(hint) or "Command" in getattr(hint, "__name__", "")


def call_shape(fn: Any) -> tuple[bool, tuple[str, ...], bool]:
    """How to call ``fn``: (takes the state?, injected keyword names, is async).

    Decided once at compile time so the engine never inspects on the hot path.
    """
    target = fn
    is_async = inspect.iscoroutinefunction(fn)
    if not inspect.isroutine(fn) and callable(fn):
        is_async = is_async or inspect.iscoroutinefunction(type(fn).__call__)
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return True, (), is_async
    takes_state = False
    injected: list[str] = []
    for i, p in enumerate(params):
        if p.kind is p.VAR_POSITIONAL and i == 0:
            # ``(*args, **kwargs)``: a decorator without functools.wraps. As LangGraph,
            # it gets the state (and nothing injected: its kwargs are the wrapped node's).
            takes_state = True
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in INJECTABLE and (i > 0 or p.kind is p.KEYWORD_ONLY):
            injected.append(p.name)
        elif i == 0 and p.kind is not p.KEYWORD_ONLY:
            takes_state = True
    return takes_state, tuple(injected), is_async


def is_compiled_graph(obj: Any) -> bool:
    """A compiled Trellis graph used as a node (a subgraph). Duck-typed, so the
    builder need not import the engine."""
    return getattr(obj, "is_trellis_graph", False) is True
