"""Compensations (sagas): automatic rollback when a run fails, ``graph.compensate`` after
a crash, newest first, each compensation at most once once it has finished."""

from __future__ import annotations

import asyncio
import operator
import uuid
from collections import Counter
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, Command, RetryPolicy, StateGraph
from trellis.errors import GraphRecursionError, InvalidUpdateError, NodeError


class S(TypedDict, total=False):
    trail: Annotated[list[str], operator.add]


def config(thread: str | None = None) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread or uuid.uuid4().hex}}


class Book:
    """The outside world: what the nodes did and what was undone, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, list[str]]] = []
        self.broken_undo: set[str] = set()
        self.broken_node: set[str] = {"D"}

    def node(self, name: str) -> Any:
        def fn(state: S) -> dict[str, Any]:
            self.log.append(("do", name, list(state.get("trail", []))))
            if name in self.broken_node:
                raise ValueError(f"{name} is broken")
            return {"trail": [name]}

        fn.__name__ = name
        return fn

    def undo(self, name: str) -> Any:
        def fn(state: S) -> None:
            self.log.append(("undo", name, list(state.get("trail", []))))
            if name in self.broken_undo:
                raise RuntimeError(f"cannot undo {name}")

        return fn

    def aundo(self, name: str) -> Any:
        """``undo(name)`` as an async compensation."""
        undo = self.undo(name)

        async def fn(state: S) -> None:
            undo(state)

        return fn

    def undone(self) -> list[str]:
        return [name for kind, name, _ in self.log if kind == "undo"]

    def undone_with_trails(self) -> list[tuple[str, list[str]]]:
        return [(name, trail) for kind, name, trail in self.log if kind == "undo"]


def build(book: Book, checkpointer: Any = None, **options: Any) -> Any:
    """A -> B -> C -> D; A, B and C have compensations."""
    builder = StateGraph(S)
    for name in "ABC":
        builder.add_node(name, book.node(name), compensate=book.undo(name))
    builder.add_node("D", book.node("D"), **options)
    builder.add_edge(START, "A")
    builder.add_edge("A", "B")
    builder.add_edge("B", "C")
    builder.add_edge("C", "D")
    builder.add_edge("D", END)
    return builder.compile(checkpointer=checkpointer)


# -- automatic rollback ---------------------------------------------------------------


def test_a_failed_run_is_rolled_back_newest_first_without_a_checkpointer() -> None:
    book = Book()
    with pytest.raises(ValueError, match="D is broken") as info:
        build(book).invoke({"trail": []})
    report = info.value.compensation  # type: ignore[attr-defined]
    assert report.compensated == ["C", "B", "A"] and report.ok
    assert book.undone() == ["C", "B", "A"]
    assert any("Trellis compensated: C, B, A" in note for note in info.value.__notes__)


def test_a_run_out_of_steps_is_rolled_back_too(saver_factory: Any) -> None:
    """The recursion limit fails a run for good, as a node's error does."""
    book = Book()
    book.broken_node = set()
    builder = StateGraph(S)
    builder.add_node("A", book.node("A"), compensate=book.undo("A"))
    builder.add_node("think", lambda s: {"trail": ["think"]})
    builder.add_edge(START, "A")
    builder.add_edge("A", "think")
    builder.add_conditional_edges("think", lambda s: "think", ["think"])
    graph = builder.compile(checkpointer=saver_factory.make())
    with pytest.raises(GraphRecursionError) as info:
        graph.invoke({"trail": []}, {**config(), "recursion_limit": 5})
    assert info.value.compensation.compensated == ["A"]  # type: ignore[attr-defined]
    assert book.undone() == ["A"]


class Totals(S, total=False):
    total: int


