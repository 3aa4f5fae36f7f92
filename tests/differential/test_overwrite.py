"""``Overwrite`` on seeded random graphs: Trellis must give what LangGraph 1.2 gives.

Each seed builds a graph of parallel layers whose nodes write two reducer keys (a list under
``operator.add``, a dict under a merge) in one of the ways a user can: an append, an
``Overwrite``, its two dict forms, a list of ``Command``s with an ``Overwrite`` among appends,
or nothing; some nodes ``interrupt()`` first. On one thread (in-memory checkpointers on both
sides) it runs the graph, answers every interrupt, then writes an ``Overwrite`` with
``update_state``. Each run's output, state and history values must be equal; where LangGraph
raises (two ``Overwrite``s of one key in one step), Trellis must raise the same error.
"""

import operator
import random
import sqlite3
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


def _merge(left: dict[str, int], right: dict[str, int]) -> dict[str, int]:
    return {**left, **right}


class State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    tags: Annotated[dict[str, int], _merge]


def langgraph_api() -> SimpleNamespace:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, Overwrite, interrupt

    return SimpleNamespace(
        StateGraph=StateGraph, START=START, END=END, Command=Command, Overwrite=Overwrite,
        interrupt=interrupt, Saver=InMemorySaver,
    )  # fmt: skip


def trellis_api(saver: str) -> SimpleNamespace:
    from trellis import END, START, Command, MemorySaver, Overwrite, StateGraph, interrupt
    from trellis.persist import SqliteSaver

    def sqlite() -> SqliteSaver:  # pending writes and checkpoints go through the serializer
        return SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False))

    return SimpleNamespace(
        StateGraph=StateGraph, START=START, END=END, Command=Command, Overwrite=Overwrite,
        interrupt=interrupt, Saver={"memory": MemorySaver, "sqlite": sqlite}.get(saver),
    )  # fmt: skip


STYLES = ("append", "append", "overwrite", "dict_form", "json_form", "commands", "nothing")


@dataclass(frozen=True)
class Node:
    name: str
    asks: bool
    style: str
    key: str  # "log" or "tags"


@dataclass
class Spec:
    seed: int
    layers: list[list[Node]]
    input: dict[str, Any]
    update_as: str


def make_spec(seed: int) -> Spec:
    r = random.Random(seed)
    layers = [
        [
            Node(f"l{i}n{j}", r.random() < 0.25, r.choice(STYLES), r.choice(["log", "log", "tags"]))
            for j in range(r.randint(1, 3))
        ]
        for i in range(r.randint(1, 3))
    ]
    inp = r.choice([{"log": ["in"]}, {"log": ["in"], "tags": {"in": 0}}, {}])
    update_as = r.choice([n.name for layer in layers for n in layer])
    return Spec(seed, layers, inp, update_as)


def _value(key: str, name: str, n: int) -> Any:
    return [f"{name}:{n}"] if key == "log" else {name: n}


def build(api: SimpleNamespace, spec: Spec) -> Any:
    def node_fn(node: Node) -> Any:
        def run(s: dict[str, Any]) -> Any:
            n = len(s.get("log", [])) + len(s.get("tags", {}))
            if node.asks:
                api.interrupt(f"q:{node.name}")
            value = _value(node.key, node.name, n)
            if node.style == "append":
                return {node.key: value}
            if node.style == "overwrite":
                return {node.key: api.Overwrite(value)}
            if node.style == "dict_form":
                return {node.key: {"__overwrite__": value}}
            if node.style == "json_form":
                return {node.key: {"type": "__overwrite__", "value": value}}
            if node.style == "commands":
                before, after = _value(node.key, "pre", n), _value(node.key, "post", n)
                return [
                    api.Command(update={node.key: before}),
                    api.Command(update={node.key: api.Overwrite(value)}),
                    api.Command(update={node.key: after}),
                ]
            return None

        return run

    g = api.StateGraph(State)
    previous = [api.START]
    for layer in spec.layers:
        for node in layer:
            g.add_node(node.name, node_fn(node))
            for src in previous:
                g.add_edge(src, node.name)
        previous = [n.name for n in layer]
    for src in previous:
        g.add_edge(src, api.END)
    return g.compile(checkpointer=api.Saver() if api.Saver else None)


