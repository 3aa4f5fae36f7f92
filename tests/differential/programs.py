"""Graph programs run unchanged on LangGraph and on Trellis.

Each ``build_*`` function takes an ``api`` namespace holding the names a LangGraph program
imports (``StateGraph``, ``START``, ``END``, ``Send``, ``Command``, ``add_messages``,
``RemoveMessage``, ``RetryPolicy``, ``get_stream_writer``, ``errors``) and returns a ``Case``:
the compiled graph plus the inputs to run. Programs use ``api`` names only, so swapping the
namespace is exactly what a user does when porting by changing imports.

``expect`` holds LangGraph's observed ``invoke`` result (see .helpers/langgraph-semantics.md);
it keeps the LangGraph side of the suite honest. The Trellis side compares against LangGraph's
live output, not against these literals.

No ``from __future__ import annotations``: LangGraph resolves schema and node annotations at
build time, and locally defined schemas must stay real objects.
"""

import asyncio
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel

Api = SimpleNamespace

_MISSING: Any = object()


@dataclass
class Run:
    """One input to run, with its optional config / runtime context and expected result."""

    input: Any
    config: dict[str, Any] | None = None
    context: Any = None
    expect: Any = _MISSING


@dataclass
class Case:
    """A compiled graph and how to exercise it.

    Flags:
    - ``is_async``: nodes are ``async def``; only the async API is exercised.
    - ``parallel``: a step runs several tasks; LangGraph streams their updates in completion
      order (nondeterministic, see semantics file section 2), so updates are compared as
      per-step multisets. Reducer results (invoke/values) are still compared exactly.
    - ``error``: both engines must raise an exception of this class name.
    - ``error_base``: both must raise an instance of this builtin (names may differ).
    - ``trellis_stricter``: LangGraph runs to ``expect``; Trellis must raise this error class.
    - ``trellis_mentions``: substrings Trellis's error message must contain (node / key names).
    - ``error_prefix``: also compare the stream chunks yielded before the error.
    - ``custom``: also compare ``stream_mode="custom"`` and ``["custom", "updates"]``.
    - ``batch``: also compare ``batch`` / ``abatch`` over all run inputs.
    - ``debug``: also compare ``stream_mode="debug"`` (type, step, task name, input / result).
    - ``mermaid``: also compare ``get_graph().draw_mermaid()`` text exactly.
    - ``normalize``: applied to every observed output on both engines before comparing.
    """

    graph: Any
    runs: list[Run]
    is_async: bool = False
    parallel: bool = False
    error: str | None = None
    error_base: type[BaseException] | None = None
    trellis_stricter: str | None = None
    trellis_mentions: tuple[str, ...] = ()
    error_prefix: bool = False
    custom: bool = False
    batch: bool = False
    debug: bool = False
    mermaid: bool = False
    normalize: Callable[[Any], Any] | None = None


# --------------------------------------------------------------------------- shared schemas


class S(TypedDict, total=False):
    a: str
    b: str
    n: int
    log: Annotated[list[Any], operator.add]


def _log(name: str) -> Callable[[S], dict[str, Any]]:
    def node(state: S) -> dict[str, Any]:
        return {"log": [name]}

    return node


def compiled_chain(api: Api, schema: Any, *nodes: tuple[str, Any]) -> Any:
    """START -> each of ``nodes`` (name, fn or subgraph) in turn, compiled."""
    g = api.StateGraph(schema)
    for name, fn in nodes:
        g.add_node(name, fn)
    g.add_edge(api.START, nodes[0][0])
    for (a, _), (b, _) in zip(nodes, nodes[1:], strict=False):
        g.add_edge(a, b)
    return g.compile()


def _graph(api: Api, *names: str) -> Any:
    """A StateGraph(S) with one logging node per name."""
    g = api.StateGraph(S)
    for name in names:
        g.add_node(name, _log(name))
    return g


# --------------------------------------------------------------------------- chains, schemas


def build_chain_typed(api: Api) -> Case:
    def first(s: S) -> dict[str, Any]:
        return {"a": s.get("a", "") + "1", "log": ["first"]}

    def second(s: S) -> dict[str, Any]:
        return {"b": s["a"] + "2", "log": ["second"]}

    g = api.StateGraph(S)
    g.add_node("first", first)
    g.add_node("second", second)
    g.add_edge(api.START, "first")
    g.add_edge("first", "second")
    g.add_edge("second", api.END)
    return Case(
        g.compile(),
        [
            Run({"a": "x"}, expect={"a": "x1", "b": "x12", "log": ["first", "second"]}),
            Run({"log": ["in"]}, expect={"a": "1", "b": "12", "log": ["in", "first", "second"]}),
        ],
        debug=True,
        mermaid=True,
    )