async def test_conflicting_writes_roll_the_run_back_async_too() -> None:
    """Two parallel writes to a last-value key: the engine fails the step's commit."""
    book = Book()
    book.broken_node = set()
    builder = StateGraph(Totals)
    builder.add_node("A", book.node("A"), compensate=book.undo("A"))
    builder.add_node("x", lambda s: {"total": 1})
    builder.add_node("y", lambda s: {"total": 2})
    for a, b in [(START, "A"), ("A", "x"), ("A", "y")]:
        builder.add_edge(a, b)
    with pytest.raises(InvalidUpdateError, match="total"):
        await builder.compile().ainvoke({"trail": []})
    assert book.undone() == ["A"]


def test_each_compensation_sees_the_state_after_its_own_node(saver_factory: Any) -> None:
    book = Book()
    graph = build(book, saver_factory.make())
    with pytest.raises(ValueError):
        graph.invoke({"trail": []}, config())
    seen = {name: trail for kind, name, trail in book.log if kind == "undo"}
    assert seen == {"C": ["A", "B", "C"], "B": ["A", "B"], "A": ["A"]}


def test_a_failing_compensation_is_reported_and_the_others_still_run(saver_factory: Any) -> None:
    book = Book()
    book.broken_undo = {"B"}
    graph = build(book, saver_factory.make())
    with pytest.raises(ValueError) as info:
        graph.invoke({"trail": []}, config())
    report = info.value.compensation  # type: ignore[attr-defined]
    assert report.compensated == ["C", "A"]
    assert report.failed == [{"node": "B", "error": "RuntimeError: cannot undo B"}]
    assert not report.ok
    assert book.undone() == ["C", "B", "A"]
    assert any("cannot undo B" in note for note in info.value.__notes__)


def test_compensate_retries_a_compensation_that_failed(saver_factory: Any) -> None:
    book = Book()
    book.broken_undo = {"B"}
    graph = build(book, saver_factory.make())
    cfg = config()
    with pytest.raises(ValueError):
        graph.invoke({"trail": []}, cfg)
    book.broken_undo = set()  # the operator fixed the refund service
    report = graph.compensate(cfg)
    assert report.compensated == ["B"] and report.ok
    assert book.undone() == ["C", "B", "A", "B"]
    assert graph.compensate(cfg).compensated == [], "now finished: nothing is repeated"
    assert book.undone() == ["C", "B", "A", "B"]


def test_a_node_that_failed_is_not_compensated_only_those_that_finished(
    saver_factory: Any,
) -> None:
    book = Book()
    book.broken_node = {"B"}
    graph = build(book, saver_factory.make())
    with pytest.raises(ValueError) as info:
        graph.invoke({"trail": []}, config())
    assert info.value.compensation.compensated == ["A"]  # type: ignore[attr-defined]
    assert book.undone() == ["A"]


def test_retries_exhausted_roll_back_and_raise_node_error(saver_factory: Any) -> None:
    book = Book()
    policy = RetryPolicy(max_attempts=2, initial_interval=0.001, retry_on=ValueError)
    graph = build(book, saver_factory.make(), retry_policy=policy)
    with pytest.raises(NodeError) as info:
        graph.invoke({"trail": []}, config())
    assert (info.value.node, info.value.attempts) == ("D", 2)
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.compensation.compensated == ["C", "B", "A"]  # type: ignore[attr-defined]
    assert Counter(name for kind, name, _ in book.log if kind == "do")["D"] == 2


def test_on_error_routing_is_not_a_failure_and_compensates_nothing(saver_factory: Any) -> None:
    book = Book()
    builder = StateGraph(S)
    builder.add_node("A", book.node("A"), compensate=book.undo("A"))
    builder.add_node("D", book.node("D"), on_error="review")
    builder.add_node("review", lambda s: {"trail": ["review"]})
    builder.add_edge(START, "A")
    builder.add_edge("A", "D")
    builder.add_edge("D", END)
    builder.add_edge("review", END)
    out = builder.compile(checkpointer=saver_factory.make()).invoke({"trail": []}, config())
    assert out["trail"] == ["A", "review"]
    assert book.undone() == []


# -- graph.compensate: a rollback asked for, repeated, resumed ---------------------------


