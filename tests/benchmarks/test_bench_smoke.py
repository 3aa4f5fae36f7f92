"""The benchmark programs compute the right thing, identically on every engine.

Each shape runs once at a tiny size on LangGraph, pydantic-graph where it has
the shape, and Trellis when it is importable. Only final states are compared;
no timing is asserted here (the harness reports timings, it never tests them).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The harness lives at the repository root, beside src/; importlib mode does not put it on sys.path.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import Config, SmokeCase, Unavailable, is_not_built, run_once  # noqa: E402
from benchmarks.run import SHAPES, select  # noqa: E402

from benchmarks import shapes_core, shapes_persist, shapes_process  # noqa: E402

CASES = [
    "chain",
    "chain_async",
    "fanout",
    "wide_state",
    "concurrent",
    "persist_memory",
    "persist_sqlite",
    "persist_postgres",
    "append_loop",
    "interrupt",
]


def all_cases(cfg: Config) -> dict[str, SmokeCase]:
    cases = [
        *shapes_core.smoke_cases(),
        *shapes_process.smoke_cases(),
        *shapes_persist.smoke_cases(cfg),
    ]
    return {c.name: c for c in cases}


@pytest.fixture
def event_loop_for_run_sync() -> Iterator[None]:
    """pydantic-graph's run_sync drives the current loop; give it one and close it after."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.mark.parametrize("name", CASES)
@pytest.mark.usefixtures("event_loop_for_run_sync")
def test_shape_reaches_the_same_final_state_on_every_engine(name: str, tmp_path: Path) -> None:
    cfg = Config.default(quick=True, tmpdir=tmp_path)
    case = all_cases(cfg)[name]
    results: dict[str, Any] = {}
    expected: Any = None
    for engine, factory in case.factories.items():
        try:
            bench = factory()
        except Unavailable as exc:
            if os.environ.get("TRELLIS_REQUIRE_SERVICES") == "1":
                raise
            pytest.skip(f"{name}: {exc}")
        except Exception as exc:
            if is_not_built(engine, exc):
                continue  # Trellis lacks this feature so far: compare the others
            raise
        results[engine] = run_once(bench)
        expected = bench.expected
    assert "langgraph" in results
    assert expected is not None
    for engine, got in results.items():
        assert got == expected, f"{engine} computed a different final state for {name}"


def test_every_shape_of_the_table_has_a_smoke_case(tmp_path: Path) -> None:
    covered = set(all_cases(Config.default(quick=True, tmpdir=tmp_path)))
    # import and latest_read have no program of their own (latest_read reuses append_loop);
    # the Trellis-only shapes have no other engine to agree with (checked below).
    timed = {s.name for s in SHAPES if s.family != "trellis"} - {"import"}
    assert timed <= covered | {"latest_read"}
    assert set(CASES) == covered


def test_only_accepts_names_and_families_and_rejects_unknown_ones() -> None:
    assert [s.name for s in select(SHAPES, "chain,process", None)] == [
        "chain",
        "concurrent",
        "import",
    ]
    assert "persist_postgres" not in [s.name for s in select(SHAPES, "persist", "persist_postgres")]
    with pytest.raises(SystemExit):
        select(SHAPES, "no_such_shape", None)


def test_the_trellis_only_shapes_measure_something(tmp_path: Path) -> None:
    cfg = Config.default(quick=True, tmpdir=tmp_path)
    cfg.reps = 1
    for shape in (s for s in SHAPES if s.family == "trellis"):
        rows = shape.run(cfg)
        assert rows, shape.name
        for row in rows:
            value = row.values["trellis"]
            assert isinstance(value, float) and value > 0, (shape.name, row.label, value)