def build_empty_input_and_none_steps(api: Api) -> Case:
    # Input {} writes nothing (no first values chunk); a node returning None or {} makes a
    # step with no values chunk and an updates chunk {node: None}.
    g = api.StateGraph(S)
    g.add_node("quiet", lambda s: None)
    g.add_node("empty", lambda s: {})
    g.add_node("loud", lambda s: {"a": "loud"})
    g.add_node("again", lambda s: {"a": s["a"]})
    g.add_edge(api.START, "quiet")
    g.add_edge("quiet", "empty")
    g.add_edge("empty", "loud")
    g.add_edge("loud", "again")
    return Case(
        g.compile(),
        [
            Run({}, expect={"a": "loud", "log": []}),
            Run({"b": "B"}, expect={"a": "loud", "b": "B", "log": []}),
        ],
    )


def build_nothing_written(api: Api) -> Case:
    # LangGraph: invoke({}) returns None when no channel is ever written.
    g = api.StateGraph(S)
    g.add_node("idle", lambda s: None)
    g.add_edge(api.START, "idle")
    return Case(g.compile(), [Run({}, expect=None), Run({"a": "x"}, expect={"a": "x", "log": []})])


class Zeros(TypedDict, total=False):
    count: Annotated[int, operator.add]
    text: Annotated[str, operator.add]
    items: Annotated[list[str], operator.add]
    plain: str


def build_reducer_zero_values(api: Api) -> Case:
    g = api.StateGraph(Zeros)
    g.add_node("bump", lambda s: {"count": 2, "text": "ab"})
    g.add_node("bump2", lambda s: {"count": 3, "text": "c"})
    g.add_edge(api.START, "bump")
    g.add_edge("bump", "bump2")
    return Case(
        g.compile(),
        [
            Run({}, expect={"count": 5, "text": "abc", "items": []}),
            Run(
                {"count": 10, "plain": "p"},
                expect={"count": 15, "text": "abc", "items": [], "plain": "p"},
            ),
        ],
    )


def _merge(left: dict[str, int], right: dict[str, int]) -> dict[str, int]:
    return {**left, **right}


def _keep_max(left: int | None, right: int) -> int:
    return right if left is None else max(left, right)


class Custom(TypedDict, total=False):
    scores: Annotated[dict[str, int], _merge]
    best: Annotated[int, _keep_max]
    trail: Annotated[list[str], operator.add]


def build_custom_reducers(api: Api) -> Case:
    def mk(name: str, score: int) -> Callable[[Custom], dict[str, Any]]:
        return lambda s: {"scores": {name: score}, "best": score, "trail": [name]}

    g = api.StateGraph(Custom)
    for name, score in [("zed", 3), ("amy", 9), ("bob", 5)]:
        g.add_node(name, mk(name, score))
        g.add_edge(api.START, name)
    g.add_node("final", lambda s: {"trail": [f"best={s['best']}"]})
    g.add_edge(["zed", "amy", "bob"], "final")
    return Case(
        g.compile(),
        [
            Run(
                {"best": 4},
                expect={
                    "scores": {"amy": 9, "bob": 5, "zed": 3},
                    "best": 9,
                    "trail": ["amy", "bob", "zed", "best=9"],
                },
            )
        ],
        parallel=True,
    )


@dataclass
class DState:
    a: str = "defA"
    n: int = 0
    log: Annotated[list[str], operator.add] = field(default_factory=list)


def build_dataclass_schema(api: Api) -> Case:
    def step(s: DState) -> dict[str, Any]:
        # The node sees a DState with defaults filled in.
        return {"n": s.n + 1, "log": [f"{type(s).__name__}:{s.a}:{s.n}"]}

    g = api.StateGraph(DState)
    g.add_node("step", step)
    g.add_node("step2", step)
    g.add_edge(api.START, "step")
    g.add_edge("step", "step2")
    return Case(
        g.compile(),
        [
            Run({"n": 5}, expect={"n": 7, "log": ["DState:defA:5", "DState:defA:6"]}),
            Run({"a": "z"}, expect={"a": "z", "n": 2, "log": ["DState:z:0", "DState:z:1"]}),
        ],
    )


def build_dataclass_return_instance(api: Api) -> Case:
    # A returned instance writes every field, defaults included (a is reset to "defA").
    g = api.StateGraph(DState)
    g.add_node("remake", lambda s: DState(n=s.n + 10))
    g.add_edge(api.START, "remake")
    return Case(
        g.compile(), [Run({"n": 1, "a": "given"}, expect={"a": "defA", "n": 11, "log": []})]
    )


class PState(BaseModel):
    a: str = "defA"
    n: int = 0
    log: Annotated[list[str], operator.add] = []


