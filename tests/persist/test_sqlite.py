"""SqliteSaver specifics: the file, its pragmas, its schema, its transactions, its size."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any, TypedDict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.persist.conftest import History

from trellis import END, START, StateGraph
from trellis.errors import (
    CheckpointError,
    ConcurrentUpdateError,
    InvalidConfigError,
    SchemaVersionError,
)
from trellis.persist.base import PendingWrite
from trellis.persist.serde import Serializer
from trellis.persist.sqlite import SCHEMA_VERSION, AsyncSqliteSaver, SqliteSaver
from trellis.persist.storage import decode_state


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "deep" / "er" / "checkpoints.db"


def test_from_path_creates_the_directory_and_a_wal_database(db: Path) -> None:
    with SqliteSaver.from_path(db):
        pass
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT max(version) FROM trellis_schema_version").fetchone() == (
            SCHEMA_VERSION,
        )


@pytest.mark.parametrize(("level", "code"), [("NORMAL", 1), ("full", 2), ("OFF", 0)])
def test_synchronous_setting_is_applied(db: Path, level: str, code: int) -> None:
    with SqliteSaver.from_path(db, synchronous=level) as saver:
        assert saver._conn.execute("PRAGMA synchronous").fetchone()[0] == code


def test_synchronous_setting_is_validated(db: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteSaver.from_path(db, synchronous="NORMAL; DROP TABLE x")


def test_a_file_that_is_not_a_database_fails_naming_the_path(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CheckpointError, match="notes.txt"):
        SqliteSaver.from_path(bogus)
    with pytest.raises(CheckpointError, match="a-directory"):
        (tmp_path / "a-directory").mkdir()
        SqliteSaver.from_path(tmp_path / "a-directory")


def test_setup_twice_is_a_no_op(db: Path) -> None:
    with SqliteSaver.from_path(db) as saver:
        History(saver).put(set={"n": 1})
        saver.setup()
    with SqliteSaver.from_path(db) as again:
        again.setup()
        assert len(again.threads()) == 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM trellis_schema_version").fetchone() == (
            SCHEMA_VERSION,  # one row per migration, each applied once
        )


def test_a_version_1_file_is_migrated_and_keeps_its_threads(db: Path) -> None:
    with SqliteSaver.from_path(db) as saver:
        History(saver).put(set={"n": 1})
        before = saver.threads()
    with sqlite3.connect(db) as conn:  # back to what version 1 left
        conn.execute("CREATE INDEX trellis_threads_by_time ON trellis_threads (updated_at)")
        conn.execute("ALTER TABLE trellis_blobs DROP COLUMN items")
        conn.execute("DELETE FROM trellis_schema_version WHERE version > 1")
    with SqliteSaver.from_path(db) as again:
        assert again.threads() == before
    with sqlite3.connect(db) as conn:
        versions = conn.execute("SELECT version FROM trellis_schema_version ORDER BY 1")
        assert versions.fetchall() == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        index = "SELECT count(*) FROM sqlite_master WHERE name = 'trellis_threads_by_time'"
        assert conn.execute(index).fetchone() == (0,)


def test_records_of_state_format_1_stay_readable_and_continue(db: Path) -> None:
    """A file written before records held small values, when every value was a blob."""
    with SqliteSaver.from_path(db) as saver:
        h = History(saver)
        first = h.put(set={"q": "ship it?", "n": 0})
        h.put(set={"n": 1})
    serde = Serializer()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT tid, id, codec, state FROM trellis_checkpoints").fetchall()
        for tid, cid, codec, blob in rows:
            state = decode_state(serde, codec, blob, thread_id=h.thread_id)
            for k, (version, value_codec, data) in state.inline.items():
                if version == cid:
                    size = len(data)
                    conn.execute(
                        "INSERT INTO trellis_blobs VALUES "
                        "(?, ?, ?, 'full', NULL, NULL, 0, ?, ?, ?, ?, NULL)",
                        (tid, k, version, size, size, value_codec, data),
                    )
            ids = list(dict.fromkeys(state.versions.values()))
            chans = {
                k: ids.index(v) if k in state.valued else -ids.index(v) - 1
                for k, v in state.versions.items()
            }
            old = serde.dumps([1, ids, chans, state.pending])
            conn.execute(
                "UPDATE trellis_checkpoints SET codec = ?, state = ? WHERE id = ?", (*old, cid)
            )
    with SqliteSaver.from_path(db) as again:  # and a cold cache
        h.saver = again
        h.check(again.get_tuple(h.thread_id, first), first)
        h.check(again.get_tuple(h.thread_id))
        h.put(set={"n": 2})  # "q" is still read from its blob
        h.check(again.get_tuple(h.thread_id))


def test_a_newer_schema_is_refused(db: Path) -> None:
    SqliteSaver.from_path(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO trellis_schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaVersionError, match="newer"):
        SqliteSaver.from_path(db)
    conn = sqlite3.connect(db, check_same_thread=False)
    with pytest.raises(SchemaVersionError):
        SqliteSaver(conn).get_tuple("t")  # lazily set up on first use


def _statements(saver: SqliteSaver) -> list[str]:
    seen: list[str] = []
    saver._conn.set_trace_callback(seen.append)
    return seen


@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold-cache"])
def test_each_put_is_exactly_one_transaction(db: Path, cold: bool) -> None:
    saver = SqliteSaver.from_path(db)
    h = History(saver)
    h.put(append={"log": ["big" * 300]})  # the anchor: the next appends are deltas
    for i in range(5):
        h.put(append={"log": [i]}, set={"n": i})
    if cold:
        saver = SqliteSaver.from_path(db)
        h.saver = saver
    seen = _statements(saver)
    h.put(append={"log": ["x"]}, set={"n": 9}, writes=[PendingWrite("t", "n", 0, "c", 1)])
    assert [s for s in seen if s.split()[0] in ("BEGIN", "COMMIT", "ROLLBACK")] == [
        "BEGIN IMMEDIATE",
        "COMMIT",
    ]
    kinds = saver._conn.execute(
        "SELECT kind FROM trellis_blobs WHERE version = ? AND channel = 'log'", (h.head,)
    ).fetchall()
    assert kinds == [("delta",)]  # a fresh saver finds the chain in the file
    h.check(saver.get_tuple(h.thread_id))


def test_a_put_after_reading_the_head_reads_no_record(db: Path) -> None:
    """A worker resuming a thread another one wrote reads the head first; its put
    then knows the parent's inline values without reading the record again."""
    with SqliteSaver.from_path(db) as writer:
        h = History(writer)
        h.put(set={"q": "ship it?", "n": 0})
    with SqliteSaver.from_path(db) as worker:
        h.saver = worker
        worker.get_tuple(h.thread_id)
        seen = _statements(worker)
        h.put(set={"n": 1})
        assert [s.split()[0] for s in seen] == ["BEGIN", "UPDATE", "INSERT", "COMMIT"]
        h.check(worker.get_tuple(h.thread_id))


