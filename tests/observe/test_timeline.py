from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest
from typing_extensions import TypedDict

from trellis.observe import (
    Event,
    EventKind,
    MemorySink,
    Outcome,
    RunEvents,
    build_timeline,
    render_html,
    render_json,
    render_tree,
)

MERMAID = """---
config:
  flowchart:
    curve: linear
---
graph TD;
\t__start__([<p>__start__</p>]):::first
\tfetch(fetch)
\tlint(lint)
\tsecurity(security)
\tstyle(style)
\treport(report)
\tfallback(fallback)
\t__end__([<p>__end__</p>]):::last
\t__start__ --> fetch;
\tfetch --> lint;
\tfetch --> security;
\tfetch --> style;
\tlint --> report;
\tsecurity --> report;
\tstyle --> report;
\treport -.-> __end__;
\treport -. &nbsp;retry&nbsp; .-> fallback;
\tfallback --> __end__;
\tclassDef default fill:#f2f0ff,line-height:1.2
"""


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def wall(self) -> float:
        return 1_700_000_000.0 + self.t

    def perf(self) -> float:
        return self.t


def code_analysis_run() -> list[Event]:
    """fetch → (lint ‖ security ‖ style, security retried once) → report."""
    clock = Clock()
    mem = MemorySink()
    run = RunEvents(
        mem, graph="code_analysis", thread_id="t-42", clock=clock.wall, perf_clock=clock.perf
    )
    run.run_start()
    s0 = run.step_start(0)
    fetch = run.task_start(s0, "fetch", task_id="t-fetch")
    clock.t += 0.05
    run.task_end(fetch)
    run.step_end(s0)
    s1 = run.step_start(1)
    lint = run.task_start(s1, "lint", task_id="t-lint")
    sec = run.task_start(s1, "security", task_id="t-sec")
    style = run.task_start(s1, "style", task_id="t-style")
    clock.t += 0.1
    run.task_error(sec, TimeoutError("scanner timed out"), status=Outcome.TIMEOUT)
    run.retry(sec, 0.5)
    clock.t += 0.05
    run.task_end(style)
    sec2 = run.task_start(s1, "security", attempt=2, task_id="t-sec")
    clock.t += 0.2
    run.task_end(lint)
    clock.t += 0.1
    run.task_end(sec2)
    run.instant(EventKind.CHECKPOINT_SAVED, s1, data={"checkpoint_id": "ckpt-1"})
    run.step_end(s1)
    s2 = run.step_start(2)
    report = run.task_start(s2, "report", task_id="t-report")
    clock.t += 0.02
    run.task_end(report)
    run.step_end(s2)
    run.run_end(Outcome.OK)
    return mem.events


