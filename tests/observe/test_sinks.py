from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from trellis.observe import (
    CallbackSink,
    Event,
    EventKind,
    JsonlSink,
    MemorySink,
    Observers,
    RunEvents,
    read_jsonl,
)


def _event(kind: EventKind, **fields: object) -> Event:
    return Event(kind, "a" * 32, "b" * 16, **fields)  # type: ignore[arg-type]


def test_jsonl_sink_writes_one_json_object_per_line_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    mem = MemorySink()
    with JsonlSink(path) as sink:
        run = RunEvents(Observers([sink, mem]), graph="g", thread_id="t1", join_otel=False)
        run.run_start()
        step = run.step_start(0)
        task = run.task_start(step, "fetch")
        run.task_error(task, ValueError("boom"))
        run.step_end(step)
        run.run_end("error")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6
    assert [json.loads(line)["kind"] for line in lines][:3] == [
        "run_start",
        "step_start",
        "task_start",
    ]
    assert read_jsonl(path) == mem.events


def test_jsonl_sink_flushes_at_failures_and_run_end_without_close(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path)
    sink(_event(EventKind.TASK_START, node="n"))
    sink(_event(EventKind.TASK_ERROR, node="n", error_type="ValueError"))
    # Another reader (e.g. `trellis trace` in a second process) sees it already.
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2
    sink(_event(EventKind.RUN_END, status="error"))
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3
    sink.close()
    assert sink.closed
    with pytest.raises(ValueError, match="closed"):
        sink(_event(EventKind.RUN_START))


def test_jsonl_sink_flush_each(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, flush_each=True)
    sink(_event(EventKind.STEP_START, step=3))
    assert read_jsonl(path)[0].step == 3
    sink.close()


def test_jsonl_sink_appends_and_survives_unencodable_data(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink(_event(EventKind.RUN_START))
    with JsonlSink(path) as sink:
        sink(_event(EventKind.CHECKPOINT_SAVED, data={"obj": object(), "ok": 1}))
    events = read_jsonl(path)
    assert [e.kind for e in events] == [EventKind.RUN_START, EventKind.CHECKPOINT_SAVED]
    assert events[1].data["ok"] == 1
    assert str(events[1].data["obj"]).startswith("<object object")


def test_jsonl_sink_is_thread_safe(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:

        def work(n: int) -> None:
            for i in range(500):
                sink(_event(EventKind.TASK_END, node=f"n{n}", step=i, data={"pad": "x" * 200}))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    events = read_jsonl(path)  # every line is intact JSON
    assert len(events) == 3000
    for n in range(6):
        assert [e.step for e in events if e.node == f"n{n}"] == list(range(500))


def test_read_jsonl_skips_a_torn_last_line_but_not_a_corrupt_middle(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = json.dumps(_event(EventKind.RUN_START).to_dict())
    path.write_text(good + "\n" + '{"kind": "run_e', encoding="utf-8")
    assert len(read_jsonl(path)) == 1
    path.write_text(good + "\n{broken\n" + good + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=":2:"):
        read_jsonl(path)


@pytest.mark.parametrize("torn", ['{"kind": "step_e', '{"kind": "step_end",', '{"kind":'])
def test_a_sink_reopened_after_a_crash_leaves_the_torn_line_behind(
    tmp_path: Path, torn: str
) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink(_event(EventKind.RUN_START))
    with open(path, "a", encoding="utf-8") as f:
        f.write(torn)  # the process died in the middle of this write
    with JsonlSink(path) as sink:  # the restarted process appends
        sink(_event(EventKind.RUN_END))
    assert [e.kind for e in read_jsonl(path)] == [EventKind.RUN_START, EventKind.RUN_END]


def test_memory_sink_filters_by_kind() -> None:
    mem = MemorySink()
    mem(_event(EventKind.TASK_START))
    mem(_event(EventKind.TASK_END))
    mem(_event(EventKind.RETRY))
    assert [e.kind for e in mem.of_kind("task_end", EventKind.RETRY)] == [
        EventKind.TASK_END,
        EventKind.RETRY,
    ]
    assert len(mem) == 3 and len(list(mem)) == 3
    mem.clear()
    assert len(mem) == 0


def test_callback_sink_calls_only_for_chosen_kinds() -> None:
    seen: list[Event] = []
    sink = CallbackSink(seen.append, kinds=["task_error"])
    sink(_event(EventKind.TASK_END))
    sink(_event(EventKind.TASK_ERROR))
    assert [e.kind for e in seen] == [EventKind.TASK_ERROR]
    everything: list[Event] = []
    CallbackSink(everything.append)(_event(EventKind.RUN_START))
    assert len(everything) == 1
    with pytest.raises(ValueError):
        CallbackSink(seen.append, kinds=["no_such_kind"])


def test_a_sink_can_write_to_a_pipe(tmp_path: Path) -> None:
    """Not a seekable file (``/dev/stdout`` piped, a FIFO): nothing to repair, it just writes."""
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text(encoding="utf-8")))
    reader.start()
    with JsonlSink(fifo) as sink:
        sink(_event(EventKind.RUN_START))
    reader.join(timeout=10)
    assert json.loads(received[0])["kind"] == "run_start"
