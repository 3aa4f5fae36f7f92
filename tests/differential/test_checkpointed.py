"""Seeded random checkpointed graphs: Trellis must show a user what LangGraph 1.2 shows.

test_differential.py pins hand-written programs; this module covers combinations nobody writes
by hand. Each seed builds one small graph (plain and join edges, routers, ``Send`` fan-out,
``interrupt()`` in some nodes, an ``operator.add`` key, overwrite keys) on both engines with an
in-memory checkpointer. On one thread it runs the graph and answers every interrupt, then forks
from or updates past checkpoints (with and without ``as_node``) or sends new input, and answers
again. Each run's output (``invoke``, ``stream`` "values" and ["updates", "values"]) and the
``get_state`` / ``get_state_history`` after it must be equal, in order. Seeds are fixed, not
drawn by hypothesis, so a failure names a graph to replay: ``make_spec(seed)``.

Normalised, as LangGraph's own output varies: the chunks and interrupts of one step come in
task completion order, so a step is compared as a multiset; interrupts compare by value.
README-listed differences ("Where a checkpointed run still behaves differently from LangGraph
1.2") are kept out: ``next`` / ``tasks`` are sorted; ``update_state`` without ``as_node`` runs
only right after a step of one node and with no interrupt pending; resuming with nothing
pending, subgraphs and failing tasks are not generated. Also kept out, though not listed there
yet: the states and chunks around an ``InvalidUpdateError`` (both engines must raise it, but
only LangGraph's ``get_state`` raises it again after a resumed task conflicts with a finished
sibling);
``StateTask.result`` (Trellis fills it only for steps of several tasks); ``update_state``
without ``as_node`` after a ``Send`` task (LangGraph credits the node before it). Seeds that
meet any other difference are listed in ``UNLISTED``; of seeds 25-199, 5 graphs (58, pinned
below, among them) meet the README-listed differences of ``update_state`` next to joins, so
that range is not run here.
"""

import operator
import random
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the bench extra (LangGraph) is not installed")


class State(TypedDict, total=False):
    a: int
    b: str
    log: Annotated[list[str], operator.add]


def langgraph_api() -> SimpleNamespace:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, Send, interrupt

    return SimpleNamespace(
        StateGraph=StateGraph, START=START, END=END, Send=Send, Command=Command,
        interrupt=interrupt, Saver=InMemorySaver,
    )  # fmt: skip


def trellis_api() -> SimpleNamespace:
    from trellis import END, START, Command, MemorySaver, Send, StateGraph, interrupt

    return SimpleNamespace(
        StateGraph=StateGraph, START=START, END=END, Send=Send, Command=Command,
        interrupt=interrupt, Saver=MemorySaver,
    )  # fmt: skip


# --------------------------------------------------------------------------- random graphs


@dataclass(frozen=True)
class Node:
    name: str
    asks: bool  # calls interrupt() before writing
    writes_a: bool
    writes_b: bool


@dataclass
class Spec:
    seed: int
    nodes: list[Node]
    edges: list[tuple[Any, ...]]  # ("edge", src or [srcs], dst), ("route"|"send", src, arg)
    input: dict[str, Any]
    ops: list[str]  # what to do after the first run; see Session.play


def make_spec(seed: int) -> Spec:
    """A graph of 3-6 nodes; routers stop once ``log`` is long enough, so every run ends."""
    r = random.Random(seed)
    names = [f"n{i}" for i in range(r.randint(3, 6))]
    nodes = [Node(n, r.random() < 0.2, r.random() < 0.3, r.random() < 0.3) for n in names]
    edges: list[tuple[Any, ...]] = [("edge", "__start__", names[0])]
    if r.random() < 0.2:
        edges.append(("edge", "__start__", names[1]))
    sends = False
    for i, name in enumerate(names):
        later, roll = names[i + 1 :], r.random()
        if not later:
            if roll < 0.5:
                edges.append(("route", name, [r.choice(names), "__end__"]))
        elif roll < 0.3:
            edges.append(("edge", name, later[0]))
        elif roll < 0.55 and len(later) >= 2:
            edges += [("edge", name, later[0]), ("edge", name, later[1])]
            if len(later) >= 3:
                edges.append(("edge", later[:2], later[2]))  # join: waits for both
        elif roll < 0.8:
            pool = [*later, *later, "__end__", r.choice(names), sorted(r.sample(names, 2))]
            edges.append(("route", name, [later[0], *r.sample(pool, r.randint(1, 2))]))
        else:
            sends = True
            edges += [("send", name, r.randint(1, 3)), ("edge", "w", later[0])]
    if sends:
        nodes.append(Node("w", r.random() < 0.3, False, False))
    inp = r.choice([{"a": 1}, {"a": 2, "log": ["x"]}, {"a": 0, "b": "in"}])
    ops = r.choices(["fork", "update", "update_plain", "again"], k=r.randint(1, 3))
    return Spec(seed, nodes, edges, inp, ops)


