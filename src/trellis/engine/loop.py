"""The super-step loop, free of I/O.

``RunLoop`` says which tasks run next (``tick``) and takes their results
(``commit``). It never calls a node, sleeps, or touches a database: the sync
and async drivers do that, so there is one loop and two thin drivers.

Each step: every task reads the same snapshot; updates are applied after all
finish, through the reducers, pull tasks by node name then ``Send`` tasks in
the order sent — never completion order — so runs are deterministic.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from operator import is_
from typing import TYPE_CHECKING, Any

from trellis.engine.config import thread_key
from trellis.engine.context import CURRENT_TASK
from trellis.engine.durable import (
    COMMAND_GOTO_IDX,
    COMMAND_TASK,
    GOTO,
    Effect,
    breakpoint_marker,
    pending_writes,
    record,
    restore_tasks,
)
from trellis.engine.task import PULL, PUSH, Task, checked_goto, sends_first
from trellis.errors import (
    EmptyInputError,
    GraphRecursionError,
    InvalidConfigError,
    InvalidUpdateError,
)
from trellis.graph.managed import managed_note
from trellis.graph.reducers import ABSENT, DROPPED, SPECIAL_WRITES, reduce_write
from trellis.persist.base import PendingWrite, new_checkpoint_id
from trellis.types import END, START, Command, RunnableConfig, Send

if TYPE_CHECKING:
    from trellis.engine.messages import MessageStream
    from trellis.engine.output import OutputKeys
    from trellis.engine.plan import GraphPlan, NodePlan

__all__ = ["NO_RESUME", "RunLoop"]

_NONE: frozenset[str] = frozenset()
_NO_DICT: dict[str, Any] = {}  # shared placeholders; replaced before anything is stored
_NO_BARRIERS: dict[int, set[str]] = {}
_NO_LIST: list[Any] = []  # shared, never appended to: see _effect, _compensable and commit
NO_RESUME: Any = object()


class RunLoop:
    """The state of one run: values, what is scheduled, and the step counter."""

    __slots__ = (
        "appends",
        "apply",
        "barriers",
        "breakpoints",
        "checkpoint_id",
        "checkpoint_ns",
        "compensable",
        "compensable_states",
        "compensated",
        "config",
        "configurable",
        "context",
        "deferred",
        "durability",
        "effects",
        "expected_head",
        "first_step",
        "goto",
        "head",
        "interrupts",
        "live",
        "live_values",
        "messages",
        "modes",
        "next_nodes",
        "next_sends",
        "observer",
        "options",
        "outer",
        "output_keys",
        "plan",
        "recursion_limit",
        "resume",
        "resuming",
        "resuming_tasks",
        "replayed",
        "restored_step",
        "saved_writes",
        "run_id",
        "run_metadata",
        "saved",
        "saver",
        "start_task",
        "status",
        "stopped_at_end",
        "step",
        "store",
        "subgraphs",
        "thread_id",
        "track",
        "unsaved_id",
        "updated",
        "values",
        "versions",
        "visits",
        "waiting",
        "wrote",
        "wrote_any",
    )

    def __init__(
        self,
        plan: GraphPlan,
        config: RunnableConfig,
        *,
        context: Any = None,
        recursion_limit: int,
        modes: tuple[str, ...] = (),
        saver: Any = None,
        durability: str = "sync",
        breakpoints: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset()),
        options: dict[str, Any] | None = None,
    ) -> None:
        self.plan = plan
        # Folds one task's update into a values dict through the reducers.
        self.apply: Callable[..., set[str] | None] = plan.apply
        self.config = config
        self.configurable: dict[str, Any] = config.get("configurable") or _NO_DICT
        if "max_concurrency" in config:  # read by the drivers from the config itself
            _check_concurrency(config["max_concurrency"])
        self.context = context
        self.recursion_limit = recursion_limit
        self.modes = modes
        # Where node chunks go while a step runs, when they are streamed live.
        self.live: Callable[[tuple[str, Any]], object] | None = None
        # The task whose node runs this run, if any: its store and its messages
        # stream (which this run shares, or keeps its models away from) carry over.
        outer = CURRENT_TASK.get()
        outer_messages = outer.loop.messages if outer is not None else None
        self.messages: MessageStream | None = None  # stream_mode="messages", or muted
        if "messages" in modes:
            from trellis.engine import messages  # not at import: few runs stream them

            self.messages = messages.MessageStream.for_run(outer_messages)
        elif outer_messages is not None:
            self.messages = outer_messages.muted()
        self.values: dict[str, Any] = {}
        self.step = -2  # the step of the last committed checkpoint; input runs at step + 1
        # The step recursion_limit counts from. Kept rather than the step the run
        # stops at: that is a large int, an object per run; this one is usually small.
        self.first_step = 0
        # What the next step runs: shared empty lists until commit() adds something,
        # so a run waiting in a node holds no list for the step after it.
        self.next_nodes: list[str] = _NO_LIST
        self.next_sends: list[Send] = _NO_LIST
        self.barriers: dict[int, set[str]] = _NO_BARRIERS
        self.visits: dict[str, int] = _NO_DICT
        # Empty frozensets are shared: a run that never defers allocates no set.
        self.deferred: set[str] | frozenset[str] = _NONE
        self.start_task: Task | None = None
        self.run_id: str | None = None
        self.checkpoint_id: str | None = None
        self.run_metadata: dict[str, Any] | None = None  # from the config, on first save
        # durability="exit": None while checkpoint_id is a saved checkpoint's. False:
        # the state the step's tasks are planned from has no checkpoint yet, and the
        # first task id wanted mints one (True: checkpoint_id is that minted id).
        # See Task.id and _keep_pending.
        self.unsaved_id: bool | None = None
        self.wrote = False
        self.wrote_any = False
        self.status = "running"
        # interrupt_after matched the last step: nothing is left to pause before, but
        # LangGraph still marks the pause in the stream (an empty __interrupt__).
        self.stopped_at_end = False
        self.interrupts: list[Any] = _NO_LIST  # replaced (never appended to) on suspend
        # (head id, interrupt ids) of what the thread's head waited on when the run
        # began, if anything (see left_behind).
        self.waiting: tuple[str | None, tuple[str, ...]] | None = None
        self.live_values: dict[str, Any] | None = None  # set when a step stops on interrupts
        # Persistence: the saver, where this run writes, and change tracking so a
        # checkpoint stores only what changed (and only what was appended).
        self.saver = saver
        self.track = saver is not None
        self.durability = durability
        # As the savers key threads: {"thread_id": 1} (as LangGraph's tutorials) is "1".
        thread_id = self.configurable.get("thread_id")
        self.thread_id: str | None = (
            None if thread_id is None else thread_key(thread_id) if saver else str(thread_id)
        )
        # "" for a graph's own checkpoints; "node:task" for a subgraph run inside a task.
        self.checkpoint_ns: str = self.configurable.get("checkpoint_ns") or ""
        self.head: str | None = None
        self.expected_head: str | None = None
        self.versions: dict[str, str] = {} if saver is not None else _NO_DICT
        self.updated: set[str] = set() if saver is not None else _NONE  # type: ignore[assignment]
        self.appends: dict[str, list[Any] | None] = {} if saver is not None else _NO_DICT
        # Saver calls to make, and (checkpoint, metadata) put this step (for
        # stream_mode="debug"): a run without a saver never allocates these lists.
        self.effects: list[Any] = _NO_LIST
        self.saved: list[tuple[Any, Any]] = _NO_LIST
        self.subgraphs = False  # stream(subgraphs=True): subgraph chunks come out too
        self.breakpoints = breakpoints
        self.options: dict[str, Any] = options or _NO_DICT  # compile() options
        # compile(store=...), else the store of the run whose node runs this one.
        self.store: Any = self.options.get("store")
        if self.store is None and outer is not None:
            self.store = outer.loop.store
        self.observer: Any = None  # a RunObserver when someone watches this run
        # (task, attempt) of the node this run is inside, when that node has a
        # timeout: a timed-out attempt's thread runs on, and must stop writing.
        self.outer: tuple[Task, int] | None = None
        self.output_keys: OutputKeys | None = None  # invoke/stream(output_keys=...)
        # Completed nodes that have a compensation: [node, checkpoint id, task id] in
        # order; without a checkpointer, the state after each is kept in memory instead.
        self.compensable: list[list[Any]] = _NO_LIST
        # "exit" saves nothing mid-run, so those states live in memory too.
        self.compensable_states: list[dict[str, Any]] | None = (
            _NO_LIST if saver is None or durability == "exit" else None
        )
        # How the compensations of those entries went ("ok" or the error), keyed by
        # durable.compensation_key, as the thread's earlier rollbacks left them.
        self.compensated: dict[str, Any] = _NO_DICT
        self.resuming = False
        self.resuming_tasks = False
        # Ids of the tasks a resumed step took as finished from their saved writes
        # (task ids are unique to a step, so this never needs clearing).
        self.replayed: frozenset[str] = _NONE
        self.restored_step: int | None = None  # the step of the checkpoint a resume loaded
        self.saved_writes: tuple[Any, ...] | None = None
        self.resume: Any = NO_RESUME
        # The goto of a Command(resume=..., goto=...), as a list: as given, then as
        # added to the resumed step (checked; saved if the step stops again).
        self.goto: list[Any] | None = None

    # -- starting ---------------------------------------------------------

    def fill_defaults(self) -> None:
        """Give every key without a value its default (a reducer's empty list): a
        thread's first checkpoint holds them all, whether a run or an update made it."""
        for key, make in self.plan.initial.items():
            if key not in self.values:
                self.values[key] = make()
                if self.track:
                    self.updated.add(key)

    def begin(self, value: Any) -> None:
        """Start a run from ``value`` (the graph input).

        As in LangGraph: the input checkpoint is step ``s + 1`` (``s`` = the
        thread's last step, -2 for a new thread), the input is applied by the
        START task at ``s + 2`` and nodes run from ``s + 3``; ``recursion_limit``
        counts the START step too.
        """
        if self.run_id is None and self.saver is not None:  # unsaved runs need none
            self.run_id = uuid.uuid4().hex
        if value is None:
            raise EmptyInputError("Received no input for __start__")
        self.fill_defaults()
        update = value if isinstance(value, Command) else self.check_input(value)
        self.first_step = self.step + 2
        self.step += 1
        self.visits = _NO_DICT
        self.next_nodes = _NO_LIST
        self.next_sends = _NO_LIST
        self.deferred = _NONE
        continues = isinstance(value, Command) and self.checkpoint_id is not None
        start = self.plan.command_start if continues else self.plan.start
        self.start_task = Task(self, start, update, self.step + 1, (PULL, START))
        if self.saver is not None and self.durability != "exit":
            self._effect(record(self, "input"))
        elif self.saver is not None:
            self.unsaved_id = False

    def apply_input_update(self, command: Command[Any]) -> None:
        """``Command(resume=..., update=...)``: write ``update`` into the state first."""
        task = Task(self, self.plan.start, None, self.step, (PULL, START))
        task.accept(Command(update=command.update))
        if task.update:  # a step of its own
            if self.track:
                self._track(task.update)
            else:
                self.apply(self.values, task.update)

    def check_input(self, value: Any) -> dict[str, Any]:
        info = self.plan.input_info
        if info.kind == "pydantic" and isinstance(value, Mapping):
            try:
                model = info.schema.model_validate(value)
            except Exception as exc:
                raise InvalidUpdateError(
                    f"graph input does not fit {info.schema.__name__}: {exc}"
                ) from exc
            # Validated values, but only the keys given: defaults are not writes.
            value = {k: getattr(model, k) for k in value if k in type(model).model_fields}
        if type(value) is dict and info.kind != "dict" and value.keys() <= info.keys:
            return value  # the common case: nothing to convert or report
        if not isinstance(value, Mapping):
            converted = info.to_update(value) if info.kind != "typeddict" else None
            if converted is None:
                raise InvalidUpdateError(
                    f"graph input must be a dict of state keys, got {type(value).__name__}: "
                    f"{value!r:.80}"
                )
            return converted
        allowed = info.keys if info.kind != "dict" else self.plan.writable
        unknown = [k for k in value if k not in allowed]
        if unknown:
            raise InvalidUpdateError(
                f"graph input has unknown key(s) {', '.join(map(repr, unknown))}; "
                f"the input schema has {', '.join(sorted(allowed))}"
                + managed_note(unknown, self.plan.managed)
            )
        return dict(value)

    # -- planning -----------------------------------------------------------

    def tick(self) -> list[Task]:
        """The tasks of the next step, or an empty list when the run is done."""
        if self.start_task is not None:
            task, self.start_task = self.start_task, None
            self.step = task.step
            return [task]
        names = self.next_nodes
        sends = self.next_sends
        # Before breakpoints, as LangGraph: a pause must not hide a runaway loop.
        if self.step + 1 - self.first_step > self.recursion_limit:
            pending = [*names, *(s.node for s in sends), *sorted(self.deferred)]
            raise GraphRecursionError(
                f"Recursion limit of {self.recursion_limit} reached without hitting a stop "
                f"condition; still scheduled: {', '.join(map(repr, pending)) or 'nothing'}. "
                "You can increase the limit by setting the `recursion_limit` config key."
            )
        before = self.breakpoints[0]
        upcoming = self.plan.upcoming
        resuming = self.resuming
        if (
            before
            and not resuming
            and _hits(before, upcoming(names, bool(sends), self.deferred), sends)
        ):
            self.status = "interrupt_before"
            return []
        self.resuming = False
        if not names and not sends:
            if not self.deferred:
                return []
            names = sorted(self.deferred)
            self.deferred = _NONE
            release = True
        else:
            release = False
            if len(names) > 1:
                names = sorted(set(names))
        self.next_nodes = _NO_LIST
        self.next_sends = _NO_LIST
        self.step += 1
        nodes = self.plan.nodes
        step = self.step
        values = self.state_at(step)
        tasks = []
        for name in names:
            node = nodes[name]
            if node.defer and not release:
                self.deferred = self.deferred | {name}
                continue
            if node.max_visits is not None:
                visited = self._visit(node)
                if visited is None:
                    continue
                node = visited
            tasks.append(Task(self, node, node.make_input(values), step, node.pull_path))
        for i, send in enumerate(sends):
            tasks.append(Task(self, nodes[send.node], send.arg, step, (PUSH, i)))
        if not tasks:  # only deferred nodes were triggered: they run now
            self.step -= 1
            # The breakpoints were checked for them above (upcoming() releases them):
            # a resumed run that passed its pause must not stop there again.
            self.resuming = resuming
            return self.tick()
        self.resuming_tasks = False
        if self.saved_writes is not None:
            self._reattach(tasks)
        return tasks

    def state_at(self, step: int) -> dict[str, Any]:
        """What the nodes of ``step`` read: the state, with the managed keys if the
        graph has any (else the state itself: node inputs copy what they take)."""
        if not self.plan.managed:
            return self.values
        view = dict(self.values)
        self.add_managed(view, step)
        return view

    def add_managed(self, view: dict[str, Any], step: int) -> None:
        """Put the graph's managed keys (RemainingSteps, IsLastStep) into ``view`` as
        they stand in ``step``: the steps ``recursion_limit`` leaves, this one included."""
        remaining = self.recursion_limit - (step - self.first_step)
        for key, get in self.plan.managed.items():
            view[key] = get(remaining)

    def _reattach(self, tasks: list[Task]) -> None:
        """Resuming a step that did not commit: reuse what finished, answer interrupts."""
        from trellis.engine.interrupts import assign_resume

        writes, self.saved_writes = self.saved_writes or (), None
        # Targets of a Command(resume=..., goto=...) join the step before its saved
        # writes are read back: given now, or by an earlier resume of this step
        # that stopped again (their finished work is among those writes then).
        goto = [t for w in writes if w.task_id == COMMAND_TASK for t in w.value]
        goto += self.goto or ()
        if goto:
            self._add_goto(tasks, goto)
        pending = restore_tasks(tasks, writes)
        self.resuming_tasks = True
        self.replayed = frozenset(t.id for t in tasks if t.done)
        if self.resume is not NO_RESUME:
            assign_resume(tasks, pending, self.resume, thread_id=self.thread_id)
            self.resume = NO_RESUME
        else:  # no answer given: interrupted nodes run again and ask again
            for task in tasks:
                task.interrupts = []

    def _add_goto(self, tasks: list[Task], goto: list[Any]) -> None:
        """``Command(resume=..., goto=...)``: as LangGraph, the targets run in the
        resumed step, beside the nodes it resumes (pull tasks by name, then Sends)."""
        step = tasks[0].step
        nodes = self.plan.nodes
        who = f"Command(resume=...) for thread {self.thread_id!r}"
        self.goto = checked_goto(nodes, goto, who)
        pulls = [t for t in tasks if t.path[0] == PULL]
        pushes = [t for t in tasks if t.path[0] != PULL]
        running = {t.name for t in pulls}
        values = self.state_at(step)
        for target in self.goto:
            if type(target) is str:
                if target not in running:
                    node = nodes[target]
                    inputs = node.make_input(values)
                    pulls.append(Task(self, node, inputs, step, node.pull_path))
                    running.add(target)
            else:
                pushes.append(Task(self, nodes[target.node], target.arg, step, (PUSH, len(pushes))))
        pulls.sort(key=lambda t: t.name)
        tasks[:] = [*pulls, *pushes]

    def saves_writes(self) -> bool:
        """Whether writes made mid-step (finished siblings, retries, ``once``
        results) are saved now: with a saver, a checkpoint to hang them on, and
        not under ``durability="exit"``, whose one save at the end takes them."""
        return (
            self.saver is not None and self.durability != "exit" and self.checkpoint_id is not None
        )

    def _effect(self, effect: Any) -> None:
        if self.effects is _NO_LIST:
            self.effects = []
        self.effects.append(effect)

    def _compensable(self, entry: list[Any]) -> None:
        if self.compensable is _NO_LIST:
            self.compensable = []
        self.compensable.append(entry)

    def _compensable_state(self, state: dict[str, Any]) -> None:
        states = self.compensable_states
        if states is None or states is _NO_LIST:
            states = self.compensable_states = []
        states.append(state)

    def _visit(self, node: NodePlan) -> NodePlan | None:
        if self.visits is _NO_DICT:
            self.visits = {}
        count = self.visits.get(node.name, 0) + 1
        self.visits[node.name] = count
        if node.max_visits is not None and count > node.max_visits:
            if node.fallback is None:
                raise GraphRecursionError(
                    f"node {node.name!r} was entered {count} times in one run "
                    f"(max_visits={node.max_visits}) and has no fallback"
                )
            if node.fallback == END:
                return None  # the loop ends here
            return self.plan.nodes[node.fallback]
        return node

    # -- applying results ---------------------------------------------------

    def commit(self, tasks: list[Task], *, save: bool = True) -> None:
        """Apply the step's updates in task order and schedule the next step.

        ``save=False``: take no checkpoint (``update_state`` records its own).
        """
        values = self.values
        if len(tasks) > 1:
            self.check_conflicts(tasks)
        if self.output_keys is not None:
            self.output_keys.note(tasks)
        track = self.track
        self.wrote = False
        # The reducer keys an Overwrite set this step (made on the first: most runs
        # never see one), shared by the step's updates.
        overwritten = None
        for task in tasks:
            update = task.update
            if update is not None:
                self.wrote = self.wrote_any = True
                try:  # free in 3.11 unless it raises
                    if track:
                        overwritten = self._track(update, overwritten)
                    else:
                        overwritten = self.apply(values, update, overwritten)
                except Exception as exc:
                    exc.add_note(_applying(task, update))
                    raise
        next_nodes = self.next_nodes
        if next_nodes is _NO_LIST:
            next_nodes = self.next_nodes = []
        for task in tasks:
            node = task.node
            # A task routed elsewhere (by a gate or on_error) does not fire its edges.
            if not task.halt:
                next_nodes.extend(node.static_next)
                for join in node.joins:
                    if self.barriers is _NO_BARRIERS:
                        self.barriers = {}
                    seen = self.barriers.setdefault(join.index, set())
                    seen.add(task.name)
                    if seen >= join.sources:
                        next_nodes.append(join.target)
                        del self.barriers[join.index]
            for target in task.goto:
                if type(target) is str:
                    next_nodes.append(target)
                else:
                    if self.next_sends is _NO_LIST:
                        self.next_sends = []
                    self.next_sends.append(target)
        compensable = (
            [t for t in tasks if t.node.compensate is not None and t.done and not t.halt]
            if self.plan.compensating
            else _NO_LIST
        )
        if save and self.saver is not None and self.durability != "exit":
            new_id = new_checkpoint_id() if compensable else None
            for task in compensable:
                self._compensable([task.name, new_id, task.id])
            self._effect(record(self, "loop", checkpoint_id=new_id))
        else:
            for task in compensable:
                self._compensable([task.name, None, task.id])
                if self.compensable_states is not None:
                    self._compensable_state(dict(self.values))
            if save and self.saver is not None:  # "exit": the next step's id is minted later
                self.unsaved_id = False
        after = self.breakpoints[1]
        if after and any(t.name in after or "*" in after for t in tasks if t.name != START):
            if next_nodes or self.next_sends or self.deferred:  # as LangGraph: held nodes wait too
                self.status = "interrupt_after"
            else:
                self.stopped_at_end = True

    def fork(self) -> None:
        """Start a branch from the restored past checkpoint, as LangGraph's time
        travel does: a copy of it (metadata ``source="fork"``, one step later) is
        saved first, and the step runs again on it, without the writes, errors or
        interrupt answers recorded for it before. So whatever the step writes or
        asks belongs to the branch, even if it stops before it commits."""
        self.step += 1
        self.restored_step = self.step
        self.first_step = self.step + 1
        if self.start_task is not None:  # a fork of an input checkpoint: the input, later
            start = self.start_task
            self.start_task = Task(self, start.node, start.input, self.step + 1, start.path)
        self._effect(record(self, "fork"))

    def suspend(self, tasks: list[Task]) -> None:
        """Some tasks called ``interrupt()``: keep the step's results pending.

        What the run returns and streams last shows the finished tasks' writes
        applied, as LangGraph's does (and ``get_state`` then): they are saved as
        pending writes, not in a checkpoint, so only this view of them changes.
        Finished writes that conflict raise ``InvalidUpdateError`` now, as in
        LangGraph, after the effects that save them are queued.
        """
        self.status = "interrupted"
        self.interrupts = [i for t in sends_first(tasks) for i in t.interrupts]
        self._keep_pending(tasks)
        finished = [t for t in tasks if t.done and not t.interrupts and t.update]
        if finished:
            self.live_values = self.merged(self.values, finished)

    def fail(self, tasks: list[Task]) -> None:
        """A task failed for good: keep what the others finished, for a resume."""
        self.status = "failed"
        if self.saver is not None:
            self._keep_pending(tasks)
        if self.plan.compensating:
            self._compensable_unsaved(tasks)

    def _compensable_unsaved(self, tasks: list[Task]) -> None:
        """The finished tasks of a step that failed did their side effects too, so
        the rollback undoes them first, each with the state as of its own update.

        Called after the step's last save: these entries live in this loop only.
        The step's checkpoint lists only what committed; their writes wait on it,
        where ``graph.compensate`` finds them, and when a resumed step commits
        them they are entered under the same task ids, which key the saga's
        record, so none is undone twice.
        """
        for task in tasks:
            if task.node.compensate is None or not task.done or task.halt:
                continue  # a failure routed elsewhere, or a gate's no: nothing was done
            update = task.update or _NO_DICT
            if self.compensable_states is None:
                self._compensable([task.name, self.checkpoint_id, task.id, update])
            else:
                state = dict(self.values)
                self.apply(state, update)
                self._compensable([task.name, None, task.id])
                self._compensable_state(state)

    def left_behind(self, *, failed: bool = False) -> list[str]:
        """Once the run's last save is made: the interrupts the head waited on when
        the run began that the new head does not (asked once, answered never).
        Each is reported once."""
        if self.waiting is None:
            return []
        (began_at, waiting), self.waiting = self.waiting, None
        if (failed or self.status == "failed") and self.expected_head == began_at:
            # Failed in the step it resumed: the head still waits, and a re-run of
            # its tasks asks the very same interrupts again.
            return []
        still = {i.id for i in self.interrupts} if self.status == "interrupted" else _NONE
        return [i for i in waiting if i not in still]

    def finish(self) -> None:
        """The run stops (done, or at a breakpoint): the one save of ``exit`` mode."""
        if (
            self.saver is not None
            and self.durability == "exit"
            and (self.updated or self.head is None)
        ):
            self._effect(record(self, "loop"))
        paused = self.status in ("interrupt_before", "interrupt_after")
        if paused and self.saver is not None and self.checkpoint_id is not None:
            # Waiting at a breakpoint is waiting for a person, like interrupt(): a
            # marker on the head keeps retention (prune) from removing the thread.
            self._effect(self._writes_effect([breakpoint_marker()]))

    def _keep_pending(self, tasks: list[Task]) -> None:
        """The step did not commit: its tasks stay scheduled, their results pending."""
        self.step -= 1
        nothing_new = self.step == self.restored_step and not self.updated
        if (self.durability != "exit" and not self.updated) or nothing_new:
            # (With "exit", a resume that failed again adds no checkpoint, as in LangGraph.)
            writes = pending_writes(tasks)
            if self.goto:  # the checkpoint does not schedule them: say so
                goto = PendingWrite(COMMAND_TASK, START, COMMAND_GOTO_IDX, GOTO, self.goto)
                writes.append(goto)
            self._effect(self._writes_effect(writes))
            return
        # Nothing was saved during the run: save it now, with this step's tasks still
        # to run, under the id their own ids derive from (minted when the first was
        # wanted), so a resume plans them with the ids this run's attempts saw.
        self.next_nodes = [t.name for t in tasks if t.path[0] == PULL and t.name != START]
        self.next_sends = [Send(t.name, t.input) for t in tasks if t.path[0] == PUSH]
        if tasks and tasks[0].name == START:
            self.start_task = tasks[0]
        if self.unsaved_id is not True:  # no id minted for this step's tasks
            self.checkpoint_id = new_checkpoint_id()
            for task in tasks:
                task._id = None
        self.unsaved_id = None
        writes = pending_writes(tasks)
        self._effect(record(self, "loop", writes, checkpoint_id=self.checkpoint_id))

    def _writes_effect(self, writes: list[Any]) -> Any:
        return Effect(
            "put_writes",
            {
                "thread_id": self.thread_id,
                "checkpoint_id": self.checkpoint_id,
                "writes": writes,
                "checkpoint_ns": self.checkpoint_ns,
            },
        )

    def merged(self, values: Mapping[str, Any], finished: list[Task]) -> dict[str, Any]:
        """A copy of ``values`` with the updates of ``finished`` tasks (in commit order)
        applied, as a step that commits would; conflicting writes raise."""
        self.check_conflicts(finished)
        out = dict(values)
        overwritten = None
        for task in finished:
            try:
                overwritten = self.apply(out, task.update or {}, overwritten)
            except Exception as exc:
                exc.add_note(_applying(task, task.update or {}))
                raise
        return out

    def check_conflicts(self, tasks: list[Task]) -> None:
        reducers = self.plan.reducers
        writers: dict[str, Task] = {}
        for task in tasks:
            if not task.update:
                continue
            for key in task.update:
                if key in reducers:
                    continue
                other = writers.get(key)
                if other is not None:
                    raise InvalidUpdateError(
                        f"state key {key!r} was written by both {_writer(other)!r} and "
                        f"{_writer(task)!r} in the same step, and it keeps only one value. "
                        "Give it a reducer, e.g. Annotated[list, operator.add], or write it "
                        "from one node only"
                    )
                writers[key] = task

    def _track(
        self, update: Mapping[str, Any], overwritten: set[str] | None = None
    ) -> set[str] | None:
        """``apply`` for a checkpointed run, noting what changed and what was appended;
        ``overwritten`` as ``GraphPlan.apply`` takes and returns it."""
        values, reducers, updated = self.values, self.plan.reducers, self.updated
        appendable = self.plan.append_channels
        appends = self.appends
        for key, value in update.items():
            old = values.get(key, ABSENT)
            reducer = reducers.get(key)  # as apply(), inlined: this runs for every write
            if reducer is None:
                new = value
            elif overwritten is None and type(value) not in SPECIAL_WRITES:
                new = value if old is ABSENT else reducer(old, value)
            else:
                new, overwritten = reduce_write(reducer, key, old, value, overwritten)
                if new is DROPPED:
                    continue
            values[key] = new
            updated.add(key)
            if key not in appendable:
                continue
            if old is ABSENT or type(new) is not list or type(old) is not list:
                appends[key] = None  # stored whole (an Overwrite may write anything)
                continue
            n = len(old)
            # Appended iff the old items are still there, the very same objects.
            if len(new) >= n and all(map(is_, old, new)):
                items = appends.get(key, [])
                if items is not None:
                    appends[key] = [*items, *new[n:]]
            else:
                appends[key] = None
        return overwritten

    # -- reading ------------------------------------------------------------

    def output(self) -> dict[str, Any]:
        values = self.values if self.live_values is None else self.live_values
        out = {k: values[k] for k in self.plan.output_keys if k in values}
        if self.interrupts:
            out["__interrupt__"] = list(self.interrupts)
        return out

    def result(self) -> Any:
        """What ``invoke`` returns: the output state, or None if nothing was ever written."""
        if not self.wrote_any and not self.interrupts:
            return None
        keys = self.output_keys
        if keys is None:
            return self.output()
        values = self.values if self.live_values is None else self.live_values
        if self.interrupts:
            return keys.with_interrupts(values, list(self.interrupts))
        # As LangGraph, whose invoke returns the last values chunk: none was made
        # unless a step wrote one of the keys or a resumed run showed where it stood.
        return keys.values(values) if keys.shown else None

    def values_chunk(self, values: dict[str, Any] | None = None) -> Any:
        """The whole state (or ``values``), in schema order (``stream_mode="values"``
        is not filtered by the output schema, as in LangGraph), or the caller's
        ``output_keys`` of it."""
        values = self.values if values is None else values
        chunk = {k: values[k] for k in self.plan.channels if k in values}
        return chunk if self.output_keys is None else self.output_keys.values(chunk)


def _hits(breakpoints: frozenset[str], names: list[str], sends: list[Send]) -> bool:
    """Whether a step running ``names`` and ``sends`` stops at one of ``breakpoints``."""
    if not names and not sends:
        return False
    return (
        "*" in breakpoints
        or any(n in breakpoints for n in names)
        or any(s.node in breakpoints for s in sends)
    )


def _applying(task: Task, update: Mapping[str, Any]) -> str:
    """The note on an error raised while ``task``'s ``update`` is applied."""
    keys = ", ".join(map(repr, update))
    return f"while applying the update of node {task.name!r} (keys {keys})"


def _writer(task: Task) -> str:
    """How a conflict error names a task: its node, and which Send it came from."""
    return task.name if task.path[0] == PULL else f"{task.name} (Send #{task.path[1]})"


def _check_concurrency(limit: Any) -> None:
    """``config["max_concurrency"]``: how many of a step's tasks may run at once."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidConfigError(
            f"config max_concurrency must be a whole number of at least 1, got {limit!r}"
        )
