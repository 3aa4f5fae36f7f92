"""PostgreSQL checkpointer: psycopg 3 with connection pools, sync and native async.

Each batch of a plan (see :mod:`trellis.persist.sql`) is one pipelined round
trip. A ``put`` is one statement, a call of the ``trellis_put`` function, sent
alone in autocommit: one round trip, one commit (plus a read when the parent's
chain states are not cached in this process). It is a prepared statement, parsed
and planned once per connection. The head compare-and-set and the
delta-base check raise server-side, so a lost race writes nothing.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from trellis.errors import CheckpointError, ConcurrentUpdateError, SchemaVersionError
from trellis.persist.base import (
    CheckpointTuple,
    Database,
    PendingWrite,
    Put,
    checked_schema,
    own_connection_kwargs,
    thread_deleted,
)
from trellis.persist.config_calls import accepts_config, alists_by_config
from trellis.persist.loop_connections import LoopConnections
from trellis.persist.serde import Serializer
from trellis.persist.sql import Batch, ChainCache, Plan, PutRows, SqlDialect, Stmt, Txn, arun_job
from trellis.persist.sql_saver import SqlSaverMethods
from trellis.persist.storage import Serde, check_prune_args, retention

__all__ = ["SCHEMA_VERSION", "AsyncPostgresSaver", "PostgresSaver"]

T = TypeVar("T")

SCHEMA_VERSION: Final = 6
_CONFLICT: Final = "TR409"
"""SQLSTATE raised by ``trellis_put``: the head moved (or a base was pruned)."""
# not_null_violation, foreign_key_violation, unique_violation: see Txn.integrity
_INTEGRITY: Final = ("23502", "23503", "23505")
_OPEN: Final = (TransactionStatus.INTRANS, TransactionStatus.INERROR)
_BEGIN_RW: Final = "BEGIN"
_BEGIN_RO: Final = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
# A prepare_threshold no count reaches: psycopg then prepares only what is sent
# with prepare=True (executemany asks for that too, so it is set only around a put).
_EXPLICIT_ONLY: Final = 2**31


def _migrations(s: str) -> dict[int, list[str]]:
    return {
        1: [
            f"""CREATE TABLE {s}.trellis_threads (
                tid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                thread_id text NOT NULL,
                checkpoint_ns text NOT NULL,
                head_id text NOT NULL,
                updated_at double precision NOT NULL,
                UNIQUE (thread_id, checkpoint_ns))""",
            f"CREATE INDEX trellis_threads_by_time ON {s}.trellis_threads (updated_at)",
            f"""CREATE TABLE {s}.trellis_checkpoints (
                tid bigint NOT NULL,
                id text NOT NULL,
                parent_id text,
                step bigint NOT NULL,
                created_at double precision NOT NULL,
                metadata jsonb NOT NULL,
                codec text NOT NULL,
                state bytea NOT NULL,
                fingerprint text NOT NULL,
                PRIMARY KEY (tid, id))""",
            f"""CREATE TABLE {s}.trellis_blobs (
                tid bigint NOT NULL,
                channel text NOT NULL,
                version text NOT NULL,
                kind text NOT NULL CHECK (kind IN ('full', 'delta')),
                base_version text,
                anchor_version text,
                deltas integer NOT NULL,
                delta_bytes bigint NOT NULL,
                value_bytes bigint NOT NULL,
                codec text NOT NULL,
                data bytea NOT NULL,
                PRIMARY KEY (tid, channel, version))""",
            f"""CREATE TABLE {s}.trellis_writes (
                tid bigint NOT NULL,
                checkpoint_id text NOT NULL,
                task_id text NOT NULL,
                idx integer NOT NULL,
                task_name text NOT NULL,
                channel text NOT NULL,
                codec text NOT NULL,
                data bytea NOT NULL,
                PRIMARY KEY (tid, checkpoint_id, task_id, idx),
                FOREIGN KEY (tid, checkpoint_id) REFERENCES {s}.trellis_checkpoints (tid, id)
                    ON DELETE CASCADE)""",
            f"""CREATE FUNCTION {s}.trellis_check(ok boolean, message text) RETURNS boolean
                LANGUAGE plpgsql AS $$
                BEGIN
                    IF ok IS NOT TRUE THEN
                        RAISE EXCEPTION USING ERRCODE = '{_CONFLICT}', MESSAGE = message;
                    END IF;
                    RETURN true;
                END $$""",
        ],
        # Nothing reads threads by time through an index, and with it every head
        # move was a non-HOT update writing an entry into each index of the table.
        2: [f"DROP INDEX IF EXISTS {s}.trellis_threads_by_time"],
        # Version 3 created trellis_put; version 4 replaces it, and every pending
        # migration runs in one transaction, so only the newest definition is kept.
        3: [],
        # Skip-linked delta chains need each value's length (NULL in older rows,
        # whose chains get a fresh snapshot on their next append). A put is one
        # statement: sent alone, with no BEGIN and COMMIT around it, it costs one
        # client-server exchange instead of five in a pipeline.
        4: [
            f"ALTER TABLE {s}.trellis_blobs ADD COLUMN IF NOT EXISTS items bigint",
            _put_function(s),
        ],
        # Checkpoint records hold small values themselves (state format 2), which a
        # Trellis knowing only version 4 would read as corrupt: it now refuses them.
        5: [],
        # trellis_put checks that the older checkpoint an edit or fork continues
        # still exists (p_parent): a prune may have removed it since it was read.
        6: [
            f"DROP FUNCTION IF EXISTS {s}.trellis_put(text, text, text, text, double precision,"
            " text, jsonb, text, jsonb, bytea)",
            _put_function(s),
        ],
    }


def _put_function(s: str) -> str:
    """``trellis_put``: what SqlDialect.put_stmts does, as one server-side call.

    Rows travel as one JSON document (``c``heckpoints, ``b``lobs, ``w``rites: one
    array per row) and their bytes as one ``bytea`` they point into by offset and
    length: two parameters instead of thirty arrays, which psycopg adapts slowly.
    The head compare-and-set comes first, so the thread row stays locked for the
    checks after it; a moved head or a pruned base raises the conflict SQLSTATE, a
    duplicate id a unique violation. ``p_required`` is an array of ``[channel,
    version]`` pairs: the stored blobs the new deltas link to; ``p_parent`` the
    older checkpoint an edit or fork continues, which must still exist.
    """
    return f"""CREATE OR REPLACE FUNCTION {s}.trellis_put(
            p_thread text, p_ns text, p_expected text, p_head text, p_now double precision,
            p_moved text, p_required jsonb, p_pruned text, p_rows jsonb, p_data bytea,
            p_parent text, p_gone text
        ) RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            v_tid bigint;
            w jsonb;
        BEGIN
            IF p_expected IS NULL THEN
                INSERT INTO {s}.trellis_threads (thread_id, checkpoint_ns, head_id, updated_at)
                VALUES (p_thread, p_ns, p_head, p_now) ON CONFLICT DO NOTHING
                RETURNING tid INTO v_tid;
            ELSE
                UPDATE {s}.trellis_threads SET head_id = p_head, updated_at = p_now
                WHERE thread_id = p_thread AND checkpoint_ns = p_ns AND head_id = p_expected
                RETURNING tid INTO v_tid;
            END IF;
            IF v_tid IS NULL THEN
                RAISE EXCEPTION USING ERRCODE = '{_CONFLICT}', MESSAGE = p_moved;
            END IF;
            IF p_parent IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {s}.trellis_checkpoints c
                WHERE c.tid = v_tid AND c.id = p_parent) THEN
                RAISE EXCEPTION USING ERRCODE = '{_CONFLICT}', MESSAGE = p_gone;
            END IF;
            IF p_required IS NOT NULL AND EXISTS (
                SELECT 1 FROM jsonb_array_elements(p_required) r
                WHERE NOT EXISTS (SELECT 1 FROM {s}.trellis_blobs b
                    WHERE b.tid = v_tid AND b.channel = r->>0 AND b.version = r->>1)
            ) THEN
                RAISE EXCEPTION USING ERRCODE = '{_CONFLICT}', MESSAGE = p_pruned;
            END IF;
            INSERT INTO {s}.trellis_checkpoints
                (tid, id, parent_id, step, created_at, metadata, codec, state, fingerprint)
            SELECT v_tid, c->>0, c->>1, (c->>2)::bigint, (c->>3)::float8, (c->>4)::jsonb,
                c->>5, substring(p_data FROM (c->>7)::int + 1 FOR (c->>8)::int), c->>6
            FROM jsonb_array_elements(p_rows->'c') c;
            INSERT INTO {s}.trellis_blobs (tid, channel, version, kind, base_version,
                anchor_version, deltas, delta_bytes, value_bytes, codec, data, items)
            SELECT v_tid, b->>0, b->>1, b->>2, b->>3, b->>4, (b->>5)::int, (b->>6)::bigint,
                (b->>7)::bigint, b->>8, substring(p_data FROM (b->>9)::int + 1 FOR (b->>10)::int),
                (b->>11)::bigint
            FROM jsonb_array_elements(p_rows->'b') b;
            -- One row at a time: ordinary writes are kept if present, special ones
            -- replaced, and a later row of the same key wins (as executemany did).
            FOR w IN SELECT * FROM jsonb_array_elements(p_rows->'w') LOOP
                INSERT INTO {s}.trellis_writes AS t (tid, checkpoint_id, task_id, idx, task_name,
                    channel, codec, data)
                VALUES (v_tid, w->>0, w->>1, (w->>2)::int, w->>3, w->>4, w->>5,
                    substring(p_data FROM (w->>6)::int + 1 FOR (w->>7)::int))
                ON CONFLICT (tid, checkpoint_id, task_id, idx) DO UPDATE SET
                    task_name = excluded.task_name, channel = excluded.channel,
                    codec = excluded.codec, data = excluded.data
                WHERE t.idx < 0;
            END LOOP;
        END $$"""


# Built once: json.dumps with options builds a new encoder on every put.
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
# A JSON string (kept as is), or a number with a positive exponent (1e+16).
_EXPONENT = re.compile(r'"(?:[^"\\]|\\.)*"|(-?\d+(?:\.\d+)?[eE]\+\d+)')


def _floats_kept(metadata: str) -> str:
    """``metadata`` JSON with each ``1e+16``-style float spelled ``10000000000000000.0``:
    jsonb keeps a number's digits, not its spelling, and reads 1e+16 back as an int."""
    if "e+" not in metadata and "E+" not in metadata:
        return metadata
    return _EXPONENT.sub(_spelled_out, metadata)


