"""Event sinks: a JSON-lines file, an in-memory list, and a callback wrapper."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from trellis.observe.events import Event, EventKind

__all__ = ["CallbackSink", "JsonlSink", "MemorySink", "read_jsonl"]

# Events after which the file is flushed even in buffered mode: the end of a run,
# and a failure, since a crash right after one is when the trail matters most.
_FLUSH_ON = frozenset({EventKind.RUN_END, EventKind.TASK_ERROR, EventKind.INTERRUPT})


def _dumps(event: Event) -> str:
    return json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"), default=repr)


class JsonlSink:
    """Append each event to a file as one JSON object per line.

    Writes are buffered and flushed at every ``run_end``, ``task_error`` and
    ``interrupt`` event, on :meth:`flush` and on :meth:`close`; pass
    ``flush_each=True`` to flush after every event instead (slower, but nothing is
    lost if the process dies mid-run). Values in ``Event.data`` that JSON cannot
    encode are written as their ``repr``. Thread-safe.

    >>> with JsonlSink("/tmp/run.jsonl") as sink:          # doctest: +SKIP
    ...     graph = builder.compile(observers=[sink])
    ...     graph.invoke({"x": 1})
    >>> events = read_jsonl("/tmp/run.jsonl")              # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], *, flush_each: bool = False) -> None:
        self.path = Path(path)
        self.flush_each = flush_each
        self._lock = threading.Lock()
        torn = _ends_mid_line(self.path)  # a process died mid-write: start a fresh line
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        if torn:
            self._file.write("\n")

    def __call__(self, event: Event) -> None:
        line = _dumps(event) + "\n"
        with self._lock:
            f = self._file
            if f is None:
                raise ValueError(f"JsonlSink({str(self.path)!r}) is closed")
            f.write(line)
            if self.flush_each or event.kind in _FLUSH_ON:
                f.flush()

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    @property
    def closed(self) -> bool:
        return self._file is None

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path)!r})"


def _ends_mid_line(path: Path) -> bool:
    """Whether the regular file at ``path`` ends inside a line (a pipe, a terminal
    or a missing file does not)."""
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


def _torn(line: str, error: json.JSONDecodeError) -> bool:
    """Whether ``line`` is the start of a JSON text cut short (it fails only where
    it ends, or inside a string it never closes), not a corrupt one."""
    return error.pos >= len(line.rstrip()) or error.msg.startswith("Unterminated string")


def read_jsonl(path: str | os.PathLike[str]) -> list[Event]:
    """Load the events a :class:`JsonlSink` wrote. A torn line (a write cut short
    by a crash) is skipped; any other line that is not an event is an error
    naming the line.

    >>> events = read_jsonl("/tmp/run.jsonl")              # doctest: +SKIP
    """
    events: list[Event] = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            if _torn(line, exc):
                continue
            raise ValueError(f"{path}:{number}: not a JSON object") from None
        events.append(Event.from_dict(raw))
    return events


class MemorySink:
    """Keep events in a list, in emission order (for tests and ``stream_mode="events"``).

    >>> sink = MemorySink()
    >>> graph = builder.compile(observers=[sink])          # doctest: +SKIP
    >>> [e.node for e in sink.of_kind("task_end")]         # doctest: +SKIP
    ['fetch', 'parse']
    """

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        # list.append is atomic under the GIL, so worker threads need no lock here.
        self.events.append(event)

    def of_kind(self, *kinds: EventKind | str) -> list[Event]:
        wanted = {EventKind(k) for k in kinds}
        return [e for e in self.events if e.kind in wanted]

    def clear(self) -> None:
        self.events.clear()

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        return iter(list(self.events))

    def __repr__(self) -> str:
        return f"MemorySink({len(self.events)} events)"


class CallbackSink:
    """Call ``fn(event)`` for every event, or only for the given kinds.

    >>> errors = []
    >>> sink = CallbackSink(errors.append, kinds=["task_error"])
    """

    __slots__ = ("fn", "kinds")

    def __init__(
        self, fn: Callable[[Event], Any], *, kinds: Collection[EventKind | str] | None = None
    ) -> None:
        self.fn = fn
        self.kinds = None if kinds is None else frozenset(EventKind(k) for k in kinds)

    def __call__(self, event: Event) -> None:
        if self.kinds is None or event.kind in self.kinds:
            self.fn(event)

    def __repr__(self) -> str:
        return f"CallbackSink({self.fn!r})"
