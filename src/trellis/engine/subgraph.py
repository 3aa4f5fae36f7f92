"""A compiled graph used as a node of another graph.

The parent passes its state (filtered to the subgraph's input keys) and takes
the subgraph's whole output as the node's update, as LangGraph does. A node
inside the subgraph may return ``Command(graph=Command.PARENT, ...)`` to steer
the parent: that command becomes the subgraph node's own return value.

A subgraph compiled without a checkpointer inherits its parent's: its own
checkpoints live in the parent's thread under the namespace ``node:task_id``,
so an ``interrupt()`` inside it suspends the parent task, and resuming the
parent resumes the subgraph where it stopped. Its breakpoints
(``interrupt_before``/``interrupt_after``) suspend the parent task the same
way; unlike LangGraph, which reports no interrupt for them, the parent reports
one whose value names the subgraph and the nodes it stopped at.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trellis.engine.context import CURRENT_TASK
from trellis.engine.durable import BREAKPOINT_TASK
from trellis.engine.streaming import NESTED
from trellis.errors import InvalidConfigError
from trellis.types import Command, Interrupt, RunnableConfig

if TYPE_CHECKING:
    from trellis.engine.compiled import CompiledStateGraph
    from trellis.engine.loop import RunLoop
    from trellis.engine.task import Task

__all__ = ["ParentCommand", "SubgraphNode"]


class ParentCommand(Exception):
    """Carries a ``Command(graph=Command.PARENT)`` out of a subgraph."""

    def __init__(self, command: Command[Any]) -> None:
        super().__init__(command)
        self.command = command


class SubgraphNode:
    """Calls a compiled graph as a node, sync or async."""

    __slots__ = ("_breakpoints", "_durable", "_observed", "graph", "name")

    def __init__(self, graph: CompiledStateGraph, name: str) -> None:
        self.graph = graph
        self.name = name
        self._durable: dict[tuple[int, bool], CompiledStateGraph] = {}
        # the graph run (keyed by identity) -> (the parent's routes, what runs for it)
        self._observed: dict[CompiledStateGraph, tuple[Any, CompiledStateGraph]] = {}
        self._breakpoints = bool(graph.interrupt_before or graph.interrupt_after)

    def _input(self, state: Any) -> Any:
        if not isinstance(state, Mapping):
            return state
        keys = self.graph.plan.input_info.keys or self.graph.plan.writable
        return {k: v for k, v in state.items() if k in keys}

    def _call(
        self, state: Any, config: RunnableConfig
    ) -> tuple[CompiledStateGraph, Any, Any, Task | None]:
        """Which graph to run, with what input and config (inheriting a checkpointer),
        and the parent's task when the run keeps its checkpoints in the parent's saver
        (``_carry_on`` then reads where it stands)."""
        configurable = dict(config.get("configurable") or {})
        configurable.pop("checkpoint_id", None)
        task: Task | None = CURRENT_TASK.get()
        parent = task.loop if task is not None else None
        graph = self.graph
        detached = parent is None or parent.saver is None
        if graph.checkpointer is True and detached:
            raise InvalidConfigError(
                f"subgraph node {self.name!r} was compiled with checkpointer=True, which "
                "keeps its state in the parent graph's checkpointer, but the parent has none"
            )
        if detached or not self.shares_saver:
            configurable.pop("checkpoint_ns", None)
            graph = self.observed(graph, parent)
            return graph, self._input(state), {**config, "configurable": configurable}, None
        assert parent is not None and task is not None  # not detached
        graph = self.bound(parent.saver, trace=bool(parent.options.get("trace")))
        graph = self.observed(graph, parent)
        configurable["thread_id"] = parent.thread_id
        configurable["checkpoint_ns"] = self.namespace(parent.checkpoint_ns, task.id)
        return graph, self._input(state), {**config, "configurable": configurable}, task

    def observed(self, graph: CompiledStateGraph, parent: RunLoop | None) -> CompiledStateGraph:
        """``graph`` sending its events to the parent run's sinks as well (its own
        come first), as LangGraph's callbacks reach a subgraph: the parent's
        observers see the nodes inside it, and its ``metrics()`` count them under
        ``subgraphs``. A subgraph named as its parent (both ``LangGraph``, the
        default) is named after its node instead, so the two are counted apart."""
        observer = parent.observer if parent is not None else None
        if observer is None:
            return graph
        routes = observer.routes  # made anew when the parent's sinks change
        hit = self._observed.get(graph)
        if hit is not None and hit[0] is routes:
            return hit[1]
        twin = graph
        sinks = [s for s in routes.sinks if s not in graph.sinks]
        if sinks:
            twin = copy.copy(graph)  # the same graph, checkpointer and collector
            twin.sinks = [*graph.sinks, *sinks]
            twin.routes = None
            if twin.name == observer.graph:
                twin.name = self.name
        self._observed[graph] = (routes, twin)
        return twin

    def _carry_on(self, task: Task, value: Any, saved: Any) -> Any:
        """The input of a run that finds ``saved`` in its namespace."""
        if saved is None:
            return value
        waiting = {w.task_id for w in saved.pending_writes if w.channel == "__interrupt__"}
        if waiting - {BREAKPOINT_TASK}:  # resuming: hand the newest answer down
            return Command(resume=task.resume[-1]) if task.resume else None
        if waiting or self.graph.checkpointer is not True:
            # It stopped at a breakpoint, or an earlier attempt of this very task (a
            # namespace of its own) failed in it or finished it before the parent
            # could save the step: carry on from there, not from its input again (a
            # finished run just gives its output back). One kept across runs
            # (checkpointer=True) takes the input.
            return None
        return value

    @property
    def shares_saver(self) -> bool:
        """Whether the subgraph keeps its checkpoints in its parent's saver: it was
        compiled without a checkpointer, or with ``checkpointer=True``."""
        return self.graph.checkpointer is None or self.graph.checkpointer is True

    def namespace(self, parent_ns: str, task_id: str) -> str:
        """Where the run of parent task ``task_id`` keeps its checkpoints: under
        ``node:task_id``, or the node's name alone for ``checkpointer=True`` (one
        namespace for every run of the parent thread). Its chunks are streamed
        under the same, so a streamed namespace finds them (``get_state``)."""
        own = self.name if self.graph.checkpointer is True else f"{self.name}:{task_id}"
        return f"{parent_ns}|{own}".lstrip("|")

    def bound(self, saver: Any, *, trace: bool = False) -> CompiledStateGraph:
        """This subgraph over ``saver`` (its parent's), compiled once per saver; with
        ``trace`` (a parent compiled with ``trace=True``), its runs are kept in the
        thread's run history too, so ``trellis trace`` shows what ran inside it."""
        key = (id(saver), trace)
        found = self._durable.get(key)
        if found is None:
            options = {"trace": True} if trace else {}
            found = self._durable[key] = self.graph.with_checkpointer(saver, **options)
        return found

    def __call__(self, state: Any, config: RunnableConfig) -> Any:
        graph, value, cfg, shared = self._call(state, config)
        if shared is not None:
            where = cfg["configurable"]
            saved = shared.loop.saver.get_tuple(
                where["thread_id"], checkpoint_ns=where["checkpoint_ns"]
            )
            value = self._carry_on(shared, value, saved)
        task = CURRENT_TASK.get()
        context = task.loop.context if task is not None else None  # the run's, as LangGraph
        try:
            if task is None or not task.loop.subgraphs:
                output = _bubble(graph.invoke(value, cfg, context=context))
            else:
                collect = _Collector(task, self.namespace("", task.id), graph)
                for item in graph.stream(value, cfg, context=context, **collect.options):
                    collect(item)
                output = _bubble(collect.output)
        except ParentCommand as bubbled:
            return _for_parent(bubbled.command)
        where = self._pausable(graph, cfg)
        if where is not None:
            self._stop_if_paused(graph.checkpointer.get_tuple(where[0], checkpoint_ns=where[1]))
        return output

    async def acall(self, state: Any, config: RunnableConfig) -> Any:
        graph, value, cfg, shared = self._call(state, config)
        if shared is not None:
            where = cfg["configurable"]
            saved = await shared.loop.saver.aget_tuple(
                where["thread_id"], checkpoint_ns=where["checkpoint_ns"]
            )
            value = self._carry_on(shared, value, saved)
        task = CURRENT_TASK.get()
        context = task.loop.context if task is not None else None
        try:
            if task is None or not task.loop.subgraphs:
                output = _bubble(await graph.ainvoke(value, cfg, context=context))
            else:
                collect = _Collector(task, self.namespace("", task.id), graph)
                async for item in graph.astream(value, cfg, context=context, **collect.options):
                    collect(item)
                output = _bubble(collect.output)
        except ParentCommand as bubbled:
            return _for_parent(bubbled.command)
        where = self._pausable(graph, cfg)
        if where is not None:
            saved = await graph.checkpointer.aget_tuple(where[0], checkpoint_ns=where[1])
            self._stop_if_paused(saved)
        return output

    def _pausable(self, graph: CompiledStateGraph, cfg: RunnableConfig) -> tuple[str, str] | None:
        """(thread, namespace) where a run of the subgraph on the parent's saver may
        have stopped at one of its breakpoints; None when it has none to stop at."""
        if graph is self.graph or not self._breakpoints:
            return None
        configurable = cfg["configurable"]
        return configurable["thread_id"], configurable["checkpoint_ns"]

    def _stop_if_paused(self, saved: Any) -> None:
        """A subgraph that stopped at one of its breakpoints suspends the parent task."""
        if saved is None or not any(w.task_id == BREAKPOINT_TASK for w in saved.pending_writes):
            return
        from trellis.engine.interrupts import GraphInterrupt, interrupt_id

        task = CURRENT_TASK.get()
        stopped = list((saved.checkpoint.pending or {}).get("nodes", ()))
        value = {"breakpoint": True, "subgraph": self.name, "next": stopped}
        assert task is not None  # only a parent's task runs a subgraph on its saver
        raise GraphInterrupt(Interrupt(value, interrupt_id(task.id, -1)))


class _Collector:
    """Keeps a subgraph's stream for the parent (namespaced) and its final state."""

    def __init__(self, task: Task, prefix: str, graph: CompiledStateGraph) -> None:
        self.task = task
        self.prefix = prefix
        self.wanted = task.loop.modes
        # As LangGraph's subgraph call: the chunks show the subgraph's output schema
        # only, so its last top-level "values" chunk is what invoke would return.
        self.options: dict[str, Any] = {
            "stream_mode": list(dict.fromkeys([*self.wanted, "values"])),
            "subgraphs": True,
            "output_keys": list(graph.plan.output_keys),
        }
        self.output: Any = None

    def __call__(self, item: tuple[Any, ...]) -> None:
        namespace, mode, chunk = item
        if mode == "values" and not namespace:
            self.output = chunk  # the subgraph's latest output state is the node's result
        if mode in self.wanted:
            nested = ((self.prefix, *namespace), mode, chunk)
            live = self.task.loop.live
            if live is not None:  # the parent streams live: out now, as LangGraph's
                live((NESTED, nested))
                return
            if self.task.nested is None:
                self.task.nested = []
            self.task.nested.append(nested)


def _bubble(output: Any) -> Any:
    """A subgraph that stopped on ``interrupt()`` suspends the parent task too."""
    if isinstance(output, Mapping) and output.get("__interrupt__"):
        from trellis.engine.interrupts import GraphInterrupt

        interrupts = list(output["__interrupt__"])
        raise GraphInterrupt(interrupts[0], interrupts)
    return output


def _for_parent(command: Command[Any]) -> Command[Any]:
    return Command(update=command.update, goto=command.goto, resume=command.resume)
