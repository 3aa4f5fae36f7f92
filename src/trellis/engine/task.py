"""A task: one node call in one super-step, and the pure work around it.

Everything here is free of I/O: building the node's arguments, checking what
it returned, computing what its conditional edges see and where they lead.
The drivers (``engine.drivers``) do the calling.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from trellis.engine.context import CURRENT_ATTEMPT
from trellis.errors import InvalidUpdateError, RoutingError
from trellis.graph.managed import managed_note
from trellis.graph.reducers import NOT_OVERWRITE, fold_writes, overwrite_value
from trellis.persist.base import new_checkpoint_id
from trellis.types import (
    END,
    START,
    Command,
    ExecutionInfo,
    Interrupt,
    Replaced,
    RunnableConfig,
    Runtime,
    Send,
)

if TYPE_CHECKING:
    from trellis.engine.loop import RunLoop
    from trellis.engine.plan import BranchPlan, NodePlan

__all__ = ["Task", "checked_goto", "scheduled_paths", "sends_first", "task_id"]


def task_id(checkpoint_id: str | None, step: int, name: str, path: tuple[str, Any]) -> str:
    """A task's id: the same wherever and whenever it is planned from that checkpoint."""
    seed = f"{checkpoint_id}|{step}|{name}|{path[0]}|{path[1]}"
    return hashlib.blake2b(seed.encode(), digest_size=16).hexdigest()


_MINTING = threading.Lock()

PULL = "__pregel_pull"
PUSH = "__pregel_push"


def scheduled_paths(
    pending: Mapping[str, Any], nodes: Iterable[str]
) -> list[tuple[str, tuple[str, Any]]]:
    """``(node, path)`` of each task a checkpoint schedules (its ``pending``, with
    ``nodes`` the pulled nodes that run), as LangGraph lists a step's tasks: its
    ``Send``s, then its nodes; or the input alone while it waits to be applied."""
    if "start" in pending:
        return [(START, (PULL, START))]
    paths: list[tuple[str, tuple[str, Any]]] = [
        (s.node, (PUSH, i)) for i, s in enumerate(pending.get("sends", ()))
    ]
    return paths + [(n, (PULL, n)) for n in nodes]


def sends_first(tasks: list[Task]) -> list[Task]:
    """A step's tasks in the order LangGraph lists them: its ``Send``s, then its nodes."""
    return sorted(tasks, key=lambda t: t.path[0] != PUSH)