def test_a_run_commits_its_input_with_the_step_that_applies_it(db: Path) -> None:
    from typing_extensions import TypedDict

    from trellis import START, StateGraph

    class S(TypedDict):
        n: int

    builder = StateGraph(S)
    builder.add_node("a", lambda s: {"n": s["n"] + 1})
    builder.add_node("b", lambda s: {"n": s["n"] * 10})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    saver = SqliteSaver.from_path(db)
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    seen = _statements(saver)
    assert graph.invoke({"n": 1}, config) == {"n": 20}
    # input + __start__ together, then a, then b: three commits for four checkpoints
    assert seen.count("BEGIN IMMEDIATE") == 3
    sources = [t.metadata["source"] for t in graph.get_state_history(config)]
    assert sources == ["loop", "loop", "loop", "input"]
    seen.clear()
    assert graph.invoke({"n": 2}, config) == {"n": 30}  # on a thread that has a head
    assert seen.count("BEGIN IMMEDIATE") == 3
    seen.clear()
    assert asyncio.run(graph.ainvoke({"n": 3}, config)) == {"n": 40}
    assert seen.count("BEGIN IMMEDIATE") == 3


def test_writers_on_two_connections_race_safely(db: Path) -> None:
    savers = [SqliteSaver.from_path(db) for _ in range(4)]
    h = History(savers[0])
    parent = h.put(set={"n": 0})
    checkpoints = [h.make(set={"n": i}) for i in range(4)]
    barrier, won, lost = threading.Barrier(4), [], []

    def write(i: int) -> None:
        barrier.wait()
        try:
            savers[i].put(h.thread_id, checkpoints[i], {}, expected_head=parent)
            won.append(i)
        except ConcurrentUpdateError:
            lost.append(i)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 3
    assert [t.checkpoint.id for t in savers[1].list(h.thread_id)] == [
        checkpoints[won[0]].id,
        parent,
    ]


def test_prune_gives_pages_back(db: Path) -> None:
    saver = SqliteSaver.from_path(db)
    h = History(saver)
    for i in range(200):
        h.put(set={"blob": bytes([i % 251]) * 4000})
    pages = saver._conn.execute("PRAGMA page_count").fetchone()[0]
    assert saver.prune(keep_last=1) == 198  # the head and its parent stay
    assert saver._conn.execute("PRAGMA page_count").fetchone()[0] < pages / 4
    h.check(saver.get_tuple(h.thread_id))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sizes=st.lists(st.integers(1, 4000), min_size=1, max_size=120), seed=st.integers(0, 2**32))
def test_append_loops_store_linear_bytes_on_disk(
    tmp_path: Path, sizes: list[int], seed: int
) -> None:
    import random

    rnd = random.Random(seed)
    serde = Serializer(compress_threshold=1 << 30)  # incompressible data: measure the policy
    saver = SqliteSaver.from_path(tmp_path / "size.db", serde=serde)
    h = History(saver)
    appended = 0
    for size in sizes:
        item = rnd.randbytes(size)
        h.put(append={"log": [item]})
        appended += len(serde.dumps([item])[1])
    (stored,) = saver._conn.execute(
        "SELECT sum(length(data)) FROM trellis_blobs b JOIN trellis_threads t USING (tid) "
        "WHERE t.thread_id = ?",
        (h.thread_id,),
    ).fetchone()
    assert stored <= 3 * appended + 64
    h.check(saver.get_tuple(h.thread_id))
    saver.close()


