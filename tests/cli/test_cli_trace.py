"""`trellis trace` and `trellis diff` after a real run on a SQLite file."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trellis.cli.app import app

CODE = "def f(x):\n    return eval(x)\n"


class TaskBars(HTMLParser):
    """Collects the Gantt bars of an HTML timeline (``div.task`` with data-*)."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "div" and "task" in values.get("class", "").split():
            self.bars.append(values)


@pytest.fixture
def traced_run(tmp_path: Path) -> tuple[CliRunner, Path]:
    runner = CliRunner()
    db = tmp_path / "runs.db"
    result = runner.invoke(
        app,
        [
            "run",
            "examples.code_analysis:graph",
            "--input",
            json.dumps({"code": CODE}),
            "--thread",
            "t1",
            "--db",
            str(db),
        ],
    )
    assert result.exit_code == 0, result.output
    return runner, db


def test_trace_prints_every_node_of_the_run(traced_run: tuple[CliRunner, Path]) -> None:
    runner, db = traced_run
    result = runner.invoke(app, ["trace", "t1", "--db", str(db)])
    assert result.exit_code == 0, result.output
    for node in ("parse", "analyze_style", "analyze_security", "analyze_performance", "aggregate"):
        assert f"✓  {node}" in result.output


def test_trace_json_export_holds_the_run_events(traced_run: tuple[CliRunner, Path]) -> None:
    runner, db = traced_run
    result = runner.invoke(app, ["trace", "t1", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    text = json.dumps(json.loads(result.output))
    assert '"run_start"' in text and '"run_end"' in text
    assert text.count('"task_end"') >= 5


def test_html_timeline_of_the_parallel_example_shows_every_task(
    traced_run: tuple[CliRunner, Path], tmp_path: Path
) -> None:
    runner, db = traced_run
    page = tmp_path / "trace.html"
    result = runner.invoke(
        app,
        [
            "trace",
            "t1",
            "--db",
            str(db),
            "--html",
            str(page),
            "--graph",
            "examples.code_analysis:graph",
        ],
    )
    assert result.exit_code == 0, result.output
    parser = TaskBars()
    parser.feed(page.read_text(encoding="utf-8"))
    nodes = sorted(bar["data-node"] for bar in parser.bars)
    assert nodes == [
        "aggregate",
        "analyze_performance",
        "analyze_security",
        "analyze_style",
        "parse",
    ]
    analyzers = [b for b in parser.bars if b["data-node"].startswith("analyze_")]
    assert {b["data-step"] for b in analyzers} == {"2"}, "the three analyzers share one step"
    assert all(b["data-status"] == "ok" for b in parser.bars)
    assert "http://" not in page.read_text() and "https://" not in page.read_text()


def test_trace_of_an_untraced_thread_is_a_clear_error(tmp_path: Path) -> None:
    runner = CliRunner()
    db = tmp_path / "empty.db"
    from trellis.persist.sqlite import SqliteSaver

    SqliteSaver.from_path(db).setup()
    result = runner.invoke(app, ["trace", "nobody", "--db", str(db)])
    assert result.exit_code == 1
    assert "no run history for thread 'nobody'" in result.output


def test_diff_shows_what_changed_between_checkpoints(traced_run: tuple[CliRunner, Path]) -> None:
    runner, db = traced_run
    from trellis.persist.sqlite import SqliteSaver

    history = list(SqliteSaver.from_path(db).list("t1"))
    newest, oldest = history[0].checkpoint.id, history[-1].checkpoint.id
    result = runner.invoke(app, ["diff", "t1", oldest, newest, "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "+ issues" in result.output and "+ summary" in result.output
    assert not result.output.endswith("\n\n")


def test_diff_names_the_unknown_checkpoint_or_thread(traced_run: tuple[CliRunner, Path]) -> None:
    runner, db = traced_run
    from trellis.persist.sqlite import SqliteSaver

    newest = next(iter(SqliteSaver.from_path(db).list("t1"))).checkpoint.id
    result = runner.invoke(app, ["diff", "t1", "f" * 32, newest, "--db", str(db)])
    assert result.exit_code == 1
    assert f"thread 't1' has no checkpoint '{'f' * 32}'" in result.output
    result = runner.invoke(app, ["diff", "nobody", newest, newest, "--db", str(db)])
    assert result.exit_code == 1 and "thread 'nobody' has no checkpoints" in result.output


def test_trace_of_an_unknown_run_names_it_and_the_runs_there(
    traced_run: tuple[CliRunner, Path],
) -> None:
    runner, db = traced_run
    result = runner.invoke(app, ["trace", "t1", "--db", str(db), "--run", "no-such-run"])
    assert result.exit_code == 1
    assert "thread 't1' has no run 'no-such-run'; its runs: " in result.output


def test_trace_takes_the_short_run_id_its_tree_prints(
    traced_run: tuple[CliRunner, Path],
) -> None:
    runner, db = traced_run
    tree = runner.invoke(app, ["trace", "t1", "--db", str(db)]).output
    short = next(line.split()[1] for line in tree.splitlines() if line.startswith("run "))
    assert len(short) == 8
    result = runner.invoke(app, ["trace", "t1", "--db", str(db), "--run", short, "--json"])
    assert result.exit_code == 0, result.output
    (only,) = json.loads(result.output)["runs"]
    assert only["run_id"].startswith(short)


def test_a_run_prefix_shared_by_two_runs_is_refused_naming_both(tmp_path: Path) -> None:
    from trellis.persist.events import event_log_for
    from trellis.persist.sqlite import SqliteSaver

    db = tmp_path / "runs.db"
    with SqliteSaver.from_path(db) as saver:
        event_log_for(saver).append("t", [_event("abc1"), _event("abc2")])
    result = CliRunner().invoke(app, ["trace", "t", "--db", str(db), "--run", "abc"])
    assert result.exit_code == 1
    assert "run 'abc' of thread 't' is ambiguous: abc1, abc2" in result.output


def _event(run_id: str) -> dict[str, object]:
    return {"kind": "run_start", "trace_id": "0" * 32, "span_id": "1" * 16, "ts": 1.0,
            "thread_id": "t", "run_id": run_id, "graph": "g"}  # fmt: skip


def test_an_html_path_that_looks_like_markup_is_reported_as_given(
    traced_run: tuple[CliRunner, Path], tmp_path: Path
) -> None:
    runner, db = traced_run
    page = tmp_path / "x[b]y.html"  # rich would print it as a bold "xy.html"
    result = runner.invoke(app, ["trace", "t1", "--db", str(db), "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert page.exists() and f"wrote {page}" in result.output
