"""Persistence shapes: checkpointed chains, an append-heavy loop, reads, interrupts.

Every run checkpoints each super-step and waits for it (LangGraph
``durability="sync"``; Trellis gets the same keyword when its ``invoke``
accepts it). Each engine has its own saver: its own SQLite file (WAL, PRAGMA
synchronous set by ``--sqlite-synchronous``, default NORMAL) or its own fresh
Postgres schema, dropped afterwards. Every run uses a fresh thread id.
pydantic-graph has no checkpointer, so its cells read "n/a".

>>> rows = run_persist_sqlite(Config.default(quick=True))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import os
import random
import statistics
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Annotated, Any, TypedDict

from benchmarks.engines import (
    api,
    durability_kwargs,
    memory_saver,
    postgres_saver,
    postgres_schema,
    run_config,
    sqlite_saver,
    synchronous_of,
)
from benchmarks.harness import (
    NOT_AVAILABLE,
    Bench,
    Config,
    Row,
    Shape,
    SmokeCase,
    Target,
    Value,
    failure_cell,
    measure,
)
from benchmarks.shapes_core import chain_builder

LG_LIKE = ("trellis", "langgraph")
Factories = dict[str, Callable[[], Bench]]


@contextlib.contextmanager
def open_saver(kind: str, engine: str, cfg: Config) -> Iterator[Any]:
    """A fresh checkpointer of ``kind`` ("memory", "sqlite", "postgres") for ``engine``."""
    if kind == "memory":
        with memory_saver(engine) as saver:
            yield saver
    elif kind == "sqlite":
        path = cfg.tmpdir / f"{engine}-{uuid.uuid4().hex[:8]}.db"
        with sqlite_saver(engine, path, cfg.sqlite_synchronous) as saver:
            yield saver
    elif kind == "postgres":
        with (
            postgres_schema(cfg.pg_url) as (schema, url),
            postgres_saver(engine, url, schema) as saver,
        ):
            yield saver
    else:
        raise ValueError(kind)


def _thread_ids() -> Callable[[], str]:
    prefix, counter = uuid.uuid4().hex[:8], itertools.count()
    return lambda: f"bench-{prefix}-{next(counter)}"


def _with_saver(
    kind: str, engine: str, cfg: Config, build: Callable[[Any, Any], Bench], seen: dict[str, str]
) -> Bench:
    """Open a saver, let ``build(mod, saver)`` make the Bench, close the saver with it."""
    stack = contextlib.ExitStack()
    try:
        mod = api(engine)
        saver = stack.enter_context(open_saver(kind, engine, cfg))
        if kind == "sqlite":
            seen[engine] = synchronous_of(saver)
        bench = build(mod, saver)
    except BaseException:
        stack.close()
        raise
    bench.close = stack.close
    return bench


# --- checkpointed 100-node chain ----------------------------------------------------------


def saver_chain_factories(kind: str, cfg: Config, n: int, seen: dict[str, str]) -> Factories:
    def lg_like(engine: str) -> Callable[[], Bench]:
        def build(mod: Any, saver: Any) -> Bench:
            graph = chain_builder(mod, n).compile(checkpointer=saver)
            kwargs, next_id = durability_kwargs(engine, graph), _thread_ids()
            return Bench(
                call=lambda: graph.invoke({"n": 0}, run_config(next_id()), **kwargs),
                units=n,
                expected={"n": n},
            )

        return lambda: _with_saver(kind, engine, cfg, build, seen)

    return {e: lg_like(e) for e in LG_LIKE}


def _sync_note(cfg: Config, seen: dict[str, str]) -> str:
    got = ", ".join(f"{e}={v}" for e, v in seen.items())
    return f"WAL, asked synchronous={cfg.sqlite_synchronous}; observed {got or 'none'}"


def _chain_row(cfg: Config, kind: str, target: float) -> Row:
    seen: dict[str, str] = {}
    values = measure(cfg, saver_chain_factories(kind, cfg, 100, seen))
    note = "durability=sync, fresh thread per run"
    if kind == "sqlite":
        note = f"{note}; {_sync_note(cfg, seen)}"
    return Row(
        f"persist_{kind}",
        f"100-node chain + {kind} saver, invoke",
        "µs/step",
        values,
        [Target("speedup", target, "langgraph")],
        note=note,
    )


def run_persist_memory(cfg: Config) -> list[Row]:
    return [_chain_row(cfg, "memory", 30)]


def run_persist_sqlite(cfg: Config) -> list[Row]:
    return [_chain_row(cfg, "sqlite", 15)]


def run_persist_postgres(cfg: Config) -> list[Row]:
    return [_chain_row(cfg, "postgres", 4)]


# --- append loop: growth of time and storage -----------------------------------------------

PAYLOAD_BYTES = 100


class LogState(TypedDict):
    i: int
    log: Annotated[list[bytes], operator.add]


def payloads(steps: int) -> list[bytes]:
    """Incompressible, deterministic payloads: identical bytes for every engine."""
    rng = random.Random(1234)
    return [rng.randbytes(PAYLOAD_BYTES) for _ in range(steps)]


def append_builder(mod: Any, steps: int, data: list[bytes], stamps: list[int]) -> Any:
    """One node looping ``steps`` times, each time appending 100 bytes to ``log``."""

    def step(state: LogState) -> dict[str, Any]:
        stamps.append(perf_counter_ns())
        i = state["i"]
        return {"i": i + 1, "log": [data[i]]}

    def again(state: LogState) -> str:
        return "step" if state["i"] < steps else mod.END

    g = mod.StateGraph(LogState)
    g.add_node("step", step)
    g.add_edge(mod.START, "step")
    g.add_conditional_edges("step", again, ["step", mod.END])
    return g


def append_factories(cfg: Config, steps: int) -> Factories:
    """One loop run per call (smoke test and the append shape share this program)."""
    data = payloads(steps)

    def lg_like(engine: str) -> Callable[[], Bench]:
        def build(mod: Any, saver: Any) -> Bench:
            stamps: list[int] = []
            graph = append_builder(mod, steps, data, stamps).compile(checkpointer=saver)
            kwargs, next_id = durability_kwargs(engine, graph), _thread_ids()
            return Bench(
                call=lambda: graph.invoke(
                    {"i": 0, "log": []}, run_config(next_id(), steps * 4 + 100), **kwargs
                ),
                units=steps,
                expected={"i": steps, "log": data},
            )

        return lambda: _with_saver("sqlite", engine, cfg, build, {})

    return {e: lg_like(e) for e in LG_LIKE}


@dataclass
class _AppendRun:
    graph: Any
    config: dict[str, Any]
    path: Path
    stamps: list[int]
    stack: contextlib.ExitStack
    reads: list[float] = field(default_factory=list)


def _warm_append(engine: str, cfg: Config, steps: int, data: list[bytes]) -> None:
    """Run the loop's last 10 steps on a scratch file so the measured run starts warm."""
    mod = api(engine)
    with sqlite_saver(engine, cfg.tmpdir / f"warm-{uuid.uuid4().hex[:8]}.db", "OFF") as saver:
        graph = append_builder(mod, steps, data, []).compile(checkpointer=saver)
        start = {"i": max(0, steps - 10), "log": []}
        graph.invoke(start, run_config("warm-up"), **durability_kwargs(engine, graph))