def _spelled_out(match: re.Match[str]) -> str:
    number = match.group(1)
    return match.group(0) if number is None else f"{Decimal(number):f}.0"


class PostgresDialect(SqlDialect):
    """PostgreSQL spelling of the shared queries, in one schema."""

    want = "jsonb_each_text(?::jsonb) w"
    atomic_put = True

    def __init__(self, schema: str) -> None:
        self.schema = f'"{schema}"'
        super().__init__(f"{self.schema}.")
        self.lock_thread = (
            f"SELECT tid FROM {self.threads} WHERE thread_id = ? ORDER BY tid FOR UPDATE"
        )
        types = (
            "text",
            "text",
            "text",
            "text",
            "float8",
            "text",
            "jsonb",
            "text",
            "jsonb",
            "bytea",
            "text",
            "text",
        )
        args = ", ".join(f"%s::{t}" for t in types)
        self._put_call = f"SELECT {self.schema}.trellis_put({args})"

    def q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def lookup(self, alias: str, table: str, cond: str) -> str:
        # LATERAL with OFFSET 0 (which keeps the planner from flattening it) pins
        # the plan to index lookups per wanted row: row estimates for
        # jsonb_each_text and for freshly filled tables are too poor to rely on.
        return f"CROSS JOIN LATERAL (SELECT * FROM {table} {alias} WHERE {cond} OFFSET 0) {alias}"

    def put_stmts(self, rows: PutRows) -> list[Stmt]:
        data = bytearray()

        def at(blob: bytes) -> tuple[int, int]:
            data.extend(blob)
            return len(data) - len(blob), len(blob)

        doc = {
            "c": [
                [r.id, r.parent_id, r.step, r.created_at, _floats_kept(r.metadata), r.codec,
                 r.fingerprint,
                 *at(r.state)]
                for r in rows.checkpoints
            ],
            "b": [
                [b.channel, b.version, b.kind, b.base_version, b.anchor_version, b.deltas,
                 b.delta_bytes, b.value_bytes, b.codec, *at(b.data), b.items]
                for b in rows.blobs
            ],
            "w": [
                [cid, w.task_id, w.idx, w.task_name, w.channel, w.codec, *at(w.data)]
                for cid, w in rows.writes
            ],
        }  # fmt: skip
        params = (
            rows.thread_id,
            rows.ns,
            rows.expected_head,
            rows.head,
            rows.now,
            rows.moved,
            _JSON.encode(sorted(rows.required)) if rows.required else None,
            rows.pruned if rows.required else None,  # read only when a base is required
            _JSON.encode(doc),
            bytes(data),
            rows.parent,
            rows.parent_gone if rows.parent is not None else None,
        )
        return [Stmt(self._put_call, params)]

    def metadata_filter(self, pairs: Sequence[tuple[str, str]]) -> tuple[str, list[Any]]:
        if not pairs:
            return "", []
        # @> can use an index; the per-key equality makes the match exact rather
        # than containment for nested values. jsonb equality is the rule every
        # backend follows (storage.json_equal): 1 = 1.0, true <> 1.
        doc = "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"
        sql = " AND c.metadata @> ?::jsonb" + " AND c.metadata -> ? = ?::jsonb" * len(pairs)
        params: list[Any] = [doc]
        for key, value in pairs:
            params += [key, value]
        return sql, params


