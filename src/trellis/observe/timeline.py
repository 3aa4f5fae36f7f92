"""Timelines of past runs, rebuilt from their events: a text tree, JSON, and HTML.

Events may come from several runs of one thread (a run, then its resume after an
interrupt, ...); each run becomes one root. Missing events are tolerated: a task
seen only through its ``task_end`` still gets a row, and a task whose end never
came (a crash) shows as ``running``.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trellis.observe.events import Event, EventKind
from trellis.types import END, START

__all__ = [
    "RunRow",
    "StepRow",
    "TaskRow",
    "build_timeline",
    "render_html",
    "render_json",
    "render_tree",
]

_TASK_KINDS = frozenset({EventKind.TASK_START, EventKind.TASK_END, EventKind.TASK_ERROR})
_STEP_KINDS = frozenset({EventKind.STEP_START, EventKind.STEP_END})
_RUN_KINDS = frozenset({EventKind.RUN_START, EventKind.RUN_END})
_MARKS = {
    "ok": "✓",
    "error": "✗",
    "timeout": "✗",
    "interrupted": "⏸",
    "cancelled": "⊘",
    "running": "…",
}


@dataclass(slots=True)
class TaskRow:
    """One task attempt."""

    span_id: str
    node: str = "?"
    step: int | None = None
    attempt: int | None = None
    task_id: str | None = None
    status: str = "running"
    start: float | None = None
    duration: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    retries: int = 0
    retry_delay: float | None = None
    interrupts: int = 0
    notes: list[Event] = field(default_factory=list)


@dataclass(slots=True)
class StepRow:
    """One super-step and the task attempts it ran."""

    span_id: str
    step: int | None = None
    status: str = "running"
    start: float | None = None
    duration: float | None = None
    tasks: list[TaskRow] = field(default_factory=list)
    notes: list[Event] = field(default_factory=list)


@dataclass(slots=True)
class RunRow:
    """One run (one ``invoke``/``stream`` call) and its steps."""

    span_id: str
    trace_id: str = ""
    thread_id: str | None = None
    graph: str | None = None
    run_id: str | None = None
    status: str = "running"
    start: float | None = None
    duration: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    steps: list[StepRow] = field(default_factory=list)
    notes: list[Event] = field(default_factory=list)

    def tasks(self) -> list[TaskRow]:
        return [t for s in self.steps for t in s.tasks]


_NOISE = 1e-6  # seconds: what ``ts - duration`` may be off by in an epoch float


def _begin(row: TaskRow | StepRow | RunRow, e: Event) -> None:
    if e.kind in (EventKind.RUN_START, EventKind.STEP_START, EventKind.TASK_START):
        row.start = e.ts
        return
    row.duration = e.duration
    row.status = e.status or ("error" if e.kind is EventKind.TASK_ERROR else "ok")
    if row.start is None or (e.duration is not None and e.start_ts > row.start + _NOISE):
        # A task that waited for a worker began after its start event, which its step
        # sends for every task at once: its end event says when it did begin.
        row.start = e.start_ts


def build_timeline(events: Iterable[Event]) -> list[RunRow]:
    """Group events into runs → steps → task attempts, each sorted by time.

    >>> runs = build_timeline(sink.events)                  # doctest: +SKIP
    >>> [t.node for t in runs[0].tasks()]                   # doctest: +SKIP
    ['fetch', 'lint', 'security', 'style', 'report']
    """
    ordered = list(events)
    runs: dict[str, RunRow] = {}
    by_trace: dict[str, RunRow] = {}
    steps: dict[str, StepRow] = {}
    tasks: dict[str, TaskRow] = {}
    instants: list[Event] = []
    step_parent: dict[str, str | None] = {}

    def run_for(span_id: str | None, e: Event) -> RunRow:
        run = runs.get(span_id) if span_id else by_trace.get(e.trace_id)
        if run is None:
            key = span_id or f"trace:{e.trace_id}"
            run = runs[key] = RunRow(key, e.trace_id, e.thread_id, e.graph, e.run_id)
            by_trace.setdefault(e.trace_id, run)
        return run

    def step_for(span_id: str | None, e: Event) -> StepRow:
        key = span_id or f"step:{e.trace_id}:{e.step}"
        step = steps.get(key)
        if step is None:
            step = steps[key] = StepRow(key, e.step)
            run_for(step_parent.get(key), e).steps.append(step)
        return step

    # Register runs and step parents first, so rows never depend on event order.
    for e in ordered:
        if e.kind in _RUN_KINDS:
            run_for(e.span_id, e)
        elif e.kind in _STEP_KINDS:
            step_parent.setdefault(e.span_id, e.parent_span_id)
    for e in ordered:
        kind = e.kind
        if kind in _RUN_KINDS:
            run = run_for(e.span_id, e)
            run.thread_id = run.thread_id or e.thread_id
            run.graph, run.run_id = run.graph or e.graph, run.run_id or e.run_id
            _begin(run, e)
            if kind is EventKind.RUN_END:
                run.error_type, run.error_message = e.error_type, e.error_message
        elif kind in _STEP_KINDS:
            step = step_for(e.span_id, e)
            step.step = e.step if e.step is not None else step.step
            _begin(step, e)
        elif kind in _TASK_KINDS:
            task = tasks.get(e.span_id)
            if task is None:
                task = tasks[e.span_id] = TaskRow(e.span_id)
                step_for(e.parent_span_id, e).tasks.append(task)
            task.node = e.node or task.node
            task.step = e.step if e.step is not None else task.step
            task.attempt = e.attempt if e.attempt is not None else task.attempt
            task.task_id = e.task_id or task.task_id
            _begin(task, e)
            if kind is EventKind.TASK_ERROR:
                task.error_type, task.error_message = e.error_type, e.error_message
        else:
            instants.append(e)

    for e in instants:
        if e.span_id in tasks:
            task = tasks[e.span_id]
            if e.kind is EventKind.RETRY:
                task.retries += 1
                delay = e.data.get("delay")
                task.retry_delay = float(delay) if isinstance(delay, (int, float)) else None
            elif e.kind is EventKind.INTERRUPT:
                task.interrupts += 1
            else:
                task.notes.append(e)
        elif e.span_id in steps:
            steps[e.span_id].notes.append(e)
        else:
            run_for(e.span_id if e.span_id in runs else None, e).notes.append(e)

    out = sorted(runs.values(), key=lambda r: (_key(r.start), r.span_id))
    for run in out:
        run.steps.sort(key=lambda s: (_key(s.step), _key(s.start)))
        for step in run.steps:
            step.tasks.sort(key=lambda t: (_key(t.start), t.node, _key(t.attempt)))
    return out


def _key(value: float | None) -> float:
    return math.inf if value is None else value


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.0f}µs"
    if seconds < 1.0:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.2f}s"


def _note_text(e: Event) -> str:
    details = " ".join(f"{k}={v}" for k, v in e.data.items())
    parts = [e.kind.value.replace("_", " "), e.node or "", e.status or "", details]
    return " ".join(p for p in parts if p)


def _task_line(t: TaskRow) -> str:
    parts = [_MARKS.get(t.status, "?"), t.node, _fmt_duration(t.duration)]
    if t.status not in ("ok", "error"):
        parts.append(t.status)
    if t.attempt and t.attempt > 1 or t.retries:
        parts.append(f"attempt {t.attempt or 1}")
    if t.error_type:
        parts.append(f"{t.error_type}: {t.error_message or ''}".strip())
    if t.retries:
        delay = f" in {t.retry_delay:g}s" if t.retry_delay is not None else ""
        parts.append(f"↻ retried{delay}")
    if t.interrupts:
        parts.append(f"⏸ {t.interrupts} interrupt{'s' if t.interrupts > 1 else ''}")
    return "  ".join(p for p in parts if p)


_Tree = tuple[str, list["_Tree"]]


def _draw(node: _Tree, prefix: str, last: bool, root: bool, out: list[str]) -> None:
    label, children = node
    if root:
        out.append(label)
        child_prefix = ""
    else:
        out.append(f"{prefix}{'└── ' if last else '├── '}{label}")
        child_prefix = prefix + ("    " if last else "│   ")
    for i, child in enumerate(children):
        _draw(child, child_prefix, i == len(children) - 1, False, out)


def render_tree(events: Iterable[Event]) -> str:
    """A text tree per run: run → step N → task attempt, with ✓/✗, durations,
    retries and interrupts.

    >>> print(render_tree(sink.events))                     # doctest: +SKIP
    run 4bf92f35 graph=review thread=t1  ✓ ok  1.52s
    ├── step 0  ✓  10.2ms
    │   └── ✓  fetch  10.0ms
    └── step 1  ✓  0.50s
        ├── ✗  lint  0.10s  attempt 1  TimeoutError: slow  ↻ retried in 0.5s
        └── ✓  lint  0.15s  attempt 2
    """
    out: list[str] = []
    for run in build_timeline(events):
        head = [f"run {(run.run_id or run.trace_id)[:8]}"]  # a subgraph shares its trace
        if run.graph:
            head.append(f"graph={run.graph}")
        if run.thread_id:
            head.append(f"thread={run.thread_id}")
        label = " ".join(head) + f"  {_MARKS.get(run.status, '?')} {run.status}"
        if run.duration is not None:
            label += f"  {_fmt_duration(run.duration)}"
        if run.error_type:
            label += f"  {run.error_type}: {run.error_message or ''}"
        timed: list[tuple[float, _Tree]] = []
        for step in run.steps:
            tasks: list[_Tree] = [
                (_task_line(t), [(_note_text(n), []) for n in t.notes]) for t in step.tasks
            ]
            tasks += [(f"· {_note_text(n)}", []) for n in step.notes]
            step_label = f"step {step.step if step.step is not None else '?'}  "
            step_label += f"{_MARKS.get(step.status, '?')}  {_fmt_duration(step.duration)}"
            timed.append((_key(step.start), (step_label.rstrip(), tasks)))
        # Run-level notes (the input checkpoint saved, a compensation) where they
        # happened among the steps, not after all of them.
        timed += [(n.ts, (f"· {_note_text(n)}", [])) for n in run.notes]
        timed.sort(key=lambda item: item[0])  # stable: steps keep their order on ties
        _draw((label, [child for _, child in timed]), "", True, True, out)
    return "\n".join(out) + ("\n" if out else "")


def _row_dict(row: TaskRow | StepRow | RunRow) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for name in row.__slots__:
        value = getattr(row, name)
        if name == "notes":
            d["events"] = [e.to_dict() for e in value]
        elif name == "steps" or name == "tasks":
            d[name] = [_row_dict(r) for r in value]
        else:
            d[name] = value
    return d


def render_json(events: Iterable[Event], *, indent: int | None = 2) -> str:
    """The timeline as JSON: ``{"runs": [...], "events": [...]}`` with the raw events."""
    ordered = list(events)
    doc = {
        "runs": [_row_dict(r) for r in build_timeline(ordered)],
        "events": [e.to_dict() for e in ordered],
    }
    return json.dumps(doc, indent=indent, ensure_ascii=False, default=repr)


# --- HTML -----------------------------------------------------------------------

_ID = r"[^\s(\[{>;]+"
_EDGE_RE = re.compile(rf"^\s*({_ID})\s*(?:-->|==>|-\.->|-\.\s.*?\s\.->|--\s.*?\s-->|---)\s*({_ID})")
_NODE_RE = re.compile(rf"^\s*({_ID})\s*([(\[{{>].*?)(?::::[\w-]+)?\s*;?\s*$")
_SKIP_RE = re.compile(r"^\s*(graph\s|flowchart\s|classDef\s|class\s|style\s|%%|subgraph\s|end\s*$)")
_HEX_ESCAPE = re.compile(r"\\([0-9a-f]+)")


def _label(shape: str) -> str:
    """The text inside a node's shape: ``(fetch data)``, ``([<p>__start__</p>])``."""
    text = shape.replace("<p>", "").replace("</p>", "")
    depth = len(text) - len(text.lstrip("([{>"))
    return text[depth : len(text) - depth] if depth else text


