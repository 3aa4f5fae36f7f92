"""A worker process for the crash tests: runs one scenario graph against a real saver.

Run by ``tests/engine/conftest.py::Crash`` with ``sys.executable``::

    python _crash_worker.py --backend sqlite --target /tmp/x/checkpoints.db \\
        --thread t-1 --scenario chain --dir /tmp/x/crash --action run --block E

Every node body (and compensation, and charge) appends one JSON line to
``<dir>/ledger.jsonl`` before doing anything else, so the ledger counts real
executions, including the one the test kills. ``--block NAME`` makes the
barrier of that name write ``<dir>/at-NAME`` and then wait, so the test can
SIGKILL the process there; without it every barrier passes. The worker prints
one JSON report line on stdout and exits 0 (run finished) or 1 (run raised).

The module is also imported by the tests (``build``, ``INPUTS``) to run the same
graphs uninterrupted, in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from typing_extensions import TypedDict

from trellis import END, START, RetryPolicy, StateGraph, once
from trellis.errors import NodeError

CHAIN = ("A", "B", "C", "D", "E", "F", "G")
BARRIER_DEADLINE = 60.0  # the test kills us long before this; never a hang


class State(TypedDict, total=False):
    trail: Annotated[list[str], operator.add]
    total: int
    receipt: str


INPUTS: dict[str, dict[str, Any]] = {
    "chain": {"trail": [], "total": 0},
    "parallel": {"trail": [], "total": 0},
    "retry": {"trail": [], "total": 0},
    "saga": {"trail": [], "total": 0},
    "once": {"trail": [], "total": 0},
}


class Ctl:
    """Where the ledger lives and which barrier (if any) blocks."""

    def __init__(self, directory: Path, block: str | None = None) -> None:
        self.dir = directory
        self.block = block
        self.dir.mkdir(parents=True, exist_ok=True)

    def record(self, event: str, **fields: Any) -> None:
        """Append one ledger line; O_APPEND makes each line one atomic write."""
        line = json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n"
        fd = os.open(self.dir / "ledger.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def barrier(self, name: str) -> None:
        """Block forever (until killed) if this is the barrier under test."""
        if self.block != name:
            return
        (self.dir / f"at-{name}").write_text(str(os.getpid()))
        deadline = time.monotonic() + BARRIER_DEADLINE
        while time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(97)  # the test should have killed us: never commit anything


def _info(runtime: Any) -> tuple[str, int]:
    info = runtime.execution_info
    return info.task_id, info.node_attempt


def step(ctl: Ctl, name: str, index: int) -> Callable[..., dict[str, Any]]:
    """A chain node: records itself, maybe blocks, then extends the trail."""

    def node(state: State, runtime: Any) -> dict[str, Any]:
        task_id, attempt = _info(runtime)
        ctl.record("node", node=name, task_id=task_id, attempt=attempt)
        ctl.barrier(name)
        return {"trail": [name], "total": state.get("total", 0) * 10 + index}

    node.__name__ = name
    return node


def astep(ctl: Ctl, name: str, index: int) -> Callable[..., Any]:
    sync = step(ctl, name, index)

    async def node(state: State, runtime: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        return sync(state, runtime)

    node.__name__ = name
    return node


def _chain(ctl: Ctl, make: Callable[[Ctl, str, int], Any]) -> StateGraph[State, None]:
    builder: StateGraph[State, None] = StateGraph(State)
    for index, name in enumerate(CHAIN, start=1):
        builder.add_node(name, make(ctl, name, index))
    builder.add_edge(START, CHAIN[0])
    for a, b in zip(CHAIN, CHAIN[1:], strict=False):
        builder.add_edge(a, b)
    builder.add_edge(CHAIN[-1], END)
    return builder


def _parallel(ctl: Ctl) -> StateGraph[State, None]:
    """START -> X (fast) and Y (blocks) in one step -> join Z."""

    def branch(name: str) -> Callable[..., dict[str, Any]]:
        def node(state: State, runtime: Any) -> dict[str, Any]:
            task_id, _ = _info(runtime)
            ctl.record("node", node=name, task_id=task_id)
            ctl.barrier(name)
            return {"trail": [name]}

        return node

    builder: StateGraph[State, None] = StateGraph(State)
    builder.add_node("X", branch("X"))
    builder.add_node("Y", branch("Y"))
    builder.add_node("Z", branch("Z"))
    builder.add_edge(START, "X")
    builder.add_edge(START, "Y")
    builder.add_edge(["X", "Y"], "Z")
    builder.add_edge("Z", END)
    return builder


RETRY = RetryPolicy(
    max_attempts=5,
    initial_interval=0.001,
    backoff_factor=1.0,
    jitter=False,
    retry_on=ConnectionError,
)


def _retry(ctl: Ctl) -> StateGraph[State, None]:
    """A -> R -> B; R fails until its 5th attempt and blocks on its 3rd when told to."""

    def flaky(state: State, runtime: Any) -> dict[str, Any]:
        task_id, attempt = _info(runtime)
        ctl.record("node", node="R", task_id=task_id, attempt=attempt)
        if attempt == 3:
            ctl.barrier("R3")
        if attempt < 5:
            raise ConnectionError(f"upstream down (attempt {attempt})")
        return {"trail": ["R"], "total": attempt}

    builder: StateGraph[State, None] = StateGraph(State)
    builder.add_node("A", step(ctl, "A", 1))
    builder.add_node("R", flaky, retry_policy=RETRY)
    builder.add_node("B", step(ctl, "B", 2))
    builder.add_edge(START, "A")
    builder.add_edge("A", "R")
    builder.add_edge("R", "B")
    builder.add_edge("B", END)
    return builder


def _saga(ctl: Ctl) -> StateGraph[State, None]:
    """A, B, C each have a compensation; D fails for good; undo-B can block."""

    def undo(name: str) -> Callable[[State], None]:
        def compensate(state: State) -> None:
            ctl.record("undo", node=name, trail=list(state.get("trail", [])))
            ctl.barrier(f"undo{name}")

        return compensate

    def broken(state: State) -> dict[str, Any]:
        ctl.record("node", node="D")
        raise ValueError("D is broken for good")

    builder: StateGraph[State, None] = StateGraph(State)
    for index, name in enumerate("ABC", start=1):
        builder.add_node(name, step(ctl, name, index), compensate=undo(name))
    builder.add_node("D", broken)
    builder.add_edge(START, "A")
    builder.add_edge("A", "B")
    builder.add_edge("B", "C")
    builder.add_edge("C", "D")
    builder.add_edge("D", END)
    return builder


def _once(ctl: Ctl) -> StateGraph[State, None]:
    """A -> P -> Z; P charges through once() and can block after the charge."""

    def charge() -> str:
        ctl.record("charge")
        return f"receipt-{os.getpid()}"

    def pay(state: State, runtime: Any) -> dict[str, Any]:
        task_id, _ = _info(runtime)
        ctl.record("node", node="P", task_id=task_id)
        receipt = once("charge", charge)
        ctl.barrier("P")
        return {"trail": ["P"], "receipt": receipt}

    builder: StateGraph[State, None] = StateGraph(State)
    builder.add_node("A", step(ctl, "A", 1))
    builder.add_node("P", pay)
    builder.add_node("Z", step(ctl, "Z", 2))
    builder.add_edge(START, "A")
    builder.add_edge("A", "P")
    builder.add_edge("P", "Z")
    builder.add_edge("Z", END)
    return builder


def build(scenario: str, ctl: Ctl, *, driver: str = "sync") -> StateGraph[State, None]:
    """The uncompiled graph of ``scenario``."""
    if scenario == "chain":
        return _chain(ctl, astep if driver == "async" else step)
    builders = {"parallel": _parallel, "retry": _retry, "saga": _saga, "once": _once}
    return builders[scenario](ctl)


# -- the process -------------------------------------------------------------------


def _saver(args: argparse.Namespace) -> Any:
    if args.backend == "sqlite":
        from trellis.persist.sqlite import SqliteSaver

        return SqliteSaver.from_path(args.target)
    from trellis.persist.postgres import PostgresSaver

    saver = PostgresSaver.from_conn_string(args.target, schema=args.schema, pool_size=2)
    saver.setup()
    return saver


def _report_error(exc: BaseException) -> dict[str, Any]:
    report: dict[str, Any] = {"ok": False, "error_type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, NodeError):
        report["node"] = exc.node
        report["attempts"] = exc.attempts
    compensation = getattr(exc, "compensation", None)
    if compensation is not None:
        report["compensated"] = list(compensation.compensated)
        report["failed"] = list(compensation.failed)
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--schema", default="public")
    parser.add_argument("--thread", required=True)
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--action", choices=("run", "resume", "compensate"), default="run")
    parser.add_argument("--block")
    parser.add_argument("--driver", choices=("sync", "async"), default="sync")
    args = parser.parse_args(argv)

    ctl = Ctl(args.dir, args.block)
    saver = _saver(args)
    graph = build(args.scenario, ctl, driver=args.driver).compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": args.thread}}
    value = None if args.action == "resume" else INPUTS[args.scenario]
    try:
        if args.action == "compensate":
            report = graph.compensate(config)
            out: dict[str, Any] = {
                "ok": True,
                "compensated": report.compensated,
                "failed": report.failed,
            }
        elif args.driver == "async":
            out = {"ok": True, "result": asyncio.run(graph.ainvoke(value, config))}
        else:
            out = {"ok": True, "result": graph.invoke(value, config)}
    except Exception as exc:
        out = _report_error(exc)
    finally:
        saver.close()
    print(json.dumps(out, default=repr), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