@dataclass
class _Shared:
    """State shared by a saver and its ``with_allowlist`` views."""

    pool: ConnectionPool[Any] | None
    apool: AsyncConnectionPool[Any] | None
    owns_pool: bool
    conninfo: str
    kwargs: dict[str, Any]
    ready: bool = False
    apool_loop: asyncio.AbstractEventLoop | None = None  # the loop the caller's apool serves
    # Async connections of our own, one set per event loop (a loop other than the
    # caller's pool's: another thread's asyncio.run, say). Those of loops that have
    # closed are closed when the next new loop comes. (Not weak-keyed: the
    # connections' semaphore holds its loop.)
    loop_conns: dict[asyncio.AbstractEventLoop, LoopConnections] = field(default_factory=dict)
    closed: bool = False  # close()d pools of our own: further use is an error, not a new pool
    # Whether the put, sent alone, is a prepared statement: parsed and planned once per
    # connection. Not where the caller's pool turned them off (a PgBouncer, say).
    prepares: bool = True


class PostgresSaver(SqlSaverMethods):
    """Checkpoints in PostgreSQL, for services with many workers.

    Pass a ``psycopg_pool.ConnectionPool`` (or an ``AsyncConnectionPool``), or use
    :meth:`from_conn_string`. What the given pool does not serve is connected from
    the same connection string when first needed, so sync and async calls, on any
    event loop, all work: a sync pool, or async connections kept for each loop
    that leave no task running on it (an ``asyncio.run`` ending need not close them).
    Tables live in ``schema`` (created if missing). The schema is created or
    migrated on first use (or by :meth:`setup`), safely from several processes.
    ``timeout`` bounds the wait for a connection; ``ttl`` (seconds) and
    ``keep_last`` are the defaults of :meth:`prune`. Each connection prepares the
    put statement once; pass ``prepared_statements=False`` behind a connection
    pooler that cannot keep them (PgBouncer before 1.21 in transaction mode).

    >>> saver = PostgresSaver.from_conn_string("postgresql://app@db/app", pool_size=20)
    >>> graph = builder.compile(checkpointer=saver)
    >>> await graph.ainvoke({"n": 1}, {"configurable": {"thread_id": "t1"}})
    """

    _sql: PostgresDialect

    def __init__(
        self,
        pool: ConnectionPool[Any] | AsyncConnectionPool[Any],
        *,
        schema: str = "public",
        serde: Serde | None = None,
        ttl: float | None = None,
        keep_last: int | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
        pool_size: int | None = None,
        prepared_statements: bool = True,
    ) -> None:
        if not isinstance(pool, (ConnectionPool, AsyncConnectionPool)):
            raise TypeError(
                "PostgresSaver takes a psycopg_pool ConnectionPool or AsyncConnectionPool, "
                f"got {type(pool).__name__}; for a URL use PostgresSaver.from_conn_string(url)"
            )
        checked_schema(schema)
        check_prune_args(ttl, keep_last)
        self.serde: Any = serde if serde is not None else Serializer()
        self.ttl, self.keep_last, self._clock = ttl, keep_last, clock
        self._timeout = timeout
        self._pool_size = pool_size or pool.max_size
        if not isinstance(pool.conninfo, str) or callable(pool.kwargs):
            raise TypeError("PostgresSaver needs a pool with a static conninfo string and kwargs")
        kwargs = dict(pool.kwargs or {})
        sync_pool = pool if isinstance(pool, ConnectionPool) else None
        async_pool = pool if isinstance(pool, AsyncConnectionPool) else None
        self._shared = _Shared(
            sync_pool, async_pool, False, pool.conninfo, kwargs, prepares=prepared_statements
        )
        self.schema = schema
        self._sql = PostgresDialect(schema)
        self._cache = ChainCache()
        self._sync_lock = threading.Lock()
        self._setup_lock = threading.Lock()
        info = conninfo_to_dict(pool.conninfo)
        self.where = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}"

    @classmethod
    def from_conn_string(
        cls, url: str, *, pool_size: int = 10, schema: str = "public", **kwargs: Any
    ) -> PostgresSaver:
        """A saver owning a pool of up to ``pool_size`` connections to ``url``.

        Nothing connects until first use; then an unreachable server raises
        CheckpointError naming its host and port. The URL may name the schema
        (``?schema=billing``) instead of ``schema=``.

        >>> saver = PostgresSaver.from_conn_string("postgresql://postgres@localhost/app")
        """
        where = Database.from_url(url, schema=schema)
        url, schema = where.target, where.schema
        saver = cls(_own_pool(url, {}, pool_size), schema=schema, pool_size=pool_size, **kwargs)
        saver._shared.owns_pool = True
        return saver

    def with_allowlist(self, types: Any) -> PostgresSaver:
        """A view of the same store whose serializer also allows ``types``."""
        clone = copy.copy(self)  # shares the pools (_shared); a subclass stays itself
        clone.serde = self.serde.with_allowlist(types)
        return clone

    # --- connections and setup -----------------------------------------------------

    def _connect_kwargs(self) -> dict[str, Any]:
        extra = own_connection_kwargs(self._shared.kwargs)
        extra.setdefault("connect_timeout", max(1, int(self._timeout)))
        return extra

    def setup(self) -> None:
        """Create or migrate the schema; safe to call again, and from many processes."""
        self._prepare()

    def _prepare(self) -> None:
        sh = self._shared
        if sh.ready:
            return
        # One caller sets up, the others wait for it: each would open a connection
        # of its own, outside the pool (a burst of first calls could exhaust the server).
        with self._setup_lock:
            if sh.ready:
                return
            try:
                with psycopg.connect(sh.conninfo, **self._connect_kwargs()) as conn:
                    self._drive(conn, self._migrate_plan(), write=True)
            except psycopg.Error as exc:
                raise self._error(exc) from exc
            sh.ready = True

    async def asetup(self) -> None:
        """:meth:`setup` for async code (in a worker thread: one connection, taken
        under the same lock, whichever threads and loops call it)."""
        if not self._shared.ready:
            await asyncio.to_thread(self._prepare)

    def _check_open(self) -> None:
        """A closed saver makes or reopens no pool (it would never be closed): it raises."""
        if self._shared.closed:
            raise CheckpointError(
                f"PostgresSaver at {self.where} is closed; open a new one to go on"
            )

    def _migrate_plan(self) -> Plan[None]:
        s = self._sql.schema
        key = int.from_bytes(
            hashlib.blake2b(f"trellis:{s}".encode(), digest_size=8).digest(), "big", signed=True
        )
        *_, (row,) = yield Batch(
            [
                Stmt("SELECT pg_advisory_xact_lock(%s)", (key,)),
                Stmt(f"CREATE SCHEMA IF NOT EXISTS {s}"),
                Stmt(
                    f"CREATE TABLE IF NOT EXISTS {s}.trellis_schema_version (version integer "
                    "NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                ),
                Stmt(f"SELECT coalesce(max(version), 0) FROM {s}.trellis_schema_version"),
            ]
        )
        current = row[0]
        if current > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"PostgreSQL schema {s} at {self.where} has Trellis schema version {current}, "
                f"newer than this Trellis understands ({SCHEMA_VERSION}); upgrade Trellis"
            )
        stmts = []
        for version in range(current + 1, SCHEMA_VERSION + 1):
            stmts += [Stmt(ddl) for ddl in _migrations(s)[version]]
            stmts.append(
                Stmt(f"INSERT INTO {s}.trellis_schema_version (version) VALUES (%s)", (version,))
            )
        yield Batch(stmts, final=True)

    def _sync_pool(self) -> ConnectionPool[Any]:
        sh = self._shared
        if sh.pool is None or sh.pool.closed:
            with self._sync_lock:
                if sh.pool is None or sh.pool.closed:
                    self._check_open()
                if sh.pool is None:
                    sh.pool = _own_pool(sh.conninfo, sh.kwargs, self._pool_size)
                    sh.owns_pool = True
                if sh.pool.closed:
                    sh.pool.open(wait=False)
        return sh.pool

    async def _async_conns(self) -> AsyncConnectionPool[Any] | LoopConnections:
        """Where this loop's connections come from: the caller's async pool on the
        first loop that uses it (opened then, if the caller has not), else
        connections of our own for the running loop."""
        sh, loop = self._shared, asyncio.get_running_loop()
        if sh.apool is not None:
            if sh.apool_loop is None:  # a pool's tasks run on the loop that opened it
                sh.apool_loop = loop
                if sh.apool.closed:
                    await sh.apool.open(wait=False)
            if sh.apool_loop is loop:
                return sh.apool
        conns = sh.loop_conns.get(loop)
        if conns is None:
            with self._sync_lock:
                self._check_open()
                for ended in [owner for owner in sh.loop_conns if owner.is_closed()]:
                    sh.loop_conns.pop(ended).close()
                conns = LoopConnections(sh.conninfo, self._connect_kwargs(), size=self._pool_size)
                sh.loop_conns[loop] = conns
        return conns

    @property
    def database(self) -> Database:
        """The server and schema, for the approval and run-history stores beside it."""
        sh = self._shared
        return Database("postgres", sh.conninfo, self.schema, dict(sh.kwargs))

    def close(self) -> None:
        """Close the connections this saver made (not a pool it was given); a closed
        saver raises CheckpointError on use rather than connecting again."""
        sh = self._shared
        with self._sync_lock:
            sh.closed = True
            conns, sh.loop_conns = sh.loop_conns, {}
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for owner, idle in conns.items():
            # Another thread's running loop may be lending one out: close on its thread.
            if owner is not here and owner.is_running():
                try:
                    owner.call_soon_threadsafe(idle.close)
                    continue
                except RuntimeError:  # it closed meanwhile: nothing runs on it now
                    pass
            idle.close()
        if sh.owns_pool and sh.pool is not None:
            sh.pool.close()

    async def aclose(self) -> None:
        """:meth:`close` for async code (the sync pool's threads are joined off the loop)."""
        sh = self._shared
        with self._sync_lock:
            sh.closed = True
            here = sh.loop_conns.pop(asyncio.get_running_loop(), None)
        if here is not None:
            here.close()
        await asyncio.to_thread(self.close)

    def __enter__(self) -> PostgresSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> PostgresSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- drivers ---------------------------------------------------------------------

    # A pool the caller passed in hands out connections that may prepare statements
    # (see own_connection_kwargs): each is borrowed with that turned off, and
    # handed back as it came. One that failed unexpectedly is closed, so its pool
    # replaces it rather than lending out a connection in an unknown state.

    def _run(self, txn: Txn[T]) -> T:
        self._prepare()
        try:
            with self._sync_pool().connection(timeout=self._timeout) as conn:
                threshold, conn.prepare_threshold = conn.prepare_threshold, None
                prepare = self._prepares(threshold, own=self._shared.owns_pool)
                try:
                    return self._drive(conn, txn.plan, write=txn.write, prepare=prepare)
                except BaseException as exc:
                    if not _reusable_after(exc, txn):
                        conn.close()
                    raise
                finally:
                    conn.prepare_threshold = threshold
        except (psycopg.Error, PoolTimeout) as exc:
            raise self._error(exc, txn.integrity) from exc

    async def _arun(self, txn: Txn[T]) -> T:
        await self.asetup()
        try:
            conns = await self._async_conns()
            async with conns.connection(timeout=self._timeout) as conn:
                threshold, conn.prepare_threshold = conn.prepare_threshold, None
                prepare = self._prepares(threshold, own=isinstance(conns, LoopConnections))
                try:
                    return await self._adrive(conn, txn.plan, write=txn.write, prepare=prepare)
                except BaseException as exc:
                    if not _reusable_after(exc, txn):
                        await conn.close()
                    raise
                finally:
                    conn.prepare_threshold = threshold
        except (psycopg.Error, PoolTimeout) as exc:
            raise self._error(exc, txn.integrity) from exc

    # Both drivers send each batch as one pipeline: with autocommit connections
    # (ours) BEGIN and COMMIT travel in it too, so a final batch is one round trip.

    def _prepares(self, threshold: int | None, *, own: bool) -> bool:
        """Whether to prepare the put on a connection borrowed with ``threshold``: a
        caller's connection with prepared statements turned off gets none."""
        return self._shared.prepares and (own or threshold is not None)

    def _drive(
        self, conn: psycopg.Connection[Any], plan: Plan[T], *, write: bool, prepare: bool = False
    ) -> T:
        auto = conn.autocommit
        try:
            batch = next(plan)
            begin = auto
            while True:
                if begin and batch.atomic and batch.final:  # a transaction by itself
                    curs = [_send(conn, stmt, prepare=prepare) for stmt in batch.stmts]
                    begin = False
                else:
                    with conn.pipeline():
                        if begin:
                            conn.execute(_BEGIN_RW if write else _BEGIN_RO)
                            begin = False
                        curs = [_send(conn, stmt) for stmt in batch.stmts]
                        if batch.final:
                            _end(conn, auto, "COMMIT")
                results = [c.fetchall() if c.description else [] for c in curs]
                batch = plan.send(results)
        except StopIteration as stop:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                _end(conn, auto, "COMMIT")
            return stop.value  # type: ignore[no-any-return]
        except BaseException:
            if conn.info.transaction_status in _OPEN:
                _end(conn, auto, "ROLLBACK")
            raise

    async def _adrive(
        self,
        conn: psycopg.AsyncConnection[Any],
        plan: Plan[T],
        *,
        write: bool,
        prepare: bool = False,
    ) -> T:
        auto = conn.autocommit
        try:
            batch = next(plan)
            begin = auto
            while True:
                if begin and batch.atomic and batch.final:  # a transaction by itself
                    curs = [await _asend(conn, stmt, prepare=prepare) for stmt in batch.stmts]
                    begin = False
                else:
                    async with conn.pipeline():
                        if begin:
                            await conn.execute(_BEGIN_RW if write else _BEGIN_RO)
                            begin = False
                        curs = [await _asend(conn, stmt) for stmt in batch.stmts]
                        if batch.final:
                            await _aend(conn, auto, "COMMIT")
                results = [await c.fetchall() if c.description else [] for c in curs]
                batch = plan.send(results)
        except StopIteration as stop:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                await _aend(conn, auto, "COMMIT")
            return stop.value  # type: ignore[no-any-return]
        except BaseException:
            if conn.info.transaction_status in _OPEN:
                await _aend(conn, auto, "ROLLBACK")
            raise

    def _error(
        self, exc: BaseException, integrity: Callable[[], CheckpointError] | None = None
    ) -> CheckpointError:
        if isinstance(exc, PoolTimeout):
            return CheckpointError(
                f"no PostgreSQL connection to {self.where} within {self._timeout:g}s: {exc}"
            )
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate == "26000":  # the server lost the put's prepared statement: a pooler?
            self._shared.prepares = False
            return CheckpointError(
                f"PostgreSQL at {self.where} lost a prepared statement ({exc}); behind a "
                "connection pooler in transaction mode? This saver prepares none from now "
                "on: retry, and pass prepared_statements=False to start that way"
            )
        if sqlstate == _CONFLICT:
            diag = getattr(exc, "diag", None)
            return ConcurrentUpdateError(getattr(diag, "message_primary", None) or str(exc))
        if integrity is not None and sqlstate in _INTEGRITY:
            return integrity()
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            return CheckpointError(f"cannot use PostgreSQL at {self.where}: {exc}")
        return CheckpointError(f"PostgreSQL at {self.where}: {type(exc).__name__}: {exc}")

    # --- the Checkpointer protocol: each call has a sync and a native async form -------

    @accepts_config
    async def aget_tuple(
        self, thread_id: str, checkpoint_id: str | None = None, *, checkpoint_ns: str = ""
    ) -> CheckpointTuple | None:
        plan = self._sql.get_plan(self.serde, thread_id, checkpoint_ns, checkpoint_id, self._cache)
        return await self._arun(Txn(plan))

    async def aput_many(
        self,
        thread_id: str,
        puts: Sequence[Put],
        *,
        expected_head: str | None,
        checkpoint_ns: str = "",
    ) -> None:
        job = self._sql.put_job(
            self.serde, self._cache, thread_id, checkpoint_ns, puts, expected_head
        )
        await arun_job(job, self._arun)

    async def aput_writes(
        self,
        thread_id: str,
        checkpoint_id: str,
        writes: Sequence[PendingWrite],
        *,
        checkpoint_ns: str = "",
    ) -> None:
        txn = self._sql.put_writes_txn(self.serde, thread_id, checkpoint_ns, checkpoint_id, writes)
        await self._arun(txn)

    @alists_by_config
    async def alist(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str = "",
        before: str | None = None,
        limit: int | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        plan = self._sql.list_plan(
            self.serde, thread_id, checkpoint_ns, before=before, limit=limit, filter=filter
        )
        for item in await self._arun(Txn(plan)):
            yield item

    async def adelete_thread(self, thread_id: str) -> None:
        await arun_job(self._sql.delete_job(self._cache, thread_id), self._arun)
        await asyncio.to_thread(thread_deleted, self, thread_id)

    async def aprune(
        self, *, ttl: float | None = None, keep_last: int | None = None, now: float | None = None
    ) -> int:
        policy = retention(
            ttl, keep_last, now, defaults=(self.ttl, self.keep_last), clock=self._clock
        )
        if policy is None:
            return 0
        job = self._sql.prune_job(self.serde, self._cache, policy)
        removed, gone = await arun_job(job, self._arun)
        if gone:
            await asyncio.to_thread(thread_deleted, self, *gone)
        return removed


class AsyncPostgresSaver(PostgresSaver):
    """:class:`PostgresSaver` under LangGraph's async name, for code that awaits
    ``setup()``; everything else is the same saver.

    >>> async with AsyncPostgresSaver.from_conn_string(url) as saver:
    ...     await saver.setup()
    """

    async def setup(self) -> None:  # type: ignore[override]  # LangGraph's is awaited
        await self.asetup()


def _own_pool(conninfo: str, kwargs: Mapping[str, Any], size: int) -> ConnectionPool[Any]:
    """A sync pool of the saver's own, opened on first use."""
    return ConnectionPool(
        conninfo, min_size=1, max_size=size, open=False, kwargs=own_connection_kwargs(kwargs)
    )


def _reusable_after(exc: BaseException, txn: Txn[Any]) -> bool:
    """Whether a connection whose transaction raised ``exc`` may go back to its pool.

    The errors Trellis expects (a lost race, a constraint violation the plan turns
    into its own error, an error the plan raised between batches) leave it rolled
    back and idle. After any other error of the server or driver, or an
    interruption mid-pipeline, what psycopg believes of the session is not to be
    trusted.
    """
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        return state == _CONFLICT or (txn.integrity is not None and state in _INTEGRITY)
    return isinstance(exc, Exception)


def _send(
    conn: psycopg.Connection[Any], stmt: Stmt, *, prepare: bool = False
) -> psycopg.Cursor[Any]:
    """Send ``stmt``; ``prepare`` only outside a pipeline (see own_connection_kwargs)."""
    cur = conn.cursor(row_factory=tuple_row)
    if stmt.many is not None:
        cur.executemany(stmt.sql, stmt.many)
    elif prepare:
        conn.prepare_threshold = _EXPLICIT_ONLY
        try:
            cur.execute(stmt.sql, stmt.params or None, binary=True, prepare=True)
        finally:
            conn.prepare_threshold = None
    else:
        cur.execute(stmt.sql, stmt.params or None, binary=True)
    return cur


async def _asend(
    conn: psycopg.AsyncConnection[Any], stmt: Stmt, *, prepare: bool = False
) -> psycopg.AsyncCursor[Any]:
    cur = conn.cursor(row_factory=tuple_row)
    if stmt.many is not None:
        await cur.executemany(stmt.sql, stmt.many)
    elif prepare:
        conn.prepare_threshold = _EXPLICIT_ONLY
        try:
            await cur.execute(stmt.sql, stmt.params or None, binary=True, prepare=True)
        finally:
            conn.prepare_threshold = None
    else:
        await cur.execute(stmt.sql, stmt.params or None, binary=True)
    return cur


def _end(conn: psycopg.Connection[Any], auto: bool, how: str) -> None:
    try:
        if auto:
            conn.execute(how)
        elif how == "COMMIT":
            conn.commit()
        else:
            conn.rollback()
    except psycopg.Error:
        if how == "COMMIT":
            raise
        # A failed rollback (the connection is gone) must not hide the original
        # error; the pool discards a broken connection.


async def _aend(conn: psycopg.AsyncConnection[Any], auto: bool, how: str) -> None:
    try:
        if auto:
            await conn.execute(how)
        elif how == "COMMIT":
            await conn.commit()
        else:
            await conn.rollback()
    except psycopg.Error:
        if how == "COMMIT":
            raise
