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
from typing import Any

import pytest
from tests.persist.conftest import History

from trellis.errors import CheckpointError, InvalidConfigError, SchemaVersionError
from trellis.persist.base import PendingWrite

pytestmark = pytest.mark.postgres
psycopg = pytest.importorskip("psycopg")
psycopg_pool = pytest.importorskip("psycopg_pool")
rows = pytest.importorskip("psycopg.rows")

from trellis.persist.postgres import SCHEMA_VERSION, PostgresSaver  # noqa: E402


@pytest.fixture
def make(pg_url: str, pg_schema: str) -> Iterator[Any]:
    made: list[PostgresSaver] = []

    def make(**kwargs: Any) -> PostgresSaver:
        saver = PostgresSaver.from_conn_string(pg_url, schema=pg_schema, pool_size=2, **kwargs)
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


def test_a_langgraph_style_pool_works(pg_url: str, pg_schema: str) -> None:
    """A user pool with transactions on (psycopg's default) and dict rows."""
    pool = psycopg_pool.ConnectionPool(
        pg_url, min_size=1, max_size=2, open=True, kwargs={"row_factory": rows.dict_row}
    )
    try:
        saver = PostgresSaver(pool, schema=pg_schema)
        h = History(saver)
        for i in range(4):
            h.put(append={"log": [i]})
        h.check(saver.get_tuple(h.thread_id))
        assert len(list(saver.list(h.thread_id))) == 4
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
        h.check(saver.get_tuple(h.thread_id))  # a sync pool is made on demand
        saver.close()
    finally:
        await pool.close()


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
    from trellis.errors import ConcurrentUpdateError

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
