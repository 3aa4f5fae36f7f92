"""PostgresSaver specifics: schema setup and migration, errors, pools, round trips."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, TypedDict

import pytest
from tests.persist.conftest import History

from trellis import START, StateGraph
from trellis.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ConcurrentUpdateError,
    InvalidConfigError,
    SchemaVersionError,
)
from trellis.persist.base import PendingWrite

pytestmark = pytest.mark.postgres
psycopg = pytest.importorskip("psycopg")
psycopg_pool = pytest.importorskip("psycopg_pool")
rows = pytest.importorskip("psycopg.rows")

from trellis.persist.postgres import (  # noqa: E402
    SCHEMA_VERSION,
    AsyncPostgresSaver,
    PostgresSaver,
)


@pytest.fixture
def make(pg_url: str, pg_schema: str) -> Iterator[Any]:
    made: list[PostgresSaver] = []

    def make(**kwargs: Any) -> PostgresSaver:
        kwargs.setdefault("pool_size", 2)
        saver = PostgresSaver.from_conn_string(pg_url, schema=pg_schema, **kwargs)
        made.append(saver)
        return saver

    yield make
    for saver in made:
        saver.close()


def _sql(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params or None)
        return cur.fetchall() if cur.description else []


def test_setup_twice_is_a_no_op(make: Any, pg_url: str, pg_schema: str) -> None:
    saver = make()
    saver.setup()
    saver.setup()
    make().setup()
    versions = _sql(pg_url, f'SELECT version FROM "{pg_schema}".trellis_schema_version ORDER BY 1')
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_concurrent_setup_from_threads_and_processes(pg_url: str, pg_schema: str) -> None:
    script = (
        "import sys\n"
        "from trellis.persist.postgres import PostgresSaver\n"
        "s = PostgresSaver.from_conn_string(sys.argv[1], schema=sys.argv[2])\n"
        "s.setup(); s.close()\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script)
    procs = [subprocess.Popen([sys.executable, f.name, pg_url, pg_schema]) for _ in range(2)]
    errors: list[BaseException] = []

    def setup() -> None:
        try:
            saver = PostgresSaver.from_conn_string(pg_url, schema=pg_schema)
            saver.setup()
            saver.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=setup) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert errors == []
    versions = _sql(pg_url, f'SELECT version FROM "{pg_schema}".trellis_schema_version ORDER BY 1')
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_a_version_1_schema_is_migrated_and_keeps_its_threads(
    make: Any, pg_url: str, pg_schema: str
) -> None:
    saver = make()
    History(saver).put(set={"n": 1})
    s = f'"{pg_schema}"'
    # Back to what version 1 left: its index, no items column, no rows for later versions.
    _sql(pg_url, f"CREATE INDEX trellis_threads_by_time ON {s}.trellis_threads (updated_at)")
    _sql(pg_url, f"ALTER TABLE {s}.trellis_blobs DROP COLUMN items")
    _sql(pg_url, f"DELETE FROM {s}.trellis_schema_version WHERE version > 1")
    again = make()
    again.setup()
    versions = _sql(pg_url, f"SELECT version FROM {s}.trellis_schema_version ORDER BY 1")
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    indexes = _sql(pg_url, "SELECT indexname FROM pg_indexes WHERE schemaname = %s", pg_schema)
    assert ("trellis_threads_by_time",) not in indexes
    assert [t.thread_id for t in again.threads()] == [saver.threads()[0].thread_id]


def test_a_newer_schema_is_refused(make: Any, pg_url: str, pg_schema: str) -> None:
    make().setup()
    _sql(pg_url, f'INSERT INTO "{pg_schema}".trellis_schema_version (version) VALUES (%s)',
         SCHEMA_VERSION + 1)  # fmt: skip
    with pytest.raises(SchemaVersionError, match="newer"):
        make().setup()
    with pytest.raises(SchemaVersionError):
        make().get_tuple("t")


def test_an_unreachable_server_names_host_and_port() -> None:
    saver = PostgresSaver.from_conn_string("postgresql://postgres@127.0.0.1:9/nope", timeout=2)
    started = time.monotonic()
    with pytest.raises(CheckpointError, match=r"127\.0\.0\.1:9") as info:
        saver.get_tuple("t")
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    with pytest.raises(CheckpointError, match=r"127\.0\.0\.1:9"):
        asyncio.run(saver.aget_tuple("t"))
    assert time.monotonic() - started < 10
    saver.close()


def test_schema_names_are_identifiers(pg_url: str) -> None:
    with pytest.raises(ValueError):
        PostgresSaver.from_conn_string(pg_url, schema='x"; DROP SCHEMA public; --')
    with pytest.raises(ValueError):
        PostgresSaver.from_conn_string(f"{pg_url}?schema=Bad-Name")


def test_the_url_may_name_the_schema(pg_url: str, pg_schema: str) -> None:
    """``?schema=`` is taken out; the other parameters reach libpq exactly as written."""
    sep = "&" if "?" in pg_url else "?"
    name = f"trellis test {pg_schema}"
    url = f"{pg_url}{sep}application_name={name.replace(' ', '%20')}&schema={pg_schema}"
    saver = PostgresSaver.from_conn_string(url, pool_size=1)
    h = History(saver)
    h.put(append={"log": [1]})
    assert saver.schema == pg_schema and saver.database.schema == pg_schema
    assert _sql(pg_url, f'SELECT count(*) FROM "{pg_schema}".trellis_checkpoints') == [(1,)]
    seen = _sql(pg_url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", name)
    assert seen == [(1,)]  # the pool's connection, named with spaces, not '+'
    saver.close()
    with pytest.raises(InvalidConfigError, match="schema"):
        PostgresSaver.from_conn_string(url, schema="other")


def test_a_warm_put_is_one_statement_in_one_round_trip(
    pg_url: str, pg_schema: str, tmp_path: Any
) -> None:
    saver = PostgresSaver.from_conn_string(pg_url, schema=pg_schema, pool_size=1)
    h = History(saver)
    for i in range(3):
        h.put(append={"log": [i]}, set={"n": i})
    trace = tmp_path / "libpq.trace"
    pool = saver._sync_pool()  # one connection: the put below uses the traced one
    with open(trace, "w") as out:
        with pool.connection() as conn:
            conn.pgconn.trace(out.fileno())
        h.put(append={"log": ["x"]}, set={"n": 9}, writes=[PendingWrite("t", "n", 0, "c", 1)])
        with pool.connection() as conn:
            conn.pgconn.untrace()
    sent = [line.split("\t")[3:] for line in trace.read_text().splitlines() if "\tF\t" in line]
    assert [m[0] for m in sent].count("Sync") == 1
    assert [m[0] for m in sent].count("Execute") == 1  # trellis_put, a transaction by itself
    text = " ".join(" ".join(m) for m in sent)
    assert "BEGIN" not in text and "COMMIT" not in text
    h.check(saver.get_tuple(h.thread_id))
    assert saver.get_tuple(h.thread_id).pending_writes[0].value == 1
    saver.close()


def _prepared_puts(conn: Any) -> list[str]:
    rows = conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()
    return [r[0] for r in rows if "trellis_put" in r[0]]


def test_the_put_is_parsed_and_planned_once_per_connection(pg_url: str, pg_schema: str) -> None:
    saver = PostgresSaver.from_conn_string(pg_url, schema=pg_schema, pool_size=1)
    h = History(saver)
    for i in range(4):
        h.put(append={"log": [i]}, set={"n": i})
    with saver._sync_pool().connection() as conn:
        assert len(_prepared_puts(conn)) == 1
        assert conn.prepare_threshold is None  # nothing else gets prepared
    h.check(saver.get_tuple(h.thread_id))
    saver.close()


def test_a_saver_told_so_prepares_nothing(pg_url: str, pg_schema: str) -> None:
    saver = PostgresSaver.from_conn_string(
        pg_url, schema=pg_schema, pool_size=1, prepared_statements=False
    )
    h = History(saver)
    for i in range(4):
        h.put(append={"log": [i]})
    with saver._sync_pool().connection() as conn:
        assert _prepared_puts(conn) == []
    saver.close()


def test_a_pool_that_configures_connections_without_prepared_statements_gets_none(
    pg_url: str, pg_schema: str
) -> None:
    def configure(conn: Any) -> None:
        conn.prepare_threshold = None

    pool = psycopg_pool.ConnectionPool(
        pg_url, min_size=1, max_size=1, open=True, kwargs={"autocommit": True}, configure=configure
    )
    try:
        saver = PostgresSaver(pool, schema=pg_schema)
        h = History(saver)
        for i in range(4):
            h.put(append={"log": [i]})
        with pool.connection() as conn:
            assert _prepared_puts(conn) == []
            assert conn.prepare_threshold is None  # handed back as it came
    finally:
        pool.close()


def test_a_lost_prepared_statement_fails_one_put_cleanly_then_none_are_prepared(
    pg_url: str, pg_schema: str
) -> None:
    """What a pooler in transaction mode does: the next server session lacks it."""
    saver = PostgresSaver.from_conn_string(pg_url, schema=pg_schema, pool_size=1)
    h = History(saver)
    for i in range(3):
        h.put(append={"log": [i]})
    with saver._sync_pool().connection() as conn:
        conn.execute("DEALLOCATE ALL")
    stale, ck = h.head, h.make(append={"log": ["lost"]})
    with pytest.raises(CheckpointError, match="prepared_statements=False"):
        saver.put(h.thread_id, ck, {}, expected_head=stale)
    h.check(saver.get_tuple(h.thread_id))  # nothing of the failed put is stored
    h.put(append={"log": ["after"]})
    h.check(saver.get_tuple(h.thread_id))
    with saver._sync_pool().connection() as conn:
        assert _prepared_puts(conn) == []
    saver.close()


async def test_the_async_put_is_parsed_and_planned_once_per_connection(
    pg_url: str, pg_schema: str
) -> None:
    saver = PostgresSaver.from_conn_string(pg_url, schema=pg_schema, pool_size=1)
    h = History(saver)
    try:
        for i in range(4):
            await h.aput(append={"log": [i]}, set={"n": i})
        async with (await saver._async_conns()).connection() as conn:
            cur = await conn.execute("SELECT statement FROM pg_prepared_statements")
            assert len([r for r in await cur.fetchall() if "trellis_put" in r[0]]) == 1
        h.check(await saver.aget_tuple(h.thread_id))
    finally:
        await saver.aclose()


def test_metadata_is_jsonb(make: Any, pg_url: str, pg_schema: str) -> None:
    h = History(make())
    h.put(set={"n": 1}, metadata={"source": "loop", "step": 3})
    got = _sql(pg_url, f'SELECT metadata ->> %s FROM "{pg_schema}".trellis_checkpoints', "source")
    assert got == [("loop",)]


def test_schemas_isolate_savers(pg_url: str, pg_schema: str) -> None:
    other = pg_schema + "_b"
    a = PostgresSaver.from_conn_string(pg_url, schema=pg_schema)
    b = PostgresSaver.from_conn_string(pg_url, schema=other)
    try:
        History(a, "same-thread").put(set={"n": 1})
        assert b.get_tuple("same-thread") is None
    finally:
        a.close()
        b.close()
        _sql(pg_url, f'DROP SCHEMA IF EXISTS "{other}" CASCADE')


@pytest.mark.parametrize(
    ("kwargs", "prepared"),
    [
        # LangGraph's way: transactions on (psycopg's default) and dict rows. A put
        # then travels in a pipeline with its BEGIN and COMMIT, and is not prepared.
        ({"row_factory": rows.dict_row}, 0),
        ({"autocommit": True}, 1),
        # Behind a PgBouncer in transaction mode, say: prepared statements turned off.
        ({"autocommit": True, "prepare_threshold": None}, 0),
    ],
)
def test_a_callers_pool_works(
    pg_url: str, pg_schema: str, kwargs: dict[str, Any], prepared: int
) -> None:
    pool = psycopg_pool.ConnectionPool(pg_url, min_size=1, max_size=1, open=True, kwargs=kwargs)
    try:
        saver = PostgresSaver(pool, schema=pg_schema)
        h = History(saver)
        for i in range(4):
            h.put(append={"log": [i]})
        h.check(saver.get_tuple(h.thread_id))
        assert len(list(saver.list(h.thread_id))) == 4
        with pool.connection() as conn:
            conn.row_factory = rows.tuple_row
            assert len(_prepared_puts(conn)) == prepared
        saver.close()  # not ours: stays open
        assert not pool.closed
    finally:
        pool.close()


async def test_an_async_pool_can_be_passed(pg_url: str, pg_schema: str) -> None:
    pool = psycopg_pool.AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False)
    await pool.open()
    try:
        saver = PostgresSaver(pool, schema=pg_schema)
        h = History(saver)
        for i in range(4):
            await h.aput(append={"log": [i]})
        h.check(await saver.aget_tuple(h.thread_id))
        named = {"configurable": {"thread_id": h.thread_id, "checkpoint_id": h.head}}
        assert [t.checkpoint.id async for t in saver.alist(named)] == [h.head]
        assert saver._shared.pool is None  # async reads make no sync pool
        h.check(saver.get_tuple(h.thread_id))  # a sync pool is made on demand
        saver.close()
    finally:
        await pool.close()


async def test_the_connections_of_loops_that_ended_are_closed(pg_url: str, pg_schema: str) -> None:
    """Each asyncio.run in another thread gets connections of its own; once that loop
    has closed, the next new loop closes them, instead of keeping them for good."""
    name = f"trellis_{pg_schema}"
    saver = PostgresSaver.from_conn_string(_named(pg_url, name), schema=pg_schema, pool_size=2)
    await History(saver).aput(set={"n": 0})  # this loop's connection
    for i in range(3):
        h = History(saver)
        thread = threading.Thread(target=asyncio.run, args=(h.aput(set={"n": i}),))
        thread.start()
        thread.join()
        h.check(await saver.aget_tuple(h.thread_id))
    # this loop's and the last thread's, until a next loop comes
    assert _backends(pg_url, name) == 2
    await saver.aclose()
    assert _backends(pg_url, name) == 0


def test_close_closes_the_connections_of_runs_that_ended(pg_url: str, pg_schema: str) -> None:
    name = f"trellis_{pg_schema}"
    saver = PostgresSaver.from_conn_string(_named(pg_url, name), schema=pg_schema, pool_size=2)
    asyncio.run(History(saver).aput(set={"n": 1}))
    assert _backends(pg_url, name) == 1
    saver.close()
    assert _backends(pg_url, name) == 0


async def test_close_on_the_running_loop_closes_its_connections(
    pg_url: str, pg_schema: str
) -> None:
    """``with PostgresSaver.from_conn_string(url) as saver:`` inside async code: the
    exit closes the connections this loop is using, and the saver refuses to go on."""
    name = f"trellis_{pg_schema}"
    with PostgresSaver.from_conn_string(_named(pg_url, name), schema=pg_schema) as saver:
        await History(saver).aput(set={"n": 1})
        assert _backends(pg_url, name) == 1
    assert _backends(pg_url, name) == 0
    with pytest.raises(CheckpointError, match="is closed"):
        await History(saver).aput(set={"n": 2})


async def test_a_callers_async_pool_not_opened_yet_is_opened_on_first_use(
    pg_url: str, pg_schema: str
) -> None:
    pool = psycopg_pool.AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False)
    saver = PostgresSaver(pool, schema=pg_schema)
    try:
        h = History(saver)
        await h.aput(set={"n": 1})
        h.check(await saver.aget_tuple(h.thread_id))
        assert not pool.closed and pool.get_stats()["connections_num"] >= 1
        assert saver._shared.loop_conns == {}  # the caller's pool served, not ours
    finally:
        await pool.close()


def test_a_loop_that_ends_without_aclose_has_no_task_of_the_savers(make: Any) -> None:
    """asyncio.run cancels what is left on its loop as it returns; the saver leaves
    nothing there (a pool's maintenance task, cancelled mid-connect, hung it)."""
    saver = make(pool_size=4)

    async def use() -> set[asyncio.Task[Any]]:
        await asyncio.gather(*(History(saver).aput(set={"n": i}) for i in range(4)))
        return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    for _ in range(2):
        assert asyncio.run(use()) == set()


def test_a_closed_saver_opens_no_pool_for_a_new_loop(pg_url: str, pg_schema: str) -> None:
    """The caller's async pool is theirs; once the saver (owning a sync pool) is
    closed, a later event loop gets an error, not a new pool no one would close."""

    async def with_callers_pool() -> PostgresSaver:
        pool = psycopg_pool.AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False)
        await pool.open()
        saver = PostgresSaver(pool, schema=pg_schema)
        await History(saver).aput(set={"n": 1})
        await pool.close()
        return saver

    saver = asyncio.run(with_callers_pool())
    History(saver).put(set={"n": 2})  # a sync pool of the saver's own
    saver.close()
    with pytest.raises(CheckpointError, match="is closed"):
        asyncio.run(saver.aget_tuple("t"))