def test_compensate_rolls_back_a_finished_run_once(saver_factory: Any) -> None:
    book = Book()
    book.broken_node = set()
    graph = build(book, saver_factory.make())
    cfg = config()
    assert graph.invoke({"trail": []}, cfg)["trail"] == ["A", "B", "C", "D"]
    assert book.undone() == []

    report = graph.compensate(cfg)
    assert report.compensated == ["C", "B", "A"] and report.ok
    again = graph.compensate(cfg)
    assert again.compensated == [] and again.failed == []
    assert book.undone() == ["C", "B", "A"]


def test_compensate_from_a_fresh_graph_object_sees_what_was_already_undone(
    saver_factory: Any,
) -> None:
    """The record of finished compensations lives in the store, not in the graph object."""
    book = Book()
    cfg = config()
    with pytest.raises(ValueError):
        build(book, saver_factory.make()).invoke({"trail": []}, cfg)
    fresh = build(book, saver_factory.make())
    assert fresh.compensate(cfg).compensated == []
    assert book.undone() == ["C", "B", "A"]


async def test_async_rollback_awaits_async_compensations(saver_factory: Any) -> None:
    book = Book()

    async def node(state: S) -> dict[str, Any]:
        return {"trail": ["x"]}

    async def broken(state: S) -> dict[str, Any]:
        raise ValueError("no")

    builder = StateGraph(S)
    builder.add_node("a", node, compensate=book.aundo("a"))
    builder.add_node("b", node, compensate=book.aundo("b"))
    builder.add_node("c", broken)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    graph = builder.compile(checkpointer=saver_factory.make())
    cfg = config()
    with pytest.raises(ValueError) as info:
        await graph.ainvoke({"trail": []}, cfg)
    assert info.value.compensation.compensated == ["b", "a"]  # type: ignore[attr-defined]
    assert book.undone() == ["b", "a"]
    assert (await graph.acompensate(cfg)).compensated == []


# -- crash during the rollback -------------------------------------------------------


@pytest.mark.slow
def test_a_rollback_killed_midway_is_finished_by_compensate_in_a_new_process(
    crash: Any,
) -> None:
    crash.kill_at("saga", "undoB")
    assert [e["node"] for e in crash.events("undo")] == ["C", "B"]

    out = crash.run("saga", "compensate")
    assert out == {"ok": True, "compensated": ["B", "A"], "failed": []}
    assert Counter(e["node"] for e in crash.events("undo")) == {"C": 1, "B": 2, "A": 1}
    assert [e["node"] for e in crash.events("undo")] == ["C", "B", "B", "A"]
    seen = {e["node"]: e["trail"] for e in crash.events("undo")}
    assert seen == {"C": ["A", "B", "C"], "B": ["A", "B"], "A": ["A"]}

    again = crash.run("saga", "compensate")
    assert again == {"ok": True, "compensated": [], "failed": []}
    assert crash.count("undo") == 4
    assert Counter(e["node"] for e in crash.events("node")) == {"A": 1, "B": 1, "C": 1, "D": 1}


# -- at most once per completed node run, across resumes and new heads -------------------


def test_a_resumed_run_that_fails_again_does_not_compensate_again(saver_factory: Any) -> None:
    book = Book()
    graph = build(book, saver_factory.make())
    cfg = config()
    with pytest.raises(ValueError):
        graph.invoke({"trail": []}, cfg)
    assert book.undone() == ["C", "B", "A"]

    with pytest.raises(ValueError) as info:
        graph.invoke(None, cfg)  # the operator retries the failed run
    assert info.value.compensation.compensated == []  # type: ignore[attr-defined]
    assert graph.compensate(cfg).compensated == []
    assert book.undone() == ["C", "B", "A"]


async def test_an_async_resumed_run_that_fails_again_does_not_compensate_again(
    saver_factory: Any,
) -> None:
    book = Book()
    graph = build(book, saver_factory.make())
    cfg = config()
    with pytest.raises(ValueError):
        await graph.ainvoke({"trail": []}, cfg)
    with pytest.raises(ValueError) as info:
        await graph.ainvoke(None, cfg)
    assert info.value.compensation.compensated == []  # type: ignore[attr-defined]
    assert (await graph.acompensate(cfg)).compensated == []
    assert book.undone() == ["C", "B", "A"]


