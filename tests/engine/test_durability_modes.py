"""Durability modes and a checkpointer that fails: what is written, and what survives.

``FaultySaver`` wraps a real saver (never a mock of one) and injects errors on
chosen calls, before or after the real write (a lost acknowledgement), in the
manner of Temporal's persistence fault injection: a test whose fault never
fired fails at teardown.
"""

from __future__ import annotations

import copy
import operator
import pickle
import random
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import (
    END,
    START,
    Command,
    MemorySaver,
    RetryPolicy,
    SqliteSaver,
    StateGraph,
    interrupt,
    once,
)

MODES = ["sync", "async", "exit"]


class S(TypedDict, total=False):
    trail: Annotated[list[str], operator.add]
    total: int


def config() -> dict[str, Any]:
    return {"configurable": {"thread_id": uuid.uuid4().hex}}


class FaultySaver:
    """A real saver behind a fault-injection proxy.

    ``fail`` maps a method name (``put``, ``put_writes``; the async twins count
    under the same name) to the 1-based call numbers that fail. ``when="before"``
    raises instead of writing; ``"after"`` writes, then raises (the commit
    happened, its acknowledgement was lost).
    """

    def __init__(
        self,
        inner: Any,
        *,
        fail: dict[str, set[int]] | None = None,
        error: Callable[[], BaseException] = lambda: sqlite3.OperationalError("disk I/O error"),
        when: str = "before",
        should: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.inner = inner
        self.fail = fail or {}
        self.error = error
        self.when = when
        self.should = should
        self.calls: Counter[str] = Counter()
        self.fired: list[tuple[str, int, Any]] = []

    # The engine re-targets the serializer at compile time: keep it on the real saver.
    @property
    def serde(self) -> Any:
        return self.inner.serde

    @serde.setter
    def serde(self, value: Any) -> None:
        self.inner.serde = value

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _fault(self, method: str, detail: Any) -> bool:
        self.calls[method] += 1
        n = self.calls[method]
        hit = n in self.fail.get(method, ()) or (self.should is not None and self.should(method, n))
        if hit:
            self.fired.append((method, n, detail))
        return hit

    def _call(self, method: str, detail: Any, call: Callable[[], Any]) -> Any:
        if not self._fault(method, detail):
            return call()
        if self.when == "after":
            call()
        raise self.error()

    async def _acall(self, method: str, detail: Any, call: Callable[[], Any]) -> Any:
        if not self._fault(method, detail):
            return await call()
        if self.when == "after":
            await call()
        raise self.error()

    def put(self, thread_id: str, checkpoint: Any, metadata: Any, **kwargs: Any) -> Any:
        return self._call(
            "put", checkpoint, lambda: self.inner.put(thread_id, checkpoint, metadata, **kwargs)
        )

    async def aput(self, thread_id: str, checkpoint: Any, metadata: Any, **kwargs: Any) -> Any:
        return await self._acall(
            "put", checkpoint, lambda: self.inner.aput(thread_id, checkpoint, metadata, **kwargs)
        )

    # A put_many (the input checkpoint and the step applying it, in one
    # transaction) counts as one "put" per checkpoint, and fails as a whole.
    def _fault_many(self, puts: Any) -> bool:
        return any([self._fault("put", put.checkpoint) for put in puts])

    def put_many(self, thread_id: str, puts: Any, **kwargs: Any) -> Any:
        if not self._fault_many(puts):
            return self.inner.put_many(thread_id, puts, **kwargs)
        if self.when == "after":
            self.inner.put_many(thread_id, puts, **kwargs)
        raise self.error()

    async def aput_many(self, thread_id: str, puts: Any, **kwargs: Any) -> Any:
        if not self._fault_many(puts):
            return await self.inner.aput_many(thread_id, puts, **kwargs)
        if self.when == "after":
            await self.inner.aput_many(thread_id, puts, **kwargs)
        raise self.error()

    def put_writes(self, thread_id: str, checkpoint_id: str, writes: Any, **kwargs: Any) -> Any:
        return self._call(
            "put_writes",
            writes,
            lambda: self.inner.put_writes(thread_id, checkpoint_id, writes, **kwargs),
        )

    async def aput_writes(
        self, thread_id: str, checkpoint_id: str, writes: Any, **kwargs: Any
    ) -> Any:
        return await self._acall(
            "put_writes",
            writes,
            lambda: self.inner.aput_writes(thread_id, checkpoint_id, writes, **kwargs),
        )


@pytest.fixture
def faulty(saver_factory: Any) -> Iterator[Callable[..., FaultySaver]]:
    """``faulty(fail=..., ...)`` -> a FaultySaver over this test's real saver.

    Teardown fails the test if a saver that was told to fail never did.
    """
    made: list[FaultySaver] = []

    def make(**kwargs: Any) -> FaultySaver:
        saver = FaultySaver(saver_factory.make(), **kwargs)
        made.append(saver)
        return saver

    yield make
    for saver in made:
        if (saver.fail or saver.should) and not saver.fired:
            pytest.fail(f"the injected fault never fired (calls: {dict(saver.calls)})")


class Ledger:
    """Counts node body executions."""

    def __init__(self) -> None:
        self.ran: Counter[str] = Counter()

    def node(self, name: str, index: int) -> Any:
        def fn(state: S) -> dict[str, Any]:
            self.ran[name] += 1
            return {"trail": [name], "total": state.get("total", 0) * 10 + index}

        return fn


def chain(ledger: Ledger, names: str = "ABC", checkpointer: Any = None, **options: Any) -> Any:
    builder = StateGraph(S)
    for index, name in enumerate(names, start=1):
        builder.add_node(name, ledger.node(name, index))
    builder.add_edge(START, names[0])
    for a, b in zip(names, names[1:], strict=False):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    return builder.compile(checkpointer=checkpointer, **options)


def expected(names: str) -> dict[str, Any]:
    return chain(Ledger(), names).invoke({"trail": [], "total": 0})  # type: ignore[no-any-return]


# -- durability modes ----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_checkpoints_written_per_mode_and_the_same_final_state(
    faulty: Callable[..., FaultySaver], mode: str
) -> None:
    saver = faulty()
    graph = chain(Ledger(), "ABC", saver)
    cfg = config()
    out = graph.invoke({"trail": [], "total": 0}, cfg, durability=mode)
    assert out == expected("ABC")
    history = list(graph.get_state_history(cfg))
    # sync/async: the input, the step that applies it, one per node; exit: one at the end.
    want = 1 if mode == "exit" else 2 + 3
    assert saver.calls["put"] == len(history) == want
    assert saver.calls["put_writes"] == 0
    assert graph.get_state(cfg).values == out
    assert graph.get_state(cfg).next == ()