async def test_concurrent_async_writers_on_many_threads(make: Any) -> None:
    saver = make()
    hs = [History(saver) for _ in range(8)]
    try:
        for i in range(5):
            await asyncio.gather(*(h.aput(append={"log": [i]}, set={"n": i}) for h in hs))
        for h in hs:
            h.check(await saver.aget_tuple(h.thread_id))
    finally:
        await saver.aclose()


def test_prune_and_delete_race_puts_without_damage(make: Any, pg_url: str, pg_schema: str) -> None:
    writer, pruner = make(), make()
    h = History(writer)
    h.put(append={"log": ["x" * 200]})
    stop = threading.Event()
    failures: list[BaseException] = []

    def prune() -> None:
        while not stop.is_set():
            try:
                pruner.prune(keep_last=2)
            except BaseException as exc:
                failures.append(exc)
                return

    t = threading.Thread(target=prune)
    t.start()
    try:
        for i in range(40):
            h.put(append={"log": [i]}, writes=[PendingWrite("t", "n", 0, "c", i)])
    finally:
        stop.set()
        t.join()
    assert failures == []
    h.check(writer.get_tuple(h.thread_id))

    doomed = History(writer)
    doomed.put(set={"n": 0})
    ck = doomed.make(set={"n": 1})
    racer = threading.Thread(target=pruner.delete_thread, args=(doomed.thread_id,))
    racer.start()
    with contextlib.suppress(ConcurrentUpdateError):  # lost to the delete: fine
        writer.put(doomed.thread_id, ck, {}, expected_head=doomed.head)
    racer.join()
    orphans = _sql(
        pg_url,
        f'SELECT count(*) FROM "{pg_schema}".trellis_checkpoints c WHERE NOT EXISTS '
        f'(SELECT 1 FROM "{pg_schema}".trellis_threads t WHERE t.tid = c.tid)',
    )
    assert orphans == [(0,)]


