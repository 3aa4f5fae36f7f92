"""The per-node progress lines: timing from debug chunks, and how they are drawn."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from trellis.cli.progress import LineView, LiveView, NodeTracker, format_duration, open_view


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def chunk(kind: str, task_id: str, name: str, step: int = 1, error: Any = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": task_id, "name": name}
    if kind == "task_result":
        payload["error"] = error
    return {"type": kind, "step": step, "payload": payload}


def test_a_parallel_step_times_each_task_from_its_start() -> None:
    clock = FakeClock()
    tracker = NodeTracker(clock)
    for task_id, name in (("1", "style"), ("2", "security")):
        tracker.feed(chunk("task", task_id, name))
    assert [line.status for line in tracker.lines] == ["running", "running"]
    clock.now += 0.25
    tracker.feed(chunk("task_result", "2", "security"))
    clock.now += 0.5
    tracker.feed(chunk("task_result", "1", "style"))
    assert [(line.name, line.status, line.duration) for line in tracker.lines] == [
        ("style", "done", 0.75),
        ("security", "done", 0.25),
    ]
    assert tracker.running() == []


def test_a_result_without_a_start_is_one_saved_by_an_earlier_run() -> None:
    tracker = NodeTracker(FakeClock())
    line = tracker.feed(chunk("task_result", "9", "ok"))
    assert line is not None
    assert (line.status, line.duration) == ("saved", None)


def test_settle_closes_only_the_named_running_tasks_first() -> None:
    clock = FakeClock()
    tracker = NodeTracker(clock)
    tracker.feed(chunk("task", "1", "a"))
    tracker.feed(chunk("task", "2", "b"))
    clock.now += 1
    failed = tracker.settle("failed", {"2"})
    stopped = tracker.settle("stopped")
    assert [line.name for line in failed] == ["b"]
    assert [line.name for line in stopped] == ["a"]
    assert tracker.settle("stopped") == []
    assert all(line.duration == 1 for line in tracker.lines)


def test_other_chunk_types_are_ignored() -> None:
    assert NodeTracker().feed({"type": "checkpoint", "payload": {}}) is None


def test_format_duration() -> None:
    assert format_duration(0.0123) == "12.3 ms"
    assert format_duration(2.5) == "2.50 s"
    assert format_duration(75) == "1m 15.0s"
    assert format_duration(None) == ""


def test_piped_output_gets_a_plain_line_per_finished_task() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100)
    tracker = NodeTracker(FakeClock())
    view = open_view(console, tracker, ["classify", "respond"])
    assert isinstance(view, LineView)
    with view:
        for item in (chunk("task", "1", "classify"), chunk("task_result", "1", "classify")):
            line = tracker.feed(item)
            assert line is not None
            view.changed(line)
    assert out.getvalue().splitlines() == ["✓ classify    0.0 ms step 1"]


def test_a_terminal_gets_a_live_block_ending_with_every_task() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True, color_system=None)
    clock = FakeClock()
    tracker = NodeTracker(clock)
    view = open_view(console, tracker, ["draft", "check"])
    assert isinstance(view, LiveView)
    with view:
        tracker.feed(chunk("task", "1", "draft"))
        clock.now += 0.002
        line = tracker.feed(chunk("task_result", "1", "draft"))
        assert line is not None
        view.changed(line)
        tracker.feed(chunk("task", "2", "check", step=2))
        clock.now += 0.001
        for line in tracker.settle("failed"):
            view.changed(line)
    text = out.getvalue()
    assert "✓ draft    2.0 ms step 1" in text
    assert "✗ check    1.0 ms step 2" in text
