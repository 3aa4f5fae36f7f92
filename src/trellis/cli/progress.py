"""A line per task while a graph runs: a spinner, then ✓ or ✗ and how long it took.

``NodeTracker`` turns ``stream_mode="debug"`` chunks into lines: a ``"task"``
chunk arrives just before its task runs, a ``"task_result"`` chunk once its
step has finished, so the time between the two is the task's wall time (for a
parallel step, the step's). The views only draw the tracker's lines: a live,
animated block on a terminal, plain lines as tasks finish when piped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol

from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

__all__ = ["LineView", "LiveView", "NodeTracker", "TaskLine", "format_duration", "open_view"]

Status = Literal["running", "done", "failed", "interrupted", "waiting", "stopped", "saved"]

_MARKS: dict[str, tuple[str, str]] = {
    "done": ("✓", "green"),
    "saved": ("✓", "green"),
    "failed": ("✗", "bold red"),
    "interrupted": ("⏸", "yellow"),
    "waiting": ("·", "yellow"),
    "stopped": ("■", "dim"),
}
_NOTES: dict[str, str] = {
    "saved": "finished in an earlier run",
    "interrupted": "waiting for input",
    "waiting": "result kept until the run resumes",
    "stopped": "stopped: another task of its step failed",
}


@dataclass(slots=True)
class TaskLine:
    """One task of the run as shown: a node call in one step."""

    id: str
    name: str
    step: int
    started: float | None
    status: Status = "running"
    duration: float | None = None


class NodeTracker:
    """Follows the tasks of a run from its debug chunks; ``clock`` is injectable.

    >>> tracker = NodeTracker()
    >>> for mode, chunk in graph.stream(inputs, stream_mode=["debug"]):
    ...     tracker.feed(chunk)
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.lines: list[TaskLine] = []
        self._by_id: dict[str, TaskLine] = {}
        self._clock = clock

    def feed(self, chunk: Mapping[str, Any]) -> TaskLine | None:
        """Take one debug chunk; return the line it started or finished, if any."""
        kind = chunk.get("type")
        payload = chunk.get("payload") or {}
        task_id = str(payload.get("id", ""))
        name = str(payload.get("name", "?"))
        step = int(chunk.get("step") or 0)
        if kind == "task":
            line = TaskLine(task_id, name, step, self._clock())
            self._by_id[task_id] = line
            self.lines.append(line)
            return line
        if kind != "task_result":
            return None
        line_or_none = self._by_id.get(task_id)
        if line_or_none is None or line_or_none.status != "running":
            # A task that finished before an interrupt or failure: resuming reuses its result.
            line = TaskLine(task_id, name, step, None, status="saved")
            self.lines.append(line)
            return line
        line = line_or_none
        if payload.get("error"):
            line.status = "failed"
        elif payload.get("interrupts"):  # it stopped to ask: it runs again on resume
            line.status = "interrupted"
        else:
            line.status = "done"
        line.duration = self._elapsed(line)
        return line

    def running(self) -> list[TaskLine]:
        return [line for line in self.lines if line.status == "running"]

    def settle(self, status: Status, ids: Collection[str] | None = None) -> list[TaskLine]:
        """Give running lines (those in ``ids``, or all) a final ``status``."""
        changed = []
        for line in self.running():
            if ids is None or line.id in ids:
                line.status = status
                line.duration = self._elapsed(line)
                changed.append(line)
        return changed

    def _elapsed(self, line: TaskLine) -> float | None:
        return None if line.started is None else max(0.0, self._clock() - line.started)


def format_duration(seconds: float | None) -> str:
    """``0.0123`` → ``'12.3 ms'``; ``2.5`` → ``'2.50 s'``; ``75`` → ``'1m 15.0s'``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m {rest:04.1f}s"


def _row(line: TaskLine, mark: RenderableType, width: int) -> list[RenderableType]:
    note = _NOTES.get(line.status, f"step {line.step}")
    style = "red" if line.status == "failed" else ""
    return [
        mark,
        Text(line.name.ljust(width), style=style),
        Text(format_duration(line.duration).rjust(9)),
        Text(note, style="dim"),
    ]


def _mark(line: TaskLine) -> Text:
    symbol, style = _MARKS.get(line.status, ("?", "dim"))
    return Text(symbol, style=style)


class View(Protocol):
    def changed(self, line: TaskLine) -> None: ...

    def __enter__(self) -> View: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None: ...


class LiveView:
    """An animated block on a terminal: spinners for running tasks."""

    def __init__(self, console: Console, tracker: NodeTracker, name_width: int) -> None:
        self._tracker = tracker
        self._width = name_width
        self._spinners: dict[int, Spinner] = {}
        self._live = Live(
            console=console, get_renderable=self._render, refresh_per_second=12, transient=False
        )

    def _render(self) -> RenderableType:
        grid = Table.grid(padding=(0, 1))
        for i, line in enumerate(list(self._tracker.lines)):
            if line.status == "running":
                mark: RenderableType = self._spinners.setdefault(i, Spinner("dots", style="cyan"))
            else:
                mark = _mark(line)
            grid.add_row(*_row(line, mark, self._width))
        return grid

    def changed(self, line: TaskLine) -> None:
        self._live.refresh()

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._live.stop()


class LineView:
    """Plain lines, one per task as it finishes: for logs and pipes."""

    def __init__(self, console: Console, name_width: int) -> None:
        self._console = console
        self._width = name_width

    def changed(self, line: TaskLine) -> None:
        if line.status == "running":
            return
        grid = Table.grid(padding=(0, 1))
        grid.add_row(*_row(line, _mark(line), self._width))
        self._console.print(grid)

    def __enter__(self) -> LineView:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        return None


def open_view(console: Console, tracker: NodeTracker, names: Collection[str]) -> View:
    """A live view on a terminal, plain lines otherwise."""
    width = max((len(n) for n in names), default=8)
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveView(console, tracker, width)
    return LineView(console, width)
