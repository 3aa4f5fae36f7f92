"""A compiled graph used as a node of another graph.

The parent passes its state (filtered to the subgraph's input keys) and takes
the subgraph's whole output as the node's update, as LangGraph does. A node
inside the subgraph may return ``Command(graph=Command.PARENT, ...)`` to steer
the parent: that command becomes the subgraph node's own return value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trellis.types import Command, RunnableConfig

if TYPE_CHECKING:
    from trellis.engine.compiled import CompiledStateGraph

__all__ = ["ParentCommand", "SubgraphNode"]


class ParentCommand(Exception):
    """Carries a ``Command(graph=Command.PARENT)`` out of a subgraph."""

    def __init__(self, command: Command[Any]) -> None:
        super().__init__(command)
        self.command = command


class SubgraphNode:
    """Calls a compiled graph as a node, sync or async."""

    __slots__ = ("graph", "name")

    def __init__(self, graph: CompiledStateGraph, name: str) -> None:
        self.graph = graph
        self.name = name

    def _input(self, state: Any) -> Any:
        if not isinstance(state, Mapping):
            return state
        keys = self.graph.plan.input_info.keys or self.graph.plan.writable
        return {k: v for k, v in state.items() if k in keys}

    def _config(self, config: RunnableConfig) -> RunnableConfig:
        # The child keeps the caller's run-wide settings but not its checkpoint
        # position: it runs as one task of the parent.
        configurable = dict(config.get("configurable") or {})
        configurable.pop("checkpoint_id", None)
        return {**config, "configurable": configurable}

    def __call__(self, state: Any, config: RunnableConfig) -> Any:
        try:
            return self.graph.invoke(self._input(state), self._config(config))
        except ParentCommand as bubbled:
            return _for_parent(bubbled.command)

    async def acall(self, state: Any, config: RunnableConfig) -> Any:
        try:
            return await self.graph.ainvoke(self._input(state), self._config(config))
        except ParentCommand as bubbled:
            return _for_parent(bubbled.command)


def _for_parent(command: Command[Any]) -> Command[Any]:
    return Command(update=command.update, goto=command.goto, resume=command.resume)
