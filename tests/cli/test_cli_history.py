"""`trellis history / state / threads / prune` against a real SQLite file."""

from __future__ import annotations

import json
import operator
import re
import sqlite3
import time
from pathlib import Path
from typing import Annotated, Any

import pytest
from typer.testing import CliRunner, Result
from typing_extensions import TypedDict

from trellis.cli.app import app

REFUND = json.dumps({"message": "I want a refund for order 1234"})


def trellis(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def run_support(db: Path, thread: str, times: int = 1) -> None:
    for _ in range(times):
        result = trellis(
            "run", "examples.support:graph", "--thread", thread, "--db", db, "--input", REFUND
        )
        assert result.exit_code == 0, result.output


def rows(result: Result) -> list[list[str]]:
    """The body rows of a rich table, as lists of cell texts."""
    body = [line for line in result.stdout.splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in body]


def state(db: Path | str, thread: str, *extra: str) -> Any:
    result = trellis("state", thread, "--db", db, *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_history_lists_checkpoints_newest_first(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    run_support(db, "c-1")
    result = trellis("history", "c-1", "--db", db)
    assert result.exit_code == 0, result.output
    table = rows(result)
    # input, then one checkpoint after START, classify, refund and respond.
    assert [r[2] for r in table] == ["loop", "loop", "loop", "loop", "input"]
    assert [r[3] for r in table] == ["", "respond", "refund", "classify", "__start__"]
    steps = [int(r[1]) for r in table]
    assert steps == sorted(steps, reverse=True)
    assert all(re.fullmatch(r"[0-9a-f]{32}", r[0]) for r in table)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r[4]) for r in table)
    assert len(rows(trellis("history", "c-1", "--db", db, "--limit", "2"))) == 2


def test_state_prints_values_and_next_as_json(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    run_support(db, "c-1")
    doc = state(db, "c-1")
    assert doc["thread_id"] == "c-1"
    assert doc["next"] == [] and doc["interrupts"] == [] and doc["errors"] == []
    assert doc["values"]["reply"] == "Your refund for order 1234 has been started."
    assert doc["values"]["refund_attempts"] == 1


def test_state_at_an_older_checkpoint(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    run_support(db, "c-1")
    table = rows(trellis("history", "c-1", "--db", db))
    before_refund = next(r[0] for r in table if r[3] == "refund")
    doc = state(db, "c-1", "--checkpoint", before_refund)
    assert doc["checkpoint_id"] == before_refund
    assert doc["next"] == ["refund"]
    assert doc["values"]["intent"] == "refund"
    assert "reply" not in doc["values"]


def test_state_shows_a_pending_interrupt(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    run_support(db, "c-1", times=3)
    doc = state(db, "c-1")
    assert doc["next"] == ["human_escalation"]
    (pending,) = doc["interrupts"]
    assert pending["node"] == "human_escalation"
    assert re.fullmatch(r"[0-9a-f]{32}", pending["id"])
    assert pending["value"]["reason"] == "3 refund requests on this thread"
    history = rows(trellis("history", "c-1", "--db", db))
    assert history[0][3] == "human_escalation (interrupted)"


def test_state_shows_what_finished_in_a_step_that_waits_and_orders_next_as_the_api(
    tmp_path: Path,
) -> None:
    from trellis import START, Send, SqliteSaver, StateGraph, interrupt

    class S(TypedDict, total=False):
        fast: str
        answer: str

    builder = StateGraph(S)
    builder.add_node("fast", lambda s: {"fast": "done"})
    builder.add_node("ask", lambda s: {"answer": interrupt("question?")})
    builder.add_node("work", lambda s: {})
    builder.add_conditional_edges(
        START, lambda s: [Send("work", {}), Send("work", {}), "ask", "fast"]
    )
    db = tmp_path / "t.db"
    graph = builder.compile(checkpointer=SqliteSaver.from_path(db))
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({}, config)
    api = graph.get_state(config)
    doc = state(db, "t")
    assert doc["next"] == list(api.next) == ["ask"]  # fast and the Sends finished
    assert {"node": "fast", "writes": {"fast": "done"}} in doc["finished"]
    assert doc["values"] == {} and api.values == {"fast": "done"}  # applied with the step
    assert rows(trellis("history", "t", "--db", db))[0][3] == "ask (interrupted)"
    paused = builder.compile(checkpointer=SqliteSaver.from_path(db), interrupt_before=["fast"])
    paused.invoke({}, {"configurable": {"thread_id": "u"}})
    assert state(db, "u")["next"] == list(
        paused.get_state({"configurable": {"thread_id": "u"}}).next
    )
    assert state(db, "u")["next"] == ["work", "work", "ask", "fast"]  # Sends first


class Log(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def test_a_past_step_that_committed_shows_every_task_as_the_api_history(tmp_path: Path) -> None:
    """Writes kept on a past checkpoint are of a step that went on to commit: its tasks
    are what ran next there, none is 'finished' and pending, and no question waits."""
    from trellis import START, Command, SqliteSaver, StateGraph, interrupt

    builder = StateGraph(Log)
    builder.add_node("a", lambda s: {"log": ["a"]})
    builder.add_node("b", lambda s: {"log": ["b"]})
    builder.add_node("ask", lambda s: {"log": [interrupt("ok?")]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("a", "ask")
    db = tmp_path / "t.db"
    graph = builder.compile(checkpointer=SqliteSaver.from_path(db))
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({}, config)
    graph.invoke(Command(resume="yes"), config)
    past = next(s for s in graph.get_state_history(config) if s.metadata["step"] == 1)
    doc = state(db, "t", "-c", past.config["configurable"]["checkpoint_id"])
    assert sorted(doc["next"]) == sorted(past.next) == ["ask", "b"]
    assert doc["finished"] == []
    assert [i["value"] for i in doc["interrupts"]] == [i.value for i in past.interrupts]
    table = rows(trellis("history", "t", "--db", db))
    assert [r[3] for r in table if r[1] == "1"] == ["ask, b (interrupted)"]


def test_unknown_thread_checkpoint_or_database_is_exit_1(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    run_support(db, "c-1")
    unknown = trellis("state", "nobody", "--db", db)
    assert unknown.exit_code == 1
    assert "thread 'nobody' has no checkpoints" in unknown.stderr
    bad_id = trellis("state", "c-1", "--db", db, "--checkpoint", "f" * 32)
    assert bad_id.exit_code == 1
    assert "error: thread 'c-1' has no checkpoint 'fff" in bad_id.stderr
    assert "`trellis history c-1` lists its checkpoints" in bad_id.stderr
    bad_diff = trellis("diff", "c-1", "a" * 32, "b" * 32, "--db", db)
    assert bad_diff.exit_code == 1
    assert f"error: thread 'c-1' has no checkpoint {'a' * 32!r}, {'b' * 32!r}" in bad_diff.stderr
    missing = tmp_path / "missing.db"
    for command in (["history", "c-1"], ["state", "c-1"], ["threads"]):
        result = trellis(*command, "--db", missing)
        assert result.exit_code == 1
        assert "no checkpoint database at" in result.stderr
    assert not missing.exists()  # reading never creates a database


@pytest.mark.parametrize(
    "command",
    [["history", "c-1"], ["threads"], ["approvals", "list"], ["run", "examples.support:graph"]],
)
def test_an_empty_db_is_refused_by_every_command_alike(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where an empty --db would have been read or written
    result = trellis(*command, "--db", "")
    assert result.exit_code == 2
    assert "Invalid value for '--db': is empty" in " ".join(result.stderr.split())
    assert list(tmp_path.iterdir()) == []


def test_reading_another_programs_database_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    before = db.read_bytes()
    for command in (["threads"], ["history", "t"], ["state", "t"], ["prune", "--keep-last", "1"]):
        result = trellis(*command, "--db", db)
        assert result.exit_code == 1, command
        assert f"error: no Trellis checkpoints in {str(db)!r}; check --db" in result.stderr
    assert db.read_bytes() == before


def test_a_database_url_of_another_kind_is_refused_without_a_file_or_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("postgresql+psycopg://app:s3cret@db.example/prod", "mysql://app:s3cret@db/x"):
        result = trellis("threads", "--db", url)
        assert result.exit_code == 1
        scheme = url.split("://")[0]
        assert f"database URL scheme {scheme!r} is not supported" in result.stderr
        assert "s3cret" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_threads_lists_every_thread(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    run_support(db, "c-1")
    run_support(db, "c-2", times=2)
    table = rows(trellis("threads", "--db", db))
    counts = {r[0]: int(r[1]) for r in table}
    assert set(counts) == {"c-1", "c-2"}
    assert counts["c-2"] > counts["c-1"]


def test_prune_keeps_the_newest_checkpoints(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    run_support(db, "c-1", times=2)
    before = len(rows(trellis("history", "c-1", "--db", db)))
    result = trellis("prune", "--db", db, "--keep-last", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"removed {before - 2} checkpoint(s)"
    assert len(rows(trellis("history", "c-1", "--db", db))) == 2
    assert state(db, "c-1")["values"]["refund_attempts"] == 2  # the head is intact


def test_prune_with_a_ttl_drops_old_run_history_too(tmp_path: Path) -> None:
    from trellis import SqliteSaver
    from trellis.persist.events import event_log_for

    db = tmp_path / "t.db"
    log = event_log_for(SqliteSaver.from_path(db))
    log.append("t", [{"kind": "run_end", "run_id": "r1", "ts": time.time() - 7200}])
    log.append("t", [{"kind": "run_end", "run_id": "r2", "ts": time.time()}])
    result = trellis("prune", "--db", db, "--ttl", "3600")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "removed 0 checkpoint(s) and the history of 1 run(s)"
    assert log.runs("t") == ["r2"]


def test_prune_counts_the_history_of_the_threads_it_removes_whole(tmp_path: Path) -> None:
    from trellis import START, SqliteSaver, StateGraph
    from trellis.persist.events import event_log_for

    class S(TypedDict, total=False):
        x: int

    db = tmp_path / "t.db"
    builder = StateGraph(S)
    builder.add_node("a", lambda s: {"x": 1})
    builder.add_edge(START, "a")
    graph = builder.compile(checkpointer=SqliteSaver.from_path(db), trace=True)
    for thread in ("t1", "t2"):  # one run each: the log alone would keep both
        graph.invoke({"x": 0}, {"configurable": {"thread_id": thread}})
    time.sleep(0.01)
    result = trellis("prune", "--db", db, "--ttl", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("and the history of 2 run(s)")
    log = event_log_for(SqliteSaver.from_path(db))
    assert log.run_count() == 0 and log.runs("t1") == []


def test_prune_needs_a_rule(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    run_support(db, "c-1")
    result = trellis("prune", "--db", db)
    assert result.exit_code == 1
    assert "give --ttl SECONDS and/or --keep-last N" in result.stderr


def test_state_of_a_thread_holding_dataclasses_needs_and_takes_the_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "dcgraph.py"
    module.write_text(
        "from dataclasses import dataclass\n"
        "from typing import TypedDict\n"
        "from trellis import START, StateGraph\n"
        "@dataclass\n"
        "class Item:\n"
        "    name: str\n"
        "class S(TypedDict, total=False):\n"
        "    item: Item\n"
        "def make(state): return {'item': Item('box')}\n"
        "b = StateGraph(S)\n"
        "b.add_node('make', make)\n"
        "b.add_edge(START, 'make')\n"
        "graph = b.compile()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    db = str(tmp_path / "runs.db")
    runner = CliRunner()
    ran = runner.invoke(app, ["run", "dcgraph:graph", "--input", "{}", "--thread", "t", "--db", db])
    assert ran.exit_code == 0, ran.output
    plain = runner.invoke(app, ["state", "t", "--db", db])
    assert plain.exit_code == 1 and "--graph MODULE:ATTR" in plain.output
    typed = runner.invoke(app, ["state", "t", "--db", db, "--graph", "dcgraph:graph"])
    assert typed.exit_code == 0, typed.output
    assert '"name": "box"' in typed.output


@pytest.mark.postgres
def test_every_command_reads_a_postgres_database_named_by_url(pg_url: str, pg_schema: str) -> None:
    sep = "&" if "?" in pg_url else "?"
    db = f"{pg_url}{sep}schema={pg_schema}"
    run = trellis("run", "examples.support:graph", "--thread", "c-1", "--db", db, "--input", REFUND)
    assert run.exit_code == 0, run.output
    assert state(db, "c-1")["values"]["refund_attempts"] == 1
    history = trellis("history", "c-1", "--db", db)
    assert history.exit_code == 0 and len(rows(history)) >= 3, history.output
    assert [r[0] for r in rows(trellis("threads", "--db", db))] == ["c-1"]
    trace = trellis("trace", "c-1", "--db", db, "--json")
    assert trace.exit_code == 0, trace.output
    assert '"run_end"' in json.dumps(json.loads(trace.stdout))
    for command in ("history", "state"):
        unknown = trellis(command, "nobody", "--db", db)
        assert unknown.exit_code == 1 and "Traceback" not in unknown.output
        assert f"thread 'nobody' has no checkpoints in schema '{pg_schema}'" in unknown.stderr
    import psycopg

    with psycopg.connect(pg_url) as conn:  # in the schema the URL named, not in public
        found = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = %s",
            (pg_schema, "trellis_checkpoints"),
        ).fetchone()
    assert found == (1,)


@pytest.mark.postgres
def test_reading_a_postgres_schema_without_checkpoints_is_refused_and_creates_nothing(
    pg_url: str, pg_schema: str
) -> None:
    sep = "&" if "?" in pg_url else "?"
    result = trellis("threads", "--db", f"{pg_url}{sep}schema={pg_schema}")
    assert result.exit_code == 1
    assert f"no Trellis checkpoints in schema '{pg_schema}'" in result.stderr
    import psycopg

    with psycopg.connect(pg_url) as conn:
        found = conn.execute("SELECT to_regnamespace(%s)", (pg_schema,)).fetchone()
    assert found == (None,)


def test_a_printed_database_url_hides_its_password() -> None:
    from trellis.cli.common import shown_db

    assert shown_db("postgresql://app:s3cret@db:5432/prod?schema=x") == (
        "postgresql://app:****@db:5432/prod?schema=x"
    )
    assert shown_db("runs.db") == "runs.db"
    assert shown_db("postgresql://app@db/prod") == "postgresql://app@db/prod"


def test_help_shows_the_defaults_and_what_ttl_removes() -> None:
    def help_of(*command: str) -> str:
        result = CliRunner(env={"COLUMNS": "300"}).invoke(app, [*command, "--help"])
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    assert "[default: .trellis/trellis.db]" in help_of("threads")
    assert "[default: $TRELLIS_REVIEWER or your login]" in help_of("approvals", "approve")
    assert "--ttl also removes whole threads" in help_of("prune")