def build_pydantic_schema(api: Api) -> Case:
    def step(s: PState) -> dict[str, Any]:
        return {"n": s.n * 2, "log": [f"{type(s).__name__}:{s.a}"]}

    g = api.StateGraph(PState)
    g.add_node("step", step)
    g.add_edge(api.START, "step")
    return Case(
        g.compile(),
        [
            Run({"n": 4}, expect={"n": 8, "log": ["PState:defA"]}),
            Run({"n": 1, "a": "q"}, expect={"a": "q", "n": 2, "log": ["PState:q"]}),
        ],
    )


def build_pydantic_return_instance(api: Api) -> Case:
    # All fields of the returned model become writes, not only the ones set.
    g = api.StateGraph(PState)
    g.add_node("remake", lambda s: PState(n=s.n + 1, log=["r"]))
    g.add_edge(api.START, "remake")
    return Case(
        g.compile(), [Run({"n": 5, "a": "given"}, expect={"a": "defA", "n": 6, "log": ["r"]})]
    )


# --------------------------------------------------------------------------- fan-out / joins


def build_parallel_join(api: Api) -> Case:
    # Names added in reverse order; the list reducer must still see a, b, c (name order).
    g = _graph(api, "c", "b", "a", "z")
    for name in ("c", "b", "a"):
        g.add_edge(api.START, name)
    g.add_edge(["c", "b", "a"], "z")
    g.add_edge("z", api.END)
    return Case(
        g.compile(),
        [Run({}, expect={"log": ["a", "b", "c", "z"]})],
        parallel=True,
        debug=True,
        mermaid=True,
    )


def build_join_across_steps(api: Api) -> Case:
    g = _graph(api, "a", "b1", "b", "c")
    g.add_edge(api.START, "a")
    g.add_edge(api.START, "b1")
    g.add_edge("b1", "b")
    g.add_edge(["a", "b"], "c")
    return Case(g.compile(), [Run({}, expect={"log": ["a", "b1", "b", "c"]})], parallel=True)


def build_plain_edges_across_steps(api: Api) -> Case:
    # Without a join, c is triggered in two different steps and runs twice.
    g = _graph(api, "a", "b1", "b", "c")
    g.add_edge(api.START, "a")
    g.add_edge(api.START, "b1")
    g.add_edge("b1", "b")
    g.add_edge("a", "c")
    g.add_edge("b", "c")
    return Case(g.compile(), [Run({}, expect={"log": ["a", "b1", "b", "c", "c"]})], parallel=True)


def build_two_triggers_same_step(api: Api) -> Case:
    # c is triggered by a static edge and by a router in the same step: it runs once.
    g = _graph(api, "a", "b", "c")
    g.add_edge(api.START, "a")
    g.add_edge(api.START, "b")
    g.add_edge("a", "c")
    g.add_conditional_edges("b", lambda s: "c")
    return Case(g.compile(), [Run({}, expect={"log": ["a", "b", "c"]})], parallel=True)


def build_defer(api: Api) -> Case:
    g = _graph(api, "a", "b1", "b")
    g.add_node("c", _log("c"), defer=True)
    g.add_edge(api.START, "a")
    g.add_edge(api.START, "b1")
    g.add_edge("b1", "b")
    g.add_edge("a", "c")
    g.add_edge("b", "c")
    return Case(g.compile(), [Run({}, expect={"log": ["a", "b1", "b", "c"]})], parallel=True)


def _worker(s: dict[str, Any]) -> dict[str, Any]:
    return {"log": [f"w:{s['a']}"]}


def build_send_map_reduce(api: Api) -> Case:
    def fan(s: S) -> list[Any]:
        return [api.Send("work", {"a": item}) for item in s["a"].split(",")]

    g = api.StateGraph(S)
    g.add_node("work", _worker)
    g.add_node("reduce", lambda s: {"b": "|".join(s["log"])})
    g.add_conditional_edges(api.START, fan)
    g.add_edge("work", "reduce")
    return Case(
        g.compile(),
        [
            Run(
                {"a": "3,1,2"},
                expect={"a": "3,1,2", "b": "w:3|w:1|w:2", "log": ["w:3", "w:1", "w:2"]},
            ),
            Run({"a": "z"}, expect={"a": "z", "b": "w:z", "log": ["w:z"]}),
        ],
        parallel=True,
    )


def build_send_from_two_nodes(api: Api) -> Case:
    g = _graph(api, "q", "p")
    g.add_node("w", _worker)
    g.add_edge(api.START, "q")
    g.add_edge(api.START, "p")
    g.add_conditional_edges("q", lambda s: [api.Send("w", {"a": "q1"}), api.Send("w", {"a": "q2"})])
    g.add_conditional_edges("p", lambda s: [api.Send("w", {"a": "p1"}), api.Send("w", {"a": "p2"})])
    return Case(
        g.compile(),
        [Run({}, expect={"log": ["p", "q", "w:p1", "w:p2", "w:q1", "w:q2"]})],
        parallel=True,
    )