def test_a_rollback_is_remembered_after_the_thread_moves_on(saver_factory: Any) -> None:
    book = Book()
    book.broken_undo = {"B"}
    graph = build(book, saver_factory.make())
    cfg = config()
    with pytest.raises(ValueError) as info:
        graph.invoke({"trail": []}, cfg)
    assert info.value.compensation.compensated == ["C", "A"]  # type: ignore[attr-defined]

    book.broken_node = set()
    book.broken_undo = set()
    assert graph.invoke(None, cfg)["trail"] == ["A", "B", "C", "D"]  # a new head
    # Only the compensation that failed is still to do, from any graph object.
    fresh = build(book, saver_factory.make())
    assert fresh.compensate(cfg).compensated == ["B"]
    assert graph.compensate(cfg).compensated == []
    assert book.undone() == ["C", "B", "A", "B"]


def _failed_then_before_c(saver_factory: Any) -> tuple[Book, Any, Any]:
    """A run that failed at D and was compensated, and the config of its
    checkpoint before C ran."""
    book = Book()
    graph = build(book, saver_factory.make())
    cfg = config()
    with pytest.raises(ValueError):
        graph.invoke({"trail": []}, cfg)
    [before_c] = [s.config for s in graph.get_state_history(cfg) if s.next == ("C",)]
    return book, graph, before_c


def test_a_fork_from_before_the_failure_compensates_only_what_it_ran_again(
    saver_factory: Any,
) -> None:
    book, graph, before_c = _failed_then_before_c(saver_factory)
    assert book.undone() == ["C", "B", "A"]
    with pytest.raises(ValueError) as info:
        graph.invoke(None, before_c)  # time travel: C runs again, D fails again
    # A and B ran once and were undone once; only C's new run is undone now.
    assert info.value.compensation.compensated == ["C"]  # type: ignore[attr-defined]
    assert book.undone() == ["C", "B", "A", "C"]


def test_an_edit_of_an_older_checkpoint_compensates_only_what_it_ran_again(
    saver_factory: Any,
) -> None:
    """update_state on a past checkpoint forks as time travel does."""
    book, graph, before_c = _failed_then_before_c(saver_factory)
    edited = graph.update_state(before_c, {"trail": ["note"]})
    with pytest.raises(ValueError) as info:
        graph.invoke(None, edited)
    assert info.value.compensation.compensated == ["C"]  # type: ignore[attr-defined]
    assert book.undone() == ["C", "B", "A", "C"]


# -- a node that finished in the step that failed -----------------------------------------


def build_fan_out(book: Book, checkpointer: Any = None, sibling: str = "ship") -> Any:
    """reserve -> (charge || sibling); reserve and charge have compensations, and
    so does the sibling unless it is "ship"."""
    builder = StateGraph(S)
    for name in ("reserve", "charge", sibling):
        undo = book.undo(name) if name != "ship" else None
        builder.add_node(name, book.node(name), compensate=undo)
        if name != "reserve":
            builder.add_edge("reserve", name)
            builder.add_edge(name, END)
    builder.add_edge(START, "reserve")
    return builder.compile(checkpointer=checkpointer)


def test_a_node_that_finished_beside_the_failing_one_is_compensated_unsaved() -> None:
    book = Book()
    book.broken_node = {"ship"}
    with pytest.raises(ValueError, match="ship is broken") as info:
        build_fan_out(book).invoke({"trail": []})
    assert info.value.compensation.compensated == ["charge", "reserve"]  # type: ignore[attr-defined]
    seen = {name: trail for kind, name, trail in book.log if kind == "undo"}
    assert seen == {"charge": ["reserve", "charge"], "reserve": ["reserve"]}


