"""Many inputs through one graph: ``batch``, ``abatch`` and their as-completed forms.

The sync forms run the inputs one after another (a node's own threads aside, a
graph's work is Python holding the GIL, so a thread per input buys nothing); the
async forms run them concurrently on the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Protocol, cast

from trellis.types import RunnableConfig

__all__ = ["abatch", "abatch_as_completed", "batch", "batch_as_completed"]


class Invocable(Protocol):
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any: ...

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any: ...


def configs_for(config: Any, n: int) -> list[RunnableConfig | None]:
    """One config for each of ``n`` inputs: ``config`` shared, or one per input."""
    if config is None or isinstance(config, dict):
        return [cast(RunnableConfig | None, config)] * n
    configs = list(config)
    if len(configs) != n:
        raise ValueError(f"batch got {n} inputs but {len(configs)} configs")
    return configs


def batch_as_completed(
    graph: Invocable, inputs: Sequence[Any], config: Any, return_exceptions: bool, kwargs: Any
) -> Iterator[tuple[int, Any]]:
    configs = configs_for(config, len(inputs))
    for i, (value, cfg) in enumerate(zip(inputs, configs, strict=True)):
        try:
            out = graph.invoke(value, cfg, **kwargs)
        except Exception as exc:
            if not return_exceptions:
                raise
            out = exc
        yield i, out


def batch(
    graph: Invocable, inputs: Sequence[Any], config: Any, return_exceptions: bool, kwargs: Any
) -> list[Any]:
    return [out for _, out in batch_as_completed(graph, inputs, config, return_exceptions, kwargs)]


async def abatch(
    graph: Invocable, inputs: Sequence[Any], config: Any, return_exceptions: bool, kwargs: Any
) -> list[Any]:
    import asyncio  # here: `import trellis` stays free of asyncio (import time, memory)

    configs = configs_for(config, len(inputs))
    coros = [graph.ainvoke(v, c, **kwargs) for v, c in zip(inputs, configs, strict=True)]
    return list(await asyncio.gather(*coros, return_exceptions=return_exceptions))


async def abatch_as_completed(
    graph: Invocable, inputs: Sequence[Any], config: Any, return_exceptions: bool, kwargs: Any
) -> AsyncIterator[tuple[int, Any]]:
    import asyncio

    configs = configs_for(config, len(inputs))

    async def one(i: int, value: Any, cfg: RunnableConfig | None) -> tuple[int, Any]:
        try:
            return i, await graph.ainvoke(value, cfg, **kwargs)
        except Exception as exc:
            if not return_exceptions:
                raise
            return i, exc

    runs = [
        asyncio.ensure_future(one(i, v, c))
        for i, (v, c) in enumerate(zip(inputs, configs, strict=True))
    ]
    try:
        for finished in asyncio.as_completed(runs):
            yield await finished
    finally:  # an error, or a caller who stopped reading: the other runs are stopped
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