def build_mixed_static_and_send(api: Api) -> Case:
    def route(s: S) -> list[Any]:
        return [api.Send("w", {"a": "s2"}), "b", api.Send("w", {"a": "s1"}), "a"]

    g = _graph(api, "src", "a", "b")
    g.add_node("w", _worker)
    g.add_edge(api.START, "src")
    g.add_conditional_edges("src", route)
    return Case(
        g.compile(), [Run({}, expect={"log": ["src", "a", "b", "w:s2", "w:s1"]})], parallel=True
    )


def build_send_and_edge_same_node(api: Api) -> Case:
    # The same node runs twice in one step: once pulled (full state), once pushed (Send arg).
    g = _graph(api, "src")
    g.add_node("w", lambda s: {"log": [f"w:{s.get('a', '-')}"]})
    g.add_edge(api.START, "src")
    g.add_conditional_edges("src", lambda s: [api.Send("w", {"a": "sent"}), "w"])
    return Case(g.compile(), [Run({}, expect={"log": ["src", "w:-", "w:sent"]})], parallel=True)


# --------------------------------------------------------------------------- routers


def build_loop_path_map_dict(api: Api) -> Case:
    def inc(s: S) -> dict[str, Any]:
        return {"n": s["n"] + 1, "log": [f"inc{s['n']}"]}

    g = _graph(api, "done")
    g.add_node("inc", inc)
    g.add_edge(api.START, "inc")
    g.add_conditional_edges(
        "inc", lambda s: "more" if s["n"] < 3 else "stop", {"more": "inc", "stop": "done"}
    )
    g.add_edge("done", api.END)
    return Case(
        g.compile(),
        [
            Run({"n": 0}, expect={"n": 3, "log": ["inc0", "inc1", "inc2", "done"]}),
            Run({"n": 7}, expect={"n": 8, "log": ["inc7", "done"]}),
        ],
        mermaid=True,
    )


def build_path_map_list(api: Api) -> Case:
    g = _graph(api, "s", "x")
    g.add_edge(api.START, "s")
    g.add_conditional_edges("s", lambda s: "x" if s.get("a") else api.END, ["x", api.END])
    return Case(
        g.compile(),
        [Run({"a": "go"}, expect={"a": "go", "log": ["s", "x"]}), Run({}, expect={"log": ["s"]})],
    )


def build_router_list_and_end(api: Api) -> Case:
    g = _graph(api, "s", "x", "y")
    g.add_edge(api.START, "s")
    g.add_conditional_edges("s", lambda s: ["y", "x"] if s.get("a") else ["y", api.END])
    g.add_edge("x", api.END)
    return Case(
        g.compile(),
        [
            Run({"a": "both"}, expect={"a": "both", "log": ["s", "x", "y"]}),
            Run({}, expect={"log": ["s", "y"]}),
        ],
        parallel=True,
    )


def build_router_literal(api: Api) -> Case:
    def route(s: S) -> Literal["x", "__end__"]:
        return "x" if s["n"] > 0 else "__end__"

    g = _graph(api, "s", "x")
    g.add_edge(api.START, "s")
    g.add_conditional_edges("s", route)
    return Case(
        g.compile(),
        [
            Run({"n": 1}, expect={"n": 1, "log": ["s", "x"]}),
            Run({"n": 0}, expect={"n": 0, "log": ["s"]}),
        ],
        mermaid=True,
    )


def build_router_sees_own_writes(api: Api) -> Case:
    # Each router encodes what it saw in where it routes: own write visible, sibling's not.
    g = api.StateGraph(S)
    g.add_node("na", lambda s: {"a": "A"})
    g.add_node("nb", lambda s: {"b": "B"})
    g.add_node("own_a", _log("own_a"))
    g.add_node("own_b", _log("own_b"))
    g.add_node("saw_sibling", _log("saw_sibling"))
    g.add_edge(api.START, "na")
    g.add_edge(api.START, "nb")
    g.add_conditional_edges("na", lambda s: "saw_sibling" if "b" in s else "own_a")
    g.add_conditional_edges("nb", lambda s: "saw_sibling" if "a" in s else "own_b")
    return Case(
        g.compile(),
        [Run({}, expect={"a": "A", "b": "B", "log": ["own_a", "own_b"]})],
        parallel=True,
    )


# --------------------------------------------------------------------------- Command


def build_command_goto_update(api: Api) -> Case:
    def decide(s: S) -> Any:
        return api.Command(
            update={"a": "decided", "log": ["decide"]}, goto="yes" if s["n"] else "no"
        )

    g = _graph(api, "yes", "no")
    g.add_node("decide", decide, destinations=("yes", "no"))
    g.add_node("silent", lambda s: api.Command(goto="decide"))
    g.add_edge(api.START, "silent")
    return Case(
        g.compile(),
        [
            Run({"n": 1}, expect={"a": "decided", "n": 1, "log": ["decide", "yes"]}),
            Run({"n": 0}, expect={"a": "decided", "n": 0, "log": ["decide", "no"]}),
        ],
    )