@pytest.mark.parametrize("mode", MODES)
async def test_checkpoints_written_per_mode_async(
    faulty: Callable[..., FaultySaver], mode: str
) -> None:
    saver = faulty()
    graph = chain(Ledger(), "ABC", saver)
    cfg = config()
    assert await graph.ainvoke({"trail": [], "total": 0}, cfg, durability=mode) == expected("ABC")
    assert saver.calls["put"] == (1 if mode == "exit" else 5)


def test_durability_set_at_compile_time_and_overridden_per_call(
    faulty: Callable[..., FaultySaver],
) -> None:
    saver = faulty()
    graph = chain(Ledger(), "ABC", saver, durability="exit")
    graph.invoke({"trail": [], "total": 0}, config())
    assert saver.calls["put"] == 1
    graph.invoke({"trail": [], "total": 0}, config(), durability="sync")
    assert saver.calls["put"] == 1 + 5


@pytest.mark.parametrize("mode", MODES)
def test_an_interrupt_is_saved_and_resumable_in_every_mode(saver_factory: Any, mode: str) -> None:
    ran: Counter[str] = Counter()

    def ask(state: S) -> dict[str, Any]:
        ran["ask"] += 1
        return {"trail": [interrupt("ok?")]}

    builder = StateGraph(S)
    builder.add_node("A", lambda s: ran.update("A") or {"trail": ["A"]})
    builder.add_node("ask", ask)
    builder.add_edge(START, "A")
    builder.add_edge("A", "ask")
    graph = builder.compile(checkpointer=saver_factory.make())
    cfg = config()
    assert "__interrupt__" in graph.invoke({"trail": []}, cfg, durability=mode)
    assert graph.get_state(cfg).next == ("ask",)
    out = graph.invoke(Command(resume="yes"), cfg, durability=mode)
    assert out["trail"] == ["A", "yes"]
    assert ran == {"A": 1, "ask": 2}


