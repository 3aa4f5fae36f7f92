"""Measurement core: rows, targets, failure cells and interleaved timing.

Every shape hands :func:`measure` one ``Bench`` factory per engine. Factories
build and compile outside the timed region; the harness warms each engine up,
calibrates how many calls make one sample, then takes samples in rotation
(A, B, C, A, B, C, ...) so that machine noise lands on every engine alike, and
reports the median.

>>> from benchmarks.harness import Bench, Config, measure
>>> cfg = Config.default(quick=True)
>>> measure(cfg, {"langgraph": lambda: Bench(call=lambda: None, units=1)})["langgraph"]
... # doctest: +SKIP
0.03
"""

from __future__ import annotations

import asyncio
import gc
import math
import statistics
import sys
import tempfile
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Literal

ENGINES: tuple[str, ...] = ("trellis", "langgraph", "pydantic_graph")
SHORT = {"trellis": "Trellis", "langgraph": "LG", "pydantic_graph": "PG"}

NOT_BUILT = "n/a (not built)"
NOT_AVAILABLE = "n/a"

# A cell is a number in the row's unit, or a short text saying why there is none.
Value = float | str


class NotBuilt(Exception):
    """Trellis lacks a feature this shape needs (yet)."""


class Unavailable(Exception):
    """A service or feature a shape needs is missing on this engine or machine."""


@dataclass(frozen=True)
class Target:
    """One pass/fail criterion from the performance issue.

    ``kind="speedup"``: ``values[vs] / values["trellis"] >= limit`` (lower is better).
    ``kind="max"``: ``values["trellis"] <= limit``.
    """

    kind: Literal["speedup", "max"]
    limit: float
    vs: str | None = None
    unit: str = ""

    def describe(self) -> str:
        if self.kind == "speedup":
            return f">={self.limit:g}x {SHORT.get(self.vs or '', self.vs)}"
        return f"<={self.limit:g}{(' ' + self.unit) if self.unit else ''}"

    def check(self, values: Mapping[str, Value]) -> bool | None:
        """True/False once both sides are numbers; None while a side is missing."""
        mine = values.get("trellis")
        if not isinstance(mine, float):
            return None
        if self.kind == "max":
            return mine <= self.limit
        other = values.get(self.vs or "")
        if not isinstance(other, float) or mine <= 0:
            return None
        return other / mine >= self.limit


@dataclass
class Row:
    """One line of the table: a measured quantity on every engine."""

    shape: str
    label: str
    unit: str
    values: dict[str, Value]
    targets: list[Target] = field(default_factory=list)
    note: str = ""

    def ratio(self, engine: str) -> float | None:
        """``engine / trellis`` for this row, when both are numbers."""
        mine, other = self.values.get("trellis"), self.values.get(engine)
        if isinstance(mine, float) and isinstance(other, float) and mine > 0:
            return other / mine
        return None


@dataclass
class Config:
    """Run-wide knobs; ``quick`` scales every shape down for a smoke run."""

    quick: bool
    reps: int
    warmup: int
    min_sample_ns: int
    engines: tuple[str, ...]
    sqlite_synchronous: str
    pg_url: str
    tmpdir: Path
    verbose: bool = False

    @classmethod
    def default(cls, *, quick: bool = False, **changes: Any) -> Config:
        tmpdir = changes.pop("tmpdir", None) or Path(tempfile.mkdtemp(prefix="trellis-bench-"))
        base = cls(
            quick=quick,
            reps=3 if quick else 9,
            warmup=1 if quick else 3,
            min_sample_ns=(5 if quick else 40) * 1_000_000,
            engines=ENGINES,
            sqlite_synchronous="NORMAL",
            pg_url="postgresql://postgres@127.0.0.1:5432/test",
            tmpdir=tmpdir,
        )
        for key, value in changes.items():
            setattr(base, key, value)
        return base


@dataclass
class Bench:
    """One engine's prepared unit of work.

    ``call`` runs the workload once (returns an awaitable when ``is_async``);
    ``units`` is how many steps/branches/runs one call covers; ``normalize``
    maps a raw result to the engine-neutral final state (kept out of the timed
    call); ``expected`` is that final state, checked on the first call.
    """

    call: Callable[[], Any]
    units: int
    is_async: bool = False
    expected: Any = None
    normalize: Callable[[Any], Any] | None = None
    close: Callable[[], None] | None = None

    def check(self, result: Any) -> None:
        """Raise if the first result is not the expected final state."""
        if self.expected is None:
            return
        got = self.normalize(result) if self.normalize is not None else result
        if got != self.expected:
            raise AssertionError(f"wrong result: {str(got)[:300]} != {str(self.expected)[:300]}")