def build_command_literal_annotation(api: Api) -> Case:
    # Command[Literal[...]] declares the node's possible targets (used for drawing).
    def hop(s: S) -> api.Command[Literal["b", "__end__"]]:  # type: ignore[name-defined]
        return api.Command(update={"log": ["hop"]}, goto="b" if s.get("a") else api.END)

    g = _graph(api, "b")
    g.add_node("hop", hop)
    g.add_edge(api.START, "hop")
    return Case(
        g.compile(),
        [Run({"a": "x"}, expect={"a": "x", "log": ["hop", "b"]}), Run({}, expect={"log": ["hop"]})],
        mermaid=True,
    )


def build_command_plus_static_edge(api: Api) -> Case:
    # Both the Command's goto and the node's static edge are followed.
    g = _graph(api, "x", "y")
    g.add_node("cmd", lambda s: api.Command(update={"log": ["cmd"]}, goto="x"))
    g.add_edge(api.START, "cmd")
    g.add_edge("cmd", "y")
    return Case(g.compile(), [Run({}, expect={"log": ["cmd", "x", "y"]})], parallel=True)


def build_command_goto_end_with_edge(api: Api) -> Case:
    g = _graph(api, "y")
    g.add_node("cmd", lambda s: api.Command(goto=api.END, update={"a": "end"}))
    g.add_edge(api.START, "cmd")
    g.add_edge("cmd", "y")
    return Case(g.compile(), [Run({}, expect={"a": "end", "log": ["y"]})])


def build_command_goto_send(api: Api) -> Case:
    def cg(s: S) -> Any:
        return api.Command(
            update={"log": ["cg"]}, goto=[api.Send("w", {"a": "c2"}), api.Send("w", {"a": "c1"})]
        )

    g = api.StateGraph(S)
    g.add_node("cg", cg)
    g.add_node("w", _worker)
    g.add_edge(api.START, "cg")
    return Case(g.compile(), [Run({}, expect={"log": ["cg", "w:c2", "w:c1"]})], parallel=True)


# --------------------------------------------------------------------------- loops / limits


def _counter_loop(api: Api, until: int) -> Any:
    def inc(s: S) -> dict[str, Any]:
        return {"n": s["n"] + 1}

    g = api.StateGraph(S)
    g.add_node("inc", inc)
    g.add_edge(api.START, "inc")
    g.add_conditional_edges("inc", lambda s: api.END if s["n"] >= until else "inc")
    return g.compile()


def build_loop_limit_just_enough(api: Api) -> Case:
    # 4 super-steps need recursion_limit >= 5 on LangGraph.
    return Case(
        _counter_loop(api, 4),
        [Run({"n": 0}, config={"recursion_limit": 5}, expect={"n": 4, "log": []})],
    )


def build_recursion_limit_exact(api: Api) -> Case:
    # Same program with recursion_limit == steps needed: LangGraph raises.
    return Case(
        _counter_loop(api, 4),
        [Run({"n": 0}, config={"recursion_limit": 4})],
        error="GraphRecursionError",
        error_prefix=True,
        trellis_mentions=("inc",),
    )


def build_recursion_infinite(api: Api) -> Case:
    return Case(
        _counter_loop(api, 10**9),
        [Run({"n": 0}, config={"recursion_limit": 6})],
        error="GraphRecursionError",
        error_prefix=True,
        trellis_mentions=("inc",),
    )


def build_entry_finish_sequence(api: Api) -> Case:
    def third(s: S) -> dict[str, Any]:
        return {"log": ["third"]}

    def fourth(s: S) -> dict[str, Any]:
        return {"log": ["fourth"]}

    g = api.StateGraph(S)
    g.add_sequence([("one", _log("one")), ("two", _log("two")), third])
    g.add_node(fourth)
    g.add_edge("third", "fourth")
    g.set_entry_point("one")
    g.set_finish_point("fourth")
    return Case(g.compile(), [Run({}, expect={"log": ["one", "two", "third", "fourth"]})])


# --------------------------------------------------------------------------- schemas per node


class In(TypedDict):
    q: str


class Out(TypedDict):
    ans: str


class Full(TypedDict, total=False):
    q: str
    ans: str
    scratch: str


def build_input_output_schema(api: Api) -> Case:
    g = api.StateGraph(Full, input_schema=In, output_schema=Out)
    g.add_node("n1", lambda s: {"scratch": s["q"] + "!"})
    g.add_node("n2", lambda s: {"ans": s["scratch"] + "?"})
    g.add_edge(api.START, "n1")
    g.add_edge("n1", "n2")
    return Case(g.compile(), [Run({"q": "hi"}, expect={"ans": "hi!?"})])