# -- a failed parallel step (LangGraph's test_pending_writes_resume, every mode) ------------


def _one_and_two(saver: Any, broken: list[bool], ran: Counter[str]) -> Any:
    def one(state: S) -> dict[str, Any]:
        ran["one"] += 1
        return {"trail": ["one"]}

    def two(state: S) -> dict[str, Any]:
        ran["two"] += 1
        if broken[0]:
            raise ConnectionError("two is down")
        return {"trail": ["two"]}

    builder = StateGraph(S)
    builder.add_node("one", one)
    builder.add_node("two", two)
    builder.add_edge(START, "one")
    builder.add_edge(START, "two")
    return builder.compile(checkpointer=saver)


@pytest.mark.parametrize("mode", MODES)
def test_a_finished_sibling_keeps_its_write_and_is_not_run_again(
    saver_factory: Any, mode: str
) -> None:
    broken, ran = [True], Counter[str]()
    graph = _one_and_two(saver_factory.make(), broken, ran)
    cfg = config()
    with pytest.raises(ConnectionError):
        graph.invoke({"trail": []}, cfg, durability=mode)
    tasks = {t.name: t for t in graph.get_state(cfg).tasks}
    assert tasks["one"].error is None
    assert tasks["two"].error == {"type": "ConnectionError", "message": "two is down"}
    # As LangGraph 1.2: the latest state shows the finished sibling's write; the
    # checkpoint itself (read by id) is the record of the step as it began.
    latest = graph.get_state(cfg)
    assert latest.values["trail"] == ["one"] and latest.next == ("two",)
    assert graph.get_state(latest.config).values["trail"] == []

    with pytest.raises(ConnectionError):
        graph.invoke(None, cfg, durability=mode)
    broken[0] = False
    assert graph.invoke(None, cfg, durability=mode)["trail"] == ["one", "two"]
    assert ran == {"one": 1, "two": 3}


@pytest.mark.parametrize(
    "mode",
    [
        "sync",
        "async",
        "exit",
    ],
)
def test_a_failed_resume_writes_no_checkpoint(saver_factory: Any, mode: str) -> None:
    broken, ran = [True], Counter[str]()
    graph = _one_and_two(saver_factory.make(), broken, ran)
    cfg = config()
    with pytest.raises(ConnectionError):
        graph.invoke({"trail": []}, cfg, durability=mode)
    after_failure = len(list(graph.get_state_history(cfg)))
    assert after_failure == (1 if mode == "exit" else 2)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            graph.invoke(None, cfg, durability=mode)
    assert len(list(graph.get_state_history(cfg))) == after_failure
    broken[0] = False
    graph.invoke(None, cfg, durability=mode)
    assert len(list(graph.get_state_history(cfg))) == after_failure + 1


_EXIT_WRITES_BUG = (
    "BUG: under durability='exit' a fresh thread has no checkpoint while it runs, yet "
    "{what} put_writes to checkpoint None and fails with CheckpointNotFoundError"
)


def test_a_retried_node_works_under_exit_durability(saver_factory: Any) -> None:
    attempts: list[int] = []

    def flaky(state: S) -> dict[str, Any]:
        attempts.append(1)
        if len(attempts) < 2:
            raise ConnectionError("blip")
        return {"trail": ["flaky"]}

    builder = StateGraph(S)
    policy = RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False)
    builder.add_node("flaky", flaky, retry_policy=policy)
    builder.add_edge(START, "flaky")
    graph = builder.compile(checkpointer=saver_factory.make())
    assert graph.invoke({"trail": []}, config(), durability="exit")["trail"] == ["flaky"]
    assert len(attempts) == 2


def test_once_works_under_exit_durability(saver_factory: Any) -> None:
    charges: list[int] = []

    def pay(state: S) -> dict[str, Any]:
        return {"trail": [once("charge", lambda: charges.append(1) or "receipt")]}

    builder = StateGraph(S)
    builder.add_node("pay", pay)
    builder.add_edge(START, "pay")
    graph = builder.compile(checkpointer=saver_factory.make())
    assert graph.invoke({"trail": []}, config(), durability="exit")["trail"] == ["receipt"]
    assert charges == [1]


# -- a checkpointer that fails ---------------------------------------------------------


ERRORS = {
    "sqlite-locked": lambda: sqlite3.OperationalError("database is locked"),
    "connection-reset": lambda: ConnectionError("connection reset by peer"),
}