def test_a_schema_name_with_a_trailing_newline_is_refused(pg_url: str) -> None:
    with pytest.raises(ValueError):
        PostgresSaver.from_conn_string(pg_url, schema="billing\n")


# psycopg prepares a statement on its sixth use; one queued in a pipeline that the
# server aborted (a lost race, a write for a missing checkpoint) used to be
# recorded as prepared anyway, and every later call on that connection failed
# with 'prepared statement "_pg3_0" does not exist'.
_ROUNDS = 8
_ORPHAN = [PendingWrite("t", "n", 0, "c", 1)]


def _lose_races(loser: PostgresSaver, h: History) -> None:
    """``loser`` (on one pooled connection) loses a race to ``h``'s saver and writes
    for a missing checkpoint, ``_ROUNDS`` times: both are errors it must survive."""
    for i in range(_ROUNDS):
        stale, ck = h.head, h.make(append={"log": [f"lost {i}"]})
        h.put(append={"log": [i]})
        with pytest.raises(ConcurrentUpdateError):
            loser.put(h.thread_id, ck, {}, expected_head=stale)
        with pytest.raises(CheckpointNotFoundError):
            loser.put_writes(h.thread_id, "no-such-checkpoint", _ORPHAN)


async def _alose_races(loser: PostgresSaver, h: History) -> None:
    for i in range(_ROUNDS):
        stale, ck = h.head, h.make(append={"log": [f"lost {i}"]})
        await h.aput(append={"log": [i]})
        with pytest.raises(ConcurrentUpdateError):
            await loser.aput(h.thread_id, ck, {}, expected_head=stale)
        with pytest.raises(CheckpointNotFoundError):
            await loser.aput_writes(h.thread_id, "no-such-checkpoint", _ORPHAN)


