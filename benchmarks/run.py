"""Command line: select shapes, run them, print the table, optionally write JSON.

.venv/bin/python -m benchmarks                      # everything (a few minutes)
.venv/bin/python -m benchmarks --quick              # smoke run, under a minute
.venv/bin/python -m benchmarks --only chain,fanout  # names or families
.venv/bin/python -m benchmarks --json out.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import shapes_core, shapes_persist, shapes_process, shapes_trellis
from benchmarks.harness import ENGINES, Config, Row, Shape, failure_cell
from benchmarks.report import print_table, write_json

SHAPES: list[Shape] = [
    *shapes_core.SHAPES,
    *shapes_process.SHAPES,
    *shapes_persist.SHAPES,
    *shapes_trellis.SHAPES,
]


def select(shapes: Sequence[Shape], only: str | None, skip: str | None) -> list[Shape]:
    """Shapes whose name or family is in ``only`` (all if None) and not in ``skip``."""

    def names(spec: str | None) -> set[str]:
        return {s.strip() for s in (spec or "").split(",") if s.strip()}

    wanted, unwanted = names(only), names(skip)
    known = {s.name for s in shapes} | {s.family for s in shapes}
    unknown = (wanted | unwanted) - known
    if unknown:
        raise SystemExit(f"unknown shape(s) {sorted(unknown)}; known: {sorted(known)}")
    return [
        s
        for s in shapes
        if (not wanted or {s.name, s.family} & wanted) and not {s.name, s.family} & unwanted
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few reps (< 60 s)")
    p.add_argument("--only", metavar="NAMES", help="comma-separated shape names or families")
    p.add_argument("--skip", metavar="NAMES", help="comma-separated shape names or families")
    p.add_argument("--json", metavar="PATH", type=Path, help="also write results as JSON")
    p.add_argument("--engines", default=",".join(ENGINES), help="subset of %(default)s")
    p.add_argument("--reps", type=int, help="timed samples per engine (median is reported)")
    p.add_argument(
        "--sqlite-synchronous",
        default="NORMAL",
        choices=["OFF", "NORMAL", "FULL", "EXTRA"],
        help="PRAGMA synchronous for both engines' SQLite savers (default NORMAL)",
    )
    p.add_argument(
        "--pg-url",
        default=os.environ.get(
            "TRELLIS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
        help="Postgres for the Postgres shapes (a fresh schema is created and dropped)",
    )
    p.add_argument("--plain", action="store_true", help="plain-text table even if rich exists")
    p.add_argument("--list", action="store_true", help="list shapes and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for s in SHAPES:
            print(f"{s.name:18} {s.family:8} {s.title}")
        return 0
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    if bad := set(engines) - set(ENGINES):
        raise SystemExit(f"unknown engine(s) {sorted(bad)}; known: {ENGINES}")
    cfg = Config.default(
        quick=args.quick,
        engines=engines,
        sqlite_synchronous=args.sqlite_synchronous,
        pg_url=args.pg_url,
        verbose=args.verbose,
    )
    if args.reps:
        cfg.reps = args.reps
    rows: list[Row] = []
    started = time.perf_counter()
    try:
        for shape in select(SHAPES, args.only, args.skip):
            t0 = time.perf_counter()
            print(f"running {shape.name} ...", file=sys.stderr, flush=True)
            try:
                rows.extend(shape.run(cfg))
            except Exception as exc:  # one broken shape must not hide the rest
                cell = failure_cell("harness", exc)
                rows.append(Row(shape.name, shape.title, "", {e: cell for e in engines}))
            print(f"  {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(cfg.tmpdir, ignore_errors=True)
    print_table(rows, plain=args.plain)
    print(f"total {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if args.json:
        write_json(args.json, rows, cfg)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