def _plain(value: Any) -> Any:
    """Values as a user compares them: interrupts by their value."""
    if isinstance(value, dict):
        out = {k: v for k, v in value.items() if k != "__interrupt__"}
        if "__interrupt__" in value:
            out["__interrupt__"] = sorted(repr(i.value) for i in value["__interrupt__"])
        return out
    return value


def play(api: SimpleNamespace, spec: Spec) -> list[tuple[str, Any]]:
    graph = build(api, spec)
    thread = {"configurable": {"thread_id": "t"}}
    seen: list[tuple[str, Any]] = []

    def run(label: str, inp: Any) -> bool:
        try:
            seen.append((label, _plain(graph.invoke(inp, thread))))
        except Exception as exc:
            seen.append((label, ("raised", type(exc).__name__)))
            return False
        seen.append((f"{label} state", graph.get_state(thread).values))
        return True

    if api.Saver is None:  # no checkpointer: the run's output is all there is
        seen.append(("run", _plain(graph.invoke(spec.input))))
        return seen
    if not run("run", spec.input):
        return seen
    for i in range(4):
        asked = [q for t in graph.get_state(thread).tasks for q in t.interrupts]
        if not asked:
            break
        resume = {q.id: f"A{i}" for q in asked} if len(asked) > 1 else f"A{i}"
        if not run(f"resume{i}", api.Command(resume=resume)):
            return seen
    try:
        graph.update_state(thread, {"log": api.Overwrite(["edited"])}, as_node=spec.update_as)
        seen.append(("update_state", graph.get_state(thread).values))
    except Exception as exc:
        seen.append(("update_state", ("raised", type(exc).__name__)))
    seen.append(("history", [s.values for s in graph.get_state_history(thread)]))
    return seen


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("saver", ["memory", "sqlite"])
def test_overwrite_matches_langgraph(seed: int, saver: str) -> None:
    """A ported graph that bypasses its reducers with ``Overwrite`` runs as it did."""
    spec = make_spec(seed)
    reference = play(langgraph_api(), spec)
    ours = play(trellis_api(saver), spec)
    assert ours == reference, spec


def _asks(spec: Spec) -> bool:
    return any(n.asks for layer in spec.layers for n in layer)


@pytest.mark.parametrize("seed", [s for s in range(100) if not _asks(make_spec(s))][:40])
def test_overwrite_without_checkpointer_matches_langgraph(seed: int) -> None:
    """Without a checkpointer (where a step's writes are folded in place) too; only graphs
    that do not interrupt, which needs one."""
    spec = make_spec(seed)

    def outcome(api: SimpleNamespace) -> Any:
        try:
            return play(api, spec)
        except Exception as exc:
            return ("raised", type(exc).__name__)

    reference = outcome(SimpleNamespace(**{**vars(langgraph_api()), "Saver": None}))
    assert outcome(trellis_api("none")) == reference, spec


def test_seeds_reach_every_outcome() -> None:
    """The seeds exercise what the test is for: overwrites that stand, clashes, interrupts."""
    outcomes = [play(langgraph_api(), make_spec(seed)) for seed in range(60)]
    raised = [o for o in outcomes if any(v == ("raised", "InvalidUpdateError") for _, v in o)]
    resumed = [o for o in outcomes if any(label.startswith("resume") for label, _ in o)]
    assert len(raised) >= 3 and len(resumed) >= 5 and len(outcomes) - len(raised) >= 30


@pytest.mark.parametrize("saver", ["none", "memory", "sqlite"])
@pytest.mark.parametrize("value", [None, "xy", ("x", "y"), {"k": 1}], ids=repr)
def test_an_overwrite_may_put_any_value_on_a_list_key(saver: str, value: Any) -> None:
    """Even one that is not a list, as LangGraph: then the checkpoint stores it whole."""

    def run(api: SimpleNamespace) -> Any:
        g = api.StateGraph(State)
        g.add_node("reset", lambda s: {"log": api.Overwrite(value)})
        g.add_edge(api.START, "reset")
        graph = g.compile(checkpointer=api.Saver() if api.Saver else None)
        config = {"configurable": {"thread_id": "t"}}
        out = graph.invoke({"log": ["a"]}, config)
        return out, graph.get_state(config).values if api.Saver else None

    reference = run(SimpleNamespace(**{**vars(langgraph_api()), "Saver": None}))
    ours = run(trellis_api(saver))
    assert ours[0] == reference[0]
    assert reference[0]["log"] == value
    if saver != "none":
        assert ours[1] == ours[0]