def _still_works(loser: PostgresSaver, h: History) -> None:
    h.check(loser.get_tuple(h.thread_id))
    assert len(list(loser.list(h.thread_id))) == _ROUNDS + 1
    h.saver = loser
    h.put(append={"log": ["after"]}, writes=_ORPHAN)
    h.check(loser.get_tuple(h.thread_id))


def test_lost_races_leave_the_connection_usable(make: Any) -> None:
    h, loser = History(make()), make(pool_size=1)
    h.put(append={"log": ["start"]})
    _lose_races(loser, h)
    _still_works(loser, h)


async def test_lost_races_leave_the_async_connection_usable(make: Any) -> None:
    winner, loser = make(), make(pool_size=1)
    h = History(winner)
    try:
        await h.aput(append={"log": ["start"]})
        await _alose_races(loser, h)
        h.check(await loser.aget_tuple(h.thread_id))
        h.saver = loser
        await h.aput(append={"log": ["after"]}, writes=_ORPHAN)
        h.check(await loser.aget_tuple(h.thread_id))
    finally:
        await winner.aclose()
        await loser.aclose()


@pytest.mark.parametrize("autocommit", [True, False])
def test_lost_races_leave_a_callers_pool_usable_and_as_it_was(
    make: Any, pg_url: str, pg_schema: str, autocommit: bool
) -> None:
    pool = psycopg_pool.ConnectionPool(
        pg_url, min_size=1, max_size=1, open=True, kwargs={"autocommit": autocommit}
    )
    try:
        h, loser = History(make()), PostgresSaver(pool, schema=pg_schema)
        h.put(append={"log": ["start"]})
        _lose_races(loser, h)
        _still_works(loser, h)
        with pool.connection() as conn:  # the caller's own statements may be prepared
            assert conn.prepare_threshold == 5
            for _ in range(_ROUNDS):
                conn.execute("SELECT 1")
    finally:
        pool.close()


