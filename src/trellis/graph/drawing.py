"""Drawing a graph: Mermaid text (LangGraph's format) and a plain ASCII picture."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trellis.graph.node import literal_destinations
from trellis.types import END, START

if TYPE_CHECKING:
    from trellis.graph.builder import StateGraph

__all__ = ["DrawableGraph", "Edge", "mermaid_id"]

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def mermaid_id(name: str) -> str:
    """A node name as a Mermaid node id, spelled as LangGraph spells it: letters,
    digits, ``_`` and ``-`` stay, any other character becomes ``\\`` and its code
    point in hex (the label shows the name itself).

    >>> mermaid_id("fetch data")
    'fetch\\20data'
    """
    return "".join(c if c in _ID_CHARS else f"\\{ord(c):x}" for c in name)


@dataclass(frozen=True, slots=True)
class Edge:
    """One arrow: dotted when ``conditional``; ``label`` is a path-map key."""

    source: str
    target: str
    conditional: bool = False
    label: str | None = None


@dataclass(frozen=True, slots=True)
class DrawableGraph:
    """A graph's nodes and edges, as ``get_graph()`` returns them.

    >>> print(graph.get_graph().draw_mermaid())
    >>> print(graph.get_graph().draw_ascii())
    """

    nodes: tuple[str, ...]
    edges: tuple[Edge, ...]

    @classmethod
    def from_builder(cls, builder: StateGraph[Any, Any]) -> DrawableGraph:
        names = [START, *builder.nodes]
        edges: set[Edge] = set()
        for a, b in builder.edges:
            edges.add(Edge(a, b))
        for sources, target in builder.joins:
            for a in sources:
                edges.add(Edge(a, target))
        for branch in builder.branches:
            if branch.path_map is not None:
                for key, dest in branch.path_map.items():
                    label = None if str(key) == dest else str(key)
                    edges.add(Edge(branch.source, dest, True, label))
            else:
                dests = branch.destinations() or (*builder.nodes, END)
                for dest in dests:
                    edges.add(Edge(branch.source, dest, True))
            if branch.fallback:
                edges.add(Edge(branch.source, branch.fallback, True, "fallback"))
        for name, spec in builder.nodes.items():
            declared = spec.destinations or (
                () if spec.is_subgraph else (literal_destinations(spec.fn) or ())
            )
            for target in declared:
                edges.add(Edge(name, target, True))
            for extra, label in ((spec.fallback, "fallback"), (spec.on_error, "on_error")):
                if extra:
                    edges.add(Edge(name, extra, True, label))
            for target in getattr(spec.approval, "destinations", ()):
                edges.add(Edge(name, target, True, "approval"))
            if spec.error_handler is not None:
                for target in literal_destinations(spec.error_handler) or ():
                    edges.add(Edge(name, target, True, "error_handler"))
        # LangGraph's order: START's edges, the rest sorted, then plain edges to
        # END from nodes that lead nowhere else, and self-loops last.
        to_end = {e for e in edges if e.target == END and not e.conditional}
        edges -= to_end
        ordered = sorted(edges, key=lambda e: (e.source, e.target, e.conditional, e.label or ""))
        origins = {e.source for e in edges}
        leaves = sorted({e.target for e in edges if e.target != END} - origins)
        termini = leaves + sorted({e.source for e in to_end} - origins - set(leaves))
        ordered += [Edge(t, END) for t in termini]
        ordered = [e for e in ordered if e.source != e.target] + [
            e for e in ordered if e.source == e.target
        ]
        if any(e.target == END for e in ordered):
            names.append(END)
        return cls(tuple(names), tuple(ordered))

    def draw_mermaid(self, *, highlight: frozenset[str] = frozenset()) -> str:
        """Mermaid flowchart text, in the same shape LangGraph prints.

        ``highlight`` marks nodes (e.g. the executed path) with a CSS class.
        """
        lines = ["---", "config:", "  flowchart:", "    curve: linear", "---", "graph TD;"]
        for name in self.nodes:
            if name == START:
                lines.append(f"\t{START}([<p>{START}</p>]):::first")
            elif name == END:
                lines.append(f"\t{END}([<p>{END}</p>]):::last")
            else:
                suffix = ":::executed" if name in highlight else ""
                lines.append(f"\t{mermaid_id(name)}({name}){suffix}")
        for e in self.edges:
            a, b = mermaid_id(e.source), mermaid_id(e.target)
            if e.conditional and e.label:
                lines.append(f"\t{a} -. &nbsp;{e.label}&nbsp; .-> {b};")
            elif e.conditional:
                lines.append(f"\t{a} -.-> {b};")
            else:
                lines.append(f"\t{a} --> {b};")
        lines += [
            "\tclassDef default fill:#f2f0ff,line-height:1.2",
            "\tclassDef first fill-opacity:0",
            "\tclassDef last fill:#bfb6fc",
        ]
        if highlight:
            lines.append("\tclassDef executed fill:#c6f6d5,stroke:#2f855a")
        return "\n".join(lines) + "\n"

    def layers(self) -> list[list[str]]:
        """Nodes grouped by distance from START (back edges ignored)."""
        out: dict[str, list[str]] = {}
        for e in self.edges:
            out.setdefault(e.source, []).append(e.target)
        depth = {START: 0}
        queue = deque([START])
        while queue:
            node = queue.popleft()
            for nxt in out.get(node, ()):
                if nxt not in depth:
                    depth[nxt] = depth[node] + 1
                    queue.append(nxt)
        if END in depth:  # END always closes the picture
            depth[END] = max(d for n, d in depth.items() if n != END) + 1
        for name in self.nodes:
            depth.setdefault(name, max(depth.values()) + 1)
        rows: dict[int, list[str]] = {}
        for name in self.nodes:
            rows.setdefault(depth[name], []).append(name)
        return [rows[k] for k in sorted(rows)]

    def draw_ascii(self) -> str:
        """A layered box drawing, top to bottom, with each layer's arrows listed.

        Solid arrows (``-->``) always run; dotted ones (``-.->``) are chosen by
        a router, with the path-map key in brackets.
        """
        rows = self.layers()
        width = max((sum(len(n) + 6 for n in row) for row in rows), default=0)
        lines: list[str] = []
        for i, row in enumerate(rows):
            boxes = ["+" + "-" * (len(n) + 2) + "+" for n in row]
            names = ["| " + n + " |" for n in row]
            lines.append("  ".join(boxes).center(width).rstrip())
            lines.append("  ".join(names).center(width).rstrip())
            lines.append("  ".join(boxes).center(width).rstrip())
            arrows = [e for e in self.edges if e.source in row]
            if arrows and i < len(rows) - 1:
                for e in arrows:
                    style = "-.->" if e.conditional else "-->"
                    label = f" [{e.label}]" if e.label else ""
                    lines.append(f"{'':4}{e.source} {style} {e.target}{label}")
                lines.append("|".center(width).rstrip())
                lines.append("v".center(width).rstrip())
        return "\n".join(lines) + "\n"
