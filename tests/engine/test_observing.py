"""What the engine tells observers: the events of a run, when and how they arrive."""

from __future__ import annotations

import asyncio
from typing import Any

from typing_extensions import TypedDict

from trellis import START, StateGraph


class S(TypedDict, total=False):
    x: int


def _recording_graph(seen: list[str], *, is_async: bool = False) -> Any:
    """One node that notes, in ``seen``, when it runs."""

    def work(state: S) -> dict[str, int]:
        seen.append("node ran")
        return {"x": 1}

    async def awork(state: S) -> dict[str, int]:
        return work(state)

    builder = StateGraph(S)
    builder.add_node("work", awork if is_async else work)
    builder.add_edge(START, "work")
    return builder.compile()


def test_streamed_events_arrive_as_the_run_goes_not_at_its_end() -> None:
    seen: list[str] = []
    for mode, chunk in _recording_graph(seen).stream({}, stream_mode=["updates", "events"]):
        seen.append(f"{mode}:{chunk.kind.value}" if mode == "events" else f"{mode}")
    work_starts = seen.index("events:task_start")
    assert seen[0] == "events:run_start"
    assert work_starts < seen.index("node ran") < seen.index("events:task_end")
    assert seen.index("events:task_end") < seen.index("updates") < seen.index("events:run_end")


async def test_streamed_events_arrive_as_the_run_goes_in_async_runs_too() -> None:
    seen: list[str] = []
    graph = _recording_graph(seen, is_async=True)
    async for event in graph.astream({}, stream_mode="events"):
        seen.append(event.kind.value)
        await asyncio.sleep(0)
    assert seen.index("task_start") < seen.index("node ran") < seen.index("task_end")
