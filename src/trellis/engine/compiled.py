"""``CompiledStateGraph``: the public face of a compiled graph.

``invoke``/``stream`` and their async twins build a ``RunLoop`` and hand it to
a driver; everything else here is argument handling and output shaping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from trellis.engine import drivers
from trellis.engine.loop import RunLoop
from trellis.engine.plan import GraphPlan, build_plan
from trellis.types import RunnableConfig

if TYPE_CHECKING:
    from trellis.graph.builder import StateGraph
    from trellis.graph.drawing import DrawableGraph

__all__ = ["DEFAULT_RECURSION_LIMIT", "CompiledStateGraph"]

DEFAULT_RECURSION_LIMIT = 10_007  # LangGraph 1.2's default
_MODES = frozenset({"values", "updates", "custom", "debug", "events"})


def _modes(stream_mode: Any) -> tuple[tuple[str, ...], bool]:
    """Normalise ``stream_mode`` and say whether chunks are ``(mode, chunk)`` pairs."""
    if stream_mode is None:
        return ("values",), False
    if isinstance(stream_mode, str):
        modes: tuple[str, ...] = (stream_mode,)
        paired = False
    else:
        modes = tuple(dict.fromkeys(stream_mode))
        paired = True
    unknown = [m for m in modes if m not in _MODES]
    if unknown:
        raise ValueError(
            f"unknown stream_mode {unknown[0]!r}; choose from {', '.join(sorted(_MODES))}"
        )
    return modes, paired


class CompiledStateGraph:
    """A graph ready to run. Build it with ``StateGraph.compile()``.

    >>> graph = builder.compile()
    >>> graph.invoke({"question": "where is my parcel?"})
    >>> for chunk in graph.stream(inputs, stream_mode="updates"):
    ...     print(chunk)
    """

    is_trellis_graph = True

    def __init__(
        self,
        builder: StateGraph[Any, Any],
        *,
        checkpointer: Any = None,
        interrupt_before: Sequence[str] | str = (),
        interrupt_after: Sequence[str] | str = (),
        name: str | None = None,
        debug: bool = False,
        **options: Any,
    ) -> None:
        self.builder = builder
        self.plan: GraphPlan = build_plan(builder)
        self.checkpointer = checkpointer
        self.interrupt_before = interrupt_before
        self.interrupt_after = interrupt_after
        self.name = name or "LangGraph"
        self.debug = debug
        self.options = options

    def __repr__(self) -> str:
        return f"<CompiledStateGraph {self.name!r} nodes={list(self.plan.nodes)}>"

    @property
    def nodes(self) -> dict[str, Any]:
        return dict(self.builder.nodes)

    # -- running ----------------------------------------------------------

    def _loop(
        self, input: Any, config: RunnableConfig | None, context: Any, modes: tuple[str, ...]
    ) -> RunLoop:
        config = config or {}
        limit = config.get("recursion_limit", DEFAULT_RECURSION_LIMIT)
        loop = RunLoop(self.plan, config, context=context, recursion_limit=limit, modes=modes)
        loop.begin(input)
        return loop

    def stream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        stream_mode: Any = None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        """Run the graph, yielding chunks as each step completes.

        A single mode yields its chunks; a list of modes yields
        ``(mode, chunk)`` pairs.
        """
        modes, paired = _modes(stream_mode)
        loop = self._loop(input, config, context, modes)
        try:
            for mode, chunk in drivers.run_steps(loop):
                yield (mode, chunk) if paired else chunk
        except drivers.StepFailed as failure:
            raise failure.error from failure.error.__cause__

    def invoke(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        stream_mode: Any = "values",
        **kwargs: Any,
    ) -> Any:
        """Run the graph to the end and return its output state.

        >>> graph.invoke({"n": 1}, {"recursion_limit": 50})
        """
        if stream_mode != "values":
            chunks = list(self.stream(input, config, context=context, stream_mode=stream_mode))
            return chunks[-1] if chunks else None
        loop = self._loop(input, config, context, ())
        try:
            for _ in drivers.run_steps(loop):
                pass
        except drivers.StepFailed as failure:
            raise failure.error from failure.error.__cause__
        return loop.output()

    async def astream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        stream_mode: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """The async twin of ``stream``."""
        modes, paired = _modes(stream_mode)
        loop = self._loop(input, config, context, modes)
        try:
            async for mode, chunk in drivers.arun_steps(loop):
                yield (mode, chunk) if paired else chunk
        except drivers.StepFailed as failure:
            raise failure.error from failure.error.__cause__

    async def ainvoke(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        stream_mode: Any = "values",
        **kwargs: Any,
    ) -> Any:
        """The async twin of ``invoke``."""
        if stream_mode != "values":
            chunks = [
                c async for c in self.astream(input, config, context=context, stream_mode=stream_mode)
            ]
            return chunks[-1] if chunks else None
        loop = self._loop(input, config, context, ())
        try:
            async for _ in drivers.arun_steps(loop):
                pass
        except drivers.StepFailed as failure:
            raise failure.error from failure.error.__cause__
        return loop.output()

    def batch(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """``invoke`` each input; results in input order."""
        configs = _configs(config, len(inputs))
        results: list[Any] = []
        for value, cfg in zip(inputs, configs, strict=True):
            try:
                results.append(self.invoke(value, cfg, **kwargs))
            except Exception as exc:
                if not return_exceptions:
                    raise
                results.append(exc)
        return results

    async def abatch(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """``ainvoke`` every input concurrently; results in input order."""
        configs = _configs(config, len(inputs))
        coros = [self.ainvoke(v, c, **kwargs) for v, c in zip(inputs, configs, strict=True)]
        return list(await asyncio.gather(*coros, return_exceptions=return_exceptions))

    # -- drawing ------------------------------------------------------------

    def get_graph(self, config: RunnableConfig | None = None, *, xray: Any = False) -> DrawableGraph:
        """The graph's structure, for ``draw_mermaid()`` and ``draw_ascii()``."""
        from trellis.graph.drawing import DrawableGraph

        return DrawableGraph.from_builder(self.builder)


def _configs(config: Any, n: int) -> list[RunnableConfig | None]:
    if config is None or isinstance(config, dict):
        return [config] * n
    configs = list(config)
    if len(configs) != n:
        raise ValueError(f"batch got {n} inputs but {len(configs)} configs")
    return configs