def build_input_outside_schema(api: Api) -> Case:
    g = api.StateGraph(Full, input_schema=In, output_schema=Out)
    g.add_node("n1", lambda s: {"scratch": s["q"] + "!"})
    g.add_node("n2", lambda s: {"ans": s["scratch"] + "?"})
    g.add_edge(api.START, "n1")
    g.add_edge("n1", "n2")
    # LangGraph ignores input keys outside the input schema; Trellis names them.
    return Case(
        g.compile(),
        [Run({"q": "yo", "scratch": "S", "ans": "pre"}, expect={"ans": "yo!?"})],
        trellis_stricter="InvalidUpdateError",
    )


class Pub(TypedDict, total=False):
    q: str
    ans: str


class Priv(TypedDict):
    q: str
    private: str


def _p1(s: Pub) -> Priv:
    return {"q": s["q"], "private": "P:" + s["q"]}


def _p2(s: Priv) -> dict[str, Any]:
    return {"ans": f"{s['private']}|{sorted(s)}"}


def build_private_channel_annotations(api: Api) -> Case:
    g = api.StateGraph(Pub)
    g.add_node("p1", _p1)
    g.add_node("p2", _p2)
    g.add_edge(api.START, "p1")
    g.add_edge("p1", "p2")
    return Case(g.compile(), [Run({"q": "z"}, expect={"q": "z", "ans": "P:z|['private', 'q']"})])


def build_node_input_schema_kwarg(api: Api) -> Case:
    def p3(s: Any) -> dict[str, Any]:
        return {"ans": f"{s['private']}|{sorted(s)}"}

    def narrow(s: In) -> dict[str, Any]:
        return {"scratch": str(sorted(s))}

    g = api.StateGraph(Full)
    g.add_node("p1", _p1)
    g.add_node("p3", p3, input_schema=Priv)
    g.add_node("narrow", narrow)
    g.add_edge(api.START, "p1")
    g.add_edge("p1", "p3")
    g.add_edge("p3", "narrow")
    return Case(
        g.compile(),
        [Run({"q": "k"}, expect={"q": "k", "ans": "P:k|['private', 'q']", "scratch": "['q']"})],
    )


# --------------------------------------------------------------------------- injection


@dataclass
class Ctx:
    user: str


def build_config_injection(api: Api) -> Case:
    # Unannotated on purpose: LangGraph warns unless `config` is bare or typed RunnableConfig.
    def node(s: S, config) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        md = config["metadata"]
        seen = [
            md["langgraph_step"],
            md["langgraph_node"],
            md.get("m"),
            config["configurable"].get("user"),
        ]
        return {"log": [seen]}

    g = api.StateGraph(S)
    g.add_node("first", node)
    g.add_node("second", node)
    g.add_edge(api.START, "first")
    g.add_edge("first", "second")
    cfg = {"configurable": {"user": "u1"}, "metadata": {"m": 7}}
    return Case(
        g.compile(),
        [
            Run({}, config=cfg, expect={"log": [[1, "first", 7, "u1"], [2, "second", 7, "u1"]]}),
            Run({}, expect={"log": [[1, "first", None, None], [2, "second", None, None]]}),
        ],
    )


def build_runtime_injection(api: Api) -> Case:
    def node(s: S, runtime: Any) -> dict[str, Any]:
        ctx = runtime.context
        user = ctx.user if isinstance(ctx, Ctx) else ctx
        return {"a": str(user), "n": runtime.execution_info.node_attempt}

    g = api.StateGraph(S, context_schema=Ctx)
    g.add_node("node", node)
    g.add_edge(api.START, "node")
    return Case(
        g.compile(),
        [
            Run({}, context=Ctx(user="bob"), expect={"a": "bob", "n": 1, "log": []}),
            Run({}, expect={"a": "None", "n": 1, "log": []}),
        ],
    )


def build_custom_stream(api: Api) -> Case:
    def via_getter(s: S) -> dict[str, Any]:
        api.get_stream_writer()({"k": 1})
        return {"a": "z"}

    # Unannotated on purpose: LangGraph injects `writer` only if bare or typed StreamWriter.
    def via_param(s: S, writer) -> None:  # type: ignore[no-untyped-def]
        writer("hello")
        writer({"a": s["a"]})

    g = api.StateGraph(S)
    g.add_node("via_getter", via_getter)
    g.add_node("via_param", via_param)
    g.add_edge(api.START, "via_getter")
    g.add_edge("via_getter", "via_param")
    return Case(g.compile(), [Run({}, expect={"a": "z", "log": []})], custom=True)


def build_retry_policy(api: Api) -> Case:
    attempts: list[int] = []

    def flaky(s: S, runtime: Any) -> dict[str, Any]:
        attempts.append(runtime.execution_info.node_attempt)
        if len(attempts) < 3:
            raise ConnectionError("transient")
        return {"n": runtime.execution_info.node_attempt, "log": [list(attempts)]}

    policy = api.RetryPolicy(max_attempts=3, initial_interval=0.0, jitter=False)
    g = api.StateGraph(S)
    g.add_node("flaky", flaky, retry_policy=policy)
    g.add_edge(api.START, "flaky")
    return Case(g.compile(), [Run({}, expect={"n": 3, "log": [[1, 2, 3]]})])


