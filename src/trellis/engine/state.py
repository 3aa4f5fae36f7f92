"""Reading and editing a thread's history: snapshots, time travel, manual updates."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from trellis.engine.config import thread_key
from trellis.engine.durable import (
    DONE,
    ERROR,
    INTERRUPT,
    ONCE,
    RESUME,
    RETRY,
    inherit_compensations,
    record,
    restore,
    waiting_on,
)
from trellis.engine.loop import RunLoop
from trellis.engine.task import PULL, PUSH, Task, scheduled_paths, task_id
from trellis.errors import CheckpointNotFoundError, InvalidConfigError, InvalidUpdateError
from trellis.graph.reducers import shown
from trellis.persist.base import CheckpointTuple, PendingWrite, new_checkpoint_id
from trellis.persist.base import checkpoint_config as named_config
from trellis.persist.storage import canonical_json, encode_filter, metadata_matcher
from trellis.types import END, START, Interrupt, RunnableConfig, StateSnapshot, StateTask

if TYPE_CHECKING:
    from trellis.engine.compiled import CompiledStateGraph

__all__ = [
    "checkpoint_config",
    "in_namespace",
    "snapshot",
    "thread_of",
    "subgraph_configs",
    "bulk_update_loop",
    "supersteps_of",
    "update_loop",
    "with_subgraph_states",
    "writer_step",
]


def thread_of(graph: CompiledStateGraph, config: RunnableConfig | None) -> tuple[str, str | None]:
    if graph.checkpointer is None:
        raise InvalidConfigError(
            f"graph {graph.name!r} has no checkpointer, so it keeps no state: "
            "compile(checkpointer=...)"
        )
    configurable = (config or {}).get("configurable") or {}
    thread_id = configurable.get("thread_id")
    if thread_id is None:
        raise InvalidConfigError(
            f"graph {graph.name!r} keeps state per thread: "
            "config needs {'configurable': {'thread_id': ...}}"
        )
    return thread_key(thread_id), configurable.get("checkpoint_id")


def checkpoint_config(thread_id: str, checkpoint_id: str | None, ns: str = "") -> RunnableConfig:
    """The config that names one checkpoint of a thread (LangGraph's shape)."""
    return cast("RunnableConfig", named_config(thread_id, checkpoint_id, ns))


def in_namespace(
    graph: CompiledStateGraph, config: RunnableConfig | None
) -> tuple[CompiledStateGraph, str]:
    """The graph whose checkpoints ``config``'s ``checkpoint_ns`` names, over
    ``graph``'s checkpointer, and that namespace: ``(graph, "")`` for the thread's
    own. A subgraph's namespace is ``node:task_id`` (``|``-joined when nested), as
    ``stream(subgraphs=True)`` and ``StateTask.state`` show it."""
    ns = ((config or {}).get("configurable") or {}).get("checkpoint_ns") or ""
    if not ns:
        return graph, ""
    current = graph
    for part in ns.split("|"):
        name = part.split(":", 1)[0]
        node = current.plan.nodes.get(name)
        sub = node.subgraph if node is not None else None
        if sub is None:
            raise InvalidConfigError(
                f"graph {graph.name!r} has no subgraph at checkpoint_ns {ns!r}: "
                f"{current.name!r} has no subgraph node {name!r}"
            )
        if not sub.shares_saver:
            raise InvalidConfigError(
                f"subgraph node {name!r} has a checkpointer of its own: read its state "
                "from that graph, not through checkpoint_ns"
            )
        current = sub.bound(graph.checkpointer)
    return current, ns


def _subgraph_ns(node: Any, ns: str, task_id: str) -> str | None:
    """Where a subgraph node's task keeps its checkpoints in this thread (None: not
    a subgraph, or one with a saver of its own)."""
    sub = node.subgraph
    return sub.namespace(ns, task_id) if sub is not None and sub.shares_saver else None


def snapshot(
    graph: CompiledStateGraph,
    saved: CheckpointTuple | None,
    thread_id: str,
    *,
    live: bool,
    ns: str = "",
) -> StateSnapshot:
    """A ``StateSnapshot`` of ``saved`` (an empty one for an unknown thread).

    As LangGraph: a ``live`` snapshot (the thread's latest state) shows where the
    run stands, with the writes of tasks that finished in a step that did not
    commit (it stopped on an interrupt or an error) applied to ``values`` and left
    out of ``next``; otherwise (a past checkpoint, the history) it is a record of
    the step: values as it began, every task in ``next``, every interrupt raised.
    """
    if saved is None:
        return StateSnapshot(
            values={}, next=(), config=checkpoint_config(thread_id, None, ns), metadata=None,
            created_at=None, parent_config=None, tasks=(), interrupts=(),
        )  # fmt: skip
    checkpoint = saved.checkpoint
    pending = checkpoint.pending or {}
    plan = graph.plan
    nodes = plan.upcoming(
        (n for n in pending.get("nodes", ()) if n in plan.nodes),
        bool(pending.get("sends")),
        pending.get("deferred", ()),
    )
    names = scheduled_paths(pending, nodes)
    loop = RunLoop(graph.plan, checkpoint_config(thread_id, checkpoint.id), recursion_limit=1)
    loop.checkpoint_id = checkpoint.id
    by_task: dict[str, dict[str, Any]] = {}
    for write in saved.pending_writes:
        by_task.setdefault(write.task_id, {})[write.channel] = write.value
    tasks: list[StateTask] = []
    interrupts: list[Interrupt] = []
    still_to_run: list[str] = []
    finished: list[Task] = []
    for name, path in names:
        node = graph.plan.nodes.get(name, graph.plan.start)
        task = Task(loop, node, None, checkpoint.step + 1, path)
        writes = by_task.get(task.id, {})
        done = bool(writes.get(DONE))
        found = () if done and live else tuple(writes.get(INTERRUPT, ()))
        interrupts.extend(found)
        error = writes.get(ERROR)
        result = None
        if done:  # finished in a step that did not commit
            update = {k: v for k, v in writes.items() if not k.startswith("__")}
            result = shown(update)  # the user's form; the merge below needs the engine's
            if live:
                task.update = update
                finished.append(task)
        if not (done and live):
            still_to_run.append(name)
        # A subgraph's task points at its checkpoints (get_state(subgraphs=True)
        # puts the subgraph's own snapshot there), as LangGraph's does.
        child = _subgraph_ns(node, ns, task.id)
        where = (
            None
            if child is None
            else {"configurable": {"thread_id": thread_id, "checkpoint_ns": child}}
        )
        tasks.append(
            StateTask(
                id=task.id, name=name, path=path, error=error, interrupts=found, state=where,
                result=result,
            )
        )  # fmt: skip
    finished.sort(key=lambda t: t.path[0] != PULL)  # in the order a commit merges them
    try:  # as LangGraph: a step that cannot commit has no latest state
        values = loop.merged(checkpoint.values, finished)
    except InvalidUpdateError as exc:
        exc.add_note(f"reading thread {thread_id!r} at checkpoint {checkpoint.id!r}")
        raise
    return StateSnapshot(
        values={k: values[k] for k in graph.plan.channels if k in values},
        next=tuple(still_to_run),
        config=checkpoint_config(thread_id, checkpoint.id, ns),
        metadata=dict(saved.metadata),
        created_at=datetime.fromtimestamp(checkpoint.created_at, UTC).isoformat(),
        parent_config=checkpoint_config(thread_id, checkpoint.parent_id, ns)
        if checkpoint.parent_id
        else None,
        tasks=tuple(tasks),
        interrupts=tuple(interrupts),
    )


def subgraph_configs(snap: StateSnapshot) -> dict[str, RunnableConfig]:
    """The configs ``snap``'s subgraph tasks point at, by namespace."""
    return {t.state["configurable"]["checkpoint_ns"]: t.state for t in snap.tasks if t.state}


def with_subgraph_states(snap: StateSnapshot, found: Mapping[str, StateSnapshot]) -> StateSnapshot:
    """``snap`` with each subgraph task's ``state`` config replaced by the snapshot
    ``found`` has for its namespace (empty where the subgraph has not run yet, as
    LangGraph's)."""
    tasks = []
    for task in snap.tasks:
        child = found.get(task.state["configurable"]["checkpoint_ns"]) if task.state else None
        tasks.append(task._replace(state=child) if child is not None else task)
    return snap._replace(tasks=tuple(tasks))


def history(
    graph: CompiledStateGraph, config: RunnableConfig | None, **kwargs: Any
) -> Iterator[StateSnapshot]:
    q = _HistoryQuery.of(graph, config, kwargs)
    if q.checkpoint_id is not None:  # as LangGraph: a config naming one checkpoint lists it only
        saved = graph.checkpointer.get_tuple(q.thread_id, q.checkpoint_id, checkpoint_ns=q.ns)
        if saved is not None and _listed(saved, q.before, **q.kwargs):
            yield q.snapshot(saved)
        return
    listed = graph.checkpointer.list(q.thread_id, checkpoint_ns=q.ns, before=q.before, **q.kwargs)
    for saved in listed:
        yield q.snapshot(saved)


async def ahistory(
    graph: CompiledStateGraph, config: RunnableConfig | None, **kwargs: Any
) -> AsyncIterator[StateSnapshot]:
    """:func:`history` through the saver's async methods."""
    q = _HistoryQuery.of(graph, config, kwargs)
    saver = graph.checkpointer
    if q.checkpoint_id is not None:
        saved = await saver.aget_tuple(q.thread_id, q.checkpoint_id, checkpoint_ns=q.ns)
        if saved is not None and _listed(saved, q.before, **q.kwargs):
            yield q.snapshot(saved)
        return
    async for saved in saver.alist(q.thread_id, checkpoint_ns=q.ns, before=q.before, **q.kwargs):
        yield q.snapshot(saved)


@dataclass(frozen=True)
class _HistoryQuery:
    """What ``history`` and ``ahistory`` read: one thread's namespace, listed with
    ``before`` (a checkpoint id) and the saver's other ``list`` arguments."""

    target: CompiledStateGraph
    thread_id: str
    checkpoint_id: str | None
    ns: str
    before: str | None
    kwargs: dict[str, Any]

    @classmethod
    def of(
        cls, graph: CompiledStateGraph, config: RunnableConfig | None, kwargs: dict[str, Any]
    ) -> _HistoryQuery:
        thread_id, checkpoint_id = thread_of(graph, config)
        target, ns = in_namespace(graph, config)
        before = kwargs.pop("before", None)
        if isinstance(before, Mapping):  # a config, as LangGraph takes it
            before = (before.get("configurable") or {}).get("checkpoint_id")
        return cls(target, thread_id, checkpoint_id, ns, before, kwargs)

    def snapshot(self, saved: CheckpointTuple) -> StateSnapshot:
        return snapshot(self.target, saved, self.thread_id, live=False, ns=self.ns)


def _listed(
    saved: CheckpointTuple,
    before: str | None,
    *,
    filter: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> bool:
    """Whether ``list(before=, filter=, limit=)`` would include ``saved``."""
    if limit is not None and limit <= 0:
        return False
    if before is not None and not saved.checkpoint.id < before:
        return False
    if not filter:
        return True
    pairs = encode_filter(filter)
    return pairs is not None and metadata_matcher(pairs)(canonical_json(saved.metadata))


Update = tuple[Any, "str | None"]
"""One update of a superstep: its values and the node it counts as written by."""


def writer_step(saved: CheckpointTuple | None, supersteps: list[list[Update]]) -> str | None:
    """The checkpoint to read to infer ``as_node`` for the first superstep of updates
    of ``saved``: its parent, when a step of the graph made it (not an update, a fork
    or the input) and that superstep is one update without ``as_node``; else None."""
    first = supersteps[0]
    if len(first) != 1 or first[0][1] is not None:
        return None
    if saved is None or saved.metadata.get("source") != "loop":
        return None
    return saved.checkpoint.parent_id


def _writer_of(saved: CheckpointTuple | None, parent: CheckpointTuple | None) -> str | None:
    """The node an ``update_state`` without ``as_node`` counts as, as LangGraph
    infers it: the one node whose step went from ``parent`` to ``saved``
    (``START`` for the step that applied the input, or when ``saved`` still holds
    an input to apply, or when there is no checkpoint yet: the update is the
    thread's input); None when no single node made it."""
    if saved is None or "start" in (saved.checkpoint.pending or {}):
        return START
    if parent is None:
        return None
    pending = parent.checkpoint.pending or {}
    if "start" in pending:
        return START
    names = {*pending.get("nodes", ()), *(s.node for s in pending.get("sends", ()))}
    return names.pop() if len(names) == 1 else None


COPY = "__copy__"
"""``update_state(config, None, as_node=COPY)``: a copy of the checkpoint, to run on."""


def supersteps_of(supersteps: Any) -> list[list[Update]]:
    """``bulk_update_state``'s argument as lists of ``(values, as_node)``, checked:
    every superstep has an update, and one of several names its node on each.

    >>> supersteps_of([[({"n": 1}, "a"), ({"m": 2}, "b", None)]])
    [[({'n': 1}, 'a'), ({'m': 2}, 'b')]]
    """
    steps = list(supersteps)
    if not steps:
        raise ValueError("bulk_update_state: no supersteps provided")
    out: list[list[Update]] = []
    for i, superstep in enumerate(steps):
        updates: list[Update] = []
        for update in superstep:
            if not isinstance(update, tuple) or not 1 <= len(update) <= 3:
                raise InvalidUpdateError(
                    f"bulk_update_state: superstep {i} holds {update!r}, not a "
                    "StateUpdate(values, as_node, task_id)"
                )
            # task_id only names LangGraph's task for the writes; Trellis names its own.
            values, as_node = update[0], update[1] if len(update) > 1 else None
            updates.append((values, as_node))
        if not updates:
            raise ValueError(f"bulk_update_state: superstep {i} has no updates")
        if len(updates) > 1:
            for j, (_, as_node) in enumerate(updates):
                if as_node is None:
                    raise InvalidUpdateError(
                        f"bulk_update_state: superstep {i} applies {len(updates)} updates, "
                        f"so each needs as_node; update {j} has none"
                    )
                if as_node in (END, COPY):
                    raise InvalidUpdateError(
                        f"bulk_update_state: as_node={as_node!r} cannot share superstep {i} "
                        "with other updates"
                    )
        out.append(updates)
    return out


def bulk_update_loop(
    graph: CompiledStateGraph,
    config: RunnableConfig | None,
    saved: CheckpointTuple | None,
    head: CheckpointTuple | None,
    supersteps: list[list[Update]],
    parent: CheckpointTuple | None = None,
) -> RunLoop:
    """A loop whose effects save one checkpoint per superstep, each on the one
    before (one transaction: a superstep that fails leaves nothing saved)."""
    began = head.checkpoint.id if head is not None else None
    effects: list[Any] = []
    left: list[str] = []
    for i, updates in enumerate(supersteps):
        where = f"bulk_update_state, superstep {i}: " if len(supersteps) > 1 else ""
        loop = update_loop(graph, config, saved, head, updates, parent if i == 0 else None, where)
        effects += loop.effects
        if loop.waiting:
            left += [x for x in loop.waiting[1] if x not in left]
        put = loop.effects[-1].kwargs
        saved = head = CheckpointTuple(  # what the put saves, for the next superstep
            put["thread_id"], put["checkpoint_ns"], put["checkpoint"], put["metadata"],
            tuple(put["writes"]),
        )  # fmt: skip
    loop.effects = effects
    loop.waiting = (began, tuple(left)) if left else None
    return loop


def update_loop(
    graph: CompiledStateGraph,
    config: RunnableConfig | None,
    saved: CheckpointTuple | None,
    head: CheckpointTuple | None,
    updates: list[Update],
    parent: CheckpointTuple | None = None,
    where: str = "",
) -> RunLoop:
    """A loop holding the state after ``updates`` are applied as one step, each
    ``(values, as_node)`` as if ``as_node`` wrote it (several: as parallel tasks).

    With ``as_node``, its edges decide what runs next (with any target of a join
    that was already met). Without it (one update only), as LangGraph, the update
    counts as written by the node whose step made the checkpoint (from ``parent``,
    the checkpoint :func:`writer_step` names), whose edges decide;
    a node that was waiting in ``interrupt()`` and is scheduled again keeps
    waiting. When no single node made it (a parallel step, an update, the input),
    the update changes the state only.
    """
    thread_id, checkpoint_id = thread_of(graph, config)
    if checkpoint_id and saved is None:
        raise CheckpointNotFoundError(f"thread {thread_id!r} has no checkpoint {checkpoint_id!r}")
    loop = RunLoop(graph.plan, config or {}, recursion_limit=1, saver=graph.checkpointer)
    loop.expected_head = head.checkpoint.id if head is not None else None
    as_node = updates[0][1]
    if saved is not None:
        # Joins, visit counts and compensations carry on; only what runs next
        # is decided anew when the update comes from a node.
        restore(loop, saved, continue_run=True)
        if head is not None and head.checkpoint.id != saved.checkpoint.id:
            inherit_compensations(loop, head)  # an edit of an older checkpoint forks too
        if as_node == COPY:
            # A fork of saved (source="fork", one step later, what runs next the same),
            # as invoke(None, config)'s time travel makes before it runs; as
            # LangGraph, the values given are not applied.
            loop.fork()
            return loop
        loop.start_task = None
    elif as_node == COPY:
        raise CheckpointNotFoundError(f"thread {thread_id!r} has no checkpoint to copy")
    else:
        loop.step = -1  # as LangGraph: the first checkpoint of a thread made by an update is step 0
        loop.fill_defaults()
    for _, name in updates:
        if name is not None and name not in graph.plan.nodes and name not in (START, END):
            raise InvalidUpdateError(
                f"{where}update_state(as_node={name!r}): graph {graph.name!r} has no such node; "
                f"its nodes are {', '.join(map(repr, graph.plan.nodes))}"
            )
    routed = as_node if as_node is not None else _writer_of(saved, parent)
    tasks = []
    for update, name in updates:  # each as its node (or the writer) wrote it, else the input
        node = graph.plan.nodes.get(name or routed or "", graph.plan.start)
        task = Task(loop, node, None, loop.step, (PULL, node.name))
        if update is not None:
            task.accept(update)
        tasks.append(task)
    if routed is None or routed == END:  # one update (supersteps_of): the state only
        (task,) = tasks
        task.goto = []
        if task.update:
            loop._track(task.update)
        if routed == END:
            loop.next_nodes, loop.next_sends = [], []
    else:
        # As LangGraph, whose update is a step of its own: what ran before it
        # scheduled is dropped, except a join's target (its barrier was met and
        # stays met until the target runs, even an update as the target itself);
        # then what the nodes lead to.
        joined = graph.plan.join_targets
        kept = [n for n in loop.next_nodes if n in joined]
        loop.next_nodes, loop.next_sends = [], []
        # As if the nodes had just run: their routers see the update and pick what is next.
        for task in tasks:
            for branch in task.node.branches:
                args, kwargs = task.router_args(branch)
                task.route(branch, branch.router(*args, **kwargs))
        loop.commit(tasks, save=False)  # the update is recorded below
        loop.next_nodes = kept + [n for n in loop.next_nodes if n not in kept]
    loop.step += 1
    new_id = new_checkpoint_id()
    carried: list[PendingWrite] = []
    if as_node is None and saved is not None:
        still = None if routed is None else set(loop.next_nodes)
        carried = _carry_interrupts(saved, new_id, still)
    loop._effect(record(loop, "update", carried, checkpoint_id=new_id))
    # What the old head waited on and the new one does not is left behind.
    carried_ids = {i.id for w in carried if w.channel == INTERRUPT for i in w.value}
    left = tuple(i for i in waiting_on(head) if i not in carried_ids)
    if left:
        loop.waiting = (loop.expected_head, left)
    return loop


def _carry_interrupts(
    saved: CheckpointTuple, new_id: str, still: set[str] | None
) -> list[PendingWrite]:
    """An edit made while nodes wait in ``interrupt()`` keeps them waiting: all of
    them (``still`` None: what runs next is unchanged), or those of the nodes in
    ``still``, which are scheduled again.

    The same tasks are scheduled at the new checkpoint, under new ids (ids derive
    from the checkpoint), so what they kept while waiting moves to those ids: the
    pending interrupts, the answers already given, ``once()`` results and retry
    counts (else a resume would ask again and repeat a side effect).
    """
    checkpoint = saved.checkpoint
    pending = checkpoint.pending or {}
    paths = [(n, (PULL, n)) for n in pending.get("nodes", ()) if still is None or n in still]
    if still is None:
        paths += [(s.node, (PUSH, i)) for i, s in enumerate(pending.get("sends", ()))]
    moved = {
        task_id(checkpoint.id, checkpoint.step + 1, name, path): task_id(
            new_id, checkpoint.step + 2, name, path
        )
        for name, path in paths
    }
    return [
        PendingWrite(moved[w.task_id], w.task_name, w.idx, w.channel, w.value)
        for w in saved.pending_writes
        if w.channel in _KEPT_WHILE_WAITING and w.task_id in moved
    ]


_KEPT_WHILE_WAITING = frozenset({INTERRUPT, RESUME, ONCE, RETRY})
