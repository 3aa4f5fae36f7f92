"""``CompiledStateGraph``: the public face of a compiled graph.

``invoke``/``stream`` and their async twins build a ``RunLoop`` and hand it to
a driver; everything else here is argument handling and output shaping.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from trellis.engine import batching, drivers, saga, state
from trellis.engine.config import check_compile_options, merge_configs
from trellis.engine.context import CURRENT_TASK
from trellis.engine.durable import (
    compensations_done,
    has_tasks,
    inherit_compensations,
    restore,
    unsaved_compensable,
    waiting_on,
)
from trellis.engine.loop import RunLoop
from trellis.engine.output import OutputKeys
from trellis.engine.plan import GraphPlan, build_plan
from trellis.engine.streaming import NESTED, aviews, engine_modes, views
from trellis.engine.subgraph import ParentCommand
from trellis.errors import (
    CheckpointNotFoundError,
    EmptyInputError,
    GraphRecursionError,
    InterruptError,
    InvalidConfigError,
    InvalidUpdateError,
    RoutingError,
)
from trellis.graph.reducers import add_messages, langchain_messages, names_langchain_messages
from trellis.graph.schema import is_pydantic_class
from trellis.persist.base import CheckpointTuple
from trellis.types import Command, RunnableConfig, StateSnapshot, StateUpdate

if TYPE_CHECKING:
    from trellis.graph.builder import StateGraph
    from trellis.graph.drawing import DrawableGraph

__all__ = ["DEFAULT_RECURSION_LIMIT", "CompiledStateGraph"]

DEFAULT_RECURSION_LIMIT = 10_007  # LangGraph 1.2's default
_MODES = frozenset(
    {"values", "updates", "custom", "messages", "debug", "tasks", "checkpoints", "events"}
)


# How a run fails for good: a node's error (wrapped in StepFailed), or what the
# engine raises when the run cannot go on; either way it is settled and rolled back.
_RUN_FAILURES = (drivers.StepFailed, GraphRecursionError, InvalidUpdateError, RoutingError)


def _modes(stream_mode: Any) -> tuple[tuple[str, ...], bool]:
    """Normalise ``stream_mode`` and say whether chunks are ``(mode, chunk)`` pairs."""
    if stream_mode is None:
        return ("updates",), False  # LangGraph's default for stream()
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
        check_compile_options(options, checkpointer)
        self.builder = builder
        self.plan: GraphPlan = build_plan(builder, retry_policy=options.get("retry_policy"))
        self.checkpointer = checkpointer
        self.name = name or "LangGraph"
        # As LangGraph, checked here: a misspelt breakpoint would never fire.
        for option, names in (
            ("interrupt_before", interrupt_before),
            ("interrupt_after", interrupt_after),
        ):
            unknown = sorted(_names(names) - {"*", *self.plan.nodes})
            if unknown:
                raise InvalidConfigError(
                    f"graph {self.name!r}: {option} names unknown node(s) "
                    f"{', '.join(map(repr, unknown))}; the graph has "
                    f"{', '.join(map(repr, self.plan.nodes))}"
                )
        self.interrupt_before = interrupt_before
        self.interrupt_after = interrupt_after
        self.debug = debug
        self.options = options
        self.config: RunnableConfig | None = None  # with_config(): under each call's own
        # Observability: sinks that receive every event of every run.
        self.sinks: list[Any] = list(options.get("observers") or ())
        self.collector: Any = None
        if options.get("metrics"):
            from trellis.observe.metrics import MetricsCollector

            self.collector = MetricsCollector()
            self.sinks.append(self.collector)
        self.routes: Any = None  # where events go: set on the first observed run
        # A dict given as context= becomes this class (as LangGraph's _coerce_context).
        self.context_class = _context_class(builder.context_schema)
        if checkpointer is not None:
            _allow_schemas(self.plan, checkpointer, options.get("allowlist", ()))

    def __repr__(self) -> str:
        return f"<CompiledStateGraph {self.name!r} nodes={list(self.plan.nodes)}>"

    @property
    def needs_async(self) -> bool:
        """Whether a node or router (or a subgraph's) is ``async def``: then the
        graph runs only under ``ainvoke``/``astream``.

        >>> graph.needs_async
        False
        """
        return self.plan.needs_async

    def with_checkpointer(self, saver: Any, **options: Any) -> CompiledStateGraph:
        """This graph compiled again over ``saver``, keeping its breakpoints, name,
        debug flag and compile options (``options`` add to them).

        >>> durable = graph.with_checkpointer(SqliteSaver.from_path("runs.db"))
        """
        twin = CompiledStateGraph(
            self.builder,
            checkpointer=saver,
            interrupt_before=self.interrupt_before,
            interrupt_after=self.interrupt_after,
            name=self.name,
            debug=self.debug,
            **{**options, **self.options},
        )
        twin.config = self.config
        if self.collector is not None and twin.collector is not None:
            # One graph, one set of numbers: this graph's metrics() counts the runs
            # of the twin too (a subgraph runs as its twin under a durable parent).
            twin.sinks = [self.collector if s is twin.collector else s for s in twin.sinks]
            twin.collector = self.collector
        return twin

    def with_config(self, config: RunnableConfig | None = None, **keys: Any) -> CompiledStateGraph:
        """This graph with ``config`` (and ``keys``, config keys) under every call's
        own config, which wins where both set a key: ``configurable`` and
        ``metadata`` merge key by key, ``tags`` join.

        >>> limited = graph.with_config(recursion_limit=100, configurable={"user": "ann"})
        >>> limited.invoke(inputs, {"configurable": {"thread_id": "t1"}})
        """
        twin = copy.copy(self)
        twin.config = merge_configs(self.config, config, keys)
        return twin

    def _bound(self, config: RunnableConfig) -> RunnableConfig:
        """``config`` over what ``with_config`` bound (``config`` itself when nothing)."""
        return merge_configs(self.config, config) if self.config else config

    @property
    def nodes(self) -> dict[str, Any]:
        return dict(self.builder.nodes)

    # -- running ----------------------------------------------------------

    def _loop(
        self,
        input: Any,
        config: RunnableConfig | None,
        context: Any,
        modes: tuple[str, ...],
        kwargs: dict[str, Any],
    ) -> tuple[RunLoop, tuple[str, str | None, str] | None]:
        """A loop for one call, and what must be read from the saver first (if anything)."""
        run_config = self._bound(config or RunnableConfig())
        if type(context) is dict and self.context_class is not None:
            context = _coerce_context(self.name, self.context_class, context)
        limit = run_config.get("recursion_limit")
        if limit is None:  # absent or None, as LangGraph: the default
            limit = DEFAULT_RECURSION_LIMIT
        elif isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit >= 1:
            raise InvalidConfigError(
                f"graph {self.name!r}: recursion_limit must be at least 1, got {limit!r}"
            )
        before = kwargs.get("interrupt_before") or self.interrupt_before
        after = kwargs.get("interrupt_after") or self.interrupt_after
        loop = RunLoop(
            self.plan,
            run_config,
            context=context,
            recursion_limit=limit,
            modes=modes,
            saver=self.checkpointer or None,
            durability=_durability(kwargs.get("durability") or self.options.get("durability")),
            breakpoints=(_names(before), _names(after)) if before or after else _NO_BREAKPOINTS,
            options=self.options,
        )
        outer = CURRENT_TASK.get()
        if outer is not None:  # the nearest enclosing node attempt with a timeout
            loop.outer = (outer, outer.attempt) if outer.node.timeout else outer.loop.outer
        output_keys = kwargs.get("output_keys")
        if output_keys is not None:
            loop.output_keys = OutputKeys(output_keys, self.plan.channels, graph=self.name)
        if loop.saver is None:
            if isinstance(input, Command) and input.resume is not None:
                raise InterruptError(
                    f"graph {self.name!r}: Command(resume=...) needs a checkpointer: "
                    "compile(checkpointer=...)"
                )
            loop.begin(input)
            return loop, None
        if loop.saver is True:
            raise InvalidConfigError(
                f"graph {self.name!r} was compiled with checkpointer=True, which means "
                "'the parent graph's checkpointer': run it as a subgraph node, or compile "
                "it with a checkpointer of its own"
            )
        thread_id = loop.thread_id
        if thread_id is None:
            raise InvalidConfigError(
                f"graph {self.name!r} has a checkpointer, so every call needs a thread id: "
                "config={'configurable': {'thread_id': ...}}"
            )
        return loop, (thread_id, loop.configurable.get("checkpoint_id"), loop.checkpoint_ns)

    def _start(
        self, loop: RunLoop, input: Any, saved: CheckpointTuple | None, head: CheckpointTuple | None
    ) -> None:
        """Resume, fork or start a run, given what the saver holds."""
        checkpoint_id = loop.configurable.get("checkpoint_id")
        if checkpoint_id and saved is None:
            raise CheckpointNotFoundError(
                f"thread {loop.thread_id!r} has no checkpoint {checkpoint_id!r}"
            )
        loop.expected_head = head.checkpoint.id if head is not None else None
        waiting = waiting_on(head)
        if waiting:
            loop.waiting = (loop.expected_head, waiting)
        resume = isinstance(input, Command) and input.resume is not None
        # As LangGraph: a Command without resume on a thread with tasks still to run
        # continues that step (its update first, its goto beside the tasks), rather
        # than starting a new one that would drop them.
        carry_on = (
            isinstance(input, Command) and not resume and saved is not None and has_tasks(saved)
        )
        if input is None or resume or carry_on:
            if saved is None:
                raise EmptyInputError(
                    f"thread {loop.thread_id!r} has nothing to resume; pass an input to start a run"
                )
            restore(loop, saved, continue_run=True)
            loop.resuming = True
            forks = input is None and head is not None and head.checkpoint.id != saved.checkpoint.id
            if "debug" in loop.modes and not forks:
                # As LangGraph, a resumed run's checkpoint stream starts with the one it
                # resumes from (a fork's starts with the fork's own, saved next).
                loop.saved = [(saved.checkpoint, saved.metadata)]
            if loop.output_keys is not None and loop.wrote_any:
                loop.output_keys.shown = True  # a resumed run first shows where it stands
            if forks and head is not None:
                inherit_compensations(loop, head)
                loop.fork()  # time travel: the step runs again, on a branch of its own
                return
            loop.saved_writes = saved.pending_writes
            if resume:
                loop.resume = input.resume
                if not any(w.channel == "__interrupt__" for w in saved.pending_writes):
                    raise InterruptError(
                        f"Command(resume=...) given, but thread {loop.thread_id!r} has no "
                        "pending interrupt"
                    )
            if isinstance(input, Command):
                if input.update is not None:  # applied before the waiting nodes re-run
                    loop.apply_input_update(input)
                if input.goto:
                    loop.goto = input.goto_list()
            return
        if saved is not None:
            restore(loop, saved, continue_run=False)
        loop.begin(input)

    def _load(self, where: tuple[str, str | None, str]) -> tuple[Any, Any]:
        thread_id, checkpoint_id, ns = where
        saver = self.checkpointer
        saved = saver.get_tuple(thread_id, checkpoint_id, checkpoint_ns=ns)
        head = saved if checkpoint_id is None else saver.get_tuple(thread_id, checkpoint_ns=ns)
        return saved, head

    async def _aload(self, where: tuple[str, str | None, str]) -> tuple[Any, Any]:
        thread_id, checkpoint_id, ns = where
        saver = self.checkpointer
        saved = await saver.aget_tuple(thread_id, checkpoint_id, checkpoint_ns=ns)
        head = (
            saved if checkpoint_id is None else await saver.aget_tuple(thread_id, checkpoint_ns=ns)
        )
        return saved, head

    def _sync_loop(
        self, input: Any, config: Any, context: Any, modes: tuple[str, ...], kwargs: Any
    ) -> RunLoop:
        loop, where = self._loop(input, config, context, modes, kwargs)
        if where is not None:
            self._start(loop, input, *self._load(where))
        return self._observe(loop)

    async def _async_loop(
        self, input: Any, config: Any, context: Any, modes: tuple[str, ...], kwargs: Any
    ) -> RunLoop:
        loop, where = self._loop(input, config, context, modes, kwargs)
        if where is not None:
            self._start(loop, input, *await self._aload(where))
        return self._observe(loop)

    def _observe(self, loop: RunLoop) -> RunLoop:
        streams = "events" in loop.modes
        trace = bool(self.options.get("trace")) and loop.saver is not None
        if self.sinks or streams or trace:
            routes = self.routes
            if routes is None or routes.graph != self.name or routes.sinks != self.sinks:
                from trellis.engine.observing import Routes

                routes = self.routes = Routes(self.sinks, self.name)
            log = None
            if trace:
                from trellis.persist.events import event_log_for

                log = event_log_for(loop.saver)
            loop.observer = routes.observer(loop, buffer=streams, log=log)
        return loop

    def metrics(self) -> dict[str, Any]:
        """Per-node and per-graph metrics of this graph's runs; those of the
        subgraphs that ran inside them under ``subgraphs``, by subgraph name.

        Needs ``compile(metrics=True)``.

        >>> graph.metrics()["nodes"]["fetch"]["latency"]["p95"]
        >>> graph.metrics()["subgraphs"]["research"]["nodes"]["search"]["calls"]
        """
        if self.collector is None:
            raise InvalidConfigError(
                f"graph {self.name!r} collects no metrics: compile(metrics=True) to collect them"
            )
        graphs: dict[str, Any] = self.collector.snapshot().get("graphs", {})
        metrics: dict[str, Any] = graphs.pop(self.name, {})
        if metrics:
            metrics["subgraphs"] = graphs  # only this graph's runs feed its collector
        return metrics

    def _failed(self, loop: RunLoop, failure: Exception) -> BaseException:
        """The run failed for good (a node's error, or the engine's: see
        ``_RUN_FAILURES``): settle what its head left behind, compensate its
        completed side effects, and return the error to raise."""
        drivers.settle(loop, failed=True)
        error = drivers.cause(failure)
        if loop.compensable and not isinstance(error, ParentCommand):
            saga.attach(error, saga.Saga.of_run(self, loop).run())
        return error

    async def _afailed(self, loop: RunLoop, failure: Exception) -> BaseException:
        await drivers.asettle(loop, failed=True)
        error = drivers.cause(failure)
        if loop.compensable and not isinstance(error, ParentCommand):
            saga.attach(error, await saga.Saga.of_run(self, loop).arun())
        return error

    def stream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        stream_mode: Any = None,
        subgraphs: bool = False,
        **kwargs: Any,
    ) -> Iterator[Any]:
        """Run the graph, yielding chunks as each step completes.

        A single mode yields its chunks; a list of modes yields
        ``(mode, chunk)`` pairs.
        """
        modes, paired = _modes(stream_mode)
        made = engine_modes(modes)
        loop = self._sync_loop(input, config, context, made, kwargs)
        loop.subgraphs = subgraphs
        error = None
        chunks = drivers.run_steps(loop)
        if made is not modes:  # "tasks" / "checkpoints": views of the debug chunks
            chunks = views(chunks, modes)
        try:
            for mode, chunk in chunks:
                yield _shape(mode, chunk, paired, subgraphs)
        except GeneratorExit:  # the caller stopped reading: the run stops where it is
            drivers.settle(loop, failed=True)
            raise
        except _RUN_FAILURES as failure:
            error = self._failed(loop, failure)
        if error is not None:
            for mode, chunk in _after_the_run(loop):  # the compensations' events
                yield _shape(mode, chunk, paired, subgraphs)
            raise error  # outside the except: the node's error keeps its own context

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
        if stream_mode != "values":  # as LangGraph: every chunk, in a list
            return list(
                self.stream(input, config, context=context, stream_mode=stream_mode, **kwargs)
            )
        loop = self._sync_loop(input, config, context, (), kwargs)
        error = None
        try:
            for _ in drivers.run_steps(loop):
                pass
        except _RUN_FAILURES as failure:
            error = self._failed(loop, failure)
        if error is not None:
            raise error  # outside the except: the node's error keeps its own context
        return loop.result()

    async def astream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        stream_mode: Any = None,
        subgraphs: bool = False,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """The async twin of ``stream``."""
        modes, paired = _modes(stream_mode)
        made = engine_modes(modes)
        loop = await self._async_loop(input, config, context, made, kwargs)
        loop.subgraphs = subgraphs
        error = None
        chunks = drivers.arun_steps(loop)
        if made is not modes:
            chunks = aviews(chunks, modes)
        try:
            # Closing this stream closes the run's, so a node it runs live is cancelled.
            async with contextlib.aclosing(chunks):
                async for mode, chunk in chunks:
                    yield _shape(mode, chunk, paired, subgraphs)
        except GeneratorExit:
            drivers.settle(loop, failed=True)
            raise
        except _RUN_FAILURES as failure:
            error = await self._afailed(loop, failure)
        if error is not None:
            for mode, chunk in _after_the_run(loop):
                yield _shape(mode, chunk, paired, subgraphs)
            raise error

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
            return [
                c
                async for c in self.astream(
                    input, config, context=context, stream_mode=stream_mode, **kwargs
                )
            ]
        loop = await self._async_loop(input, config, context, (), kwargs)
        error = None
        try:
            if loop.observer is None:
                await drivers.arun(loop)
            else:
                async for _ in drivers.arun_steps(loop):
                    pass
        except _RUN_FAILURES as failure:
            error = await self._afailed(loop, failure)
        if error is not None:
            raise error
        return loop.result()

    def batch(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """``invoke`` each input; results in input order."""
        return batching.batch(self, inputs, config, return_exceptions, kwargs)

    def batch_as_completed(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> Iterator[tuple[int, Any]]:
        """``invoke`` each input, yielding ``(index, result)`` as each finishes.

        >>> for i, out in graph.batch_as_completed([{"n": 1}, {"n": 2}]): ...
        """
        return batching.batch_as_completed(self, inputs, config, return_exceptions, kwargs)

    async def abatch(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """``ainvoke`` every input concurrently; results in input order."""
        return await batching.abatch(self, inputs, config, return_exceptions, kwargs)

    def abatch_as_completed(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> AsyncIterator[tuple[int, Any]]:
        """``ainvoke`` every input concurrently, yielding ``(index, result)`` in the
        order they finish; the rest are cancelled if the caller stops early."""
        return batching.abatch_as_completed(self, inputs, config, return_exceptions, kwargs)

    # -- state and history -------------------------------------------------

    def get_state(self, config: RunnableConfig, *, subgraphs: bool = False) -> StateSnapshot:
        """The thread's state at its latest checkpoint (or at ``checkpoint_id``).

        >>> graph.get_state({"configurable": {"thread_id": "t1"}}).next
        ('review',)
        """
        config = self._bound(config)
        thread_id, checkpoint_id = state.thread_of(self, config)
        graph, ns = state.in_namespace(self, config)
        saved = self.checkpointer.get_tuple(thread_id, checkpoint_id, checkpoint_ns=ns)
        snap = state.snapshot(graph, saved, thread_id, live=checkpoint_id is None, ns=ns)
        if subgraphs:
            found = {
                ns: self.get_state(where, subgraphs=True)
                for ns, where in state.subgraph_configs(snap).items()
            }
            snap = state.with_subgraph_states(snap, found)
        return snap

    async def aget_state(self, config: RunnableConfig, *, subgraphs: bool = False) -> StateSnapshot:
        """The async twin of ``get_state``."""
        config = self._bound(config)
        thread_id, checkpoint_id = state.thread_of(self, config)
        graph, ns = state.in_namespace(self, config)
        saved = await self.checkpointer.aget_tuple(thread_id, checkpoint_id, checkpoint_ns=ns)
        snap = state.snapshot(graph, saved, thread_id, live=checkpoint_id is None, ns=ns)
        if subgraphs:
            found = {
                ns: await self.aget_state(where, subgraphs=True)
                for ns, where in state.subgraph_configs(snap).items()
            }
            snap = state.with_subgraph_states(snap, found)
        return snap

    def get_state_history(
        self,
        config: RunnableConfig,
        *,
        filter: dict[str, Any] | None = None,
        before: Any = None,
        limit: int | None = None,
    ) -> Iterator[StateSnapshot]:
        """Every checkpoint of the thread, newest first: time travel starts here."""
        config = self._bound(config)
        yield from state.history(self, config, filter=filter, before=before, limit=limit)

    async def aget_state_history(
        self,
        config: RunnableConfig,
        *,
        filter: dict[str, Any] | None = None,
        before: Any = None,
        limit: int | None = None,
    ) -> AsyncIterator[StateSnapshot]:
        """The async twin of ``get_state_history``.

        >>> async for snapshot in graph.aget_state_history(config, limit=5): ...
        """
        config = self._bound(config)
        async for snap in state.ahistory(self, config, filter=filter, before=before, limit=limit):
            yield snap

    def update_state(
        self,
        config: RunnableConfig,
        values: Any,
        as_node: str | None = None,
        task_id: str | None = None,
    ) -> RunnableConfig:
        """Write ``values`` into the thread as a new checkpoint, as if ``as_node`` had.

        ``task_id`` is accepted for LangGraph's signature; Trellis names the task itself.

        >>> graph.update_state(config, {"approved": True}, as_node="review")
        """
        return self.bulk_update_state(config, [[StateUpdate(values, as_node)]])

    async def aupdate_state(
        self,
        config: RunnableConfig,
        values: Any,
        as_node: str | None = None,
        task_id: str | None = None,
    ) -> RunnableConfig:
        """The async twin of ``update_state``."""
        return await self.abulk_update_state(config, [[StateUpdate(values, as_node)]])

    def bulk_update_state(
        self, config: RunnableConfig, supersteps: Sequence[Sequence[StateUpdate]]
    ) -> RunnableConfig:
        """Apply supersteps of updates, each a checkpoint on the one before, all saved
        in one transaction; the updates of one superstep apply as parallel tasks.

        >>> graph.bulk_update_state(config, [
        ...     [StateUpdate({"draft": "v2"}, "write")],
        ...     [StateUpdate({"ok": True}, "review"), StateUpdate({"tags": ["x"]}, "tag")],
        ... ])
        """
        steps = state.supersteps_of(supersteps)
        config = self._bound(config)
        where = state.thread_of(self, config)
        graph, ns = state.in_namespace(self, config)
        saved, head = self._load((*where, ns))
        writer = state.writer_step(saved, steps)
        parent = self.checkpointer.get_tuple(where[0], writer, checkpoint_ns=ns) if writer else None
        loop = state.bulk_update_loop(graph, config, saved, head, steps, parent)
        drivers.perform(loop)
        drivers.settle(loop)
        return state.checkpoint_config(where[0], loop.head, ns)

    async def abulk_update_state(
        self, config: RunnableConfig, supersteps: Sequence[Sequence[StateUpdate]]
    ) -> RunnableConfig:
        """The async twin of ``bulk_update_state``."""
        steps = state.supersteps_of(supersteps)
        config = self._bound(config)
        where = state.thread_of(self, config)
        graph, ns = state.in_namespace(self, config)
        saved, head = await self._aload((*where, ns))
        writer = state.writer_step(saved, steps)
        parent = (
            await self.checkpointer.aget_tuple(where[0], writer, checkpoint_ns=ns)
            if writer
            else None
        )
        loop = state.bulk_update_loop(graph, config, saved, head, steps, parent)
        await drivers.aperform(loop)
        await drivers.asettle(loop)
        return state.checkpoint_config(where[0], loop.head, ns)

    def delete_thread(self, thread_id: str) -> None:
        """Remove every checkpoint and pending write of ``thread_id``."""
        if self.checkpointer is None:
            raise InvalidConfigError(
                f"cannot delete thread {thread_id!r}: graph {self.name!r} has no checkpointer"
            )
        self.checkpointer.delete_thread(thread_id)
        policy = self.options.get("approval_policy")
        store = getattr(policy, "store", None)
        if store is not None:  # requests kept away from the checkpoints go too
            store.forget_thread(thread_id)

    def compensate(self, config: RunnableConfig) -> saga.CompensationReport:
        """Undo the thread's completed side effects, newest first (saga rollback).

        Safe to call again after a crash: finished compensations never repeat.

        >>> report = graph.compensate({"configurable": {"thread_id": "order-7"}})
        >>> report.compensated
        ['charge_card', 'reserve_stock']
        """
        return self._saga(config).run()

    async def acompensate(self, config: RunnableConfig) -> saga.CompensationReport:
        """The async twin of ``compensate``."""
        return await self._saga(config).arun()

    def _saga(self, config: RunnableConfig) -> saga.Saga:
        thread_id, _ = state.thread_of(self, self._bound(config))
        head = self.checkpointer.get_tuple(thread_id)
        if head is None:
            raise CheckpointNotFoundError(f"thread {thread_id!r} has no checkpoints")
        entries = list(head.checkpoint.pending.get("compensable", ()))
        if head.pending_writes and self.plan.compensating:
            nodes = self.plan.nodes
            names = {name for name, node in nodes.items() if node.compensate is not None}
            entries += unsaved_compensable(head, names)
        done = compensations_done(head)
        return saga.Saga(self, thread_id, head.checkpoint.id, entries, None, done)

    def rollback(self, config: RunnableConfig, *, to_node: str) -> RunnableConfig:
        """The config of the latest checkpoint taken before ``to_node`` ran.

        Invoke with it (``graph.invoke(None, cfg)``) to run again from there.
        """
        config = self._bound(config)
        configurable = dict(config.get("configurable") or {})
        configurable.pop("checkpoint_id", None)  # the whole thread, newest first
        for snap in state.history(self, {**config, "configurable": configurable}):
            if to_node in snap.next:
                return snap.config
        thread_id, _ = state.thread_of(self, config)
        raise CheckpointNotFoundError(
            f"thread {thread_id!r} has no checkpoint before node {to_node!r} ran"
        )

    def get_subgraphs(
        self, *, namespace: str | None = None, recurse: bool = False
    ) -> Iterator[tuple[str, CompiledStateGraph]]:
        """The ``(namespace, graph)`` of each node that is a compiled graph, as
        LangGraph's: ``namespace`` (``parent|child``, without task ids) picks one,
        ``recurse`` goes into subgraphs' subgraphs.

        >>> [name for name, _ in graph.get_subgraphs(recurse=True)]
        ['research', 'research|search']
        """
        for name, node in self.plan.nodes.items():
            if namespace is not None and namespace != name and not namespace.startswith(f"{name}|"):
                continue
            sub = node.subgraph
            if sub is None:
                continue
            if name == namespace:
                yield name, sub.graph
                return
            if namespace is None:
                yield name, sub.graph
            if recurse:
                inner = None if namespace is None else namespace[len(name) + 1 :]
                for path, graph in sub.graph.get_subgraphs(namespace=inner, recurse=True):
                    yield f"{name}|{path}", graph

    async def aget_subgraphs(
        self, *, namespace: str | None = None, recurse: bool = False
    ) -> AsyncIterator[tuple[str, CompiledStateGraph]]:
        """The async twin of ``get_subgraphs``."""
        for found in self.get_subgraphs(namespace=namespace, recurse=recurse):
            yield found

    # -- drawing ------------------------------------------------------------

    def get_graph(
        self, config: RunnableConfig | None = None, *, xray: int | bool = False
    ) -> DrawableGraph:
        """The graph's structure, for ``draw_mermaid()`` and ``draw_ascii()``;
        ``xray`` draws subgraphs inside their nodes (``True``: every level, ``n``: ``n``).

        >>> print(graph.get_graph(xray=True).draw_mermaid())
        """
        from trellis.graph.drawing import DrawableGraph

        return DrawableGraph.from_builder(self.builder, xray)

    async def aget_graph(
        self, config: RunnableConfig | None = None, *, xray: int | bool = False
    ) -> DrawableGraph:
        """:meth:`get_graph` for async code (drawing does no I/O)."""
        return self.get_graph(config, xray=xray)


def _allow_schemas(plan: GraphPlan, checkpointer: Any, extra: Sequence[Any]) -> None:
    """Let the saver decode the classes this graph's schemas name (and only those),
    and all of LangChain's messages where a key is reduced by ``add_messages`` or
    the schemas name one (``Sequence[BaseMessage]`` holds its subclasses)."""
    serde = getattr(checkpointer, "serde", None)
    if serde is None or not hasattr(serde, "with_allowlist"):
        return
    from trellis.persist.serde import allowlist_from_schema

    allowed = allowlist_from_schema(*plan.schemas)
    if add_messages in plan.reducers.values() or names_langchain_messages(allowed):
        allowed |= frozenset(langchain_messages())
    checkpointer.serde = serde.with_allowlist([*allowed, *extra])


_NO_NAMES: frozenset[str] = frozenset()
_NO_BREAKPOINTS = (_NO_NAMES, _NO_NAMES)  # shared by every run that stops nowhere
_DURABILITY = ("sync", "async", "exit")


def _durability(value: Any) -> str:
    if value is None:
        return "sync"
    if value not in _DURABILITY:
        raise InvalidConfigError(
            f"durability={value!r} is not one of {', '.join(map(repr, _DURABILITY))}"
        )
    return str(value)


def _context_class(schema: Any) -> type | None:
    """The class a dict context is made into: a dataclass or pydantic model schema."""
    if isinstance(schema, type) and (dataclasses.is_dataclass(schema) or is_pydantic_class(schema)):
        return schema
    return None


def _coerce_context(graph: str, cls: type, context: dict[str, Any]) -> Any:
    try:
        return cls(**context)
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise InvalidConfigError(
            f"graph {graph!r}: context {sorted(context)} does not fit its context_schema "
            f"{cls.__name__}: {exc}"
        ) from exc


def _after_the_run(loop: RunLoop) -> Iterator[tuple[str, Any]]:
    """Streamed events of what ran after the run had ended (its saga)."""
    obs = loop.observer
    return drivers.event_chunks(obs) if obs is not None and obs.buffer else iter(())


def _shape(mode: str, chunk: Any, paired: bool, subgraphs: bool) -> Any:
    """A stream item as LangGraph shapes it: chunk, (mode, chunk), or with a namespace."""
    if not subgraphs:
        return (mode, chunk) if paired else chunk
    namespace: tuple[str, ...] = ()
    if mode == NESTED:
        namespace, mode, chunk = chunk
    return (namespace, mode, chunk) if paired else (namespace, chunk)


def _names(value: Sequence[str] | str | None) -> frozenset[str]:
    if not value:
        return _NO_NAMES
    return frozenset([value] if isinstance(value, str) else value)