def test_a_node_that_finished_beside_the_failing_one_is_compensated_once(
    saver_factory: Any,
) -> None:
    book = Book()
    book.broken_node = {"ship"}
    graph = build_fan_out(book, saver_factory.make())
    cfg = config()
    with pytest.raises(ValueError) as info:
        graph.invoke({"trail": []}, cfg)
    assert info.value.compensation.compensated == ["charge", "reserve"]  # type: ignore[attr-defined]
    seen = {name: trail for kind, name, trail in book.log if kind == "undo"}
    assert seen == {"charge": ["reserve", "charge"], "reserve": ["reserve"]}
    assert graph.compensate(cfg).compensated == []

    book.broken_node = set()
    assert sorted(graph.invoke(None, cfg)["trail"]) == ["charge", "reserve", "ship"]
    # The resumed step committed charge's run (kept, not run again): still undone once.
    assert graph.compensate(cfg).compensated == []
    assert book.undone() == ["charge", "reserve"]
    assert [name for kind, name, _ in book.log if kind == "do"].count("charge") == 1


def test_compensate_finds_a_node_that_finished_beside_the_failing_one(saver_factory: Any) -> None:
    book = Book()
    book.broken_node = {"ship"}
    book.broken_undo = {"charge"}
    graph = build_fan_out(book, saver_factory.make())
    cfg = config()
    with pytest.raises(ValueError) as info:
        graph.invoke({"trail": []}, cfg)
    assert info.value.compensation.failed[0]["node"] == "charge"  # type: ignore[attr-defined]

    book.broken_undo = set()
    fresh = build_fan_out(book, saver_factory.make())
    assert fresh.compensate(cfg).compensated == ["charge"]
    assert book.log[-1] == ("undo", "charge", ["reserve", "charge"])
    assert fresh.compensate(cfg).compensated == []


async def test_an_async_node_that_finished_beside_the_failing_one_is_compensated(
    saver_factory: Any,
) -> None:
    book = Book()
    charged = asyncio.Event()

    async def reserve(state: S) -> dict[str, Any]:
        return {"trail": ["reserve"]}

    async def charge(state: S) -> dict[str, Any]:
        charged.set()
        return {"trail": ["charge"]}

    async def ship(state: S) -> dict[str, Any]:
        await charged.wait()  # charge has returned: it sets this on its way out
        raise ValueError("shipping down")

    builder = StateGraph(S)
    builder.add_node("reserve", reserve, compensate=book.aundo("reserve"))
    builder.add_node("charge", charge, compensate=book.aundo("charge"))
    builder.add_node("ship", ship)
    builder.add_edge(START, "reserve")
    builder.add_edge("reserve", "charge")
    builder.add_edge("reserve", "ship")
    graph = builder.compile(checkpointer=saver_factory.make())
    cfg = config()
    with pytest.raises(ValueError) as info:
        await graph.ainvoke({"trail": []}, cfg)
    assert info.value.compensation.compensated == ["charge", "reserve"]  # type: ignore[attr-defined]
    assert book.undone_with_trails() == [
        ("charge", ["reserve", "charge"]),
        ("reserve", ["reserve"]),
    ]
    assert (await graph.acompensate(cfg)).compensated == []


def test_a_step_that_commits_on_resume_does_not_undo_its_finished_node_again(
    saver_factory: Any,
) -> None:
    """book_courier runs before charge in the step; it fails, charge finishes. Once
    resumed, the step commits both: only book_courier's run is still to undo."""
    book = Book()
    book.broken_node = {"book_courier"}
    graph = build_fan_out(book, saver_factory.make(), sibling="book_courier")
    cfg = config()
    with pytest.raises(ValueError) as info:
        graph.invoke({"trail": []}, cfg)
    assert info.value.compensation.compensated == ["charge", "reserve"]  # type: ignore[attr-defined]

    book.broken_node = set()
    graph.invoke(None, cfg)
    assert graph.compensate(cfg).compensated == ["book_courier"]
    assert book.undone() == ["charge", "reserve", "book_courier"]


