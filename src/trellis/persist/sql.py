"""What the SQL savers share: the queries, and the logic around them, without I/O.

A transaction is a *plan*: a generator that yields :class:`Batch` es of
statements and receives their rows back. A backend's driver runs the batches
(SQLite one statement after another under a lock; PostgreSQL as one pipelined
round trip per batch, sync or async) inside one transaction, committing with
the ``final`` batch. An operation needing several transactions (``prune``, a
``put`` that checks whether its lost race was its own retry) is a *job*: a
generator of :class:`Txn` s, run by :func:`run_job` or :func:`arun_job`. So the
storage logic exists once, and a dialect only overrides small hooks:
placeholders, JSON functions, join hints, and how a put's rows become
statements (:meth:`SqlDialect.put_stmts`).

Tables (names prefixed by the dialect)::

    trellis_threads      tid, thread_id, checkpoint_ns, head_id, updated_at
    trellis_checkpoints  tid, id, parent_id, step, created_at, metadata, codec, state, fingerprint
    trellis_blobs        tid, channel, version, kind, base_version, anchor_version,
                         deltas, delta_bytes, value_bytes, codec, data, items
    trellis_writes       tid, checkpoint_id, task_id, idx, task_name, channel, codec, data
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, Final, Generic, TypeVar

from trellis.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointNotFoundError,
    ConcurrentUpdateError,
)
from trellis.persist.base import Checkpoint, CheckpointTuple, PendingWrite, Put, ThreadInfo
from trellis.persist.messages import (
    duplicate_checkpoint,
    head_moved,
    no_checkpoint,
    parent_pruned,
    thread_label,
)
from trellis.persist.storage import (
    INTERRUPT,
    BlobRow,
    ChainState,
    CheckpointRow,
    DecodedState,
    Inline,
    Retention,
    Serde,
    WriteRow,
    appended_bases,
    build_tuple,
    chain_path,
    chain_state,
    compensation_reads,
    decode_state,
    decode_writes,
    encode_filter,
    encode_put,
    encode_writes,
    exact_json,
    has_number,
    needed_blobs,
    prune_plan,
)

__all__ = [
    "JSON_EQUAL",
    "Batch",
    "CacheEntry",
    "ChainCache",
    "Job",
    "Plan",
    "PutRows",
    "SqlDialect",
    "Stmt",
    "Txn",
    "arun_job",
    "run_job",
]

T = TypeVar("T")
Rows = list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Stmt:
    """One statement: ``params`` for a single execution, or ``many`` rows of them.

    ``required``: the statement must return a first row whose first column is
    true, else the driver raises ``ConcurrentUpdateError(required)`` and the
    transaction rolls back.
    """

    sql: str
    params: Sequence[Any] = ()
    many: Sequence[Sequence[Any]] | None = None
    required: str | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """Statements a driver may send together; ``final`` commits right after them.

    ``atomic``: the batch is one statement that is a whole transaction by itself,
    so a driver that has not begun one may send it alone (no BEGIN, no COMMIT).
    """

    stmts: list[Stmt]
    final: bool = False
    atomic: bool = False


Plan = Generator[Batch, list[Rows], T]


@dataclass(frozen=True, slots=True)
class Txn(Generic[T]):
    """A plan to run as one transaction. ``integrity`` makes the error raised
    instead of a constraint violation (a missing row, a duplicate id)."""

    plan: Plan[T]
    write: bool = False
    integrity: Callable[[], CheckpointError] | None = None


Job = Generator[Txn[Any], Any, T]


@dataclass(slots=True)
class PutRows:
    """One ``put_many``, encoded: the rows a dialect turns into statements."""

    thread_id: str
    ns: str
    expected_head: str | None
    head: str
    """The last checkpoint's id: where the head moves."""
    now: float
    moved: str
    """The message of the error raised when the head is not ``expected_head``."""
    checkpoints: list[CheckpointRow] = field(default_factory=list)
    blobs: list[BlobRow] = field(default_factory=list)
    writes: list[tuple[str, WriteRow]] = field(default_factory=list)
    """(checkpoint id, row) of each pending write."""
    required: set[tuple[str, str]] = field(default_factory=set)
    """(channel, version) of each stored blob a delta links to, which must still
    exist: a put of several checkpoints may link to several of one channel."""
    parent: str | None = None
    """The checkpoint the first put continues, when it is not the head (an edit or
    fork of an older one), which must still exist: the new record copies its small
    values and shares its blobs, which a concurrent prune may have removed."""

    @property
    def parent_gone(self) -> str:
        return parent_pruned(self.thread_id, self.ns, self.parent)

    @property
    def pruned(self) -> str:
        channels = ", ".join(map(repr, sorted({channel for channel, _ in self.required})))
        return (
            f"{thread_label(self.thread_id, self.ns)}: the stored values that channel(s) "
            f"{channels} extend were pruned meanwhile"
        )