@pytest.fixture
def unexpected_error(pg_url: str, pg_schema: str) -> Any:
    """A context in which every read fails with an error Trellis does not expect."""

    @contextlib.contextmanager
    def moved() -> Iterator[None]:
        _sql(pg_url, f'ALTER TABLE "{pg_schema}".trellis_writes RENAME TO moved')
        try:
            yield
        finally:
            _sql(pg_url, f'ALTER TABLE "{pg_schema}".moved RENAME TO trellis_writes')

    return moved


def test_a_connection_that_failed_unexpectedly_is_replaced(
    make: Any, unexpected_error: Any
) -> None:
    saver = make(pool_size=1)
    h = History(saver)
    h.put(set={"n": 1})

    def backend() -> int:
        with saver._sync_pool().connection() as conn:
            return int(conn.info.backend_pid)

    first = backend()
    with pytest.raises(ConcurrentUpdateError):  # expected: the connection is kept
        saver.put(h.thread_id, h.make(set={"n": 2}), {}, expected_head=None)
    assert backend() == first
    with unexpected_error(), pytest.raises(CheckpointError, match="UndefinedTable"):
        saver.get_tuple(h.thread_id)
    h.check(saver.get_tuple(h.thread_id))
    assert backend() != first


async def test_an_async_connection_that_failed_unexpectedly_is_replaced(
    make: Any, unexpected_error: Any
) -> None:
    saver = make(pool_size=1)
    h = History(saver)
    try:
        await h.aput(set={"n": 1})
        pool = await saver._async_conns()

        async def backend() -> int:
            async with pool.connection() as conn:
                return int(conn.info.backend_pid)

        first = await backend()
        with unexpected_error(), pytest.raises(CheckpointError, match="UndefinedTable"):
            await saver.aget_tuple(h.thread_id)
        h.check(await saver.aget_tuple(h.thread_id))
        assert await backend() != first
    finally:
        await saver.aclose()