def test_prune_keeps_what_a_later_compensate_reads(saver_factory: Any) -> None:
    """The examples/flaky_api.py pattern: a failure routes to a person, the saver is
    pruned, then the person rolls the order back."""
    book = Book()
    book.broken_node = set()
    builder = StateGraph(S)
    builder.add_node("A", book.node("A"), compensate=book.undo("A"))
    builder.add_node("B", book.node("B"), compensate=book.undo("B"))
    builder.add_node("ship", lambda s: (_ for _ in ()).throw(RuntimeError("down")),
                     on_error="review")  # fmt: skip
    builder.add_node("review", book.node("review"))
    for a, b in [(START, "A"), ("A", "B"), ("B", "ship")]:
        builder.add_edge(a, b)
    saver = saver_factory.make()
    graph = builder.compile(checkpointer=saver)
    cfg = config()
    graph.invoke({"trail": []}, cfg)
    assert saver.prune(keep_last=1) > 0
    report = graph.compensate(cfg)
    assert (report.compensated, report.failed) == (["B", "A"], [])
    assert book.undone_with_trails() == [
        ("B", ["A", "B"]),
        ("A", ["A"]),
    ]


@pytest.mark.parametrize("route", ["on_error", "error_handler", "rejected", "parallel"])
def test_a_node_that_did_not_do_its_work_is_not_compensated(route: str) -> None:
    """A failure routed elsewhere, or a gate's no, leaves nothing to undo; the
    run's later rollback undoes only what completed."""
    from trellis import Approval, MemorySaver, ReviewQueue, interrupt

    book = Book()
    book.broken_node = {"charge", "D"}
    saver = MemorySaver()
    b = StateGraph(S)
    options: dict[str, Any] = {
        "on_error": {"on_error": "review"},
        "parallel": {"on_error": "review"},
        "error_handler": {
            "error_handler": lambda s: Command(update={"trail": ["handled"]}, goto="review"),
            "destinations": ("review",),
        },
        "rejected": {"approval": Approval(risk="high", on_reject="review")},
    }[route]
    if route == "rejected":
        book.broken_node = {"D"}
    b.add_node("A", book.node("A"), compensate=book.undo("A"))
    b.add_node("charge", book.node("charge"), compensate=book.undo("charge"), **options)
    b.add_node("review", lambda s: {"trail": ["review"]})
    b.add_node("D", book.node("D"))
    b.add_edge(START, "A")
    b.add_edge("A", "charge")
    b.add_edge("charge", "D")
    b.add_edge("review", "D")
    if route == "parallel":  # a sibling asks, so the routed task waits in pending writes
        b.add_node("ask", lambda s: {"trail": [interrupt("ok?")]})
        b.add_edge("A", "ask")
    graph = b.compile(checkpointer=saver)
    cfg = config()
    if route == "rejected":
        graph.invoke({}, cfg)
        queue = ReviewQueue(saver, graph=graph)
        with pytest.raises(ValueError, match="D is broken"):
            queue.reject(queue.pending()[0].id, reviewer="bob")
    elif route == "parallel":
        graph.invoke({}, cfg)  # charge's routed failure waits in the step's writes
        with pytest.raises(ValueError, match="D is broken"):
            graph.invoke(Command(resume="yes"), cfg)
    else:
        with pytest.raises(ValueError, match="D is broken"):
            graph.invoke({}, cfg)
    assert [name for kind, name, _ in book.log if kind == "undo"] == ["A"]


@pytest.mark.parametrize("is_async", [False, True])
def test_a_subgraph_on_its_parents_checkpointer_rolls_its_own_nodes_back(
    saver_factory: Any, is_async: bool
) -> None:
    """The subgraph's saga lives in its own checkpoint namespace, not the parent's."""
    book = Book()
    inner = StateGraph(S)
    inner.add_node("A", book.node("A"), compensate=book.undo("A"))
    inner.add_node("D", book.node("D"))
    inner.add_edge(START, "A")
    inner.add_edge("A", "D")
    outer = StateGraph(S)
    outer.add_node("sub", inner.compile())
    outer.add_edge(START, "sub")
    graph = outer.compile(checkpointer=saver_factory.make())
    with pytest.raises(ValueError, match="D is broken"):
        if is_async:
            asyncio.run(graph.ainvoke({}, config()))
        else:
            graph.invoke({}, config())
    assert [(kind, name) for kind, name, _ in book.log] == [("do", "A"), ("do", "D"), ("undo", "A")]


