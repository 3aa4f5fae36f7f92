"""`trellis run`: live node lines, final state, threads, interrupts, errors."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from trellis.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
REFUND = json.dumps({"message": "I want a refund for order 1234"})


def trellis(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def state_of(result: Result) -> Any:
    return json.loads(result.stdout)


def write_module(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


FLAKY = """
    import operator, pathlib
    from typing import Annotated, TypedDict
    from trellis import StateGraph, START, END

    FLAG = pathlib.Path(__file__).with_name("failed-once")

    class State(TypedDict, total=False):
        log: Annotated[list[str], operator.add]

    def ok(state):
        return {"log": ["ok"]}

    def flaky(state):
        if not FLAG.exists():
            FLAG.touch()
            raise RuntimeError("upstream is down")
        return {"log": ["flaky"]}

    def join(state):
        return {"log": ["join"]}

    def make_graph():
        builder = StateGraph(State)
        builder.add_node("ok", ok)
        builder.add_node("flaky", flaky)
        builder.add_node("join", join)
        builder.add_edge(START, "ok")
        builder.add_edge(START, "flaky")
        builder.add_edge(["ok", "flaky"], "join")
        builder.add_edge("join", END)
        return builder.compile()

    def needs_args(x):
        return make_graph()
"""


def test_run_shows_a_line_per_node_and_prints_the_final_state(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    result = trellis("run", "examples.support:graph", "--input", REFUND, "--db", db)
    assert result.exit_code == 0, result.output
    for node in ("classify", "refund", "respond"):
        assert f"✓ {node}" in result.stderr
    assert " ms " in result.stderr
    state = state_of(result)
    assert state["reply"] == "Your refund for order 1234 has been started."
    assert state["intent"] == "refund"
    assert db.exists()


def test_the_same_thread_twice_continues_its_state(tmp_path: Path) -> None:
    args = ("run", "examples.support:graph", "--thread", "c-42", "--db", tmp_path / "t.db")
    first = trellis(*args, "--input", REFUND)
    second = trellis(*args, "--input", REFUND)
    assert state_of(first)["refund_attempts"] == 1
    assert state_of(second)["refund_attempts"] == 2
    assert "on thread c-42" in second.stderr


def test_an_interrupt_is_printed_with_its_id_and_resume_finishes_it(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    args = ("run", "examples.support:graph", "--thread", "c-42", "--db", db)
    for _ in range(2):
        assert trellis(*args, "--input", REFUND).exit_code == 0
    paused = trellis(*args, "--input", REFUND)
    assert paused.exit_code == 0, paused.output
    assert "⏸ human_escalation" in paused.stderr
    assert "1 interrupt(s) waiting on thread c-42" in paused.stderr
    assert "3 refund requests on this thread" in paused.stderr
    from trellis.persist.sqlite import SqliteSaver

    with SqliteSaver.from_path(db) as saver:
        head = saver.get_tuple("c-42")
        assert head is not None
        (write,) = [w for w in head.pending_writes if w.channel == "__interrupt__"]
    interrupt_id = write.value[0].id
    assert f"id {interrupt_id}" in paused.stderr
    expected = f"trellis run examples.support:graph --thread c-42 --db {db} --resume"
    assert expected in paused.stderr

    done = trellis(*args, "--resume", json.dumps("refund approved"))
    assert done.exit_code == 0, done.output
    assert "✓ human_escalation" in done.stderr and "✓ respond" in done.stderr
    state = state_of(done)
    assert state["escalated"] is True
    assert state["reply"] == "A support agent reviewed your case: refund approved"


def test_two_interrupts_of_one_step_are_both_listed_and_resumed_by_id(tmp_path: Path) -> None:
    module = write_module(
        tmp_path,
        "two_asks",
        """
        import operator
        from typing import Annotated, TypedDict
        from trellis import StateGraph, START, interrupt

        class S(TypedDict, total=False):
            log: Annotated[list[str], operator.add]

        builder = StateGraph(S)
        builder.add_node("a", lambda s: {"log": ["a:" + interrupt("qa")]})
        builder.add_node("b", lambda s: {"log": ["b:" + interrupt("qb")]})
        builder.add_edge(START, "a")
        builder.add_edge(START, "b")
        graph = builder.compile()
        """,
    )
    args = ("run", f"{module}:graph", "--thread", "t2", "--db", tmp_path / "t.db")
    paused = trellis(*args, "--input", "{}")
    assert paused.exit_code == 0, paused.output
    assert "2 interrupt(s) waiting on thread t2" in paused.stderr
    ids = dict(re.findall(r"^\s+(\w)\s+id (\S+)$", paused.stderr, re.MULTILINE))
    assert sorted(ids) == ["a", "b"]
    assert all(f'"{i}": <JSON>' in paused.stderr for i in ids.values())
    answers = json.dumps({i: f"yes-{node}" for node, i in ids.items()})
    done = trellis(*args, "--resume", answers)
    assert done.exit_code == 0, done.output
    assert sorted(state_of(done)["log"]) == ["a:yes-a", "b:yes-b"]


def test_a_thread_id_that_looks_like_markup_is_printed_as_given(tmp_path: Path) -> None:
    thread = "x[/]y[red]z"  # rich markup: a closing tag with nothing to close
    args = ("run", "examples.support:graph", "--thread", thread, "--db", tmp_path / "t.db")
    for _ in range(2):
        assert trellis(*args, "--input", REFUND).exit_code == 0
    paused = trellis(*args, "--input", REFUND)
    assert paused.exit_code == 0, paused.output
    assert f"1 interrupt(s) waiting on thread {thread}" in paused.stderr


def test_a_failed_run_reports_the_error_and_a_rerun_without_input_retries(tmp_path: Path) -> None:
    module = write_module(tmp_path, "flaky_graph", FLAKY)
    args = ("run", f"{module}:make_graph", "--thread", "t1", "--db", tmp_path / "t.db")
    failed = trellis(*args, "--input", "{}")
    assert failed.exit_code == 1
    assert "RuntimeError: upstream is down" in failed.stderr
    assert "✗ flaky" in failed.stderr
    assert "Traceback" not in failed.output
    assert "to retry the rest: trellis run" in failed.stderr

    retried = trellis(*args)  # no --input: continue the thread
    assert retried.exit_code == 0, retried.output
    assert "continuing" in retried.stderr
    assert state_of(retried)["log"] == ["flaky", "ok", "join"]  # merged by node name


def test_traceback_flag_shows_the_traceback(tmp_path: Path) -> None:
    module = write_module(tmp_path, "flaky_graph2", FLAKY)
    result = trellis("run", f"{module}:make_graph", "--input", "{}", "--no-db", "--traceback")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert "RuntimeError: upstream is down" in result.stderr


def test_no_db_runs_without_saving_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(tmp_path)
    result = trellis("run", "examples.routing:graph", "--input", '{"query": "hi"}', "--no-db")
    assert result.exit_code == 0, result.output
    assert state_of(result)["detail_level"] == "basic"
    assert "(nothing saved)" in result.stderr
    assert list(tmp_path.iterdir()) == []
    refused = trellis("run", "examples.routing:graph", "--thread", "t", "--no-db")
    assert refused.exit_code == 1
    assert "--thread and --resume need a checkpointer" in refused.stderr


def test_by_default_runs_are_saved_in_dot_trellis_under_a_new_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(tmp_path)
    result = trellis("run", "examples.routing:graph", "--input", '{"query": "hi"}')
    assert result.exit_code == 0, result.output
    assert (tmp_path / ".trellis" / "trellis.db").exists()
    assert "on thread " in result.stderr
    assert "inspect it with: trellis state " in result.stderr


@pytest.mark.parametrize("target", ["examples.routing:build", "examples.routing:graph"])
def test_targets_may_be_compiled_graphs_or_functions_returning_builders(
    tmp_path: Path, target: str
) -> None:
    result = trellis("run", target, "--input", '{"query": "hi"}', "--db", tmp_path / "t.db")
    assert result.exit_code == 0, result.output
    assert state_of(result)["response"] == "Answer at basic detail."


def test_a_builder_attribute_is_compiled(tmp_path: Path) -> None:
    module = write_module(
        tmp_path,
        "builder_only",
        """
        from typing import TypedDict
        from trellis import StateGraph, START

        class State(TypedDict):
            n: int

        builder = StateGraph(State)
        builder.add_node("inc", lambda s: {"n": s["n"] + 1})
        builder.add_edge(START, "inc")
        """,
    )
    result = trellis("run", f"{module}:builder", "--input", '{"n": 1}', "--no-db")
    assert result.exit_code == 0, result.output
    assert state_of(result) == {"n": 2}


def test_a_graph_with_async_nodes_runs_and_resumes(tmp_path: Path) -> None:
    module = write_module(
        tmp_path,
        "async_graph",
        """
        import asyncio
        from typing import TypedDict
        from trellis import StateGraph, START, interrupt

        class State(TypedDict, total=False):
            n: int
            ok: str

        async def fetch(state):
            await asyncio.sleep(0.01)
            return {"n": state["n"] + 1}

        def check(state):
            return {"ok": interrupt("ship it?")}

        builder = StateGraph(State)
        builder.add_node("fetch", fetch)
        builder.add_node("check", check)
        builder.add_edge(START, "fetch")
        builder.add_edge("fetch", "check")
        graph = builder.compile()
        """,
    )
    db = tmp_path / "t.db"
    first = trellis("run", f"{module}:graph", "--input", '{"n": 1}', "--db", db, "--thread", "a")
    assert first.exit_code == 0, first.output
    assert "ship it?" in first.output
    done = trellis("run", f"{module}:graph", "--resume", '"yes"', "--db", db, "--thread", "a")
    assert done.exit_code == 0, done.output
    assert state_of(done) == {"n": 2, "ok": "yes"}


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module:graph", "cannot import 'no_such_module'"),
        ("examples.support:nope", "module 'examples.support' has no attribute 'nope'"),
        ("examples.support", "expected MODULE:ATTR"),
        ("examples.support:ESCALATE_AT", "is a builtins.int; expected a compiled Trellis graph"),
    ],
)
def test_a_bad_target_is_a_red_error_and_exit_1(target: str, message: str) -> None:
    result = trellis("run", target, "--input", "{}", "--no-db")
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_a_function_that_needs_arguments_is_refused(tmp_path: Path) -> None:
    module = write_module(tmp_path, "flaky_graph3", FLAKY)
    result = trellis("run", f"{module}:needs_args", "--input", "{}", "--no-db")
    assert result.exit_code == 1
    assert "is a function that needs arguments (x)" in result.stderr


def test_invalid_input_json_is_a_red_error_and_exit_1() -> None:
    result = trellis("run", "examples.support:graph", "--input", "{message: hi}", "--no-db")
    assert result.exit_code == 1
    assert "--input is not valid JSON" in result.stderr
    assert "{message: hi}" in result.stderr
    assert result.stdout == ""


def test_input_outside_the_input_schema_names_the_error_and_key() -> None:
    result = trellis("run", "examples.support:graph", "--input", '{"msg": "hi"}', "--no-db")
    assert result.exit_code == 1
    assert "InvalidUpdateError: graph input has unknown key(s) 'msg'" in result.stderr


def test_nothing_to_run_without_input_or_thread() -> None:
    result = trellis("run", "examples.support:graph", "--no-db")
    assert result.exit_code == 1
    assert "give --input JSON to start a run, or --thread to continue one" in result.stderr


def test_compile_options_survive_the_recompile_with_a_checkpointer(tmp_path: Path) -> None:
    module = write_module(
        tmp_path,
        "breakpoint_graph",
        """
        from typing import TypedDict
        from trellis import StateGraph, START

        class State(TypedDict):
            n: int

        builder = StateGraph(State)
        builder.add_node("a", lambda s: {"n": s["n"] + 1})
        builder.add_node("b", lambda s: {"n": s["n"] * 10})
        builder.add_edge(START, "a")
        builder.add_edge("a", "b")
        graph = builder.compile(interrupt_before=["b"])
        """,
    )
    args = ("run", f"{module}:graph", "--thread", "bp", "--db", tmp_path / "t.db")
    paused = trellis(*args, "--input", '{"n": 1}')
    assert paused.exit_code == 0, paused.output
    assert state_of(paused) == {"n": 2}
    assert "paused before b" in paused.stderr
    finished = trellis(*args)
    assert state_of(finished) == {"n": 20}


@pytest.mark.parametrize("saver", ["MemorySaver()", "SqliteSaver.from_conn_string(':memory:')"])
def test_a_pause_under_the_graphs_memory_saver_offers_no_resume_that_cannot_work(
    tmp_path: Path, saver: str
) -> None:
    module = write_module(
        tmp_path,
        f"memory_ask_{saver[:6].lower()}",
        f"""
        from typing import TypedDict
        from trellis import StateGraph, START, interrupt, MemorySaver, SqliteSaver

        class State(TypedDict, total=False):
            ok: str

        builder = StateGraph(State)
        builder.add_node("ask", lambda s: {{"ok": interrupt("ship it?")}})
        builder.add_edge(START, "ask")
        graph = builder.compile(checkpointer={saver})
        """,
    )
    result = trellis("run", f"{module}:graph", "--thread", "m1", "--input", "{}")
    assert result.exit_code == 0, result.output
    stderr = " ".join(result.stderr.split())
    assert "⏸ paused on thread m1" in stderr
    assert "keeps nothing after this command exits" in stderr
    assert "resume with" not in stderr and "inspect it with" not in stderr


def test_a_file_path_and_its_module_name_are_the_same_graph_for_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checkpoints name the state's classes by module: a thread started from the
    # file must read and resume under the module name a worker would import.
    package = f"pkg_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / package).mkdir()
    write_module(
        tmp_path / package,
        "flow",
        """
        import dataclasses
        from typing import TypedDict
        from trellis import StateGraph, START, interrupt

        @dataclasses.dataclass
        class Item:
            name: str

        class S(TypedDict, total=False):
            item: Item
            ok: str

        builder = StateGraph(S)
        builder.add_node("make", lambda s: {"item": Item("box")})
        builder.add_node("ask", lambda s: {"ok": interrupt("ship " + s["item"].name + "?")})
        builder.add_edge(START, "make")
        builder.add_edge("make", "ask")
        graph = builder.compile()
        """,
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    db = tmp_path / "t.db"
    started = trellis("run", f"{package}/flow.py:graph", "-t", "t1", "--db", db, "--input", "{}")
    assert started.exit_code == 0, started.output
    assert "ship box?" in started.stderr
    state = trellis("state", "t1", "--db", db, "--graph", f"{package}.flow:graph")
    assert state.exit_code == 0, state.output
    assert json.loads(state.stdout)["values"]["item"] == {"name": "box"}
    done = trellis("run", f"{package}.flow:graph", "-t", "t1", "--db", db, "--resume", '"yes"')
    assert done.exit_code == 0, done.output
    assert state_of(done)["ok"] == "yes"


def test_a_graph_with_its_own_checkpointer_keeps_it(tmp_path: Path) -> None:
    module = write_module(
        tmp_path,
        "memory_graph",
        """
        from typing import TypedDict
        from trellis import StateGraph, START
        from trellis.persist.memory import MemorySaver

        class State(TypedDict):
            n: int

        builder = StateGraph(State)
        builder.add_node("inc", lambda s: {"n": s["n"] + 1})
        builder.add_edge(START, "inc")
        graph = builder.compile(checkpointer=MemorySaver())
        """,
    )
    db = tmp_path / "unused.db"
    result = trellis("run", f"{module}:graph", "--input", '{"n": 1}', "--db", db)
    assert result.exit_code == 0, result.output
    assert state_of(result) == {"n": 2}
    assert "--db is ignored" in result.stderr
    assert not db.exists()


@pytest.mark.parametrize("kind", ["def", "async def"])
def test_ctrl_c_stops_a_run_cleanly(tmp_path: Path, kind: str) -> None:
    """Exit code 130 and the node marked stopped, for sync and async graphs alike."""
    write_module(
        tmp_path,
        "slow_graph",
        f"""
        import asyncio, time
        from typing import TypedDict
        from trellis import StateGraph, START

        class State(TypedDict, total=False):
            n: int

        {kind} slow(state):
            {"await asyncio.sleep(60)" if kind == "async def" else "time.sleep(60)"}
            return {{"n": 1}}

        builder = StateGraph(State)
        builder.add_node("slow", slow)
        builder.add_edge(START, "slow")
        graph = builder.compile()
        """,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "src")])}
    command = [sys.executable, "-c", "from trellis.cli.app import main; main()"]
    command += ["run", "slow_graph:graph", "--input", "{}"]
    run = subprocess.Popen(
        [*command, "--no-db"], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "running" not in _peek(run):
        time.sleep(0.1)
    time.sleep(0.5)  # inside the node now
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 130, err
    assert "Traceback" not in err and "RuntimeError" not in err


def _peek(process: subprocess.Popen[str]) -> str:
    """What the process wrote to stderr so far, without blocking (its first line)."""
    assert process.stderr is not None
    ready, _, _ = select.select([process.stderr], [], [], 0)
    return process.stderr.readline() if ready else ""