@pytest.mark.parametrize("error", list(ERRORS))
def test_a_failed_checkpoint_write_fails_the_run_and_leaves_the_last_good_checkpoint(
    faulty: Callable[..., FaultySaver], error: str
) -> None:
    # put #1 input, #2 the input applied, #3 after A, #4 after B: B's checkpoint fails.
    saver = faulty(fail={"put": {4}}, error=ERRORS[error])
    ledger = Ledger()
    graph = chain(ledger, "ABCD", saver)
    cfg = config()
    with pytest.raises((sqlite3.OperationalError, ConnectionError)) as info:
        graph.invoke({"trail": [], "total": 0}, cfg)
    assert type(info.value) is type(ERRORS[error]())
    assert saver.fired and saver.fired[0][2].step == 2  # B ran at step 2

    snap = graph.get_state(cfg)
    assert snap.values["trail"] == ["A"], "nothing of B's step is visible"
    assert snap.next == ("B",)
    assert len(list(graph.get_state_history(cfg))) == 3

    assert graph.invoke(None, cfg) == expected("ABCD")
    assert ledger.ran == {"A": 1, "B": 2, "C": 1, "D": 1}, "only B, whose save failed, re-ran"


def test_a_lost_acknowledgement_after_a_committed_write_is_harmless_on_retry(
    faulty: Callable[..., FaultySaver],
) -> None:
    saver = faulty(fail={"put": {4}}, when="after")
    ledger = Ledger()
    graph = chain(ledger, "ABCD", saver)
    cfg = config()
    with pytest.raises(sqlite3.OperationalError):
        graph.invoke({"trail": [], "total": 0}, cfg)
    snap = graph.get_state(cfg)
    assert snap.values["trail"] == ["A", "B"], "the write itself committed"
    assert snap.next == ("C",)
    assert graph.invoke(None, cfg) == expected("ABCD")
    assert ledger.ran == {"A": 1, "B": 1, "C": 1, "D": 1}
    steps = [s.metadata["step"] for s in graph.get_state_history(cfg)]
    assert sorted(steps) == [-1, 0, 1, 2, 3, 4], "no step was committed twice"


async def test_a_failed_async_checkpoint_write_fails_the_run_and_resumes(
    faulty: Callable[..., FaultySaver],
) -> None:
    saver = faulty(fail={"put": {3}}, error=ERRORS["connection-reset"])
    ledger = Ledger()
    graph = chain(ledger, "ABC", saver)
    cfg = config()
    with pytest.raises(ConnectionError):
        await graph.ainvoke({"trail": [], "total": 0}, cfg)
    assert (await graph.aget_state(cfg)).next == ("A",)
    assert await graph.ainvoke(None, cfg) == expected("ABC")
    assert ledger.ran == {"A": 2, "B": 1, "C": 1}


async def test_an_async_resume_whose_step_had_finished_every_task_runs_none_again(
    faulty: Callable[..., FaultySaver],
) -> None:
    # Both branches finish and their writes are saved, then the step's checkpoint
    # (put #3) fails: on resume nothing of that step is left to run.
    saver = faulty(fail={"put": {3}}, error=ERRORS["connection-reset"])
    ran: Counter[str] = Counter()

    def branch(name: str) -> Any:
        async def fn(state: S) -> dict[str, Any]:
            ran[name] += 1
            return {"trail": [name]}

        return fn

    builder = StateGraph(S)
    builder.add_node("L", branch("L"))
    builder.add_node("R", branch("R"))
    builder.add_node("join", branch("join"))
    builder.add_edge(START, "L")
    builder.add_edge(START, "R")
    builder.add_edge(["L", "R"], "join")
    graph = builder.compile(checkpointer=saver)
    cfg = config()
    with pytest.raises(ConnectionError):
        await graph.ainvoke({"trail": [], "total": 0}, cfg)
    out = await graph.ainvoke(None, cfg)
    assert out["trail"] == ["L", "R", "join"]
    assert ran == {"L": 1, "R": 1, "join": 1}