def _named(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


def _backends(url: str, name: str) -> int:
    sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    return int(_sql(url, sql, name)[0][0])


async def test_a_burst_of_first_async_calls_stays_within_the_pool(
    pg_url: str, pg_schema: str
) -> None:
    # Each of the burst used to set the schema up on a connection of its own.
    name = f"trellis_burst_{pg_schema[-8:]}"
    saver = PostgresSaver.from_conn_string(_named(pg_url, name), schema=pg_schema, pool_size=2)
    peak, done = 0, False

    async def watch() -> None:
        nonlocal peak
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            while not done:
                row = await (await conn.execute(sql, (name,))).fetchone()
                peak = max(peak, row[0] if row else 0)
                await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.05)
    try:
        histories = [History(saver) for _ in range(30)]
        await asyncio.gather(*(h.aput(set={"n": 1}) for h in histories))
        for h in histories:
            h.check(await saver.aget_tuple(h.thread_id))
    finally:
        done = True
        await watcher
        await saver.aclose()
    assert 1 <= peak <= 3  # the pool's 2, and the one connection that set up


async def test_a_closed_saver_raises_and_opens_no_pool_again(pg_url: str, pg_schema: str) -> None:
    name = f"trellis_closed_{pg_schema[-8:]}"
    saver = PostgresSaver.from_conn_string(_named(pg_url, name), schema=pg_schema, pool_size=2)
    h = History(saver)
    await h.aput(set={"n": 1})
    h.check(saver.get_tuple(h.thread_id))
    await saver.aclose()
    for read in (
        lambda: saver.get_tuple(h.thread_id),
        lambda: asyncio.run(saver.aget_tuple(h.thread_id)),
    ):
        with pytest.raises(CheckpointError, match="is closed; open a new one"):
            await asyncio.to_thread(read)
    with pytest.raises(CheckpointError, match="is closed; open a new one"):
        await saver.aget_tuple(h.thread_id)  # on the loop whose pool it closed
    deadline = time.monotonic() + 5
    while _backends(pg_url, name) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _backends(pg_url, name) == 0
    again = PostgresSaver.from_conn_string(pg_url, schema=pg_schema, pool_size=2)
    try:
        h.check(again.get_tuple(h.thread_id))  # nothing was lost by closing
    finally:
        again.close()