def test_a_loop_past_two_skip_levels_stays_linear_on_disk(tmp_path: Path) -> None:
    """2100 appends cross the 32- and 1024-position skip links twice: the blobs
    hold under 3x the appended bytes (the old full-snapshot compaction stored
    5.3x here, a ratio that grew with the loop's length)."""
    serde = Serializer(compress_threshold=1 << 30)
    saver = SqliteSaver.from_path(tmp_path / "long.db", serde=serde)
    h = History(saver)
    appended = 0
    for i in range(2100):
        item = i.to_bytes(4, "big") * 25
        h.put(append={"log": [item]})
        appended += len(serde.dumps([item])[1])
    (stored,) = saver._conn.execute("SELECT sum(length(data)) FROM trellis_blobs").fetchone()
    assert stored < 3 * appended
    h.check(SqliteSaver.from_path(tmp_path / "long.db", serde=serde).get_tuple(h.thread_id))
    saver.close()


@pytest.mark.parametrize("level", ["NORMAL", "FULL"])
async def test_async_calls_from_many_tasks(db: Path, level: str) -> None:
    """NORMAL runs them inline; FULL (an fsync per commit) in worker threads."""
    saver = SqliteSaver.from_path(db, synchronous=level)
    hs = [History(saver) for _ in range(5)]
    for i in range(4):
        await asyncio.gather(*(h.aput(append={"log": [i]}) for h in hs))
    for h in hs:
        h.check(await saver.aget_tuple(h.thread_id))


# --- LangGraph's constructors, so ported code runs unchanged ------------------------------


def _counter() -> Any:
    class S(TypedDict):
        n: int

    g = StateGraph(S)
    g.add_node("inc", lambda s: {"n": s["n"] + 1})
    g.add_edge(START, "inc")
    g.add_edge("inc", END)
    return g


def test_from_conn_string_in_a_with_block_as_langgraph_writes_it(tmp_path: Path) -> None:
    config: Any = {"configurable": {"thread_id": "t"}}
    with SqliteSaver.from_conn_string(":memory:") as saver:
        graph = _counter().compile(checkpointer=saver)
        assert graph.invoke({"n": 1}, config) == {"n": 2}
        assert saver.database is None
    path = tmp_path / "ported.sqlite"
    with SqliteSaver.from_conn_string(str(path)) as saver:
        _counter().compile(checkpointer=saver).invoke({"n": 5}, config)
    uri = f"file:{path}?mode=ro"  # a URI, as sqlite3.connect(uri=True) reads it
    with SqliteSaver.from_conn_string(uri) as saver:
        assert _counter().compile(checkpointer=saver).get_state(config).values == {"n": 6}


def test_a_conn_string_url_is_read_not_made_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with SqliteSaver.from_conn_string("sqlite:///runs.db") as saver:
        assert Path(saver.path) == tmp_path / "runs.db"
    with pytest.raises(InvalidConfigError, match="PostgresSaver.from_conn_string"):
        SqliteSaver.from_conn_string("postgresql://app:secret@db/app")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.db"]  # no postgresql:/ dir


def test_a_conn_string_that_cannot_open_names_itself(tmp_path: Path) -> None:
    uri = f"file:{tmp_path / 'missing.db'}?mode=ro"
    with pytest.raises(CheckpointError, match="missing.db"):
        SqliteSaver.from_conn_string(uri)


def test_a_path_passed_for_a_connection_is_refused_with_the_fix(db: Path) -> None:
    with pytest.raises(TypeError, match=r"got str; .*SqliteSaver\.from_conn_string"):
        SqliteSaver(str(db))  # type: ignore[arg-type]
    assert not db.exists()


def test_bad_options_close_the_connection_the_saver_opened(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def recording_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(sqlite3, "connect", recording_connect)
    with pytest.raises(ValueError, match="synchronous"):
        SqliteSaver.from_path(db, synchronous="sometimes")
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[0].execute("SELECT 1")


async def test_async_sqlite_saver_is_awaited_as_langgraph_writes_it(db: Path) -> None:
    config: Any = {"configurable": {"thread_id": "t"}}
    async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
        assert isinstance(saver, AsyncSqliteSaver)
        await saver.setup()
        graph = _counter().compile(checkpointer=saver)
        assert await graph.ainvoke({"n": 1}, config) == {"n": 2}
    with pytest.raises(sqlite3.ProgrammingError):  # the async with closed it
        saver._conn.execute("SELECT 1")
    with SqliteSaver.from_path(db) as again:
        assert _counter().compile(checkpointer=again).get_state(config).values == {"n": 2}