def _parse_mermaid(text: str) -> tuple[list[str], list[tuple[str, str]], dict[str, str]]:
    """Node names, edges between them, and each name's Mermaid id.

    Ids may spell a name with escapes (``fetch\\20data``, as LangGraph and Trellis
    draw names that are not identifiers): a node's label gives its name back.
    """
    ids: dict[str, str] = {}  # mermaid id -> name
    edges_by_id: list[tuple[str, str]] = []
    lines = text.strip().splitlines()
    if lines and lines[0].strip() == "---":  # YAML front matter (mermaid config)
        closing = next((i for i, ln in enumerate(lines[1:], 1) if ln.strip() == "---"), 0)
        lines = lines[closing + 1 :]
    order: dict[str, None] = {}
    for line in lines:
        m = _EDGE_RE.match(line)
        if m:
            a, b = m.group(1), m.group(2)
            order.setdefault(a)
            order.setdefault(b)
            edges_by_id.append((a, b))
            continue
        if not line.strip() or _SKIP_RE.match(line):
            continue
        m = _NODE_RE.match(line)
        if m:
            order.setdefault(m.group(1))
            ids[m.group(1)] = _label(m.group(2)) or m.group(1)

    def name(node_id: str) -> str:
        found = ids.get(node_id)
        if found is None:  # no node line: undo the escapes as best we can
            found = _HEX_ESCAPE.sub(lambda e: chr(int(e.group(1), 16)), node_id)
        return found

    names = {node_id: name(node_id) for node_id in order}
    edges = [(names[a], names[b]) for a, b in edges_by_id]
    return list(names.values()), edges, {n: i for i, n in names.items()}