async def test_aclose_closes_the_pools_of_other_running_loops(pg_url: str, pg_schema: str) -> None:
    name = f"trellis_other_{pg_schema[-8:]}"
    saver = PostgresSaver.from_conn_string(_named(pg_url, name), schema=pg_schema, pool_size=2)
    other = asyncio.new_event_loop()  # another thread's loop, still running when we close
    thread = threading.Thread(target=other.run_forever)
    thread.start()
    try:
        h = History(saver)
        await h.aput(set={"n": 1})  # a pool on this loop
        read = asyncio.run_coroutine_threadsafe(saver.aget_tuple(h.thread_id), other)
        h.check(read.result(timeout=10))  # and one on the other
        await saver.aclose()
        deadline = time.monotonic() + 5
        while _backends(pg_url, name) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _backends(pg_url, name) == 0
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join()
        other.close()


def test_two_event_loops_in_turn_keep_one_async_pool_each(pg_url: str, pg_schema: str) -> None:
    # Each loop's call used to find the other loop's pool and build a new one.
    name = f"trellis_loops_{pg_schema[-8:]}"
    saver = PostgresSaver.from_conn_string(_named(pg_url, name), schema=pg_schema, pool_size=2)
    saver.setup()
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        sql = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        with psycopg.connect(pg_url, autocommit=True) as conn:
            while not done.is_set():
                seen.update(pid for (pid,) in conn.execute(sql, (name,)).fetchall())
                time.sleep(0.005)

    def worker(tag: str) -> None:
        async def main() -> None:
            for i in range(20):
                h = History(saver, thread_id=f"{tag}-{i}")
                await h.aput(set={"n": i})
                h.check(await saver.aget_tuple(h.thread_id))

        asyncio.run(main())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        workers = [threading.Thread(target=worker, args=(tag,)) for tag in "ab"]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        done.set()
        watcher.join()
        saver.close()
    assert len(seen) <= 4  # two loops, a pool of at most 2 connections each


async def test_async_postgres_saver_is_awaited_as_langgraph_writes_it(
    pg_url: str, pg_schema: str
) -> None:
    class S(TypedDict):
        n: int

    g = StateGraph(S)
    g.add_node("inc", lambda s: {"n": s["n"] + 1})
    g.add_edge(START, "inc")
    config: Any = {"configurable": {"thread_id": "t"}}
    async with AsyncPostgresSaver.from_conn_string(f"{pg_url}?schema={pg_schema}") as saver:
        assert isinstance(saver, AsyncPostgresSaver)
        await saver.setup()
        assert await g.compile(checkpointer=saver).ainvoke({"n": 1}, config) == {"n": 2}
    assert _sql(pg_url, f'SELECT count(*) > 0 FROM "{pg_schema}".trellis_checkpoints') == [(True,)]
    with pytest.raises(CheckpointError, match="closed"):  # the async with closed it
        await saver.aget_tuple("t")


def test_a_connection_passed_for_a_pool_is_refused_with_the_fix(pg_url: str) -> None:
    with (
        psycopg.connect(pg_url) as conn,
        pytest.raises(TypeError, match=r"got Connection; .*from_conn_string"),
    ):
        PostgresSaver(conn)  # type: ignore[arg-type]