def run_job(job: Job[T], run: Callable[[Txn[Any]], Any]) -> T:
    """Run each transaction of ``job`` with ``run``; errors are thrown back into it."""
    try:
        txn = next(job)
        while True:
            try:
                result = run(txn)
            except CheckpointError as exc:
                txn = job.throw(exc)
            else:
                txn = job.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def arun_job(job: Job[T], run: Callable[[Txn[Any]], Awaitable[Any]]) -> T:
    """:func:`run_job` for an async ``run``."""
    try:
        txn = next(job)
        while True:
            try:
                result = await run(txn)
            except CheckpointError as exc:
                txn = job.throw(exc)
            else:
                txn = job.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _values(row: Any) -> tuple[Any, ...]:
    """A slots dataclass's fields, in order (the column order of its table)."""
    return _GETTERS[type(row)](row)


_GETTERS = {
    cls: attrgetter(*cls.__slots__) for cls in (CheckpointRow, BlobRow, WriteRow)
}  # one C call per row instead of a generator over its slots


_COLS = "c.id, c.parent_id, c.step, c.created_at, c.metadata, c.codec, c.state, c.fingerprint"
# Reads fetch only what reconstruction needs: a chain is tens of rows.
_BLOB_COLS = ("channel", "version", "kind", "base_version", "codec", "data")
# What a chain state is worked out from (chain_state), for a put on a cold cache.
_LINK_COLS = (
    "channel",
    "version",
    "kind",
    "base_version",
    "deltas",
    "value_bytes",
    "items",
)
_LIST_CHUNK = 32
JSON_EQUAL: Final = "trellis_json_equal"
"""The SQL function a SQLite saver registers: :func:`~trellis.persist.storage.json_text_equal`."""
_NEVER = 2**62


