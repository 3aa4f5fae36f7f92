"""`trellis approvals list|show|approve|reject|edit|sweep|metrics` against real databases."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.hitl.conftest import Backend
from typer.testing import CliRunner, Result

from trellis.cli.approvals import Risk, approvals_app
from trellis.hitl import ReviewQueue
from trellis.hitl.records import PENDING, RISKS, ApprovalRequest
from trellis.persist.events import event_log_for

ROOT = Path(__file__).resolve().parents[2]
GRAPH = "examples.data_deletion:graph"


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # so --graph finds the examples package
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("TRELLIS_REVIEWER", "cli-reviewer")


def approvals(*args: str) -> Result:
    return CliRunner().invoke(approvals_app, list(args))


def rows(result: Result) -> list[list[str]]:
    body = [line for line in result.stdout.splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in body]


def start(backend: Backend, *users: str) -> tuple[Any, dict[str, str]]:
    """Runs of the data-deletion example, waiting at their gate; {user: request id}."""
    from examples.data_deletion import POLICY, build  # type: ignore[import-not-found]

    saver = backend.saver()
    app = build().compile(checkpointer=saver, approval_policy=POLICY)
    ids = {}
    for user in users:
        out = app.invoke({"user_id": user, "reason": "test"}, {"configurable": {"thread_id": user}})
        ids[user] = out["__interrupt__"][0].id
    return app, ids


def test_list_and_show(db_backend: Backend) -> None:
    _, ids = start(db_backend, "12345", "67890")
    listed = approvals("list", "--db", db_backend.db)
    assert listed.exit_code == 0, listed.output
    table = rows(listed)
    assert sorted(r[0] for r in table) == sorted(ids.values())
    assert {r[1] for r in table} == {"delete"} and {r[2] for r in table} == {"high"}
    as_json = approvals("list", "--db", db_backend.db, "--json", "--node", "delete")
    assert sorted(r["id"] for r in json.loads(as_json.stdout)) == sorted(ids.values())
    assert (
        json.loads(approvals("list", "--db", db_backend.db, "--json", "--risk", "low").stdout) == []
    )
    limited = approvals("list", "--db", db_backend.db, "--limit", "1")
    assert len(rows(limited)) == 1 and "raise --limit" in limited.stderr
    shown = approvals("show", ids["12345"], "--db", db_backend.db, "--json")
    assert shown.exit_code == 0, shown.output
    request = json.loads(shown.stdout)
    assert (request["thread_id"], request["status"]) == ("12345", PENDING)
    assert request["context"]["records"] == 42


def test_approve_without_graph_then_the_run_continues(db_backend: Backend) -> None:
    app, ids = start(db_backend, "12345")
    result = approvals("approve", ids["12345"], "--db", db_backend.db, "--notes", "verified")
    assert result.exit_code == 0, result.output
    assert "approved by cli-reviewer" in result.stderr
    assert "next invoke(None" in result.stderr
    decision = ReviewQueue(store=db_backend.store()).get(ids["12345"]).decision
    assert decision is not None and (decision.reviewer, decision.notes) == (
        "cli-reviewer",
        "verified",
    )
    out = app.invoke(None, {"configurable": {"thread_id": "12345"}})
    assert out["status"] == "deleted"


def test_reject_with_graph_resumes_the_run_here(db_backend: Backend) -> None:
    """On PostgreSQL the run is resumed in the schema --db names (?schema=)."""
    app, ids = start(db_backend, "12345")
    result = approvals("reject", ids["12345"], "--db", db_backend.db, "--graph", GRAPH)
    assert result.exit_code == 0, result.output
    values = app.get_state({"configurable": {"thread_id": "12345"}}).values
    assert values["status"] == "rejected"
    # Traced like `trellis run`: the resumed run's history ends with the run finished.
    log = event_log_for(app.checkpointer)
    (run_id,) = log.runs("12345")
    ends = [row for row in log.list("12345", run_id) if row["kind"] == "run_end"]
    assert [end["status"] for end in ends] == ["ok"]


def test_show_with_the_graph_reads_an_edit_holding_its_types(tmp_path: Path) -> None:
    module = tmp_path / "typed_gate.py"
    module.write_text(
        "from pydantic import BaseModel\n"
        "from typing_extensions import TypedDict\n"
        "from trellis import START, StateGraph\n"
        "from trellis.hitl import Approval\n"
        "class Address(BaseModel):\n"
        "    city: str\n"
        "class State(TypedDict, total=False):\n"
        "    address: Address\n"
        "builder = StateGraph(State)\n"
        "builder.add_node('ship', lambda s: {}, approval=Approval())\n"
        "builder.add_edge(START, 'ship')\n"
        "graph = builder.compile()\n"
    )
    sys.path.insert(0, str(tmp_path))
    from typed_gate import Address, graph  # type: ignore[import-not-found]

    from trellis import SqliteSaver

    db = tmp_path / "runs.db"
    saver = SqliteSaver.from_path(db)
    app = graph.with_checkpointer(saver)
    out = app.invoke({"address": Address(city="Oslo")}, {"configurable": {"thread_id": "t"}})
    rid = out["__interrupt__"][0].id
    ReviewQueue(saver).edit(rid, {"address": Address(city="Bergen")}, reviewer="r")
    refused = approvals("show", rid, "--db", str(db), "--json")
    assert refused.exit_code == 1 and "--graph" in refused.output
    shown = approvals("show", rid, "--db", str(db), "--json", "--graph", "typed_gate:graph")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["decision"]["update"] == {"address": {"city": "Bergen"}}


def test_edit_and_bad_input_are_named_errors(db_backend: Backend) -> None:
    _, ids = start(db_backend, "12345")
    rid = ids["12345"]
    bad_key = approvals("edit", rid, "--db", db_backend.db, "--update", '{"nope": 1}')
    assert bad_key.exit_code == 1 and "InvalidUpdateError" in bad_key.stderr
    not_json = approvals("edit", rid, "--db", db_backend.db, "--update", "{oops")
    assert not_json.exit_code == 1 and "--update is not valid JSON" in not_json.stderr
    risk = approvals("list", "--db", db_backend.db, "--risk", "hihg")
    assert risk.exit_code == 2 and "--risk" in risk.output and "'hihg'" in risk.output
    assert [r.value for r in Risk] == list(RISKS)  # the option's choices are the queue's
    unknown = approvals("approve", "0" * 32, "--db", db_backend.db)
    assert unknown.exit_code == 1 and "ApprovalNotFoundError" in unknown.stderr
    ok = approvals("edit", rid, "--db", db_backend.db, "--update", '{"reason": "edited"}')
    assert ok.exit_code == 0, ok.output
    again = approvals("reject", rid, "--db", db_backend.db)
    assert again.exit_code == 1 and "AlreadyDecidedError" in again.stderr
    shown = approvals("show", rid, "--db", db_backend.db)
    assert "edited" in shown.stdout and '"reason": "edited"' in shown.stdout


def test_sweep_resolves_overdue_requests_once(db_backend: Backend) -> None:
    store = db_backend.store()
    now = time.time()
    for rid, deadline in (("late", now - 5), ("fine", now + 3600)):
        store.create(
            ApprovalRequest(
                id=rid, thread_id=rid, node="delete", summary="s", context={}, risk="high",
                confidence=None, created_at=now - 10, deadline=deadline, status=PENDING,
            )
        )  # fmt: skip
    first = approvals("sweep", "--db", db_backend.db)
    assert first.exit_code == 0, first.output
    assert "late delete timed out -> reject" in first.stdout
    assert "1 overdue request(s) resolved" in first.stderr
    second = approvals("sweep", "--db", db_backend.db, "--json")
    assert json.loads(second.stdout) == []
    metrics = approvals("metrics", "--db", db_backend.db, "--json")
    got = json.loads(metrics.stdout)["delete"]
    assert (got["requests"], got["timed_out"], got["pending"]) == (2, 1, 1)


def test_a_missing_database_is_reported(tmp_path: Path) -> None:
    result = approvals("list", "--db", str(tmp_path / "none.db"))
    assert result.exit_code == 1 and "no database" in result.stderr


@pytest.mark.postgres
def test_another_programs_sqlite_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    before = db.read_bytes()
    result = approvals("list", "--db", str(db))
    assert result.exit_code == 1
    assert f"no Trellis tables in {str(db)!r}; check --db" in result.stderr
    assert db.read_bytes() == before


def test_a_mistyped_postgres_schema_is_refused_not_created(pg_url: str, pg_schema: str) -> None:
    import psycopg

    result = approvals("list", "--db", f"{pg_url}?schema={pg_schema}")
    assert result.exit_code == 1
    assert f"no Trellis tables in schema {pg_schema!r}" in result.stderr
    with psycopg.connect(pg_url) as conn:
        found = conn.execute("SELECT to_regnamespace(%s)", (pg_schema,)).fetchone()
    assert found == (None,), "the schema was created"


def test_an_unreachable_server_is_one_error_line() -> None:
    # Not a pool's retries (a wait of seconds, a log record per attempt): one check.
    result = approvals("list", "--db", "postgresql://postgres@127.0.0.1:9/test")  # discard port
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "OperationalError" in result.stderr


def test_a_sqlite_url_names_the_same_file_as_its_path(tmp_path: Path) -> None:
    from trellis import SqliteSaver

    path = tmp_path / "runs.db"
    backend = type("B", (), {"saver": lambda self: SqliteSaver.from_path(path)})()
    _, ids = start(backend, "12345")  # type: ignore[arg-type]
    listed = approvals("list", "--db", f"sqlite:///{path}", "--json")
    assert listed.exit_code == 0, listed.output
    assert [r["id"] for r in json.loads(listed.stdout)] == [ids["12345"]]


def test_a_graph_with_its_own_checkpointer_says_db_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its requests live with its own checkpointer, as its runs do; --db naming
    another database is ignored, and said to be, as `trellis run` says."""
    (tmp_path / "own_saver_graph.py").write_text(
        "from typing_extensions import TypedDict\n"
        "from trellis import START, MemorySaver, StateGraph\n"
        "from trellis.hitl import Approval\n"
        "class S(TypedDict, total=False):\n"
        "    done: bool\n"
        "b = StateGraph(S)\n"
        "b.add_node('act', lambda s: {'done': True}, approval=Approval())\n"
        "b.add_edge(START, 'act')\n"
        "graph = b.compile(checkpointer=MemorySaver())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import own_saver_graph  # type: ignore[import-not-found]

    config = {"configurable": {"thread_id": "t"}}
    (asked,) = own_saver_graph.graph.invoke({}, config)["__interrupt__"]
    foreign = tmp_path / "notes.db"  # not Trellis's: ignored all the same, and left alone
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    shown = approvals("show", asked.id, "--db", str(foreign), "--graph", "own_saver_graph:graph")
    assert shown.exit_code == 0, shown.output
    assert "--db is ignored" in shown.output
    with sqlite3.connect(foreign) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("notes",)]
    other = tmp_path / "other.db"
    ReviewQueue.from_url(str(other)).close()  # a database of its own, without the request
    result = approvals("approve", asked.id, "--db", str(other), "--graph", "own_saver_graph:graph")
    assert result.exit_code == 0, result.output
    assert "the graph has its own checkpointer; --db is ignored" in result.output
    assert own_saver_graph.graph.get_state(config).values == {"done": True}