# --------------------------------------------------------------------------- async, subgraph, batch


def build_async_nodes(api: Api) -> Case:
    async def fetch(s: S) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"log": ["fetch"]}

    async def parse(s: S) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"log": ["parse"]}

    async def merge(s: S) -> dict[str, Any]:
        return {"a": "+".join(s["log"])}

    g = api.StateGraph(S)
    g.add_node("parse", parse)
    g.add_node("fetch", fetch)
    g.add_node("merge", merge)
    g.add_edge(api.START, "parse")
    g.add_edge(api.START, "fetch")
    g.add_edge(["parse", "fetch"], "merge")
    return Case(
        g.compile(),
        [Run({}, expect={"a": "fetch+parse", "log": ["fetch", "parse"]})],
        is_async=True,
        parallel=True,
    )


class SubState(TypedDict, total=False):
    a: str
    log: Annotated[list[Any], operator.add]
    inner: str


def build_subgraph_node(api: Api) -> Case:
    sg = api.StateGraph(SubState)
    sg.add_node("s1", lambda s: {"inner": "I", "log": ["s1"]})
    sg.add_node("s2", lambda s: {"a": s["a"] + "+" + s["inner"], "log": ["s2"]})
    sg.add_edge(api.START, "s1")
    sg.add_edge("s1", "s2")
    sub = sg.compile()
    g = _graph(api, "pre", "post")
    g.add_node("sub", sub)
    g.add_edge(api.START, "pre")
    g.add_edge("pre", "sub")
    g.add_edge("sub", "post")
    # The parent receives the subgraph's whole output, so the shared list is duplicated.
    return Case(
        g.compile(),
        [
            Run(
                {"a": "A", "log": ["in"]},
                expect={"a": "A+I", "log": ["in", "pre", "in", "pre", "s1", "s2", "post"]},
            )
        ],
    )


def build_batch(api: Api) -> Case:
    g = api.StateGraph(S)
    g.add_node("x", lambda s: {"a": s["a"] + "!"})
    g.add_edge(api.START, "x")
    return Case(
        g.compile(),
        [
            Run({"a": "1"}, expect={"a": "1!", "log": []}),
            Run({"a": "2"}, expect={"a": "2!", "log": []}),
        ],
        batch=True,
    )


# --------------------------------------------------------------------------- messages


