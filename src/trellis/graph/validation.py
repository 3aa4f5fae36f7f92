"""Compile-time checks: every problem of a graph, reported at once."""

from __future__ import annotations

import warnings
from collections import deque
from typing import TYPE_CHECKING

from trellis.errors import GraphValidationError
from trellis.graph.node import literal_destinations, returns_command
from trellis.types import END, START

if TYPE_CHECKING:
    from trellis.graph.builder import StateGraph

__all__ = ["successors", "validate"]


def successors(
    builder: StateGraph[object, object],
) -> tuple[dict[str, set[str]], set[str], set[str]]:
    """Where each node (and START) may go.

    Counts edges, joins, path maps, ``Literal`` router hints, ``destinations=``
    and ``Command[Literal[...]]`` return hints. Also returns the sources whose
    routers may go anywhere (no path map, no hint: LangGraph draws those as
    reaching every node) and the nodes that may return a ``Command`` with
    undeclared destinations.
    """
    graph: dict[str, set[str]] = {name: set() for name in (START, *builder.nodes)}
    open_routers: set[str] = set()
    open_commands: set[str] = set()
    for a, b in builder.edges:
        graph.setdefault(a, set()).add(b)
    for sources, target in builder.joins:
        for a in sources:
            graph.setdefault(a, set()).add(target)
    for branch in builder.branches:
        dests = branch.destinations()
        if dests is None:
            open_routers.add(branch.source)
        else:
            graph.setdefault(branch.source, set()).update(dests)
    for name, spec in builder.nodes.items():
        graph[name].update(spec.destinations)
        graph[name].update(getattr(spec.approval, "destinations", ()))
        if spec.error_handler is not None:  # where a failure may be steered
            handled = literal_destinations(spec.error_handler)
            if handled is not None:
                graph[name].update(handled)
            elif returns_command(spec.error_handler) is not False:
                open_commands.add(name)
        for extra in (spec.fallback, spec.on_error):
            if extra:
                graph[name].add(extra)
        if spec.destinations:
            continue
        if spec.is_subgraph:  # its nodes may steer this graph: Command(graph=PARENT)
            open_commands.add(name)
            continue
        declared = literal_destinations(spec.fn)
        if declared is not None:
            graph[name].update(declared)
        elif returns_command(spec.fn) is not False:
            open_commands.add(name)
    return graph, open_routers, open_commands


def validate(builder: StateGraph[object, object]) -> None:
    """Raise ``GraphValidationError`` with every problem found, or return."""
    problems = list(builder.problems)
    known = set(builder.nodes)

    def check(name: str, where: str, *, allow_end: bool = True) -> None:
        if name == END and allow_end:
            return
        if name not in known:
            problems.append(f"{where} names unknown node {name!r}")

    for a, b in builder.edges:
        if a != START:
            check(a, f"edge {a!r} -> {b!r}", allow_end=False)
        check(b, f"edge {a!r} -> {b!r}")
    for sources, target in builder.joins:
        for a in sources:
            check(a, f"join {list(sources)!r} -> {target!r}", allow_end=False)
        check(target, f"join {list(sources)!r} -> {target!r}", allow_end=False)
    for branch in builder.branches:
        if branch.source != START:
            check(branch.source, "conditional edge source", allow_end=False)
        if branch.path_map is not None:
            for key, dest in branch.path_map.items():
                check(dest, f"path_map of {branch.source!r} (key {key!r})")
        else:  # the router's Literal return hint, as LangGraph checks it
            for dest in branch.destinations() or ():
                check(dest, f"the return hint of the router from {branch.source!r}")
        if branch.fallback is not None:
            check(branch.fallback, f"fallback of the conditional edge from {branch.source!r}")
    for name, spec in builder.nodes.items():
        if not spec.is_subgraph and not callable(spec.fn):
            problems.append(f"node {name!r} is not callable: {spec.fn!r}")
        for dest in spec.destinations:
            check(dest, f"destinations of node {name!r}")
        if not spec.is_subgraph and not spec.destinations:
            for dest in literal_destinations(spec.fn) or ():
                check(dest, f"the Command[Literal[...]] return hint of node {name!r}")
        if spec.fallback is not None:
            check(spec.fallback, f"fallback of node {name!r}")
        if spec.on_error is not None:
            check(spec.on_error, f"on_error of node {name!r}")
        for dest in getattr(spec.approval, "destinations", ()):
            check(dest, f"approval of node {name!r}")
        if spec.max_visits is not None and spec.max_visits < 1:
            problems.append(f"max_visits of node {name!r} must be at least 1")
    has_entry = any(a == START for a, _ in builder.edges) or any(
        b.source == START for b in builder.branches
    )
    if not has_entry:
        problems.append(
            "graph has no entry point: add an edge from START (or call set_entry_point)"
        )
    unreachable = _unreachable(builder, known) if has_entry else ([], set())
    if unreachable[0] and not unreachable[1]:
        problems.append(_unreachable_message(unreachable[0]))
    if problems:
        raise GraphValidationError(problems)
    if unreachable[0]:
        warnings.warn(
            f"{_unreachable_message(unreachable[0])}; node(s) "
            f"{', '.join(map(repr, sorted(unreachable[1])))} may return a Command without "
            "declared destinations (annotate -> Command[Literal[...]] or pass destinations=) "
            "and might reach them",
            stacklevel=4,
        )


def _unreachable_message(names: list[str]) -> str:
    return f"node(s) not reachable from START: {', '.join(map(repr, names))}"


def _unreachable(
    builder: StateGraph[object, object], known: set[str]
) -> tuple[list[str], set[str]]:
    """Nodes no path from START reaches, and the reached nodes that might still
    reach them through an undeclared Command."""
    graph, open_routers, open_commands = successors(builder)
    reached = {START}
    queue = deque([START])
    while queue:
        node = queue.popleft()
        if node in open_routers:
            return [], set()  # a router that may go anywhere reaches every node
        for nxt in graph.get(node, ()):
            if nxt not in reached:
                reached.add(nxt)
                queue.append(nxt)
    return sorted(known - reached), open_commands & reached