class SqlDialect:
    """SQL text for one database. Written with ``?`` placeholders; a dialect with
    another paramstyle rewrites them in :meth:`q`.
    """

    want = "json_each(?) w"
    """A relation ``w(key, value)`` over a JSON object parameter."""
    pairs = (
        "(SELECT json_extract(value, '$[0]') AS key, json_extract(value, '$[1]') AS value "
        "FROM json_each(?)) w"
    )
    """The same over a JSON array of ``[key, value]`` pairs (keys may repeat)."""
    lock_thread: str | None = None
    """Locks a thread's rows for a prune (unneeded where a write transaction locks all)."""
    atomic_put = False
    """:meth:`put_stmts` gives one statement that is a transaction by itself."""

    def __init__(self, prefix: str = "") -> None:
        self.threads = f"{prefix}trellis_threads"
        self.checkpoints = f"{prefix}trellis_checkpoints"
        self.blobs = f"{prefix}trellis_blobs"
        self.writes = f"{prefix}trellis_writes"
        self.tid = f"(SELECT tid FROM {self.threads} WHERE thread_id = ? AND checkpoint_ns = ?)"
        self._inserts: dict[tuple[str, type[Any], tuple[str, ...], str], str] = {}

    def q(self, sql: str) -> str:
        return sql

    def lookup(self, alias: str, table: str, cond: str) -> str:
        """Join ``table`` driven by the rows before it (an index lookup per row).

        SQLite keeps the left operand of CROSS JOIN in the outer loop.
        """
        return f"CROSS JOIN {table} {alias} ON {cond}"

    # --- the checks of a put, as statements (put_stmts; PostgreSQL runs them server-side) ---

    def _advance_head(
        self, thread_id: str, ns: str, expected: str | None, new: str, now: float, message: str
    ) -> Stmt:
        if expected is None:
            sql = (
                f"INSERT INTO {self.threads} (thread_id, checkpoint_ns, head_id, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING tid"
            )
            return Stmt(self.q(sql), (thread_id, ns, new, now), required=message)
        sql = (
            f"UPDATE {self.threads} SET head_id = ?, updated_at = ? "
            "WHERE thread_id = ? AND checkpoint_ns = ? AND head_id = ? RETURNING tid"
        )
        return Stmt(self.q(sql), (new, now, thread_id, ns, expected), required=message)

    def _require_blobs(self, thread_id: str, ns: str, want: str, count: int, message: str) -> Stmt:
        on = f"b.tid = {self.tid} AND b.channel = w.key AND b.version = w.value"
        sql = f"SELECT count(*) = ? FROM {self.pairs} {self.lookup('b', self.blobs, on)}"
        return Stmt(self.q(sql), (count, want, thread_id, ns), required=message)

    def metadata_filter(self, pairs: Sequence[tuple[str, str]]) -> tuple[str, list[Any]]:
        """SQL ANDed onto a checkpoint query; keys are validated identifiers, and even
        so they travel only inside a bound JSON path, never in the SQL text.

        Values match by :func:`~trellis.persist.storage.json_equal`. Canonical JSON
        texts are equal exactly when values without numbers are; a value with a
        number (``1`` and ``1.0`` are different texts) is compared by
        :data:`JSON_EQUAL`, a function the SQLite saver registers: SQLite has no
        JSON equality of its own.
        """
        sql = ""
        params: list[Any] = []
        for key, value in pairs:
            if has_number(exact_json(value)):
                sql += f" AND {JSON_EQUAL}(c.metadata -> ?, ?)"
            else:
                sql += " AND c.metadata -> ? = ?"
            params += [f"$.{key}", value]
        return sql, params

    # --- plans ------------------------------------------------------------------

    def get_plan(
        self,
        serde: Serde,
        thread_id: str,
        ns: str,
        checkpoint_id: str | None,
        cache: ChainCache | None = None,
    ) -> Plan[CheckpointTuple | None]:
        """The checkpoint ``checkpoint_id``, or the head; a head read is noted in
        ``cache``, so the put that continues it (in another worker than the one
        that wrote it, say) needs no read of its record."""
        row_sql = (
            f"SELECT t.tid, {_COLS} FROM {self.threads} t LEFT JOIN {self.checkpoints} c "
            "ON c.tid = t.tid AND c.id = coalesce(?, t.head_id) "
            "WHERE t.thread_id = ? AND t.checkpoint_ns = ?"
        )
        writes_sql = (
            "SELECT w.task_id, w.idx, w.task_name, w.channel, w.codec, w.data "
            f"FROM {self.threads} t JOIN {self.writes} w "
            "ON w.tid = t.tid AND w.checkpoint_id = coalesce(?, t.head_id) "
            "WHERE t.thread_id = ? AND t.checkpoint_ns = ? ORDER BY w.task_id, w.idx"
        )
        params = (checkpoint_id, thread_id, ns)
        rows, writes = yield Batch(
            [Stmt(self.q(row_sql), params), Stmt(self.q(writes_sql), params)]
        )
        if not rows:
            return None
        tid, *cols = rows[0]
        if cols[0] is None:
            raise CheckpointNotFoundError(no_checkpoint(thread_id, ns, checkpoint_id))
        row = CheckpointRow(*cols)
        state = decode_state(serde, row.codec, row.state, thread_id=thread_id, checkpoint_id=row.id)
        walk = self._blobs_stmt(tid, state)
        blobs: list[BlobRow] = []
        if walk is not None:
            (walked,) = yield Batch([walk], final=True)
            blobs = _blob_rows(walked)
        pending = decode_writes(serde, writes, thread_id=thread_id)
        got = build_tuple(serde, thread_id, ns, row, blobs, pending, state)
        if cache is not None and checkpoint_id is None:
            cache.remember(thread_id, ns, row.id, state.versions, state.inline)
        return got

    def _blobs_stmt(self, tid: int, state: DecodedState) -> Stmt | None:
        """The chain walk a read of a record needs; None when it holds every value."""
        stored = state.stored
        if not stored:
            return None
        return Stmt(self.chain_walk(_BLOB_COLS), (json.dumps(stored), tid))

    def chain_walk(self, columns: Sequence[str], tid: str = "?") -> str:
        """``columns`` of the blobs a read of each wanted ``(channel, version)`` (a
        JSON object parameter, then ``tid``'s) needs: its row, then the rows its base
        links lead through down to the full snapshot, in no particular order.

        The walk carries keys only and keeps distinct rows (``UNION``): links that
        loop (a tampered database) end the walk instead of repeating it, and each
        blob's bytes are read once.
        """
        seed = f"b.tid = {tid} AND b.channel = w.key AND b.version = w.value"
        step = "b.tid = c.tid AND b.channel = c.channel AND b.version = c.base_version"
        found = "b.tid = c.tid AND b.channel = c.channel AND b.version = c.version"
        keys = "b.tid, b.channel, b.version, b.base_version"
        walk = (
            "WITH RECURSIVE c (tid, channel, version, base_version) AS ("
            f"SELECT {keys} FROM {self.want} {self.lookup('b', self.blobs, seed)} "
            f"UNION SELECT {keys} FROM c {self.lookup('b', self.blobs, step)}) "
            f"SELECT {', '.join(f'b.{c}' for c in columns)} "
            f"FROM c {self.lookup('b', self.blobs, found)}"
        )
        return self.q(walk)

    def list_plan(
        self,
        serde: Serde,
        thread_id: str,
        ns: str,
        *,
        before: str | None,
        limit: int | None,
        filter: Mapping[str, Any] | None,
    ) -> Plan[list[CheckpointTuple]]:
        """Newest first. The filter is validated now, not when the plan first runs."""
        pairs = encode_filter(filter)
        if pairs is None:
            return _nothing()
        where, params = self.metadata_filter(pairs)
        sql = (
            f"SELECT t.tid, {_COLS} FROM {self.threads} t JOIN {self.checkpoints} c "
            "ON c.tid = t.tid WHERE t.thread_id = ? AND t.checkpoint_ns = ?"
        )
        args: list[Any] = [thread_id, ns]
        if before is not None:
            sql += " AND c.id < ?"
            args.append(before)
        sql += where + " ORDER BY c.id DESC"
        args += params
        if limit is not None:
            sql += " LIMIT ?"
            args.append(max(limit, 0))
        return self._list(serde, thread_id, ns, Stmt(self.q(sql), args))

    def _list(
        self, serde: Serde, thread_id: str, ns: str, query: Stmt
    ) -> Plan[list[CheckpointTuple]]:
        (rows,) = yield Batch([query])
        writes_sql = self.q(
            "SELECT task_id, idx, task_name, channel, codec, data FROM "
            f"{self.writes} WHERE tid = ? AND checkpoint_id = ? ORDER BY task_id, idx"
        )
        out: list[CheckpointTuple] = []
        for start in range(0, len(rows), _LIST_CHUNK):
            chunk = [
                (tid, CheckpointRow(*cols)) for tid, *cols in rows[start : start + _LIST_CHUNK]
            ]
            stmts: list[Stmt] = []
            # Where each row's chain walk (if it needs one) and writes are in stmts.
            slots: list[tuple[int | None, int]] = []
            states = [
                decode_state(serde, row.codec, row.state, thread_id=thread_id, checkpoint_id=row.id)
                for _, row in chunk
            ]
            for (tid, row), state in zip(chunk, states, strict=True):
                walk = self._blobs_stmt(tid, state)
                if walk is not None:
                    stmts.append(walk)
                stmts.append(Stmt(writes_sql, (tid, row.id)))
                slots.append((None if walk is None else len(stmts) - 2, len(stmts) - 1))
            results = yield Batch(stmts, final=start + _LIST_CHUNK >= len(rows))
            for (_, row), state, (walk_at, writes_at) in zip(chunk, states, slots, strict=True):
                blobs = [] if walk_at is None else _blob_rows(results[walk_at])
                pending = decode_writes(serde, results[writes_at], thread_id=thread_id)
                out.append(build_tuple(serde, thread_id, ns, row, blobs, pending, state))
        return out

    def put_plan(
        self,
        serde: Serde,
        cache: ChainCache,
        thread_id: str,
        ns: str,
        puts: Sequence[Put],
        expected_head: str | None,
    ) -> Plan[None]:
        """Store ``puts`` (each the parent of the next) and move the head once, from
        ``expected_head`` to the last of them."""
        last = puts[-1].checkpoint
        moved = head_moved(thread_id, ns, expected_head)
        rows = PutRows(thread_id, ns, expected_head, last.id, float(last.created_at), moved)
        first = puts[0].checkpoint.parent_id
        rows.parent = first if first is not None and first != expected_head else None
        ours = {put.checkpoint.id for put in puts}
        parent = yield from self._parent(serde, cache, thread_id, ns, puts[0].checkpoint)
        # Chain states as of the checkpoint put last, by channel: the parent's, as far
        # as the cache knows them, updated by each put.
        chains: dict[str, ChainState] = dict(parent.chains) if parent is not None else {}
        for put in puts:
            ck = put.checkpoint
            bases = yield from self._bases(thread_id, ns, ck, parent, chains)
            enc = encode_put(
                serde,
                ck,
                put.metadata,
                bases=bases,
                writes=put.writes,
                inline=parent.inline if parent is not None else None,
            )
            rows.checkpoints.append(enc.row)
            for b in enc.blobs:
                rows.blobs.append(b)
                if b.base_version is not None and b.base_version not in ours:
                    rows.required.add((b.channel, b.base_version))
            rows.writes += [(ck.id, w) for w in enc.writes]
            chains.update(enc.chains)
            parent = CacheEntry(ck.id, ck.versions, {}, enc.inline)
        yield Batch(self.put_stmts(rows), final=True, atomic=self.atomic_put)
        cache.store(thread_id, ns, last.id, last.versions, chains, enc.inline)

    def put_stmts(self, rows: PutRows) -> list[Stmt]:
        """The statements of one put: the head compare-and-set first, so every
        check after it runs with the thread locked."""
        thread_id, ns, tid = rows.thread_id, rows.ns, (rows.thread_id, rows.ns)
        stmts = [
            self._advance_head(thread_id, ns, rows.expected_head, rows.head, rows.now, rows.moved)
        ]
        if rows.parent is not None:  # (the head itself is never pruned)
            sql = f"SELECT count(*) FROM {self.checkpoints} WHERE tid = {self.tid} AND id = ?"
            stmts.append(Stmt(self.q(sql), (thread_id, ns, rows.parent), required=rows.parent_gone))
        if rows.required:
            # The bases were read before this transaction; a concurrent prune may
            # have removed them since.
            want = json.dumps(sorted(rows.required))
            stmts.append(self._require_blobs(thread_id, ns, want, len(rows.required), rows.pruned))
        insert = self._insert(self.checkpoints, CheckpointRow)
        stmts += [Stmt(insert, (*tid, *_values(row))) for row in rows.checkpoints]
        if rows.blobs:
            many = [(*tid, *_values(b)) for b in rows.blobs]
            stmts.append(Stmt(self._insert(self.blobs, BlobRow), many=many))
        by_checkpoint: dict[str, list[WriteRow]] = {}
        for checkpoint_id, w in rows.writes:
            by_checkpoint.setdefault(checkpoint_id, []).append(w)
        for checkpoint_id, writes in by_checkpoint.items():
            stmts += self._write_stmts(thread_id, ns, checkpoint_id, writes)
        return stmts

    def _insert(
        self, table: str, row: type[Any], extra: Sequence[str] = (), suffix: str = ""
    ) -> str:
        """``INSERT`` of a row dataclass's fields (after ``extra`` columns) into
        ``table``, the thread's tid looked up from its (thread_id, ns) parameters."""
        key = (table, row, tuple(extra), suffix)
        sql = self._inserts.get(key)
        if sql is None:  # built once: every put needs two or three of these
            names = [*extra, *(f.name for f in fields(row))]
            marks = ", ".join("?" for _ in names)
            columns = ", ".join(names)
            sql = f"INSERT INTO {table} (tid, {columns}) VALUES ({self.tid}, {marks}){suffix}"
            sql = self._inserts[key] = self.q(sql)
        return sql

    def _parent(
        self, serde: Serde, cache: ChainCache, thread_id: str, ns: str, checkpoint: Checkpoint
    ) -> Generator[Batch, list[Rows], CacheEntry | None]:
        """What a put needs of the parent of ``checkpoint``: its versions and inline
        values, from the cache or else its record; None if it has none (or it is gone)."""
        parent_id = checkpoint.parent_id
        if parent_id is None:
            return None
        hit = cache.get(thread_id, ns, parent_id)
        if hit is not None:
            return hit
        sql = f"SELECT codec, state FROM {self.checkpoints} WHERE tid = {self.tid} AND id = ?"
        (rows,) = yield Batch([Stmt(self.q(sql), (thread_id, ns, parent_id))])
        if not rows:
            return None
        codec, blob = rows[0]
        state = decode_state(serde, codec, blob, thread_id=thread_id, checkpoint_id=parent_id)
        return CacheEntry(parent_id, state.versions, {}, state.inline)

    def _bases(
        self,
        thread_id: str,
        ns: str,
        checkpoint: Checkpoint,
        parent: CacheEntry | None,
        chains: Mapping[str, ChainState],
    ) -> Generator[Batch, list[Rows], dict[str, ChainState]]:
        """Chain states, at the parent, of the channels this checkpoint appended to:
        the known ones (``chains``), the others walked from the tables.
        """
        if not checkpoint.appends or parent is None:
            return {}
        wanted = appended_bases(checkpoint, parent.versions)
        out = {k: chains[k] for k, v in wanted.items() if k in chains and chains[k].version == v}
        missing = {k: v for k, v in wanted.items() if k not in out}
        if missing:
            sql = self.chain_walk(_LINK_COLS, self.tid)
            (rows,) = yield Batch([Stmt(sql, (json.dumps(missing), thread_id, ns))])
            found: dict[str, dict[str, BlobRow]] = {}
            for k, version, kind, base, deltas, size, items in rows:
                row = BlobRow(k, version, kind, base, None, deltas, 0, size, "", b"", items)
                found.setdefault(k, {})[version] = row
            for k, version in missing.items():
                chain = chain_state(chain_path(found.get(k, {}), version))
                if chain is not None:
                    out[k] = chain
        return out

    def _write_stmts(
        self, thread_id: str, ns: str, checkpoint_id: str, rows: Sequence[WriteRow]
    ) -> list[Stmt]:
        """Inserts of pending writes: idx >= 0 only if absent, idx < 0 upserted."""
        conflict = " ON CONFLICT (tid, checkpoint_id, task_id, idx) DO "
        upsert = "UPDATE SET " + ", ".join(
            f"{c} = excluded.{c}" for c in ("task_name", "channel", "codec", "data")
        )
        out = []
        for action, group in (
            ("NOTHING", [w for w in rows if w.idx >= 0]),
            (upsert, [w for w in rows if w.idx < 0]),
        ):
            if group:
                sql = self._insert(self.writes, WriteRow, ["checkpoint_id"], conflict + action)
                many = [(thread_id, ns, checkpoint_id, *_values(w)) for w in group]
                out.append(Stmt(sql, many=many))
        return out

    def put_writes_plan(
        self,
        serde: Serde,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        writes: Sequence[PendingWrite],
    ) -> Plan[None]:
        stmts = self._write_stmts(thread_id, ns, checkpoint_id, encode_writes(serde, writes))
        if stmts:
            yield Batch(stmts, final=True)

    def put_job(
        self,
        serde: Serde,
        cache: ChainCache,
        thread_id: str,
        ns: str,
        puts: Sequence[Put],
        expected_head: str | None,
    ) -> Job[None]:
        """A put of one or more checkpoints; losing the head race to the very same
        last checkpoint (our own earlier attempt, whose acknowledgement was lost)
        counts as success."""
        if not puts:
            return
        last = puts[-1].checkpoint.id
        plan = self.put_plan(serde, cache, thread_id, ns, puts, expected_head)

        def duplicate() -> ConcurrentUpdateError:  # built only when it happens
            ids = [put.checkpoint.id for put in puts]
            return ConcurrentUpdateError(duplicate_checkpoint(thread_id, ns, ids))

        try:
            yield Txn(plan, write=True, integrity=duplicate)
        except ConcurrentUpdateError:
            sql = f"SELECT head_id FROM {self.threads} WHERE thread_id = ? AND checkpoint_ns = ?"
            rows = yield Txn(self._select(sql, (thread_id, ns)))
            if not rows or rows[0][0] != last:
                raise

    def _select(self, sql: str, params: Sequence[Any]) -> Plan[Rows]:
        (rows,) = yield Batch([Stmt(self.q(sql), params)], final=True)
        return rows

    def put_writes_txn(
        self,
        serde: Serde,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        writes: Sequence[PendingWrite],
    ) -> Txn[None]:
        missing = no_checkpoint(thread_id, ns, checkpoint_id)
        plan = self.put_writes_plan(serde, thread_id, ns, checkpoint_id, writes)
        return Txn(plan, write=True, integrity=lambda: CheckpointNotFoundError(missing))

    def delete_job(self, cache: ChainCache, thread_id: str) -> Job[None]:
        yield Txn(self._delete_plan(thread_id), write=True)
        cache.forget(thread_id)

    def _delete_plan(self, thread_id: str) -> Plan[None]:
        yield Batch(self._delete_thread_stmts(thread_id), final=True)

    def _delete_thread_stmts(self, thread_id: str, *, locked: bool = False) -> list[Stmt]:
        # Locked first, so a concurrent put waits and then finds no head to move.
        lock_sql = None if locked else self.lock_thread
        lock = [Stmt(self.q(lock_sql), (thread_id,))] if lock_sql else []
        tids = f"(SELECT tid FROM {self.threads} WHERE thread_id = ?)"
        return lock + [
            Stmt(self.q(f"DELETE FROM {table} WHERE tid IN {tids}"), (thread_id,))
            for table in (self.writes, self.blobs, self.checkpoints, self.threads)
        ]

    def threads_plan(self, limit: int | None) -> Plan[list[ThreadInfo]]:
        sql = (
            "SELECT t.thread_id, t.head_id, t.updated_at, "
            f"(SELECT count(*) FROM {self.checkpoints} c WHERE c.tid = t.tid) "
            f"FROM {self.threads} t WHERE t.checkpoint_ns = '' "
            "ORDER BY t.updated_at DESC, t.thread_id"
        )
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql, params = sql + " LIMIT ?", (max(limit, 0),)
        (rows,) = yield Batch([Stmt(self.q(sql), params)], final=True)
        return [ThreadInfo(*r) for r in rows]

    def prune_job(
        self, serde: Serde, cache: ChainCache, retention: Retention
    ) -> Job[tuple[int, list[str]]]:
        """Prune every thread that may need it, each in its own transaction; how many
        checkpoints went, and which threads went whole (for their sidecars)."""
        sql = (
            f"SELECT t.thread_id FROM {self.threads} t JOIN {self.checkpoints} c "
            "ON c.tid = t.tid GROUP BY t.thread_id HAVING count(*) > ? OR min(c.created_at) < ?"
        )
        keep = _NEVER if retention.keep_last is None else retention.keep_last
        candidates = yield Txn(self._select(sql, (keep, retention.cutoff)))
        removed, gone = 0, []
        for (thread_id,) in candidates:
            plan = self.prune_thread_plan(serde, thread_id, retention.cutoff, retention.keep_last)
            count, whole = yield Txn(plan, write=True)
            removed += count
            if whole:
                gone.append(thread_id)
        cache.forget()
        return removed, gone

    def prune_thread_plan(
        self, serde: Serde, thread_id: str, cutoff: float, keep_last: int | None
    ) -> Plan[tuple[int, bool]]:
        """Prune one thread (all its namespaces) in one transaction: how many
        checkpoints it removed, and whether the whole thread went."""
        stmts = [Stmt(self.q(self.lock_thread), (thread_id,))] if self.lock_thread else []
        heads_sql = (
            "SELECT t.tid, t.head_id, c.created_at, c.parent_id, c.codec, c.state, "
            "EXISTS (SELECT 1 FROM "
            f"{self.writes} w WHERE w.tid = t.tid AND w.checkpoint_id = t.head_id "
            f"AND w.channel = ?) FROM {self.threads} t LEFT JOIN {self.checkpoints} c "
            "ON c.tid = t.tid AND c.id = t.head_id WHERE t.thread_id = ?"
        )
        all_sql = (
            f"SELECT c.tid, c.id, c.created_at FROM {self.threads} t "
            f"JOIN {self.checkpoints} c ON c.tid = t.tid WHERE t.thread_id = ?"
        )
        stmts += [
            Stmt(self.q(heads_sql), (INTERRUPT, thread_id)),
            Stmt(self.q(all_sql), (thread_id,)),
        ]
        *_, heads, everything = yield Batch(stmts)
        if not heads:
            return 0, False
        if all(
            created is not None and created < cutoff and not waiting
            for _, _, created, _, _, _, waiting in heads
        ):
            # prune_thread_plan took the thread's lock in its first batch
            yield Batch(self._delete_thread_stmts(thread_id, locked=True), final=True)
            return len(everything), True
        by_tid: dict[int, list[tuple[str, float]]] = {}
        for tid, cid, created in everything:
            by_tid.setdefault(tid, []).append((cid, created))
        doomed = {}
        for tid, head, _, parent, codec, state, _ in heads:
            needed: set[str] | None = set()
            if state is not None:  # what its compensations read stays (see prune_plan)
                needed = compensation_reads(serde, codec, state, thread_id=thread_id, head_id=head)
            if needed is None:
                continue  # cannot tell what they need: keep it all
            doomed[tid] = set(
                prune_plan(
                    by_tid.get(tid, []),
                    head,
                    parent,
                    cutoff=cutoff,
                    keep_last=keep_last,
                    needed=needed,
                )
            )
        doomed = {tid: ids for tid, ids in doomed.items() if ids}
        if not doomed:
            return 0, False
        garbage = yield from self._garbage(serde, thread_id, doomed)
        ids = [(t, c) for t, cids in doomed.items() for c in cids]
        deletes: list[tuple[str, str, Sequence[Sequence[Any]]]] = [
            (self.writes, "tid = ? AND checkpoint_id = ?", ids),
            (self.checkpoints, "tid = ? AND id = ?", ids),
            (self.blobs, "tid = ? AND channel = ? AND version = ?", garbage),
        ]
        yield Batch(
            [Stmt(self.q(f"DELETE FROM {t} WHERE {w}"), many=m) for t, w, m in deletes if m],
            final=True,
        )
        return sum(len(ids) for ids in doomed.values()), False

    def _garbage(
        self, serde: Serde, thread_id: str, doomed: dict[int, set[str]]
    ) -> Generator[Batch, list[Rows], list[tuple[int, str, str]]]:
        """Blobs no remaining checkpoint of the pruned namespaces needs."""
        states_sql = (
            f"SELECT c.tid, c.id, c.codec, c.state FROM {self.threads} t "
            f"JOIN {self.checkpoints} c ON c.tid = t.tid WHERE t.thread_id = ?"
        )
        blobs_sql = (
            f"SELECT b.tid, b.channel, b.version, b.base_version FROM {self.threads} t "
            f"JOIN {self.blobs} b ON b.tid = t.tid WHERE t.thread_id = ?"
        )
        states, blobs = yield Batch(
            [Stmt(self.q(states_sql), (thread_id,)), Stmt(self.q(blobs_sql), (thread_id,))]
        )
        maps: dict[int, list[dict[str, str]]] = {tid: [] for tid in doomed}
        unreadable: set[int] = set()
        for tid, cid, codec, state in states:
            if tid not in maps or cid in doomed[tid]:
                continue
            try:
                decoded = decode_state(serde, codec, state, thread_id=thread_id, checkpoint_id=cid)
                maps[tid].append(decoded.versions)
            except CheckpointCorruptError:
                unreadable.add(tid)  # cannot tell what it needs: keep every blob
        bases: dict[int, dict[tuple[str, str], str | None]] = {tid: {} for tid in doomed}
        for tid, channel, version, base in blobs:
            if tid in bases:
                bases[tid][(channel, version)] = base
        out = []
        for tid, stored in bases.items():
            if tid in unreadable:
                continue
            keep = needed_blobs(maps[tid], stored)
            out += [
                (tid, channel, version)
                for channel, version in stored
                if (channel, version) not in keep
            ]
        return out