def _executed_edges(
    runs: Sequence[RunRow], edges: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Edges the run probably took: b ran the step after a (or later, into a join)."""
    steps: dict[str, set[int]] = {}
    first: set[str] = set()
    last: set[str] = set()
    for run in runs:
        numbered = [s for s in run.steps if s.step is not None and s.tasks]
        for s in numbered:
            for t in s.tasks:
                steps.setdefault(t.node, set()).add(s.step)  # type: ignore[arg-type]
        if numbered:
            first.update(t.node for t in numbered[0].tasks)
            if run.status == "ok":
                last.update(t.node for t in numbered[-1].tasks)
    fan_in: dict[str, int] = {}
    for _, b in edges:
        fan_in[b] = fan_in.get(b, 0) + 1
    taken: set[tuple[str, str]] = set()
    for a, b in edges:
        if a == START:
            hit = b in first
        elif b == END:
            hit = a in last
        else:
            hit = any(
                sb == sa + 1 or (fan_in.get(b, 0) > 1 and sb > sa)
                for sa in steps.get(a, ())
                for sb in steps.get(b, ())
            )
        if hit:
            taken.add((a, b))
    return taken


def _layers(nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[list[str]]:
    out_edges: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        out_edges.setdefault(a, []).append(b)
    has_in = {b for _, b in edges}
    roots = [n for n in nodes if n == START] or [n for n in nodes if n not in has_in]
    depth = {n: 0 for n in roots}
    queue = list(roots)
    while queue:
        n = queue.pop(0)
        for m in out_edges.get(n, ()):
            if m not in depth:
                depth[m] = depth[n] + 1
                queue.append(m)
    deepest = max(depth.values(), default=-1)
    for n in nodes:
        if n not in depth:
            deepest += 1
            depth[n] = deepest
    if END in depth:
        depth[END] = max(d for n, d in depth.items() if n != END) + 1 if len(depth) > 1 else 0
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for n in nodes:
        layers[depth[n]].append(n)
    return [layer for layer in layers if layer]


def _svg_graph(
    nodes: Sequence[str],
    edges: Sequence[tuple[str, str]],
    done: set[str],
    taken: set[tuple[str, str]],
) -> str:
    box_w, box_h, gap_x, gap_y = 150, 34, 24, 46
    layers = _layers(nodes, edges)
    width = max((len(layer) for layer in layers), default=1) * (box_w + gap_x) + gap_x + 60
    pos: dict[str, tuple[float, float]] = {}
    for li, layer in enumerate(layers):
        row_w = len(layer) * (box_w + gap_x) - gap_x
        x0 = (width - row_w) / 2
        for i, n in enumerate(layer):
            pos[n] = (x0 + i * (box_w + gap_x), gap_y / 2 + li * (box_h + gap_y))
    height = len(layers) * (box_h + gap_y) + 10
    parts = [
        f'<svg class="graph" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z"/></marker></defs>',
    ]
    for a, b in edges:
        if a not in pos or b not in pos:
            continue
        (ax, ay), (bx, by) = pos[a], pos[b]
        cls = "edge taken" if (a, b) in taken else "edge"
        x1, y1 = ax + box_w / 2, ay + box_h
        x2, y2 = bx + box_w / 2, by
        if by > ay + box_h + gap_y:  # Skips layers: go round the left, not through boxes.
            x1, y1, x2, y2 = ax, ay + box_h / 2, bx, by + box_h / 2
            bend = min(x1, x2) - 40
            d = f"M{x1:.0f},{y1:.0f} C{bend:.0f},{y1:.0f} {bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
        elif by <= ay:  # A back edge (loop): bend it around the right side.
            x1, y1, x2, y2 = ax + box_w, ay + box_h / 2, bx + box_w, by + box_h / 2
            bend = max(x1, x2) + 40
            d = f"M{x1:.0f},{y1:.0f} C{bend:.0f},{y1:.0f} {bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
        else:
            mid = (y1 + y2) / 2
            d = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{mid:.0f} {x2:.0f},{mid:.0f} {x2:.0f},{y2:.0f}"
        parts.append(
            f'<path class="{cls}" data-from="{_a(a)}" data-to="{_a(b)}" d="{d}" '
            'marker-end="url(#arrow)"/>'
        )
    for n in nodes:
        x, y = pos[n]
        cls = "gnode executed" if n in done else "gnode"
        label = n if len(n) <= 20 else n[:19] + "…"
        parts.append(
            f'<g class="{cls}" data-node="{_a(n)}"><title>{_t(n)}</title>'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" height="{box_h}" rx="8"/>'
            f'<text x="{x + box_w / 2:.0f}" y="{y + box_h / 2 + 4:.0f}">{_t(label)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _a(value: object) -> str:
    return html.escape(str(value), quote=True)


def _t(value: object) -> str:
    return html.escape(str(value), quote=False)


_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#1f2937;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.meta{color:#6b7280;margin-bottom:12px}.meta span{margin-right:16px}
.gantt{border:1px solid #e5e7eb;border-radius:6px;padding:8px 8px 4px}
.row{display:flex;align-items:center;height:22px}
.label{width:220px;flex:none;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;
padding-right:8px;font-size:12px}
.lane{position:relative;flex:1;height:16px;background:#f9fafb}
.steprow .label{font-weight:600;color:#374151}
.steprow .lane{background:none}
.stepbar{position:absolute;top:6px;height:4px;background:#cbd5e1;border-radius:2px}
.task{position:absolute;top:1px;height:14px;min-width:2px;border-radius:3px;cursor:default}
.task.ok{background:#10b981}.task.error,.task.timeout{background:#ef4444}
.task.interrupted{background:#f59e0b}.task.running{background:#9ca3af}
.task.cancelled{background:repeating-linear-gradient(45deg,#9ca3af 0 3px,#e5e7eb 3px 6px)}
.task:hover{outline:2px solid #111827}
.axis{display:flex;margin-left:220px;font-size:11px;color:#6b7280;justify-content:space-between}
svg.graph rect{fill:#f3f4f6;stroke:#9ca3af}
svg.graph .executed rect{fill:#d1fae5;stroke:#059669;stroke-width:2}
svg.graph text{font-size:12px;text-anchor:middle;fill:#111827}
svg.graph .edge{fill:none;stroke:#9ca3af;stroke-width:1.2}
svg.graph .edge.taken{stroke:#059669;stroke-width:2.5}
svg.graph marker path{fill:#6b7280}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #e5e7eb;padding:3px 8px;text-align:left}
tr.executed td:first-child{background:#d1fae5;font-weight:600}
pre.mermaid{background:#f9fafb;border:1px solid #e5e7eb;padding:8px;font-size:12px}
.err{color:#b91c1c}
"""

# Hovering a bar highlights its node in the graph; no network, no libraries.
_JS = """
document.querySelectorAll('.task').forEach(function(bar){
  function mark(on){document.querySelectorAll('svg.graph g[data-node]').forEach(function(g){
    if(g.getAttribute('data-node')===bar.dataset.node){g.style.opacity=on?'1':'';}
    else{g.style.opacity=on?'0.35':'';}});}
  bar.addEventListener('mouseenter',function(){mark(true);});
  bar.addEventListener('mouseleave',function(){mark(false);});
});
"""


def _gantt(runs: Sequence[RunRow]) -> str:
    starts = [r.start for r in runs if r.start is not None]
    starts += [t.start for r in runs for t in r.tasks() if t.start is not None]
    ends = [r.start + (r.duration or 0.0) for r in runs if r.start is not None]
    ends += [t.start + (t.duration or 0.0) for r in runs for t in r.tasks() if t.start is not None]
    t0 = min(starts, default=0.0)
    total = max(max(ends, default=t0) - t0, 1e-9)

    def pct(ts: float) -> float:
        return 100.0 * (ts - t0) / total

    rows: list[str] = []
    for run in runs:
        for step in run.steps:
            step_label = f"step {step.step if step.step is not None else '?'}"
            bar = ""
            if step.start is not None:
                width = 100.0 * (step.duration or 0.0) / total
                style = f"left:{pct(step.start):.3f}%;width:{width:.3f}%"
                bar = f'<div class="stepbar" style="{style}"></div>'
            rows.append(
                f'<div class="row steprow"><div class="label">{_t(step_label)}</div>'
                f'<div class="lane">{bar}</div></div>'
            )
            for t in step.tasks:
                start = t.start if t.start is not None else t0
                duration = t.duration if t.duration is not None else 0.0
                tip = f"{t.node} · step {t.step} · attempt {t.attempt or 1} · {t.status}"
                tip += f" · {_fmt_duration(t.duration)}" if t.duration is not None else ""
                if t.error_type:
                    tip += f" · {t.error_type}: {t.error_message or ''}"
                label = t.node + (f" (attempt {t.attempt})" if (t.attempt or 1) > 1 else "")
                attrs = {
                    "data-node": t.node,
                    "data-step": "" if t.step is None else str(t.step),
                    "data-span-id": t.span_id,
                    "data-task-id": t.task_id or "",
                    "data-attempt": str(t.attempt or 1),
                    "data-status": t.status,
                    "data-start": repr(start),
                    "data-duration": repr(duration) if t.duration is not None else "",
                    "data-retries": str(t.retries),
                    "data-interrupts": str(t.interrupts),
                }
                attr_text = " ".join(f'{k}="{_a(v)}"' for k, v in attrs.items())
                width = 100.0 * duration / total
                rows.append(
                    f'<div class="row"><div class="label" title="{_a(tip)}">{_t(label)}</div>'
                    f'<div class="lane"><div class="task {_a(t.status)}" {attr_text} '
                    f'title="{_a(tip)}" style="left:{pct(start):.3f}%;width:{width:.3f}%">'
                    "</div></div></div>"
                )
    ticks = "".join(f"<span>{_fmt_duration(total * i / 4) or '0'}</span>" for i in range(5))
    return f'<div class="gantt">{"".join(rows)}<div class="axis">{ticks}</div></div>'


def _mermaid_with_path(text: str, done: set[str], mermaid_ids: Mapping[str, str]) -> str:
    if not done:
        return text
    ids = ",".join(sorted(mermaid_ids.get(n, n) for n in done))
    return (
        text.rstrip()
        + "\n\tclassDef executed fill:#d1fae5,stroke:#059669,stroke-width:2px;\n"
        + f"\tclass {ids} executed;\n"
    )


def render_html(
    events: Iterable[Event],
    *,
    graph_mermaid: str | None = None,
    executed: Sequence[str] = (),
    nodes: Sequence[str] = (),
    edges: Sequence[tuple[str, str]] = (),
    title: str | None = None,
) -> str:
    """One self-contained HTML page (no external resources) for the runs in ``events``.

    It holds a Gantt chart with one bar per task attempt (``class="task <status>"``
    with ``data-node``, ``data-step``, ``data-span-id``, ``data-task-id``,
    ``data-attempt``, ``data-status``, ``data-start`` (epoch seconds),
    ``data-duration`` (seconds) attributes); the graph drawn as SVG with the executed
    nodes and edges highlighted; the mermaid source in ``<pre class="mermaid">``;
    and a table of nodes. The graph comes from ``nodes``/``edges`` when given, else
    from parsing ``graph_mermaid``; ``executed`` adds to the nodes seen in events.

    >>> mermaid = graph.get_graph().draw_mermaid()            # doctest: +SKIP
    >>> page = render_html(sink.events, graph_mermaid=mermaid)  # doctest: +SKIP
    """
    ordered = list(events)
    runs = build_timeline(ordered)
    graph_nodes, graph_edges = list(nodes), list(edges)
    mermaid_ids: dict[str, str] = {}
    if graph_mermaid and not graph_nodes and not graph_edges:
        graph_nodes, graph_edges, mermaid_ids = _parse_mermaid(graph_mermaid)
    for a, b in graph_edges:
        for n in (a, b):
            if n not in graph_nodes:
                graph_nodes.append(n)
    ran = [t.node for r in runs for t in r.tasks()]
    done = set(executed) | set(ran)
    if runs:
        done.add(START)
        if any(r.status == "ok" for r in runs):
            done.add(END)
    for n in ran:
        if n not in graph_nodes and not graph_edges:
            graph_nodes.append(n)
    done_in_graph = {n for n in done if n in graph_nodes}
    taken = _executed_edges(runs, graph_edges)

    first = runs[0] if runs else None
    heading = title or (f"Run of {first.graph}" if first and first.graph else "Trellis run")
    meta: list[str] = []
    if first and first.thread_id:
        meta.append(f"thread {first.thread_id}")
    meta.append(f"{len(runs)} run{'s' if len(runs) != 1 else ''}")
    meta.append(f"{len(ran)} task attempts")
    for r in runs:
        meta.append(f"trace {r.trace_id} · {r.status} {_fmt_duration(r.duration)}")
    errors = [
        f"<li>{_t(t.node)} (step {t.step}, attempt {t.attempt or 1}): "
        f"{_t(t.error_type or '')}: {_t(t.error_message or '')}</li>"
        for r in runs
        for t in r.tasks()
        if t.error_type
    ]

    stats: dict[str, list[int | float]] = {}
    for r in runs:
        for t in r.tasks():
            s = stats.setdefault(t.node, [0, 0, 0.0])
            s[0] += 1
            s[1] += t.status in ("error", "timeout")
            s[2] += t.duration or 0.0
    table_rows = []
    for n in graph_nodes or sorted(stats):
        calls, failed, spent = stats.get(n, [0, 0, 0.0])
        cls = ' class="executed"' if n in done else ""
        table_rows.append(
            f'<tr{cls} data-node="{_a(n)}"><td>{_t(n)}</td><td>{calls}</td>'
            f"<td>{failed}</td><td>{_fmt_duration(float(spent)) if calls else ''}</td></tr>"
        )

    body = [
        f"<h1>{_t(heading)}</h1>",
        '<div class="meta">' + "".join(f"<span>{_t(m)}</span>" for m in meta) + "</div>",
        "<h2>Timeline</h2>",
        _gantt(runs),
    ]
    if errors:
        body += ["<h2>Errors</h2>", f'<ul class="err">{"".join(errors)}</ul>']
    body.append("<h2>Graph</h2>")
    if graph_nodes:
        body.append(_svg_graph(graph_nodes, graph_edges, done_in_graph, taken))
    body += [
        '<table class="nodes"><tr><th>node</th><th>attempts</th><th>failed</th>'
        "<th>time</th></tr>" + "".join(table_rows) + "</table>",
    ]
    if graph_mermaid:
        drawn = _mermaid_with_path(graph_mermaid, done_in_graph, mermaid_ids)
        body.append(f'<pre class="mermaid">{_t(drawn)}</pre>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_t(heading)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{_JS}</script>\n</body></html>\n"
    )