def is_not_built(engine: str, exc: BaseException) -> bool:
    """Whether ``exc`` means "Trellis does not have this yet" rather than a bug."""
    return isinstance(exc, NotBuilt) or (
        engine == "trellis" and isinstance(exc, ImportError | AttributeError | NotImplementedError)
    )


def failure_cell(engine: str, exc: BaseException) -> str:
    """The text a cell shows when an engine could not run a shape."""
    if is_not_built(engine, exc):
        return NOT_BUILT
    if isinstance(exc, Unavailable):
        return f"n/a ({exc})" if str(exc) else NOT_AVAILABLE
    print(f"--- {engine} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    return f"error: {type(exc).__name__}"


def _run_sample(bench: Bench, inner: int, loop: asyncio.AbstractEventLoop) -> int:
    if bench.is_async:

        async def go() -> int:
            call = bench.call
            t0 = perf_counter_ns()
            for _ in range(inner):
                await call()
            return perf_counter_ns() - t0

        return loop.run_until_complete(go())
    call = bench.call
    t0 = perf_counter_ns()
    for _ in range(inner):
        call()
    return perf_counter_ns() - t0


def _first_call(bench: Bench, loop: asyncio.AbstractEventLoop) -> Any:
    if bench.is_async:
        coro: Awaitable[Any] = bench.call()
        return loop.run_until_complete(coro)
    return bench.call()


def measure(
    cfg: Config,
    factories: Mapping[str, Callable[[], Bench]],
    *,
    reps: int | None = None,
    scale: float = 1e-3,
) -> dict[str, Value]:
    """Median time per unit for each engine, in ns * ``scale`` (µs by default).

    Engines without a factory get ``"n/a"``; an engine whose build or run fails
    gets a failure cell and drops out of the rotation without stopping the others.
    """
    values: dict[str, Value] = {}
    benches: dict[str, Bench] = {}
    inner: dict[str, int] = {}
    samples: dict[str, list[float]] = {}
    loop = asyncio.new_event_loop()
    try:
        for engine in cfg.engines:
            factory = factories.get(engine)
            if factory is None:
                values[engine] = NOT_AVAILABLE
                continue
            try:
                bench = factory()
                benches[engine] = bench
                bench.check(_first_call(bench, loop))
                one = 1
                for _ in range(cfg.warmup):
                    one = _run_sample(bench, 1, loop)
                inner[engine] = max(1, min(100_000, math.ceil(cfg.min_sample_ns / max(one, 1))))
                samples[engine] = []
            except Exception as exc:
                values[engine] = failure_cell(engine, exc)
        for _ in range(reps or cfg.reps):
            for engine in list(samples):
                gc.collect()
                try:
                    ns = _run_sample(benches[engine], inner[engine], loop)
                except Exception as exc:
                    values[engine] = failure_cell(engine, exc)
                    del samples[engine]
                    continue
                samples[engine].append(ns / inner[engine] / benches[engine].units)
        for engine, got in samples.items():
            values[engine] = statistics.median(got) * scale
    finally:
        for bench in benches.values():
            if bench.close is not None:
                try:
                    bench.close()
                except Exception as exc:  # cleanup must not hide the numbers
                    print(f"--- cleanup failed: {exc!r}", file=sys.stderr)
        loop.close()
    return {engine: values.get(engine, NOT_AVAILABLE) for engine in cfg.engines}


def run_once(bench: Bench) -> Any:
    """Run a bench's workload once and return its normalized final state (smoke tests)."""
    loop = asyncio.new_event_loop()
    try:
        result = _first_call(bench, loop)
    finally:
        loop.close()
        if bench.close is not None:
            bench.close()
    return bench.normalize(result) if bench.normalize is not None else result


def guarded(cfg: Config, engine: str, fn: Callable[[], Value]) -> Value:
    """Run ``fn`` for one engine's cell, turning failures into failure cells."""
    if engine not in cfg.engines:
        return NOT_AVAILABLE
    try:
        return fn()
    except Exception as exc:
        return failure_cell(engine, exc)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


@dataclass
class Shape:
    """A benchmark family entry: ``run(cfg)`` returns its table rows."""

    name: str
    family: str
    title: str
    run: Callable[[Config], list[Row]]


@dataclass
class SmokeCase:
    """A shape at tiny size, for checking that every engine computes the same state."""

    name: str
    factories: dict[str, Callable[[], Bench]]