def _nothing() -> Plan[list[Any]]:
    return []
    yield  # a generator that runs no statement


def _blob_rows(rows: Rows) -> list[BlobRow]:
    return [
        BlobRow(c, v, kind, base, None, 0, 0, 0, codec, data)
        for c, v, kind, base, codec, data in rows
    ]


class ChainCache:
    """The last checkpoint put per (thread, namespace), with its channels' chain
    states and inline values.

    Saves the parent lookups of the next ``put`` in a loop. Entries are keyed by
    immutable checkpoint ids, so a stale entry is never wrong, only unused.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], CacheEntry] = OrderedDict()

    def get(self, thread_id: str, ns: str, checkpoint_id: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get((thread_id, ns))
            if entry is None or entry.checkpoint_id != checkpoint_id:
                return None
            return entry

    def store(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        versions: Mapping[str, str],
        chains: Mapping[str, ChainState],
        inline: Inline,
    ) -> None:
        key = (thread_id, ns)
        with self._lock:
            old = self._entries.pop(key, None)
            merged = dict(old.chains) if old is not None else {}
            merged.update(chains)
            # Keep only states that are still the channel's current version.
            kept = {k: c for k, c in merged.items() if versions.get(k) == c.version}
            self._entries[key] = CacheEntry(checkpoint_id, dict(versions), kept, inline)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def remember(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        versions: Mapping[str, str],
        inline: Inline,
    ) -> None:
        """Note a checkpoint just read, unless it is the one already known."""
        with self._lock:
            entry = self._entries.get((thread_id, ns))
            if entry is not None and entry.checkpoint_id == checkpoint_id:
                return
        self.store(thread_id, ns, checkpoint_id, versions, {}, inline)

    def forget(self, thread_id: str | None = None) -> None:
        with self._lock:
            if thread_id is None:
                self._entries.clear()
            else:
                for key in [k for k in self._entries if k[0] == thread_id]:
                    del self._entries[key]


@dataclass(slots=True)
class CacheEntry:
    """A checkpoint as the next put on top of it needs it."""

    checkpoint_id: str
    versions: Mapping[str, str]
    chains: dict[str, ChainState]
    inline: Inline