def build(api: SimpleNamespace, spec: Spec) -> Any:
    def node_fn(node: Node, k: int) -> Any:
        def run(s: dict[str, Any]) -> dict[str, Any]:
            a, log = s.get("a", 0), s.get("log", [])
            said = f"<{api.interrupt(f'q:{node.name}:{a}:{len(log)}')}>" if node.asks else ""
            out: dict[str, Any] = {"log": [f"{node.name}:{a}:{len(log)}{said}"]}
            if node.writes_a:
                out["a"] = a + k
            if node.writes_b:
                out["b"] = f"{node.name}{len(log)}"
            return out

        return run

    g = api.StateGraph(State)
    for k, node in enumerate(spec.nodes, 1):
        g.add_node(node.name, node_fn(node, k))
    for kind, src, arg in spec.edges:
        if kind == "edge":
            g.add_edge(src, arg)
        elif kind == "route":

            def route(s: dict[str, Any], opts: list[Any] = arg) -> Any:
                log = s.get("log", [])
                return api.END if len(log) >= 8 else opts[(s.get("a", 0) + len(log)) % len(opts)]

            targets = {t for o in arg for t in (o if isinstance(o, list) else [o])}
            g.add_conditional_edges(src, route, sorted(targets | {api.END}))
        else:

            def fan_out(s: dict[str, Any], n: int = arg) -> Any:
                if len(s.get("log", [])) >= 8:
                    return api.END
                return [api.Send("w", {"a": s.get("a", 0) * 10 + j}) for j in range(n)]

            g.add_conditional_edges(src, fan_out, ["w", api.END])
    return g.compile(checkpointer=api.Saver())


# --------------------------------------------------------------------------- observing

Seen = list[tuple[str, Any]]  # (what was looked at, what a user saw), in order


def _key(value: Any) -> str:
    """A repr with dict keys sorted, to sort values whose dict key order may differ."""
    if isinstance(value, dict):
        return "{" + ",".join(sorted(f"{k!r}:{_key(v)}" for k, v in value.items())) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_key(v) for v in value) + "]"
    return repr(value)


def _asked(interrupts: Any) -> list[str]:
    # Interrupt ids are engine-specific hashes; what a user reads is the value.
    return sorted(repr(i.value) for i in interrupts)


def _chunk(chunk: Any) -> Any:
    if isinstance(chunk, tuple):
        return (chunk[0], _chunk(chunk[1]))
    out = dict(chunk)
    if "__interrupt__" in out:
        out["__interrupt__"] = _asked(out["__interrupt__"])
    return out


def _per_step(chunks: list[Any]) -> list[list[str]]:
    """Chunks cut after each state (values) chunk and sorted within a cut: one step each."""
    steps: list[list[str]] = [[]]
    for chunk in chunks:
        steps[-1].append(_key(chunk))
        mode, payload = chunk if isinstance(chunk, tuple) else ("values", chunk)
        if mode == "values" and "__interrupt__" not in payload:
            steps.append([])
    return [sorted(step) for step in steps if step]


def _snapshot(s: Any) -> dict[str, Any]:
    md = s.metadata or {}
    return {
        "values": s.values,
        "next": sorted(s.next),  # README: Trellis lists a step's Sends, then nodes by name
        # Task ``result`` is left out (see module docstring).
        "tasks": sorted((t.name, _asked(t.interrupts)) for t in s.tasks),
        "interrupts": _asked(s.interrupts),
        "source": md.get("source"),
        "step": md.get("step"),
    }


def _raised(exc: Exception, before: Any = None) -> tuple[str, str, Any]:
    return ("raised", type(exc).__name__, before)


def _error(seen: Any) -> str | None:
    return seen[1] if isinstance(seen, tuple) and seen[0] == "raised" else None


def _one_node_before(snapshot: Any, history: list[Any]) -> bool:
    """Whether a checkpoint was written by a step that ran one node, not a Send to ``w``."""
    parent_id = (snapshot.parent_config or {}).get("configurable", {}).get("checkpoint_id")
    parents = [s for s in history if s.config["configurable"]["checkpoint_id"] == parent_id]
    ran = [[t.name for t in p.tasks] for p in parents]
    one_node = len(ran) == 1 and len(ran[0]) == 1 and ran[0] != ["w"]
    return snapshot.metadata.get("source") == "loop" and one_node