def test_under_exit_a_resumed_run_rolls_back_the_earlier_runs_nodes_too() -> None:
    """Durability "exit" keeps each node's state in memory; the entries of the runs
    before an interrupt get the state the resumed run starts from."""
    from trellis import MemorySaver, interrupt

    book = Book()
    b = StateGraph(S)
    b.add_node("A", book.node("A"), compensate=book.undo("A"))
    b.add_node("ask", lambda s: {"trail": [f"ask:{interrupt('go?')}"]})
    b.add_node("C", book.node("C"), compensate=book.undo("C"))
    b.add_node("D", book.node("D"))
    b.add_edge(START, "A")
    b.add_edge("A", "ask")
    b.add_edge("ask", "C")
    b.add_edge("C", "D")
    graph = b.compile(checkpointer=MemorySaver())
    cfg = config()
    graph.invoke({}, cfg, durability="exit")
    with pytest.raises(ValueError, match="D is broken") as caught:
        graph.invoke(Command(resume="yes"), cfg, durability="exit")
    assert caught.value.compensation.compensated == ["C", "A"]  # type: ignore[attr-defined]
    undone = [(name, trail) for kind, name, trail in book.log if kind == "undo"]
    assert undone == [("C", ["A", "ask:yes", "C"]), ("A", ["A"])]


@pytest.mark.parametrize("parallel", [False, True])
def test_ctrl_c_in_a_node_stops_the_run_without_rolling_it_back(parallel: bool) -> None:
    """A KeyboardInterrupt is the caller stopping, not the run failing: the thread
    stays resumable, so its side effects are not undone (one task or several)."""
    from trellis import MemorySaver

    book = Book()

    def boom(state: S) -> dict[str, Any]:
        raise KeyboardInterrupt

    b = StateGraph(S)
    b.add_node("A", book.node("A"), compensate=book.undo("A"))
    b.add_node("boom", boom)
    b.add_edge(START, "A")
    b.add_edge("A", "boom")
    if parallel:
        b.add_node("other", book.node("other"))
        b.add_edge("A", "other")
    graph = b.compile(checkpointer=MemorySaver())
    cfg = config()
    with pytest.raises(KeyboardInterrupt):
        graph.invoke({}, cfg)
    assert [kind for kind, _, _ in book.log].count("undo") == 0
    assert "boom" in graph.get_state(cfg).next


def test_an_exit_resume_rolls_back_earlier_saved_nodes_with_their_own_states() -> None:
    """Entries an earlier run saved name their checkpoints; a resumed run under "exit"
    reads those, keeping the in-memory states for its own entries."""
    from trellis import MemorySaver, interrupt

    book = Book()
    b = StateGraph(S)
    b.add_node("A", book.node("A"), compensate=book.undo("A"))
    b.add_node("B", book.node("B"), compensate=book.undo("B"))
    b.add_node("ask", lambda s: {"trail": [f"ask:{interrupt('go?')}"]})
    b.add_node("C", book.node("C"), compensate=book.undo("C"))
    b.add_node("D", book.node("D"))
    for a, z in (("A", "B"), ("B", "ask"), ("ask", "C"), ("C", "D")):
        b.add_edge(a, z)
    b.add_edge(START, "A")
    graph = b.compile(checkpointer=MemorySaver())
    cfg = config()
    graph.invoke({}, cfg, durability="sync")
    with pytest.raises(ValueError, match="D is broken"):
        graph.invoke(Command(resume="yes"), cfg, durability="exit")
    undone = [(name, trail) for kind, name, trail in book.log if kind == "undo"]
    assert undone == [("C", ["A", "B", "ask:yes", "C"]), ("B", ["A", "B"]), ("A", ["A"])]
