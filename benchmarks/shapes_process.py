"""Shapes that need a fresh interpreter: 10k concurrent runs and import cost.

Each engine runs in its own subprocess so that one engine's imports, caches and
heap do not inflate another's memory numbers. The concurrency worker is this
module's entry point:

    .venv/bin/python -m benchmarks.shapes_process concurrent langgraph 10000 0.01

It prints one JSON line: wall time of ``asyncio.gather`` over ``runs``
``ainvoke`` calls on one compiled graph, and peak RSS
(``ru_maxrss``) minus a baseline taken after imports, compile and one warm-up run.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import perf_counter_ns
from typing import Any, TypedDict

from benchmarks import shapes_pydantic as pg
from benchmarks.engines import api, run_config
from benchmarks.harness import (
    NOT_AVAILABLE,
    NOT_BUILT,
    Bench,
    Config,
    Row,
    Shape,
    SmokeCase,
    Target,
    Value,
    failure_cell,
    median,
)
from benchmarks.shapes_core import chain_builder

ROOT = Path(__file__).resolve().parent.parent
CONC_NODES = 3


class ConcState(TypedDict):
    n: int


def one_run_factory(engine: str, sleep_s: float) -> Callable[[], Awaitable[Any]]:
    """A zero-argument coroutine factory: one run of the 3-node sleeping chain."""
    if engine == "pydantic_graph":
        graph = pg.chain_graph(CONC_NODES, sleep_s=sleep_s)

        async def run_pg() -> dict[str, int]:
            return {"n": await graph.run(state=pg.ChainState(), infer_name=False)}

        return run_pg

    async def step(state: ConcState) -> dict[str, int]:
        await asyncio.sleep(sleep_s)
        return {"n": state["n"] + 1}

    compiled = chain_builder(api(engine), CONC_NODES, step, ConcState).compile()
    config = run_config()

    async def run_lg() -> Any:
        return await compiled.ainvoke({"n": 0}, config)

    return run_lg


async def gather_runs(one: Callable[[], Awaitable[Any]], runs: int) -> list[Any]:
    return list(await asyncio.gather(*(one() for _ in range(runs))))


def peak_rss_kib() -> int:
    """Peak RSS of this process in KiB.

    ``VmHWM`` (the address space's high-water mark) where /proc exists: Linux
    carries ``ru_maxrss`` over from the parent across fork+exec, so a child of
    a 70 MB harness reports at least 70 MB however small it is. Elsewhere,
    ``ru_maxrss`` (KiB on Linux).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _ru_maxrss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def concurrent_worker(engine: str, runs: int, sleep_s: float) -> dict[str, Any]:
    """Body of the subprocess: measure one engine once."""
    try:
        one = one_run_factory(engine, sleep_s)
    except Exception as exc:
        return {"cell": failure_cell(engine, exc)}

    async def main() -> dict[str, Any]:
        await one()  # warm-up run
        base, base_ru = peak_rss_kib(), _ru_maxrss()
        t0 = perf_counter_ns()
        results = await gather_runs(one, runs)
        wall_ns = perf_counter_ns() - t0
        peak, peak_ru = peak_rss_kib(), _ru_maxrss()
        wrong = sum(1 for r in results if r != {"n": CONC_NODES})
        return {
            "wall_s": wall_ns / 1e9,
            "base_kib": base,
            "peak_kib": peak,
            "kib_per_run": (peak - base) / runs,
            "ru_maxrss_base_kib": base_ru,
            "ru_maxrss_peak_kib": peak_ru,
            "wrong": wrong,
        }

    try:
        return asyncio.run(main())
    except Exception as exc:
        return {"cell": failure_cell(engine, exc)}


def _subprocess_json(args: list[str], timeout: float) -> dict[str, Any]:
    proc = subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-3000:])
        return {"cell": f"error: exit {proc.returncode}"}
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def run_concurrent(cfg: Config) -> list[Row]:
    runs = 1000 if cfg.quick else 10_000
    reps = 1 if cfg.quick else 3
    sleep_s = 0.01
    walls: dict[str, list[float]] = {e: [] for e in cfg.engines}
    kibs: dict[str, list[float]] = {e: [] for e in cfg.engines}
    cells: dict[str, Value] = {}
    for _ in range(reps):
        for engine in cfg.engines:
            if engine in cells:
                continue
            args = [sys.executable, "-m", "benchmarks.shapes_process", "concurrent", engine]
            data = _subprocess_json([*args, str(runs), str(sleep_s)], timeout=900)
            if "cell" in data:
                cells[engine] = data["cell"]
            elif data["wrong"]:
                cells[engine] = f"error: {data['wrong']} wrong results"
            else:
                walls[engine].append(data["wall_s"])
                kibs[engine].append(data["kib_per_run"])
            if cfg.verbose:
                print(f"  concurrent {engine}: {data}", file=sys.stderr)

    def col(series: dict[str, list[float]]) -> dict[str, Value]:
        return {e: cells.get(e, median(v) if v else NOT_AVAILABLE) for e, v in series.items()}

    label = f"{runs:,} concurrent ainvoke, {CONC_NODES} nodes x sleep {sleep_s * 1000:g} ms"
    return [
        Row(
            "concurrent",
            f"{label}: wall",
            "s",
            col(walls),
            [Target("speedup", 15, "langgraph"), Target("speedup", 10, "pydantic_graph")],
            note=f"ideal {CONC_NODES * sleep_s:g} s; fresh subprocess per engine",
        ),
        Row(
            "concurrent",
            f"{label}: peak RSS growth per run",
            "KiB",
            col(kibs),
            [Target("max", 4, unit="KiB")],
            note="peak RSS after gather minus after import+warm-up (VmHWM)",
        ),
    ]


