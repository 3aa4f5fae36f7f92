"""Rendering: one table (rich when installed, plain text otherwise) and JSON.

>>> print(render_plain(rows))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.harness import Config, Row, Value

HEADERS = (
    "shape",
    "unit",
    "Trellis",
    "LangGraph",
    "pydantic-graph",
    "LG/Trellis",
    "PG/Trellis",
    "target",
    "status",
)


def fmt_value(v: Value) -> str:
    if isinstance(v, str):
        return v
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 0.1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.1f}x" if r < 100 else f"{r:,.0f}x"


def statuses(row: Row) -> list[str]:
    """One word per target: PASS, FAIL, or pending (Trellis or the other side missing)."""
    out = []
    for target in row.targets:
        ok = target.check(row.values)
        out.append("pending" if ok is None else "PASS" if ok else "FAIL")
    return out


def table_rows(rows: Sequence[Row]) -> tuple[list[list[str]], list[str]]:
    """Cells of every row, and the numbered footnotes their labels point to."""
    cells: list[list[str]] = []
    notes: list[str] = []
    for row in rows:
        label = row.label
        if row.note:
            notes.append(row.note)
            label = f"{label} [{len(notes)}]"
        cells.append(
            [
                label,
                row.unit,
                fmt_value(row.values.get("trellis", "n/a")),
                fmt_value(row.values.get("langgraph", "n/a")),
                fmt_value(row.values.get("pydantic_graph", "n/a")),
                fmt_ratio(row.ratio("langgraph")),
                fmt_ratio(row.ratio("pydantic_graph")),
                "; ".join(t.describe() for t in row.targets),
                "; ".join(statuses(row)),
            ]
        )
    return cells, notes


def render_plain(rows: Sequence[Row]) -> str:
    cells, notes = table_rows(rows)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)]
    right = {2, 3, 4, 5, 6}

    def line(parts: Sequence[str]) -> str:
        return "  ".join(
            p.rjust(w) if i in right else p.ljust(w)
            for i, (p, w) in enumerate(zip(parts, widths, strict=True))
        )

    out = [line(HEADERS), line(["-" * w for w in widths]), *(line(c) for c in cells)]
    out += ["", *(f"[{i}] {n}" for i, n in enumerate(notes, 1))]
    return "\n".join(out)


def print_table(rows: Sequence[Row], *, plain: bool = False) -> None:
    """Print the table with rich if it is importable (and ``plain`` is false)."""
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if plain:
        print(render_plain(rows))
        return
    cells, notes = table_rows(rows)
    table = Table(title="Trellis vs LangGraph vs pydantic-graph (medians; lower is better)")
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="right" if 2 <= i <= 6 else "left")
    colour = {"PASS": "[green]PASS[/]", "FAIL": "[red]FAIL[/]", "pending": "[dim]pending[/]"}
    for c in cells:
        c[-1] = "; ".join(colour.get(s, s) for s in c[-1].split("; ")) if c[-1] else ""
        table.add_row(*c)
    # Natural width even when piped (rich would otherwise wrap to 80 columns).
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)]
    console = Console(width=sum(widths) + 3 * len(widths) + 1)
    console.print(table)
    for i, note in enumerate(notes, 1):
        console.print(f"[{i}] {note}", markup=False, highlight=False)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def meta(cfg: Config) -> dict[str, Any]:
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": _cpu_count(),
        "versions": {d: _version(d) for d in ("trellis", "langgraph", "pydantic-graph")},
        "quick": cfg.quick,
        "reps": cfg.reps,
        "sqlite_synchronous": cfg.sqlite_synchronous,
        "engines": list(cfg.engines),
    }


def _cpu_count() -> int | None:
    import os

    return os.cpu_count()


def write_json(path: Path, rows: Sequence[Row], cfg: Config) -> None:
    data = {
        "meta": meta(cfg),
        "rows": [
            {
                **asdict(row),
                "targets": [t.describe() for t in row.targets],
                "status": statuses(row),
                "ratio_langgraph": row.ratio("langgraph"),
                "ratio_pydantic_graph": row.ratio("pydantic_graph"),
            }
            for row in rows
        ],
    }
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