class Task:
    """One scheduled node call and, once it ran, its outcome."""

    __slots__ = (
        "_id",
        "attempt",
        "done",
        "began",
        "duration",
        "error",
        "goto",
        "halt",
        "handled",
        "input",
        "interrupt_count",
        "interrupts",
        "loop",
        "name",
        "nested",
        "node",
        "once",
        "path",
        "pre_update",
        "resume",
        "retry",
        "span",
        "streamed",
        "started",
        "step",
        "update",
    )

    # Set only when the node raised and on_error or error_handler took over (read
    # with getattr: most tasks never fail, and every task pays for what __init__ sets).
    handled: BaseException

    def __init__(
        self, loop: RunLoop, node: NodePlan, value: Any, step: int, path: tuple[str, Any]
    ) -> None:
        self.loop = loop
        self.node = node
        self.name = node.name
        self.input = value
        self.step = step
        self.path = path
        self._id: str | None = None
        self.update: dict[str, Any] | None = None
        # Shared empty tuples until something is added: most tasks add nothing.
        self.goto: list[Any] = _EMPTY  # type: ignore[assignment]
        self.error: BaseException | None = None
        self.interrupts: list[Interrupt] = _EMPTY  # type: ignore[assignment]
        self.resume: list[Any] | None = None
        self.interrupt_count = 0
        self.once: dict[str, Any] | None = None
        self.done = False
        self.halt = False  # skip the node's own edges (a gate said no, or on_error routed)
        self.pre_update: dict[str, Any] | None = None  # an approval edit, applied first
        self.retry: Any = None  # RetryState restored from a checkpoint
        self.span: str | None = None  # set when the run is observed
        # What the node streamed (custom writes, messages), unless it went out live:
        # out when its step ends.
        self.streamed: list[tuple[str, Any]] | None = None
        self.nested: list[tuple[Any, ...]] | None = None  # a subgraph's chunks, subgraphs=True
        self.attempt = 1
        self.started = 0.0
        self.began = 0.0  # perf_counter() when its node began, in an observed run
        self.duration = 0.0

    def __repr__(self) -> str:
        return f"Task({self.name!r}, step={self.step}, path={self.path!r})"

    @property
    def id(self) -> str:
        """Stable across retries and resumes: derived from where it was planned."""
        if self._id is None:
            loop = self.loop
            if loop.unsaved_id is False:  # durability="exit": the step's checkpoint gets
                with _MINTING:  # its id now, once, though parallel tasks may all want theirs
                    if loop.unsaved_id is False:
                        loop.checkpoint_id = new_checkpoint_id()
                        loop.unsaved_id = True
            self._id = task_id(loop.checkpoint_id, self.step, self.name, self.path)
        return self._id

    # -- calling ----------------------------------------------------------

    def args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        node = self.node
        args = (self.input,) if node.takes_state else ()
        if not node.injected:
            return args, _NO_KWARGS
        return args, {name: self.inject(name) for name in node.injected}

    def inject(self, name: str) -> Any:
        if name == "config":
            return self.config()
        if name == "runtime":
            return self.runtime()
        if name == "writer":
            return self.writer()
        return self.loop.store  # "store": the compiled graph's, or its parent run's

    def config(self) -> RunnableConfig:
        loop = self.loop
        configurable = {
            **loop.configurable,
            "checkpoint_ns": loop.checkpoint_ns,
            "checkpoint_id": loop.checkpoint_id,
            "task_id": self.id,
        }
        config: RunnableConfig = {
            **loop.config,
            "configurable": configurable,
            "metadata": {
                **loop.config.get("metadata", {}),
                "langgraph_step": self.step,
                "langgraph_node": self.name,
                "langgraph_triggers": self.triggers(),
                "langgraph_path": self.path,
                "langgraph_checkpoint_ns": self.namespace(),
                "thread_id": loop.configurable.get("thread_id"),
            },
        }
        if loop.messages is not None:  # stream_mode="messages": its models report here
            config["callbacks"] = loop.messages.callbacks(self, config.get("callbacks"))
        return config

    def namespace(self) -> str:
        """This task's ``langgraph_checkpoint_ns``: ``node:task_id`` under its graph's."""
        ns = f"{self.name}:{self.id}"
        return f"{self.loop.checkpoint_ns}|{ns}" if self.loop.checkpoint_ns else ns

    def triggers(self) -> tuple[str, ...]:
        return self.node.pull_triggers if self.path[0] == PULL else ("__pregel_push",)

    def runtime(self) -> Runtime[Any]:
        loop = self.loop
        info = ExecutionInfo(
            task_id=self.id,
            thread_id=loop.configurable.get("thread_id"),
            checkpoint_id=loop.checkpoint_id,
            node=self.name,
            step=self.step,
            node_attempt=self.attempt,
            node_first_attempt_time=self.started or None,
            run_id=loop.run_id,
            checkpoint_ns=loop.checkpoint_ns,
        )
        return Runtime(
            context=loop.context, stream_writer=self.writer(), execution_info=info, store=loop.store
        )

    def writer(self) -> Callable[[Any], None]:
        """The custom-stream writer of this attempt: an attempt abandoned at its
        timeout, whose thread runs on, writes nothing into the retry's stream."""
        if not self.node.timeout:
            return self.write_custom
        attempt = self.current_attempt()

        def write(chunk: Any) -> None:
            if self.attempt == attempt and not self.done:
                self.write_custom(chunk)

        return write

    def current_attempt(self) -> int:
        """The attempt of the code asking: an attempt abandoned at its timeout runs on
        in its thread while the next one runs, and must not count as it."""
        return CURRENT_ATTEMPT.get() or self.attempt

    def write_custom(self, chunk: Any) -> None:
        self.stream("custom", chunk)

    def stream(self, mode: str, chunk: Any) -> None:
        """Hand ``chunk`` of stream ``mode`` to a live stream, or keep it to come out
        when the step ends; nothing when the run does not stream ``mode``."""
        if mode not in self.loop.modes:
            return
        live = self.loop.live
        if live is not None:
            live((mode, chunk))
            return
        if self.streamed is None:
            self.streamed = []
        self.streamed.append((mode, chunk))

    # -- what the node returned ------------------------------------------

    def accept(self, out: Any) -> None:
        """Check the node's return value and keep it as this task's update."""
        node = self.node
        if out is None:
            if self.pre_update:  # the node wrote nothing: the reviewer's edit still stands
                self._set_update({})
            return
        if node.subgraph is not None and isinstance(out, Mapping):
            # A subgraph's whole output, less the keys this graph does not have.
            writable = self.loop.plan.writable
            out = {k: v for k, v in out.items() if k in writable}
        if type(out) is dict:
            if out or self.pre_update:  # {} is "no update", as None is
                self._set_update(out)
            return
        if isinstance(out, Command):
            self._accept_command(out)
            return
        if node.to_update is not None:
            update = node.to_update(out)
            if update is not None:
                self._set_update(update)
                return
        if isinstance(out, (list, tuple)) and out and all(isinstance(c, Command) for c in out):
            for command in out:
                self._accept_command(command)
            return
        if isinstance(out, Mapping):
            self._set_update(dict(out))
            return
        raise InvalidUpdateError(
            f"node {self.name!r} returned {_short(out)} of type {type(out).__name__}; "
            "a node must return a dict of state updates, None, or a Command"
        )

    def add_goto(self, target: Any) -> None:
        if not self.goto:
            self.goto = []
        self.goto.append(target)

    def finish_skipped(self) -> None:
        """A gate decided the node does not run: only its edit (if any) is written."""
        if self.pre_update:
            update, self.pre_update = self.pre_update, None
            self._set_update(update)
        self.done = True

    def _accept_command(self, command: Command[Any]) -> None:
        if command.graph == Command.PARENT:
            from trellis.engine.subgraph import ParentCommand

            raise ParentCommand(command)
        update = command.update
        if isinstance(update, (list, tuple)):
            # Pairs are writes in order: a key given twice goes through its reducer
            # twice (as LangGraph), rather than the last pair silently winning.
            pairs = _pairs(self.name, update)
            for key, value in pairs:
                self._set_update({key: value})
            if not pairs:
                self._set_update({})
        elif update is not None:
            if type(update) is not dict:
                converted = self.node.to_update(update) if self.node.to_update else None
                if converted is None and not isinstance(update, Mapping):
                    raise InvalidUpdateError(
                        f"node {self.name!r} returned Command(update={_short(update)}); "
                        "update must be a dict, a list of (key, value) pairs, or the state type"
                    )
                update = converted if converted is not None else dict(update)
            self._set_update(update)
        elif self.pre_update:
            self._set_update({})
        who = "the graph input" if self.name == START else f"node {self.name!r}"
        for target in checked_goto(self.loop.plan.nodes, command.goto_list(), who):
            self.add_goto(target)

    def _set_update(self, update: dict[str, Any]) -> None:
        if self.pre_update:
            edit, self.pre_update = self.pre_update, None
            update = self._after(edit, update)
        writable = self.loop.plan.writable
        if not update.keys() <= writable:
            unknown = sorted(set(update) - writable)
            raise InvalidUpdateError(
                f"node {self.name!r} wrote unknown state key(s) {', '.join(map(repr, unknown))}; "
                f"the state has {', '.join(sorted(writable))}"
                + managed_note(unknown, self.loop.plan.managed)
            )
        if self.update is None:
            self.update = update
            return
        # Several Commands from one node: fold them, as one task's writes.
        reducers = self.loop.plan.reducers
        merged = dict(self.update)
        for key, value in update.items():
            if key not in merged:
                merged[key] = value
            elif key in reducers:
                merged[key] = fold_writes(reducers[key], key, merged[key], value, self.name)
            else:
                raise InvalidUpdateError(
                    f"node {self.name!r} wrote state key {key!r} twice in one step (in two "
                    "Commands or update pairs), and it keeps only one value; give it a reducer"
                )
        self.update = merged

    def _after(self, edit: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
        """One update for a reviewer's ``edit`` followed by the node's own writes: a
        key with a reducer gets both (the edit first), any other key the node's value.

        Two lists are joined rather than reduced into each other, so the reducer
        later folds the edit and then the node's writes into the state, in order
        (``add_messages``: a RemoveMessage of the node's names a message of the
        state, not of the edit). An edit that replaces a reducer key (an
        ``Overwrite`` in it) becomes a ``Replaced``, which the node's writes fold into.
        """
        reducers = self.loop.plan.reducers
        merged = dict(edit)
        for key, value in edit.items():
            if key in reducers and (new := overwrite_value(value)) is not NOT_OVERWRITE:
                # The reviewer replaced the value: what is written after folds into it.
                merged[key] = Replaced(new)
        for key, value in update.items():
            reducer = reducers.get(key) if key in merged else None
            if reducer is None:
                merged[key] = value
            elif isinstance(merged[key], list) and isinstance(value, list):
                merged[key] = [*merged[key], *value]
            else:
                merged[key] = fold_writes(reducer, key, merged[key], value, self.name)
        return merged

    # -- conditional edges --------------------------------------------------

    def router_args(self, branch: BranchPlan) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """What a router sees: the step's snapshot plus this task's own writes."""
        loop = self.loop
        view = loop.values
        if self.update or loop.plan.managed:
            view = dict(view)
            if self.update:
                loop.apply(view, self.update)
            loop.add_managed(view, self.step)
        args = (loop.plan.router_input(view),) if branch.takes_state else ()
        if not branch.injected:
            return args, {}
        return args, {name: self.inject(name) for name in branch.injected}

    def route(self, branch: BranchPlan, result: Any) -> None:
        """Turn a router's result into destinations for the next step."""
        nodes = self.loop.plan.nodes
        items = list(result) if isinstance(result, (list, tuple)) else [result]
        if not items:
            return
        for item in items:
            if isinstance(item, Send):
                if item.node not in nodes:
                    raise RoutingError(
                        f"router of {self.name!r} sent to unknown node {item.node!r}"
                    )
                self.add_goto(item)
                continue
            dest: Any = item
            if branch.path_map is not None:
                try:
                    dest = branch.path_map.get(item, _NO_NODE)
                except TypeError:  # unhashable router result
                    dest = _NO_NODE
            if dest == END:
                continue
            if dest is _NO_NODE or dest not in nodes:
                if branch.fallback is None:
                    raise RoutingError(_routing_message(self.name, branch, item))
                if branch.fallback == END:
                    continue
                dest = branch.fallback
            self.add_goto(dest)


_NO_NODE = object()
_EMPTY: tuple[()] = ()
_NO_KWARGS: dict[str, Any] = {}  # shared, never mutated: splatted into calls only


def _routing_message(source: str, branch: BranchPlan, value: Any) -> str:
    name = "START" if source == "__start__" else repr(source)
    if branch.path_map is not None:
        keys = ", ".join(map(repr, branch.path_map))
        return (
            f"router of {name} returned {value!r}, which is not a key of its path_map ({keys}); "
            "add it to path_map or pass fallback="
        )
    return (
        f"router of {name} returned {value!r}, which names no node; "
        "return a node name, END or Send, or pass fallback="
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def checked_goto(nodes: Mapping[str, Any], goto: list[Any], who: str) -> list[Any]:
    """``goto`` (node names and Sends) without ``END``, each naming a node of
    ``nodes``; RoutingError naming ``who`` gave the target otherwise."""
    out = []
    for target in goto:
        if isinstance(target, Send):
            if target.node not in nodes:
                raise RoutingError(f"{who} sent to unknown node {target.node!r} (Command goto)")
        elif target != END and target not in nodes:
            raise RoutingError(f"{who} gave Command(goto={target!r}), which is no node")
        if target != END:
            out.append(target)
    return out


def _pairs(node: str, update: list[Any] | tuple[Any, ...]) -> list[tuple[str, Any]]:
    """``Command(update=[(key, value), ...])`` checked: each item one (key, value) pair."""
    out = []
    for item in update:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise InvalidUpdateError(
                f"node {node!r} returned Command(update=[... {_short(item)} ...]); "
                "a list update must hold (key, value) pairs"
            )
        out.append((item[0], item[1]))
    return out