def _start_append(engine: str, cfg: Config, steps: int, data: list[bytes]) -> _AppendRun:
    _warm_append(engine, cfg, steps, data)
    stack = contextlib.ExitStack()
    try:
        mod = api(engine)
        path = cfg.tmpdir / f"append-{engine}-{uuid.uuid4().hex[:8]}.db"
        saver = stack.enter_context(sqlite_saver(engine, path, cfg.sqlite_synchronous))
        stamps: list[int] = []
        graph = append_builder(mod, steps, data, stamps).compile(checkpointer=saver)
        config = run_config(f"append-{uuid.uuid4().hex[:8]}", steps * 4 + 100)
        out = graph.invoke({"i": 0, "log": []}, config, **durability_kwargs(engine, graph))
        if out != {"i": steps, "log": data}:
            raise AssertionError(f"wrong result: i={out.get('i')}, log items={len(out['log'])}")
        return _AppendRun(graph, config, path, stamps, stack)
    except BaseException:
        stack.close()
        raise


def _window_us(stamps: list[int], lo: int, hi: int) -> float:
    diffs = [b - a for a, b in itertools.pairwise(stamps[lo : hi + 1])]
    return statistics.median(diffs) / 1000


def _file_bytes(path: Path) -> int:
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())


def run_append(cfg: Config) -> list[Row]:
    steps = 200 if cfg.quick else 1000
    early, late = (steps // 10, steps // 5), (steps - steps // 10 - 1, steps - 1)
    data = payloads(steps)
    runs: dict[str, _AppendRun] = {}
    cells: dict[str, Value] = {}
    for engine in cfg.engines:
        if engine not in LG_LIKE:
            cells[engine] = NOT_AVAILABLE
            continue
        try:
            runs[engine] = _start_append(engine, cfg, steps, data)
        except Exception as exc:
            cells[engine] = failure_cell(engine, exc)
    # Latest-state reads of the thread just written (steps+1 checkpoints), interleaved.
    for _ in range(cfg.reps):
        for engine, run in list(runs.items()):
            try:
                inner = 5 if cfg.quick else 20
                t0 = perf_counter_ns()
                for _ in range(inner):
                    snap = run.graph.get_state(run.config)
                run.reads.append((perf_counter_ns() - t0) / inner / 1000)
                if snap.values["i"] != steps:
                    raise AssertionError(f"get_state saw i={snap.values['i']}")
            except Exception as exc:
                cells[engine] = failure_cell(engine, exc)
                runs.pop(engine).stack.close()
    sizes: dict[str, int] = {}
    for engine, run in runs.items():
        run.stack.close()  # closing checkpoints the WAL into the main file
        sizes[engine] = _file_bytes(run.path)

    def col(fn: Callable[[_AppendRun, str], float]) -> dict[str, Value]:
        return {e: cells.get(e) or fn(runs[e], e) for e in cfg.engines}

    appended = steps * PAYLOAD_BYTES
    e_lbl, l_lbl = f"{early[0]}..{early[1]}", f"{late[0] + 1}..{late[1] + 1}"
    return [
        Row("append_loop", f"{steps}-step append loop (SQLite), steps {e_lbl}", "µs/step",
            col(lambda r, e: _window_us(r.stamps, *early)), []),
        Row("append_loop", f"{steps}-step append loop (SQLite), steps {l_lbl}", "µs/step",
            col(lambda r, e: _window_us(r.stamps, *late)), []),
        Row("append_loop", "  per-step time late / early (flat = 1)", "x",
            col(lambda r, e: _window_us(r.stamps, *late) / _window_us(r.stamps, *early)),
            [Target("max", 1.5, unit="x")], note="'flat' taken as <= 1.5x"),
        Row("append_loop", "  SQLite file / appended bytes", "x",
            col(lambda r, e: sizes[e] / appended), [Target("max", 3, unit="x")],
            note=f"{steps} x {PAYLOAD_BYTES} B = {appended:,} B appended; db + wal after close"),
        Row("latest_read", f"get_state, thread with {steps + 1} checkpoints", "µs",
            col(lambda r, e: statistics.median(r.reads)), [Target("max", 1000, unit="µs")],
            note="the append-loop thread; same open saver"),
    ]  # fmt: skip


# --- interrupt / resume round trip -----------------------------------------------------------


class AskState(TypedDict):
    question: str
    answer: str


def interrupt_builder(mod: Any) -> Any:
    """START -> ask (interrupt) -> done -> END."""

    def ask(state: AskState) -> dict[str, str]:
        return {"answer": mod.interrupt(state["question"])}

    def done(state: AskState) -> dict[str, str]:
        return {"answer": state["answer"] + "!"}

    g = mod.StateGraph(AskState)
    g.add_node("ask", ask)
    g.add_node("done", done)
    g.add_edge(mod.START, "ask")
    g.add_edge("ask", "done")
    g.add_edge("done", mod.END)
    return g


INTERRUPT_EXPECTED = {"paused_answer": "", "final": {"question": "ship it?", "answer": "yes!"}}


def _interrupt_normalize(result: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    first, final = result
    return {
        "paused_answer": first.get("answer"),
        "final": {k: v for k, v in final.items() if not k.startswith("__")},
    }


def interrupt_factories(cfg: Config, kind: str = "sqlite") -> Factories:
    def lg_like(engine: str) -> Callable[[], Bench]:
        def build(mod: Any, saver: Any) -> Bench:
            graph = interrupt_builder(mod).compile(checkpointer=saver)
            kwargs, next_id, command = durability_kwargs(engine, graph), _thread_ids(), mod.Command

            def call() -> tuple[Any, Any]:
                config = run_config(next_id())
                first = graph.invoke({"question": "ship it?", "answer": ""}, config, **kwargs)
                return first, graph.invoke(command(resume="yes"), config, **kwargs)

            return Bench(
                call=call, units=1, expected=INTERRUPT_EXPECTED, normalize=_interrupt_normalize
            )

        return lambda: _with_saver(kind, engine, cfg, build, {})

    return {e: lg_like(e) for e in LG_LIKE}


def run_interrupt(cfg: Config) -> list[Row]:
    return [
        Row(
            "interrupt",
            "interrupt() + Command(resume) round trip (SQLite)",
            "µs/trip",
            measure(cfg, interrupt_factories(cfg)),
            [Target("speedup", 10, "langgraph")],
            note="2 invokes on a fresh thread; durability=sync",
        )
    ]


SHAPES = [
    Shape("persist_memory", "persist", "100-node chain, memory saver", run_persist_memory),
    Shape("persist_sqlite", "persist", "100-node chain, SQLite saver", run_persist_sqlite),
    Shape("persist_postgres", "persist", "100-node chain, Postgres saver", run_persist_postgres),
    Shape("append_loop", "persist", "append loop + latest-state read (SQLite)", run_append),
    Shape("interrupt", "persist", "interrupt/resume round trip (SQLite)", run_interrupt),
]


def smoke_cases(cfg: Config) -> list[SmokeCase]:
    seen: dict[str, str] = {}
    return [
        SmokeCase("persist_memory", saver_chain_factories("memory", cfg, 4, seen)),
        SmokeCase("persist_sqlite", saver_chain_factories("sqlite", cfg, 4, seen)),
        SmokeCase("persist_postgres", saver_chain_factories("postgres", cfg, 4, seen)),
        SmokeCase("append_loop", append_factories(cfg, 6)),
        SmokeCase("interrupt", interrupt_factories(cfg)),
    ]