class TaskBars(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.bars: list[dict[str, str | None]] = []
        self.graph_nodes: dict[str, str] = {}
        self.edges: dict[tuple[str, str], str] = {}
        self.urls: list[str] = []
        self.in_mermaid = False
        self.mermaid = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        for name in ("src", "href"):
            if a.get(name):
                self.urls.append(a[name] or "")
        if tag == "div" and "task" in classes:
            self.bars.append(a)
        if tag == "g" and "gnode" in classes:
            self.graph_nodes[a["data-node"] or ""] = a["class"] or ""
        if tag == "path" and "edge" in classes:
            self.edges[(a["data-from"] or "", a["data-to"] or "")] = a["class"] or ""
        if tag == "pre" and "mermaid" in classes:
            self.in_mermaid = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self.in_mermaid = False

    def handle_data(self, data: str) -> None:
        if self.in_mermaid:
            self.mermaid += data


def parse_page(page: str) -> TaskBars:
    parser = TaskBars()
    parser.feed(page)
    parser.close()
    return parser


def test_html_has_one_bar_per_task_attempt_with_its_facts() -> None:
    events = code_analysis_run()
    page = parse_page(render_html(events, graph_mermaid=MERMAID))
    starts = {e.span_id: e for e in events if e.kind is EventKind.TASK_START}
    ends = {e.span_id: e for e in events if e.kind in (EventKind.TASK_END, EventKind.TASK_ERROR)}
    bars = {bar["data-span-id"]: bar for bar in page.bars}
    assert set(bars) == set(starts) and len(page.bars) == 6
    for span_id, start in starts.items():
        bar, end = bars[span_id], ends[span_id]
        assert bar["data-node"] == start.node
        assert bar["data-step"] == str(start.step)
        assert bar["data-attempt"] == str(start.attempt)
        assert bar["data-task-id"] == start.task_id
        assert bar["data-status"] == end.status
        assert float(bar["data-start"] or "nan") == pytest.approx(start.ts)
        assert float(bar["data-duration"] or "nan") == pytest.approx(end.duration or 0.0)
        assert end.status in (bar.get("class") or "").split()
    security = sorted(
        (b for b in page.bars if b["data-node"] == "security"),
        key=lambda b: b["data-attempt"] or "",
    )
    assert [b["data-status"] for b in security] == ["timeout", "ok"]
    assert security[0]["data-retries"] == "1"
    # Parallel attempts overlap in time, in the same step.
    lint = next(b for b in page.bars if b["data-node"] == "lint")
    style = next(b for b in page.bars if b["data-node"] == "style")
    assert lint["data-start"] == style["data-start"] and lint["data-step"] == style["data-step"]


def test_html_is_self_contained_and_highlights_the_executed_path() -> None:
    page_text = render_html(code_analysis_run(), graph_mermaid=MERMAID)
    page = parse_page(page_text)
    assert page.urls == []
    assert "http://" not in page_text and "https://" not in page_text
    assert "@import" not in page_text
    executed = {n for n, cls in page.graph_nodes.items() if "executed" in cls.split()}
    assert executed == {"__start__", "fetch", "lint", "security", "style", "report", "__end__"}
    assert "fallback" in page.graph_nodes and "fallback" not in executed
    taken = {e for e, cls in page.edges.items() if "taken" in cls.split()}
    assert taken == {
        ("__start__", "fetch"),
        ("fetch", "lint"), ("fetch", "security"), ("fetch", "style"),
        ("lint", "report"), ("security", "report"), ("style", "report"),
        ("report", "__end__"),
    }  # fmt: skip
    # The mermaid source is kept (unescaped by the parser) with the path as a class.
    assert "fetch --> lint;" in page.mermaid
    assert "class __end__,__start__,fetch,lint,report,security,style executed;" in page.mermaid


def test_html_without_a_graph_still_lists_every_task_and_escapes_names() -> None:
    mem = MemorySink()
    run = RunEvents(mem, graph="<g>", join_otel=False)
    run.run_start()
    step = run.step_start(0)
    run.task_end(run.task_start(step, 'say "<hi>" & bye'))
    run.run_end()
    text = render_html(mem.events)
    assert "<hi>" not in text
    page = parse_page(text)
    assert [b["data-node"] for b in page.bars] == ['say "<hi>" & bye']


def test_tree_shows_steps_tasks_outcomes_retries_and_interrupts() -> None:
    events = code_analysis_run()
    clock = Clock()
    clock.t = 60.0  # resumed a minute later
    mem = MemorySink()
    resumed = RunEvents(mem, graph="code_analysis", thread_id="t-42", clock=clock.wall,
                        perf_clock=clock.perf)  # fmt: skip
    resumed.run_start()
    step = resumed.step_start(3)
    ask = resumed.task_start(step, "ask_human")
    resumed.instant(EventKind.INTERRUPT, ask, data={"question": "ship it?"})
    resumed.task_end(ask, Outcome.INTERRUPTED)
    resumed.step_end(step, Outcome.INTERRUPTED)
    resumed.run_end(Outcome.INTERRUPTED)
    text = render_tree(events + mem.events)
    lines = text.splitlines()
    assert lines[0].startswith("run ") and "graph=code_analysis" in lines[0]
    assert "thread=t-42" in lines[0] and "✓ ok" in lines[0]
    assert lines[1] == "├── step 0  ✓  50.0ms"
    assert "│   └── ✓  fetch  50.0ms" in lines
    failed = next(line for line in lines if "✗  security" in line)
    assert "timeout" in failed and "TimeoutError: scanner timed out" in failed
    assert "↻ retried in 0.5s" in failed and "attempt 1" in failed
    assert any("✓  security  300.0ms  attempt 2" in line for line in lines)
    assert any("checkpoint saved checkpoint_id=ckpt-1" in line for line in lines)
    second_run = [i for i, line in enumerate(lines) if line.startswith("run ")][1]
    assert "⏸ interrupted" in lines[second_run]
    assert any("⏸  ask_human" in line and "1 interrupt" in line for line in lines)


def test_json_export_groups_runs_steps_and_tasks() -> None:
    events = code_analysis_run()
    doc = json.loads(render_json(events))
    assert len(doc["events"]) == len(events)
    (run,) = doc["runs"]
    assert run["status"] == "ok" and run["thread_id"] == "t-42"
    assert [s["step"] for s in run["steps"]] == [0, 1, 2]
    step1 = run["steps"][1]
    assert sorted((t["node"], t["attempt"]) for t in step1["tasks"]) == [
        ("lint", 1), ("security", 1), ("security", 2), ("style", 1),
    ]  # fmt: skip
    assert step1["events"][0]["data"] == {"checkpoint_id": "ckpt-1"}


def test_partial_events_still_make_rows() -> None:
    events = code_analysis_run()
    # Only end events (an engine emitting less), and a crashed run without ends.
    ends_only = [e for e in events if e.kind not in (EventKind.TASK_START, EventKind.STEP_START)]
    (run,) = build_timeline(ends_only)
    assert len(run.tasks()) == 6
    fetch = next(t for t in run.tasks() if t.node == "fetch")
    assert fetch.start == pytest.approx(1_700_000_000.0)
    crashed = [e for e in events if e.kind not in (EventKind.TASK_END, EventKind.RUN_END)]
    (run,) = build_timeline(crashed)
    assert run.status == "running"
    assert {t.status for t in run.tasks()} == {"running", "timeout"}
    assert "…  fetch" in render_tree(crashed)
    page = parse_page(render_html(crashed))
    assert len(page.bars) == 6


def test_tree_places_run_level_notes_among_the_steps_by_time() -> None:
    def ev(kind: EventKind, span: str, ts: float, **fields: Any) -> Event:
        return Event(kind, "t" * 32, span, None if span == "run" else "run", ts, **fields)

    events = [
        ev(EventKind.RUN_START, "run", 0.0),
        ev(EventKind.CHECKPOINT_SAVED, "run", 0.5, step=-1, data={"checkpoint_id": "input"}),
        ev(EventKind.STEP_START, "s0", 1.0, step=0),
        ev(EventKind.STEP_END, "s0", 2.0, step=0, duration=1.0, status="ok"),
        ev(EventKind.COMPENSATION, "run", 2.5, node="refund", status="ok"),
        ev(EventKind.STEP_START, "s1", 3.0, step=1),
        ev(EventKind.STEP_END, "s1", 4.0, step=1, duration=1.0, status="ok"),
        ev(EventKind.RUN_END, "run", 5.0, duration=5.0, status="ok"),
    ]
    lines = render_tree(events).splitlines()[1:]
    assert [line.split()[1] for line in lines] == ["·", "step", "·", "step"]
    assert "input" in lines[0] and "compensation" in lines[2]


def test_a_task_cancelled_with_its_run_is_drawn_as_cancelled() -> None:
    mem = MemorySink()
    run = RunEvents(mem, graph="g", join_otel=False)
    run.run_start()
    step = run.step_start(0)
    run.task_end(run.task_start(step, "stuck"), status=Outcome.CANCELLED)
    run.step_end(step, Outcome.CANCELLED)
    run.run_end(Outcome.CANCELLED)
    assert "⊘  stuck" in render_tree(mem.events)
    assert ".task.cancelled{" in render_html(mem.events)


class _X(TypedDict, total=False):
    x: int


def test_nodes_whose_names_are_not_identifiers_are_drawn_and_highlighted() -> None:
    """Mermaid ids spell such names with escapes (as LangGraph does); the page
    shows the names themselves and marks the ones that ran."""
    from trellis import START, StateGraph

    builder = StateGraph(_X)
    for name in ("fetch data", 'a "q" & b'):
        builder.add_node(name, lambda s: {"x": 1})
    builder.add_edge(START, "fetch data")
    builder.add_edge("fetch data", 'a "q" & b')
    mermaid = builder.compile().get_graph().draw_mermaid()
    mem = MemorySink()
    run = RunEvents(mem, graph="g", join_otel=False)
    run.run_start()
    run.task_end(run.task_start(run.step_start(0), "fetch data"))
    run.run_end()
    page = parse_page(render_html(mem.events, graph_mermaid=mermaid))
    assert set(page.graph_nodes) == {"__start__", "fetch data", 'a "q" & b', "__end__"}
    executed = {n for n, cls in page.graph_nodes.items() if "executed" in cls.split()}
    assert executed == {"__start__", "fetch data", "__end__"}
    assert ("__start__", "fetch data") in page.edges
    assert "class __end__,__start__,fetch\\20data executed;" in page.mermaid


def test_a_subgraph_run_is_told_apart_from_its_parent_in_the_tree() -> None:
    # Both runs share one trace id (the subgraph joins its parent's trace): the tree
    # labels each by its own run id, as `trellis trace --run` takes it.
    from trellis import START, MemorySaver, StateGraph

    class S(TypedDict, total=False):
        x: int

    sink = MemorySink()
    inner = StateGraph(S)
    inner.add_node("deep", lambda s: {"x": 2})
    inner.add_edge(START, "deep")
    outer = StateGraph(S)
    outer.add_node("sub", inner.compile(observers=[sink], name="inner"))
    outer.add_edge(START, "sub")
    graph = outer.compile(checkpointer=MemorySaver(), observers=[sink], name="outer")
    graph.invoke({"x": 0}, {"configurable": {"thread_id": "t"}})
    heads = [line for line in render_tree(sink.events).splitlines() if line.startswith("run ")]
    assert len(heads) == 2 and len({line.split()[1] for line in heads}) == 2, heads
    run_ids = {e.graph: e.run_id for e in sink.events if e.kind == "run_start"}
    assert {line.split()[1] for line in heads} == {r[:8] for r in run_ids.values() if r}
