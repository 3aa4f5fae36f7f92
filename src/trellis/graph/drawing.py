"""Drawing a graph: Mermaid text (LangGraph's format) and a plain ASCII picture."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trellis.graph.node import literal_destinations
from trellis.types import END, START

if TYPE_CHECKING:
    from trellis.graph.builder import StateGraph

__all__ = ["DrawableGraph", "Edge", "mermaid_id"]

_MARKDOWN = frozenset("*_`")  # a label starting and ending with one is wrapped in <p>
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
    def from_builder(cls, builder: StateGraph[Any, Any], xray: int | bool = False) -> DrawableGraph:
        """The builder's graph; with ``xray``, each subgraph node drawn as the
        subgraph itself (``True``: all the way down, ``n``: ``n`` levels), its
        nodes named ``"node:inner"``, as LangGraph draws them."""
        graph = cls._flat(builder)
        if not xray:
            return graph
        deeper = xray if isinstance(xray, bool) or xray <= 0 else xray - 1
        for name, spec in builder.nodes.items():
            if spec.is_subgraph:
                graph = graph._expanded(name, spec.fn.get_graph(xray=deeper))
        return graph

    @classmethod
    def _flat(cls, builder: StateGraph[Any, Any]) -> DrawableGraph:
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

    def _expanded(self, name: str, sub: DrawableGraph) -> DrawableGraph:
        """This graph with node ``name`` replaced by ``sub``: arrows into it lead to
        the subgraph's first node and arrows out of it leave from its last, as
        LangGraph's ``Graph.extend`` does (START and END are dropped when each has
        a single arrow)."""
        if len(sub.nodes) <= 1 or name not in self.nodes:
            return self
        sub = sub._trimmed()
        first, last = sub._first(), sub._last()
        if first is None or last is None:
            return self

        def inner(node: str) -> str:
            return f"{name}:{node}"

        edges = [
            replace(
                e,
                source=inner(last) if e.source == name else e.source,
                target=inner(first) if e.target == name else e.target,
            )
            for e in self.edges
        ]
        edges += [replace(e, source=inner(e.source), target=inner(e.target)) for e in sub.edges]
        nodes = [n for n in self.nodes if n != name] + [inner(n) for n in sub.nodes]
        return DrawableGraph(tuple(nodes), tuple(edges))

    def _first(self, exclude: str | None = None) -> str | None:
        """The one node no arrow leads to (ignoring ``exclude``), if just one."""
        targets = {e.target for e in self.edges if e.source != exclude}
        found = [n for n in self.nodes if n != exclude and n not in targets]
        return found[0] if len(found) == 1 else None

    def _last(self, exclude: str | None = None) -> str | None:
        """The one node no arrow leaves (ignoring ``exclude``), if just one."""
        sources = {e.source for e in self.edges if e.target != exclude}
        found = [n for n in self.nodes if n != exclude and n not in sources]
        return found[0] if len(found) == 1 else None

    def _trimmed(self) -> DrawableGraph:
        graph = self
        first = graph._first()
        if first and graph._first(first) and sum(e.source == first for e in graph.edges) == 1:
            graph = graph._without(first)
        last = graph._last()
        if last and graph._last(last) and sum(e.target == last for e in graph.edges) == 1:
            graph = graph._without(last)
        return graph

    def _without(self, node: str) -> DrawableGraph:
        return DrawableGraph(
            tuple(n for n in self.nodes if n != node),
            tuple(e for e in self.edges if node not in (e.source, e.target)),
        )

    def draw_mermaid(self, *, highlight: frozenset[str] = frozenset()) -> str:
        """Mermaid flowchart text, in the same shape LangGraph prints; a subgraph
        drawn by ``get_graph(xray=...)`` is a ``subgraph`` block.

        ``highlight`` marks nodes (e.g. the executed path) with a CSS class.
        """
        lines = ["---", "config:", "  flowchart:", "    curve: linear", "---", "graph TD;"]
        # LangGraph's layout: top-level nodes, then arrows grouped by the subgraph
        # holding both ends, each group a block with its own nodes and its nested groups.
        nested: dict[str, list[str]] = {}
        for node in self.nodes:
            if ":" in node:
                nested.setdefault(node.rsplit(":", 1)[0], []).append(node)
            else:
                lines.append(self._mermaid_node(node, highlight))
        groups: dict[str, list[Edge]] = {}
        for e in self.edges:
            pairs = zip(e.source.split(":"), e.target.split(":"), strict=False)
            groups.setdefault(":".join(a for a, b in pairs if a == b), []).append(e)
        seen: set[str] = set()

        def block(prefix: str, edges: list[Edge]) -> None:
            framed = bool(prefix) and not (len(edges) == 1 and edges[0].source == edges[0].target)
            if framed:
                title = prefix.rsplit(":", 1)[-1]
                if title in seen:
                    raise ValueError(
                        f"two subgraph nodes are named {title!r}; give them unique names "
                        "to draw them with xray"
                    )
                seen.add(title)
                lines.append(f"\tsubgraph {title}")
                lines.extend(self._mermaid_node(n, highlight) for n in nested.get(prefix, ()))
            elif prefix and ":" not in prefix:
                seen.add(prefix)  # a lone self-loop: its nodes get no block of their own
            lines.extend(_mermaid_edge(e) for e in edges)
            for inner, inner_edges in groups.items():
                if inner and inner.rpartition(":")[0] == prefix:  # a group one level down
                    block(inner, inner_edges)
            if framed:
                lines.append("\tend")

        block("", groups.get("", []))
        for prefix, members in nested.items():
            if ":" not in prefix and prefix not in seen:
                lines.append(f"\tsubgraph {prefix}")
                lines.extend(self._mermaid_node(n, highlight) for n in members)
                lines.append("\tend")
                seen.add(prefix)
        lines += [
            "\tclassDef default fill:#f2f0ff,line-height:1.2",
            "\tclassDef first fill-opacity:0",
            "\tclassDef last fill:#bfb6fc",
        ]
        if highlight:
            lines.append("\tclassDef executed fill:#c6f6d5,stroke:#2f855a")
        return "\n".join(lines) + "\n"

    def draw_mermaid_png(
        self,
        *,
        output_file_path: str | Path | None = None,
        background_color: str | None = "white",
        base_url: str | None = None,
        max_retries: int = 1,
        retry_delay: float = 1.0,
        timeout: float = 10.0,
    ) -> bytes:
        """The Mermaid picture as PNG bytes, rendered by the mermaid.ink service
        (``base_url``: your own deployment of it) as LangGraph renders it; also
        written to ``output_file_path`` when given. Server errors (5xx) and network
        failures are retried ``max_retries`` times, with exponential backoff.

        >>> from IPython.display import Image
        >>> Image(graph.get_graph().draw_mermaid_png())
        """
        from trellis.graph.mermaid_ink import render_png

        png = render_png(
            self.draw_mermaid(),
            base_url=base_url or "https://mermaid.ink",
            background_color=background_color,
            max_retries=max_retries,
            retry_delay=retry_delay,
            timeout=timeout,
        )
        if output_file_path is not None:
            Path(output_file_path).write_bytes(png)
        return png

    @staticmethod
    def _mermaid_node(node: str, highlight: frozenset[str]) -> str:
        name = node.rsplit(":", 1)[-1]
        label = f"<p>{name}</p>" if name[:1] in _MARKDOWN and name[-1:] in _MARKDOWN else name
        if node == START:
            return f"\t{START}([{label}]):::first"
        if node == END:
            return f"\t{END}([{label}]):::last"
        suffix = ":::executed" if node in highlight else ""
        return f"\t{mermaid_id(node)}({label}){suffix}"

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


def _mermaid_edge(e: Edge) -> str:
    a, b = mermaid_id(e.source), mermaid_id(e.target)
    if e.conditional and e.label:
        return f"\t{a} -. &nbsp;{e.label}&nbsp; .-> {b};"
    if e.conditional:
        return f"\t{a} -.-> {b};"
    return f"\t{a} --> {b};"