def test_a_once_result_whose_save_failed_is_saved_with_the_failure(
    faulty: Callable[..., FaultySaver],
) -> None:
    """The charge happened but saving its record failed: the node fails, and the
    record goes out again with the failed step's pending writes, so the resumed
    run reuses it instead of charging twice."""
    saver = faulty(fail={"put_writes": {1}})
    charges: list[int] = []

    def pay(state: S) -> dict[str, Any]:
        receipt = once("charge", lambda: charges.append(1) or f"r{len(charges)}")
        return {"trail": [receipt]}

    builder = StateGraph(S)
    builder.add_node("pay", pay)
    builder.add_edge(START, "pay")
    graph = builder.compile(checkpointer=saver)
    cfg = config()
    with pytest.raises(sqlite3.OperationalError):
        graph.invoke({"trail": []}, cfg)
    assert saver.calls["put_writes"] == 2, "the failure's own pending writes were saved"
    assert graph.invoke(None, cfg)["trail"] == ["r1"]
    assert charges == [1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_checkpoint_faults_never_lose_or_duplicate_a_committed_step(
    faulty: Callable[..., FaultySaver], seed: int
) -> None:
    """Every put fails with probability 0.2; a driver retries ``invoke`` until done.

    Each node body runs exactly once more for every failed save of its own step,
    and every run ends in the crash-free result.
    """
    rng = random.Random(seed)
    saver = faulty(should=lambda method, n: method == "put" and rng.random() < 0.2)
    ledger = Ledger()
    names = "ABCDE"
    graph = chain(ledger, names, saver)
    for _ in range(6):
        cfg = config()
        for _attempt in range(100):
            started = graph.get_state(cfg).config["configurable"]["checkpoint_id"] is not None
            try:
                out = graph.invoke(None if started else {"trail": [], "total": 0}, cfg)
                break
            except sqlite3.OperationalError:
                continue
        else:
            pytest.fail("the run never finished")
        assert out == expected(names)
        steps = [s.metadata["step"] for s in graph.get_state_history(cfg)]
        assert sorted(steps) == list(range(-1, len(names) + 1)), "one checkpoint per step"
    # Node k runs at step k; each failed save of step k made node k run again.
    failed_steps = Counter(ck.step for _, _, ck in saver.fired)
    for k, name in enumerate(names, start=1):
        assert ledger.ran[name] == 6 + failed_steps[k], name


# -- batching the input checkpoint with the step that applies it ----------------------


class AuditedSaver(MemorySaver):
    """Overrides only put/aput, as an audit or retry wrapper would: it must still see
    every checkpoint, and each must survive a deep copy and pickling."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def put(self, thread_id: str, checkpoint: Any, metadata: Any, **kwargs: Any) -> None:
        self.seen.append(pickle.loads(pickle.dumps(copy.deepcopy(checkpoint))))
        super().put(thread_id, checkpoint, metadata, **kwargs)

    async def aput(self, thread_id: str, checkpoint: Any, metadata: Any, **kwargs: Any) -> None:
        self.put(thread_id, checkpoint, metadata, **kwargs)


def test_a_saver_that_overrides_put_sees_every_checkpoint() -> None:
    saver = AuditedSaver()
    graph = chain(Ledger(), "AB", saver)
    cfg = config()
    assert graph.invoke({"trail": [], "total": 0}, cfg) == expected("AB")
    history = [s.config["configurable"]["checkpoint_id"] for s in graph.get_state_history(cfg)]
    assert [c.id for c in saver.seen] == list(reversed(history))  # input, start, A, B


async def test_a_saver_that_overrides_aput_sees_every_checkpoint() -> None:
    saver = AuditedSaver()
    graph = chain(Ledger(), "AB", saver)
    cfg = config()
    assert await graph.ainvoke({"trail": [], "total": 0}, cfg) == expected("AB")
    assert len(saver.seen) == len(list(graph.get_state_history(cfg))) == 4


def test_the_input_is_durable_before_a_router_on_start_runs(tmp_path: Any) -> None:
    db = tmp_path / "t.db"
    stored_first: list[int] = []

    def router(state: S) -> str:  # user code, perhaps a slow model call that may crash
        with sqlite3.connect(db) as conn:
            stored_first.append(
                conn.execute("SELECT count(*) FROM trellis_checkpoints").fetchone()[0]
            )
        return "A"

    builder = StateGraph(S)
    builder.add_node("A", Ledger().node("A", 1))
    builder.add_conditional_edges(START, router, ["A"])
    saver = SqliteSaver.from_path(db)
    graph = builder.compile(checkpointer=saver)
    graph.invoke({"trail": [], "total": 0}, config())
    assert stored_first == [1]  # the input checkpoint, committed before the router ran
    saver.close()


def test_every_task_of_a_failing_step_runs_and_only_the_failed_one_reruns() -> None:
    """More parallel tasks than workers, the first failing at once: the others all
    run anyway (LangGraph starts them all), are kept, and a resume re-runs only it."""
    from trellis import Send

    ran: Counter[int] = Counter()
    broken = [True]

    def work(state: dict[str, Any]) -> dict[str, Any]:
        ran[state["i"]] += 1
        if state["i"] == 0 and broken[0]:
            raise ConnectionError("task 0 is down")
        return {"trail": [str(state["i"])]}

    builder = StateGraph(S)
    builder.add_node("work", work)
    builder.add_conditional_edges(START, lambda s: [Send("work", {"i": i}) for i in range(40)])
    graph = builder.compile(checkpointer=MemorySaver())
    cfg = config()
    with pytest.raises(ConnectionError):
        graph.invoke({"trail": []}, cfg)
    assert sorted(ran) == list(range(40)) and set(ran.values()) == {1}
    broken[0] = False
    assert len(graph.invoke(None, cfg)["trail"]) == 40
    assert ran[0] == 2 and all(ran[i] == 1 for i in range(1, 40))


@pytest.mark.parametrize("mode", MODES)
def test_a_task_keeps_its_id_when_resumed_after_a_failure_or_an_interrupt(mode: str) -> None:
    """runtime.execution_info.task_id is an idempotency key: the attempt that failed
    (or asked) and the one that resumes it must see the same id, in every mode."""
    seen: list[str] = []
    broken = [True]

    def book(state: Any, runtime: Any) -> dict[str, Any]:
        seen.append(runtime.execution_info.task_id)
        if broken[0]:
            raise ConnectionError("the request may have gone through")
        return {"trail": [interrupt("confirm?")]}

    builder = StateGraph(S)
    builder.add_node("first", lambda s: {"trail": ["first"]})
    builder.add_node("book", book)
    builder.add_edge(START, "first")
    builder.add_edge("first", "book")
    graph = builder.compile(checkpointer=MemorySaver())
    cfg = config()
    with pytest.raises(ConnectionError):
        graph.invoke({"trail": []}, cfg, durability=mode)
    broken[0] = False
    graph.invoke(None, cfg, durability=mode)  # runs book again: it asks
    graph.invoke(Command(resume="yes"), cfg, durability=mode)
    assert len(seen) == 3 and len(set(seen)) == 1


def test_tasks_of_different_threads_get_different_ids_under_exit() -> None:
    seen: list[str] = []
    builder = StateGraph(S)
    builder.add_node("n", lambda s, runtime: seen.append(runtime.execution_info.task_id))
    builder.add_edge(START, "n")
    graph = builder.compile(checkpointer=MemorySaver(), durability="exit")
    graph.invoke({"trail": []}, config())
    graph.invoke({"trail": []}, config())
    assert len(set(seen)) == 2


def test_parallel_tasks_under_exit_share_one_minted_checkpoint(monkeypatch: Any) -> None:
    """Parallel tasks of an exit-mode step may all want their ids at once; they
    must all derive them from one checkpoint id, the one the failure saves."""
    import threading
    import time

    import trellis.engine.task as task_module

    mint = task_module.new_checkpoint_id

    def slow_mint() -> str:  # widens the window in which two threads could both mint
        time.sleep(0.002)
        return mint()

    monkeypatch.setattr(task_module, "new_checkpoint_id", slow_mint)
    seen: dict[str, str] = {}
    ready = threading.Barrier(6)

    def node(name: str) -> Any:
        def fn(state: S, runtime: Any) -> None:
            ready.wait(5)
            seen[name] = runtime.execution_info.task_id
            if name == "n0":
                ready.wait(5)  # every sibling has its id before the step fails
                raise RuntimeError("boom")
            ready.wait(5)

        return fn

    builder = StateGraph(S)
    for i in range(6):
        builder.add_node(f"n{i}", node(f"n{i}"))
        builder.add_edge(START, f"n{i}")
    graph = builder.compile(checkpointer=MemorySaver())
    cfg = config()
    with pytest.raises(RuntimeError, match="boom"):
        graph.invoke({"trail": []}, cfg, durability="exit")
    saved = {t.name: t.id for t in graph.get_state(cfg).tasks}
    assert seen == saved
