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
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from trellis.engine.task import PULL, PUSH, Task
from trellis.errors import GraphRecursionError, InvalidUpdateError
from trellis.types import START, Command, RunnableConfig, Send

if TYPE_CHECKING:
    from trellis.engine.plan import GraphPlan, NodePlan

__all__ = ["MISSING", "RunLoop"]

MISSING: Any = object()


class RunLoop:
    """The state of one run: values, what is scheduled, and the step counter."""

    __slots__ = (
        "appends",
        "barriers",
        "checkpoint_id",
        "config",
        "configurable",
        "context",
        "deferred",
        "modes",
        "next_nodes",
        "next_sends",
        "plan",
        "recursion_limit",
        "run_id",
        "start_task",
        "step",
        "stop",
        "track",
        "updated",
        "values",
        "visits",
    )

    def __init__(
        self,
        plan: GraphPlan,
        config: RunnableConfig,
        *,
        context: Any = None,
        recursion_limit: int,
        modes: tuple[str, ...] = (),
        track: bool = False,
    ) -> None:
        self.plan = plan
        self.config = config
        self.configurable: dict[str, Any] = config.get("configurable") or {}
        self.context = context
        self.recursion_limit = recursion_limit
        self.modes = modes
        self.values: dict[str, Any] = {}
        self.step = -1
        self.stop = recursion_limit
        self.next_nodes: list[str] = []
        self.next_sends: list[Send] = []
        self.barriers: dict[int, set[str]] = {}
        self.visits: dict[str, int] = {}
        self.deferred: set[str] = set()
        self.start_task: Task | None = None
        self.run_id: str | None = None
        self.checkpoint_id: str | None = None
        # Change tracking for checkpoints: which keys changed, what was appended.
        self.track = track
        self.updated: set[str] = set()
        self.appends: dict[str, list[Any]] = {}

    # -- starting ---------------------------------------------------------

    def begin(self, value: Any) -> None:
        """Start a fresh run from ``value`` (the graph input) at step -1."""
        if self.run_id is None:
            self.run_id = uuid.uuid4().hex
        for key, make in self.plan.initial.items():
            if key not in self.values:
                self.values[key] = make()
                self.updated.add(key)
        if isinstance(value, Command):
            update = value
        else:
            update = self.check_input(value)
        self.stop = self.step + 1 + self.recursion_limit
        self.visits = {}
        task = Task(self, self.plan.start, update, self.step, (PULL, START))
        self.start_task = task

    def check_input(self, value: Any) -> dict[str, Any]:
        info = self.plan.input_info
        if info.kind == "pydantic" and isinstance(value, Mapping):
            try:
                value = info.schema.model_validate(value)
            except Exception as exc:
                raise InvalidUpdateError(f"graph input does not fit {info.schema.__name__}: {exc}") from exc
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
            )
        return dict(value)

    # -- planning -----------------------------------------------------------

    def tick(self) -> list[Task]:
        """The tasks of the next step, or an empty list when the run is done."""
        if self.start_task is not None:
            task, self.start_task = self.start_task, None
            return [task]
        names = self.next_nodes
        sends = self.next_sends
        if not names and not sends:
            if not self.deferred:
                return []
            names = sorted(self.deferred)
            self.deferred = set()
            release = True
        else:
            release = False
            if len(names) > 1:
                names = sorted(set(names))
        self.next_nodes = []
        self.next_sends = []
        self.step += 1
        if self.step > self.stop:
            pending = [*names, *(s.node for s in sends)]
            raise GraphRecursionError(
                f"Recursion limit of {self.recursion_limit} reached without hitting a stop "
                f"condition; still scheduled: {', '.join(map(repr, pending))}. Raise the limit "
                "with config={'recursion_limit': ...} if the loop is intended."
            )
        nodes = self.plan.nodes
        values = self.values
        step = self.step
        tasks = []
        for name in names:
            node = nodes[name]
            if node.defer and not release:
                self.deferred.add(name)
                continue
            if node.max_visits is not None:
                node = self._visit(node)
            tasks.append(Task(self, node, node.make_input(values), step, (PULL, node.name)))
        for i, send in enumerate(sends):
            tasks.append(Task(self, nodes[send.node], send.arg, step, (PUSH, i)))
        if not tasks:  # only deferred nodes were triggered: they run now
            self.step -= 1
            return self.tick()
        return tasks

    def _visit(self, node: NodePlan) -> NodePlan:
        count = self.visits.get(node.name, 0) + 1
        self.visits[node.name] = count
        if node.max_visits is not None and count > node.max_visits:
            if node.fallback is None:
                raise GraphRecursionError(
                    f"node {node.name!r} was entered {count} times in one run "
                    f"(max_visits={node.max_visits}) and has no fallback"
                )
            return self.plan.nodes[node.fallback]
        return node

    # -- applying results ---------------------------------------------------

    def apply(self, values: dict[str, Any], update: Mapping[str, Any]) -> None:
        """Fold one task's update into ``values`` through the reducers."""
        reducers = self.plan.reducers
        for key, value in update.items():
            reducer = reducers.get(key)
            if reducer is None:
                values[key] = value
            else:
                current = values.get(key, MISSING)
                values[key] = value if current is MISSING else reducer(current, value)

    def commit(self, tasks: list[Task]) -> None:
        """Apply the step's updates in task order and schedule the next step."""
        values = self.values
        if len(tasks) > 1:
            self._check_conflicts(tasks)
        track = self.track
        for task in tasks:
            update = task.update
            if update:
                if track:
                    self._track(update)
                else:
                    self.apply(values, update)
        barriers = self.barriers
        next_nodes = self.next_nodes
        for task in tasks:
            node = task.node
            next_nodes.extend(node.static_next)
            for join in node.joins:
                seen = barriers.setdefault(join.index, set())
                seen.add(task.name)
                if seen >= join.sources:
                    next_nodes.append(join.target)
                    del barriers[join.index]
            for target in task.goto:
                if type(target) is str:
                    next_nodes.append(target)
                else:
                    self.next_sends.append(target)

    def _check_conflicts(self, tasks: list[Task]) -> None:
        reducers = self.plan.reducers
        writers: dict[str, str] = {}
        for task in tasks:
            if not task.update:
                continue
            for key in task.update:
                if key in reducers:
                    continue
                other = writers.get(key)
                if other is not None:
                    raise InvalidUpdateError(
                        f"state key {key!r} was written by both {other!r} and {task.name!r} in "
                        "the same step, and it keeps only one value. Give it a reducer, e.g. "
                        f"Annotated[list, operator.add], or write it from one node only"
                    )
                writers[key] = task.name

    def _track(self, update: Mapping[str, Any]) -> None:
        values = self.values
        appendable = self.plan.append_channels
        for key, value in update.items():
            old = values.get(key, MISSING)
            self.apply(values, {key: value})
            self.updated.add(key)
            if key not in appendable or old is MISSING:
                self.appends.pop(key, None)
                self.appends[key] = None  # type: ignore[assignment]
                continue
            new = values[key]
            n = len(old)
            if len(new) >= n and all(map(_same, old, new)):
                items = self.appends.get(key, [])
                if items is not None:
                    self.appends[key] = [*items, *new[n:]]
            else:
                self.appends[key] = None  # type: ignore[assignment]

    # -- reading ------------------------------------------------------------

    def output(self) -> dict[str, Any]:
        values = self.values
        return {k: values[k] for k in self.plan.output_keys if k in values}

    def scheduled(self) -> tuple[str, ...]:
        names = sorted(set(self.next_nodes))
        return (*names, *(s.node for s in self.next_sends))

    def chunks(self, tasks: list[Task]) -> Iterator[tuple[str, Any]]:
        """Stream output for the step just committed, in the requested modes."""
        modes = self.modes
        visible = [t for t in tasks if t.name != START]
        if "custom" in modes:
            for task in visible:
                for chunk in task.custom or ():
                    yield "custom", chunk
        if "debug" in modes:
            for task in visible:
                yield "debug", _debug_result(task)
        if "updates" in modes:
            for task in visible:
                yield "updates", {task.name: task.output}
        if "values" in modes:
            yield "values", self.output()


def _same(a: Any, b: Any) -> bool:
    return a is b


def _debug_result(task: Task) -> dict[str, Any]:
    return {
        "type": "task_result",
        "step": task.step,
        "payload": {
            "id": task.id,
            "name": task.name,
            "error": None,
            "result": list((task.update or {}).items()),
            "interrupts": [],
        },
    }


def debug_start(task: Task) -> dict[str, Any]:
    return {
        "type": "task",
        "step": task.step,
        "payload": {
            "id": task.id,
            "name": task.name,
            "input": task.input,
            "triggers": (task.path[1],) if task.path[0] == PULL else ("__pregel_push",),
        },
    }