def _message_view(value: Any) -> Any:
    """Engine-neutral view of chat messages: (role, content, id) dicts, generated ids masked.

    LangGraph turns dict messages into LangChain objects; Trellis may keep dicts or use its own
    class. Both are reduced to the same plain shape so only the reducer semantics are compared.
    """
    roles = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant"}
    if isinstance(value, dict):
        if "content" in value and ("role" in value or "type" in value):
            role = value.get("role", value.get("type"))
            mid = value.get("id")
            return {"role": roles.get(role, role), "content": value["content"], "id": _mask(mid)}
        return {k: _message_view(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        out = [_message_view(v) for v in value]
        return tuple(out) if isinstance(value, tuple) else out
    if type(value).__name__ == "RemoveMessage":
        return {"role": "remove", "id": value.id}
    if hasattr(value, "content") and hasattr(value, "id"):
        role = getattr(value, "role", None) or getattr(value, "type", None)
        return {"role": roles.get(role, role), "content": value.content, "id": _mask(value.id)}
    return value


def _mask(mid: Any) -> Any:
    import re

    if isinstance(mid, str) and re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", mid):
        return "<uuid>"
    return mid


def build_add_messages(api: Api) -> Case:
    class M(TypedDict, total=False):
        messages: Annotated[list[Any], api.add_messages]

    g = api.StateGraph(M)
    g.add_node("reply", lambda s: {"messages": [{"role": "ai", "content": "hi", "id": "m2"}]})
    g.add_node("edit", lambda s: {"messages": [{"role": "ai", "content": "hi!", "id": "m2"}]})
    g.add_node("drop", lambda s: {"messages": [api.RemoveMessage(id="m1")]})
    g.add_node("more", lambda s: {"messages": [{"role": "user", "content": "again", "id": "m3"}]})
    g.add_edge(api.START, "reply")
    g.add_edge("reply", "edit")
    g.add_edge("edit", "drop")
    g.add_edge("drop", "more")
    start = {"messages": [{"role": "user", "content": "hello", "id": "m1"}]}
    return Case(
        g.compile(),
        [
            Run(
                start,
                expect={
                    "messages": [
                        {"role": "assistant", "content": "hi!", "id": "m2"},
                        {"role": "user", "content": "again", "id": "m3"},
                    ]
                },
            )
        ],
        normalize=_message_view,
    )


def build_add_messages_generated_ids(api: Api) -> Case:
    class M(TypedDict, total=False):
        messages: Annotated[list[Any], api.add_messages]

    g = api.StateGraph(M)
    g.add_node(
        "reply",
        lambda s: {"messages": [{"role": "assistant", "content": f"n={len(s['messages'])}"}]},
    )
    g.add_edge(api.START, "reply")
    return Case(
        g.compile(),
        [
            Run(
                {"messages": [{"role": "user", "content": "q"}]},
                expect={
                    "messages": [
                        {"role": "user", "content": "q", "id": "<uuid>"},
                        {"role": "assistant", "content": "n=1", "id": "<uuid>"},
                    ]
                },
            )
        ],
        normalize=_message_view,
    )


# --------------------------------------------------------------------------- failures


def build_two_writes_last_value(api: Api) -> Case:
    g = api.StateGraph(S)
    g.add_node("p", lambda s: {"a": "p"})
    g.add_node("q", lambda s: {"a": "q"})
    g.add_edge(api.START, "p")
    g.add_edge(api.START, "q")
    return Case(
        g.compile(),
        [Run({})],
        error="InvalidUpdateError",
        trellis_mentions=("a", "p", "q"),
        parallel=True,
    )


def build_non_dict_return(api: Api) -> Case:
    g = api.StateGraph(S)
    g.add_node("talker", lambda s: "just a string")
    g.add_edge(api.START, "talker")
    return Case(
        g.compile(),
        [Run({})],
        error="InvalidUpdateError",
        trellis_mentions=("talker", "just a string"),
    )


def build_non_dict_input(api: Api) -> Case:
    g = _graph(api, "x")
    g.add_edge(api.START, "x")
    return Case(g.compile(), [Run("hello")], error="InvalidUpdateError")


def build_node_raises(api: Api) -> Case:
    # LangGraph re-raises the node's own exception unchanged (no retry policy here).
    def boom(s: S) -> dict[str, Any]:
        raise ValueError("boom in node")

    g = api.StateGraph(S)
    g.add_node("boom", boom)
    g.add_edge(api.START, "boom")
    return Case(g.compile(), [Run({})], error="ValueError")


def build_router_returns_none(api: Api) -> Case:
    # LangGraph: ValueError("Branch did not return a valid destination"); Trellis may use a
    # ValueError subclass (RoutingError), so only the builtin base is compared.
    g = _graph(api, "s", "x")
    g.add_edge(api.START, "s")
    g.add_conditional_edges("s", lambda s: None)
    return Case(g.compile(), [Run({})], error_base=ValueError)


def build_stricter_unknown_key(api: Api) -> Case:
    # LangGraph silently drops "zzz"; Trellis rejects it.
    g = api.StateGraph(S)
    g.add_node("leaky", lambda s: {"zzz": 1, "a": "ok"})
    g.add_edge(api.START, "leaky")
    return Case(
        g.compile(),
        [Run({}, expect={"a": "ok", "log": []})],
        trellis_stricter="InvalidUpdateError",
        trellis_mentions=("leaky", "zzz"),
    )


def build_stricter_unknown_route(api: Api) -> Case:
    # LangGraph logs "wrote to unknown channel branch:to:nope" and ends the run.
    g = _graph(api, "s", "x")
    g.add_edge(api.START, "s")
    g.add_conditional_edges("s", lambda s: "nope")
    return Case(
        g.compile(),
        [Run({}, expect={"log": ["s"]})],
        trellis_stricter="RoutingError",
        trellis_mentions=("nope",),
    )


PROGRAMS: dict[str, Callable[[Api], Case]] = {
    name.removeprefix("build_"): fn
    for name, fn in sorted(globals().items())
    if name.startswith("build_") and callable(fn)
}


class Asked(TypedDict):
    x: int


def paused_at_ask(engine: str) -> tuple[Any, dict[str, Any]]:
    """START -> a -> ask (``interrupt()``) on ``engine``'s memory saver, run until
    ``ask`` asks; the graph and the thread's config."""
    if engine == "langgraph":
        from langgraph.checkpoint.memory import InMemorySaver as Saver
        from langgraph.graph import START, StateGraph
        from langgraph.types import interrupt
    else:
        from trellis import START, StateGraph, interrupt  # type: ignore[assignment]
        from trellis import MemorySaver as Saver  # type: ignore[assignment]

    g = StateGraph(Asked)
    g.add_node("a", lambda s: {"x": 1})
    g.add_node("ask", lambda s: {"x": interrupt("how much?")})
    g.add_edge(START, "a")
    g.add_edge("a", "ask")
    graph = g.compile(checkpointer=Saver())
    cfg = {"configurable": {"thread_id": "t"}}
    list(graph.stream({"x": 0}, cfg))
    return graph, cfg