IMPORTS = {
    "trellis": ("trellis", "hasattr(trellis, 'StateGraph')"),
    "langgraph": ("langgraph.graph", "True"),
    "pydantic_graph": ("pydantic_graph", "True"),
}

# Self-contained on purpose: importing any benchmarks module here would load
# pydantic_graph and langgraph into the process being measured.
IMPORT_CODE = """
import json, resource, time
t0 = time.perf_counter()
import {module}
dt = time.perf_counter() - t0
try:
    kib = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])
except OSError:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"s": dt, "kib": kib, "ok": {check}}}))
"""


def run_import(cfg: Config) -> list[Row]:
    reps = 3 if cfg.quick else 5
    secs: dict[str, list[float]] = {e: [] for e in cfg.engines}
    mbs: dict[str, list[float]] = {e: [] for e in cfg.engines}
    cells: dict[str, Value] = {}
    bare: list[float] = []
    for _ in range(reps):
        data = _subprocess_json(
            [sys.executable, "-c", IMPORT_CODE.format(module="sys", check="True")], 60
        )
        bare.append(data.get("kib", 0) * 1024 / 1e6)
        for engine in cfg.engines:
            module, check = IMPORTS[engine]
            code = IMPORT_CODE.format(module=module, check=check)
            data = _subprocess_json([sys.executable, "-c", code], timeout=120)
            if "cell" in data:
                cells[engine] = NOT_BUILT if engine == "trellis" else data["cell"]
            elif not data["ok"]:
                cells[engine] = NOT_BUILT
            else:
                secs[engine].append(data["s"])
                mbs[engine].append(data["kib"] * 1024 / 1e6)

    def col(series: dict[str, list[float]]) -> dict[str, Value]:
        return {e: cells.get(e, median(v) if v else NOT_AVAILABLE) for e, v in series.items()}

    names = ", ".join(f"{e}: import {IMPORTS[e][0]}" for e in cfg.engines)
    return [
        Row("import", "import time", "s", col(secs), [Target("max", 0.1, unit="s")], note=names),
        Row(
            "import",
            "process RSS after import",
            "MB",
            col(mbs),
            [Target("max", 25, unit="MB")],
            note=f"MB = 10^6 B, peak RSS (VmHWM); bare interpreter {median(bare):.1f} MB",
        ),
    ]


SHAPES = [
    Shape("concurrent", "process", "10k concurrent async runs", run_concurrent),
    Shape("import", "process", "import time and RSS", run_import),
]


def concurrent_factories(runs: int) -> dict[str, Callable[[], Bench]]:
    """The concurrency program in-process with no sleep, for the smoke test."""

    def make(engine: str) -> Callable[[], Bench]:
        def build() -> Bench:
            one = one_run_factory(engine, 0.0)
            return Bench(
                call=lambda: gather_runs(one, runs),
                units=runs,
                is_async=True,
                expected=[{"n": CONC_NODES}] * runs,
            )

        return build

    return {e: make(e) for e in ("trellis", "langgraph", "pydantic_graph")}


def smoke_cases() -> list[SmokeCase]:
    return [SmokeCase("concurrent", concurrent_factories(4))]


def _main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "concurrent":
        print(json.dumps(concurrent_worker(argv[1], int(argv[2]), float(argv[3]))))
        return 0
    print(
        "usage: python -m benchmarks.shapes_process concurrent ENGINE RUNS SLEEP_S", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