class Session:
    """One engine, one thread: plays a spec's scenario and records what a user would see."""

    def __init__(self, api: SimpleNamespace, spec: Spec, mode: str) -> None:
        self.api, self.spec, self.mode = api, spec, mode
        self.graph = build(api, spec)
        self.thread = {"configurable": {"thread_id": "t"}}
        self.seen: Seen = []

    def run(self, label: str, inp: Any, config: dict[str, Any]) -> None:
        config = {**config, "recursion_limit": 30}
        chunks: list[Any] = []
        try:
            if self.mode == "invoke":
                self.seen.append((label, _chunk(self.graph.invoke(inp, config))))
                return
            modes = "values" if self.mode == "values" else ["updates", "values"]
            chunks.extend(_chunk(c) for c in self.graph.stream(inp, config, stream_mode=modes))
            self.seen.append((label, _per_step(chunks)))
        except Exception as exc:
            self.seen.append((label, _raised(exc, _per_step(chunks))))

    def look(self, label: str) -> None:
        g = self.graph
        for what, view in (
            ("state", lambda: _snapshot(g.get_state(self.thread))),
            ("history", lambda: [_snapshot(s) for s in g.get_state_history(self.thread)]),
        ):
            try:
                self.seen.append((f"{label} {what}", view()))
            except Exception as exc:
                self.seen.append((f"{label} {what}", _raised(exc)))

    def answer(self, label: str) -> None:
        """Resume until nothing waits (at most 4 times), answering every pending interrupt."""
        for i in range(4):
            try:
                asked = [q for t in self.graph.get_state(self.thread).tasks for q in t.interrupts]
            except Exception:
                return
            if not asked:
                return
            resume = {q.id: f"A{i}:{q.value}" for q in asked} if len(asked) > 1 else f"A{i}"
            self.run(f"{label} resume{i}", self.api.Command(resume=resume), self.thread)
            self.look(f"{label} resume{i}")

    def play(self) -> Seen:
        rng = random.Random(self.spec.seed)
        self.run("run", self.spec.input, self.thread)
        self.look("run")
        self.answer("run")
        for j, op in enumerate(self.spec.ops):
            history = list(self.graph.get_state_history(self.thread))
            past = history[rng.randrange(len(history))]
            label = f"op{j} {op} @{past.metadata['step']}"
            if op == "fork" and not past.next:
                continue  # nothing to re-run
            if op == "update_plain" and (past.interrupts or not _one_node_before(past, history)):
                continue  # README-listed difference (see module docstring)
            if op.startswith("update"):
                as_node = rng.choice(self.spec.nodes).name if op == "update" else None
                values = {"a": 50 + j, "log": [f"u{j}"]}
                try:
                    target = self.graph.update_state(past.config, values, as_node)
                except Exception as exc:
                    self.seen.append((f"{label} update_state", _raised(exc)))
                    continue
                self.look(f"{label} update_state")
            else:
                target = past.config if op == "fork" else self.thread
            self.run(label, {"a": 7} if op == "again" else None, target)
            self.look(label)
            self.answer(label)
        return self.seen


def first_difference(ours: Seen, theirs: Seen) -> tuple[str, Any, Any] | None:
    """The first observation that differs, as (label, trellis, langgraph); None if all agree.

    Comparing ends at an InvalidUpdateError (a step wrote an overwrite key twice): both engines
    must raise it, but what streamed before it and the states after it are left out.
    """
    for (label, mine), (_, ref) in zip(ours, theirs, strict=False):
        if "InvalidUpdateError" in (_error(mine), _error(ref)):
            return None if _error(mine) == _error(ref) else (label, mine, ref)
        if mine != ref:
            return label, mine, ref
    if len(ours) != len(theirs):
        return "number of observations", len(ours), len(theirs)
    return None


# --------------------------------------------------------------------------- tests

MODES = ("invoke", "values", "updates+values")
# seed -> (where it first differs, why): differences the README does not list yet, one seed
# each. Such a seed must differ exactly there, so once Trellis matches it fails until removed.
UNLISTED = {
    58: ("op2 update_plain @4 update_state state", "LangGraph finds this update ambiguous"),
}
# Seeds that once differed and now pin the fix: 61, a step that interrupts while two of its
# finished tasks wrote one overwrite key (both engines raise InvalidUpdateError at once);
# 78, a fork of an input checkpoint (the input step comes after the fork checkpoint); 122,
# update_state(as_node=...) next to a join whose barrier was met (its target still runs).
SEEDS = [*range(25), 61, 78, 122, *UNLISTED]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", MODES)
def test_checkpointed_run_matches_langgraph(seed: int, mode: str) -> None:
    """A user who swaps LangGraph for Trellis sees the same runs, states and histories."""
    spec = make_spec(seed)
    reference = Session(langgraph_api(), spec, mode).play()
    difference = first_difference(Session(trellis_api(), spec, mode).play(), reference)
    if seed in UNLISTED:
        where, why = UNLISTED[seed]
        assert difference is not None and difference[0] == where, f"{where}: {difference}"
        pytest.xfail(why)
    assert difference is None, "{}\n  trellis   {!r}\n  langgraph {!r}".format(*difference)
