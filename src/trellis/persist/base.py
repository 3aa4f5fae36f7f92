"""The checkpointer protocol: what the engine asks of every saver.

A thread's history is a tree of checkpoints, one per super-step. Each
checkpoint names its parent and carries the full state *logically*; a saver
stores only what changed (``Checkpoint.changed``) and, for channels that only
grew by appending, only the appended items (``Checkpoint.appends``), so a run
that appends n items stores O(n) bytes.

Every saver passes ``tests/persist/test_conformance.py``.

>>> saver = MemorySaver()
>>> graph = builder.compile(checkpointer=saver)
>>> graph.invoke({"n": 1}, {"configurable": {"thread_id": "t1"}})
"""

from __future__ import annotations

import builtins
import copy
import importlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol, Self, TypeVar, cast, runtime_checkable
from urllib.parse import quote, unquote

from trellis.errors import InvalidConfigError, InvalidUpdateError

__all__ = [
    "Database",
    "Checkpoint",
    "register_sidecar_kind",
    "keeps_rows",
    "checked_schema",
    "thread_deleted",
    "CheckpointTuple",
    "Checkpointer",
    "PendingWrite",
    "Put",
    "PutAsPutMany",
    "SCHEMA_NAME",
    "SaverBase",
    "ThreadInfo",
    "new_checkpoint_id",
    "own_connection_kwargs",
    "validate_filter",
]

# Metadata filter keys become part of a query path on some backends (JSON paths),
# so they are held to an identifier pattern everywhere; values are always bound.
_FILTER_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")  # \Z: "$" allows a final newline

_last_id_ns = 0
_id_suffix = os.urandom(8).hex()
_id_lock = threading.Lock()
_T = TypeVar("_T")


def _new_id_suffix() -> None:
    # A forked child must not share its parent's suffix (both could stamp the same
    # nanosecond), nor its lock, which another thread may have held at the fork.
    global _id_suffix, _last_id_ns, _id_lock
    _id_suffix, _last_id_ns, _id_lock = os.urandom(8).hex(), 0, threading.Lock()


os.register_at_fork(after_in_child=_new_id_suffix)


def new_checkpoint_id() -> str:
    """A fresh, time-ordered, unique id: ids sort in creation order.

    32 hex digits: 16 of nanoseconds since the epoch (forced strictly increasing
    within this process), then 16 random ones drawn once per process, so two
    processes never collide and no id costs a system call for randomness.
    """
    global _last_id_ns
    with _id_lock:  # the suffix is shared, so two threads must never stamp one time
        now = time.time_ns()
        if now <= _last_id_ns:
            now = _last_id_ns + 1
        _last_id_ns = now
    return f"{now:016x}{_id_suffix}"


def validate_filter(filter: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check metadata filter keys against the identifier pattern.

    >>> validate_filter({"source": "loop"})
    {'source': 'loop'}
    """
    if not filter:
        return {}
    for key in filter:
        if not isinstance(key, str) or not _FILTER_KEY.match(key):
            raise InvalidUpdateError(
                f"metadata filter key {key!r} is not an identifier "
                "(letters, digits and '_', at most 64, not starting with a digit)"
            )
    return dict(filter)


@dataclass(slots=True)
class Checkpoint:
    """One super-step's durable record of a thread.

    ``values`` is the complete state after the step. ``versions`` maps every
    channel present in ``values`` to the id of the checkpoint that last wrote
    it, so ``changed`` (the channels written by this checkpoint) is derived.
    ``appends`` holds, for some changed channels, the items this step appended:
    ``values[k] == <value at parent> + appends[k]``. ``pending`` is the engine's
    own bookkeeping (next tasks, join barriers, visit counts, interrupts): an
    opaque, serializable mapping the saver stores as one blob.
    """

    id: str
    parent_id: str | None
    step: int
    created_at: float
    values: Mapping[str, Any]
    versions: Mapping[str, str]
    appends: Mapping[str, list[Any]] = field(default_factory=dict)
    pending: Mapping[str, Any] = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def changed(self) -> list[str]:
        """The channels this checkpoint wrote."""
        me = self.id
        return [k for k, v in self.versions.items() if v == me]

    def keys(self) -> tuple[str, ...]:
        """The LangGraph checkpoint keys a Trellis checkpoint answers (``dict(cp)``)."""
        return _LANGGRAPH_KEYS

    def __iter__(self) -> Iterator[str]:
        return iter(_LANGGRAPH_KEYS)

    def __contains__(self, key: object) -> bool:
        return key in _LANGGRAPH_KEYS

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in _LANGGRAPH_KEYS else default

    def __getitem__(self, key: str) -> Any:
        """LangGraph's checkpoint keys, for code that reads a checkpoint as its dict.

        >>> saver.get(config)["channel_values"]
        {'n': 2}
        """
        if key == "id":
            return self.id
        if key == "ts":
            return datetime.fromtimestamp(self.created_at, UTC).isoformat()
        if key == "channel_values":
            return dict(self.values)
        if key == "channel_versions":
            return dict(self.versions)
        raise KeyError(
            f"{key!r}: a Trellis checkpoint has 'id', 'ts', 'channel_values' and "
            "'channel_versions' of LangGraph's keys; its other fields are attributes "
            "(step, parent_id, pending)"
        )


_LANGGRAPH_KEYS: Final = ("id", "ts", "channel_values", "channel_versions")


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """A write of a task that finished (or failed, or was interrupted) in a
    step whose checkpoint was not yet taken.

    ``idx >= 0`` are ordinary writes, insert-if-absent (a retried task never
    duplicates them); ``idx < 0`` are special slots (error, interrupt, resume,
    ``once`` results) that are upserted.
    """

    task_id: str
    task_name: str
    idx: int
    channel: str
    value: Any


@dataclass(slots=True)
class Put:
    """One checkpoint of a :meth:`Checkpointer.put_many` call, with what ``put`` takes."""

    checkpoint: Checkpoint
    metadata: Mapping[str, Any]
    writes: Sequence[PendingWrite] = ()


@dataclass(frozen=True, slots=True)
class CheckpointTuple:
    """A checkpoint as read back, with its metadata and pending writes."""

    thread_id: str
    checkpoint_ns: str
    checkpoint: Checkpoint
    metadata: dict[str, Any]
    pending_writes: tuple[PendingWrite, ...] = ()

    @property
    def config(self) -> dict[str, Any]:
        """The config naming this checkpoint, as LangGraph's tuple holds it.

        >>> graph.invoke(None, saver.get_tuple("t1").config)
        """
        return checkpoint_config(self.thread_id, self.checkpoint.id, self.checkpoint_ns)

    @property
    def parent_config(self) -> dict[str, Any] | None:
        """The config naming the checkpoint before this one; None for a first one."""
        parent, ns = self.checkpoint.parent_id, self.checkpoint_ns
        return None if parent is None else checkpoint_config(self.thread_id, parent, ns)


def checkpoint_config(thread_id: str, checkpoint_id: str | None, ns: str = "") -> dict[str, Any]:
    """The config that names one checkpoint of a thread (LangGraph's shape).

    >>> checkpoint_config("t1", None)
    {'configurable': {'thread_id': 't1', 'checkpoint_ns': '', 'checkpoint_id': None}}
    """
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
    }


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """A thread as listed by ``Checkpointer.threads``."""

    thread_id: str
    head_id: str
    updated_at: float
    checkpoints: int


@runtime_checkable
class Checkpointer(Protocol):
    """What the engine needs from a saver. Sync and async forms of each call.

    Contract (checked by the conformance suite):
    - ``put`` is atomic: the checkpoint, its metadata and the thread's new head
      become visible together or not at all.
    - ``put`` with ``expected_head`` different from the thread's current head
      (``None`` for a new thread) raises ``ConcurrentUpdateError`` and writes
      nothing.
    - ``get_tuple`` returns fully reconstructed ``values`` (appends resolved),
      ``None`` for an unknown thread; an unknown ``checkpoint_id`` of a known
      thread raises ``CheckpointNotFoundError``; an undecodable blob raises
      ``CheckpointCorruptError`` for that thread only.
    - ``put_many`` stores checkpoints that each name the one before as parent
      (the first moves the head from ``expected_head``) in one transaction:
      all of them, or none. The engine uses it for a run's input checkpoint and
      the step that applies the input, which no node runs between.
    - ``put_writes`` is idempotent per (checkpoint, task_id, idx).
    - ``list`` is newest first; ``before`` is exclusive; filter keys validated;
      filter values match metadata values as PostgreSQL's ``jsonb`` compares them
      (``storage.json_equal``): ``1`` matches ``1.0``, ``True`` does not match ``1``.

    Trellis's savers also take LangGraph's config-shaped reads (``get(config)``,
    ``get_tuple(config)``, ``list(config | None, before=config)``): see
    :mod:`trellis.persist.config_calls`.
    """

    def setup(self) -> None: ...

    def get_tuple(
        self, thread_id: str, checkpoint_id: str | None = None, *, checkpoint_ns: str = ""
    ) -> CheckpointTuple | None: ...

    def put(
        self,
        thread_id: str,
        checkpoint: Checkpoint,
        metadata: Mapping[str, Any],
        *,
        expected_head: str | None,
        checkpoint_ns: str = "",
        writes: Sequence[PendingWrite] = (),
    ) -> None: ...

    def put_many(
        self,
        thread_id: str,
        puts: Sequence[Put],
        *,
        expected_head: str | None,
        checkpoint_ns: str = "",
    ) -> None: ...

    def put_writes(
        self,
        thread_id: str,
        checkpoint_id: str,
        writes: Sequence[PendingWrite],
        *,
        checkpoint_ns: str = "",
    ) -> None: ...

    def list(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str = "",
        before: str | None = None,
        limit: int | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> Iterator[CheckpointTuple]: ...

    def delete_thread(self, thread_id: str) -> None: ...

    def threads(self, *, limit: int | None = None) -> builtins.list[ThreadInfo]: ...

    def prune(
        self, *, ttl: float | None = None, keep_last: int | None = None, now: float | None = None
    ) -> int: ...

    async def aget_tuple(
        self, thread_id: str, checkpoint_id: str | None = None, *, checkpoint_ns: str = ""
    ) -> CheckpointTuple | None: ...

    async def aput(
        self,
        thread_id: str,
        checkpoint: Checkpoint,
        metadata: Mapping[str, Any],
        *,
        expected_head: str | None,
        checkpoint_ns: str = "",
        writes: Sequence[PendingWrite] = (),
    ) -> None: ...

    async def aput_many(
        self,
        thread_id: str,
        puts: Sequence[Put],
        *,
        expected_head: str | None,
        checkpoint_ns: str = "",
    ) -> None: ...

    async def aput_writes(
        self,
        thread_id: str,
        checkpoint_id: str,
        writes: Sequence[PendingWrite],
        *,
        checkpoint_ns: str = "",
    ) -> None: ...

    def alist(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str = "",
        before: str | None = None,
        limit: int | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[CheckpointTuple]: ...

    async def adelete_thread(self, thread_id: str) -> None: ...


class PutAsPutMany:
    """``put``/``aput`` as a ``put_many``/``aput_many`` of one checkpoint, so a saver
    writes its put logic once, in the batch form.

    >>> class MySaver(PutAsPutMany): ...  # implement put_many and aput_many
    """

    def put(
        self: Checkpointer,
        thread_id: str,
        checkpoint: Checkpoint,
        metadata: Mapping[str, Any],
        *,
        expected_head: str | None,
        checkpoint_ns: str = "",
        writes: Sequence[PendingWrite] = (),
    ) -> None:
        self.put_many(
            thread_id,
            [Put(checkpoint, metadata, writes)],
            expected_head=expected_head,
            checkpoint_ns=checkpoint_ns,
        )

    async def aput(
        self: Checkpointer,
        thread_id: str,
        checkpoint: Checkpoint,
        metadata: Mapping[str, Any],
        *,
        expected_head: str | None,
        checkpoint_ns: str = "",
        writes: Sequence[PendingWrite] = (),
    ) -> None:
        await self.aput_many(
            thread_id,
            [Put(checkpoint, metadata, writes)],
            expected_head=expected_head,
            checkpoint_ns=checkpoint_ns,
        )


class SaverBase(PutAsPutMany):
    """Shared plumbing for savers whose work is synchronous (memory, SQLite).

    The async twins call the sync methods inline when ``_offload`` is false (the
    work is a few microseconds; a thread hop would cost more than it saves) or
    in a worker thread via ``asyncio.to_thread`` when it may block on disk.

    >>> class MySaver(SaverBase): ...  # implement the sync methods
    """

    serde: Any
    _offload: bool = False

    def with_allowlist(self, types: Iterable[type]) -> Self:
        """A view of the same store whose serializer also allows ``types``.

        >>> saver = saver.with_allowlist([MyState])
        """
        clone = copy.copy(self)
        clone.serde = self.serde.with_allowlist(types)
        return clone

    @property
    def _blocking(self) -> Checkpointer:
        return cast(Checkpointer, self)

    async def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        if self._offload:
            import asyncio

            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    async def aget_tuple(
        self, thread_id: str, checkpoint_id: str | None = None, *, checkpoint_ns: str = ""
    ) -> CheckpointTuple | None:
        get_tuple = self._blocking.get_tuple
        return await self._call(get_tuple, thread_id, checkpoint_id, checkpoint_ns=checkpoint_ns)

    async def aput_many(
        self,
        thread_id: str,
        puts: Sequence[Put],
        *,
        expected_head: str | None,
        checkpoint_ns: str = "",
    ) -> None:
        put_many = self._blocking.put_many
        await self._call(
            put_many, thread_id, puts, expected_head=expected_head, checkpoint_ns=checkpoint_ns
        )

    async def aput_writes(
        self,
        thread_id: str,
        checkpoint_id: str,
        writes: Sequence[PendingWrite],
        *,
        checkpoint_ns: str = "",
    ) -> None:
        put_writes = self._blocking.put_writes
        await self._call(put_writes, thread_id, checkpoint_id, writes, checkpoint_ns=checkpoint_ns)

    async def alist(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str = "",
        before: str | None = None,
        limit: int | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        def collect() -> list[CheckpointTuple]:
            return list(
                self._blocking.list(
                    thread_id,
                    checkpoint_ns=checkpoint_ns,
                    before=before,
                    limit=limit,
                    filter=filter,
                )
            )

        for item in await self._call(collect):
            yield item

    async def adelete_thread(self, thread_id: str) -> None:
        await self._call(self._blocking.delete_thread, thread_id)

    async def aprune(
        self, *, ttl: float | None = None, keep_last: int | None = None, now: float | None = None
    ) -> int:
        return await self._call(self._blocking.prune, ttl=ttl, keep_last=keep_last, now=now)


_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class Database:
    """Where a saver keeps its rows, so the stores that live beside its checkpoints
    (approval requests, run history) can open the same database.

    A saver that keeps nothing outside the process has ``database = None``.

    >>> PostgresSaver.from_conn_string(url, schema="billing").database.schema
    'billing'
    """

    kind: Literal["sqlite", "postgres"]
    target: str  # a file path, or a PostgreSQL conninfo
    schema: str = "public"  # PostgreSQL only; a validated lowercase identifier
    connect_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str, *, schema: str = "public") -> Database:
        """The database a user names: a PostgreSQL URL, or a SQLite path (with or
        without ``sqlite:///``).

        A PostgreSQL URL may name the schema itself with ``?schema=NAME`` (taken
        out of the URL psycopg sees), as a command line's ``--db`` does.

        >>> Database.from_url("sqlite:///runs.db")
        Database(kind='sqlite', target='runs.db', schema='public', connect_kwargs={})
        >>> Database.from_url("postgresql://db/prod?schema=billing").schema
        'billing'
        """
        scheme = _URL_SCHEME.match(url)
        kind = scheme[1].lower() if scheme is not None else None  # schemes ignore case
        if kind in ("postgres", "postgresql"):
            url = f"{kind}{url[len(kind) :]}"  # libpq reads the scheme in lower case only
            base, _, query = url.partition("?")
            # The other parameters are passed on as written: re-encoding them would
            # turn %20 into '+', which libpq does not read as a space.
            kept, named = [], []
            for part in query.split("&") if query else []:
                key, _, value = part.partition("=")
                if unquote(key) == "schema":
                    named.append(unquote(value))
                else:
                    kept.append(part)
            if named:
                if schema != "public" and named[-1] != schema:
                    raise InvalidConfigError(
                        f"the URL names schema {named[-1]!r} and the caller {schema!r}"
                    )
                schema = checked_schema(named[-1])
                url = f"{base}?{'&'.join(kept)}" if kept else base
            return cls("postgres", url, schema)
        if scheme is None:
            return cls("sqlite", url)  # a path
        if kind != "sqlite":
            # Else a typo'd or SQLAlchemy-style URL (postgresql+psycopg://) would become
            # a SQLite file named after it, its password in the path. Not named here.
            raise InvalidConfigError(
                f"database URL scheme {scheme[1]!r} is not supported: give a "
                "postgresql:// URL or a SQLite file path"
            )
        path = url[scheme.end() :]  # sqlite:///runs.db and sqlite://runs.db: runs.db
        return cls("sqlite", path.removeprefix("/"))

    def has_table(self, name: str) -> bool:
        """Whether table ``name`` exists here (in the schema, on PostgreSQL). Opens
        a connection of its own and creates nothing, not even the database file.

        >>> Database("sqlite", "runs.db").has_table("trellis_checkpoints")
        True
        """
        if self.kind == "sqlite":
            if not os.path.exists(self.target):
                return False
            lite = sqlite3.connect(f"file:{quote(self.target)}?mode=ro", uri=True)
            try:
                sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
                return lite.execute(sql, (name,)).fetchone() is not None
            finally:
                lite.close()
        with self.connect_postgres() as conn:
            found = conn.execute("SELECT to_regclass(%s)", (f'"{self.schema}".{name}',))
            row = found.fetchone()
        return row is not None and row[0] is not None

    def connect_postgres(self) -> Any:
        """A new psycopg connection to this PostgreSQL database, in autocommit."""
        import psycopg

        return psycopg.connect(self.target, **own_connection_kwargs(self.connect_kwargs))


def own_connection_kwargs(given: Mapping[str, Any]) -> dict[str, Any]:
    """A caller's psycopg connection arguments for a connection Trellis drives
    itself: in autocommit (it opens its own transactions), with psycopg's default
    rows (Trellis reads tuples, whatever ``row_factory`` the caller likes) and
    without automatic prepared statements.

    psycopg prepares a statement on its sixth use; when that use is queued in a
    pipeline the server aborts (a lost race does that), psycopg (3.3, at least)
    still records the statement as prepared, and every later use of it on that
    connection fails with ``prepared statement "_pg3_0" does not exist``.

    >>> own_connection_kwargs({"row_factory": dict_row, "application_name": "app"})
    {'application_name': 'app', 'autocommit': True, 'prepare_threshold': None}
    """
    kwargs = {k: v for k, v in given.items() if k != "row_factory"}
    kwargs["autocommit"] = True
    kwargs["prepare_threshold"] = None
    return kwargs


SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")  # \Z: "$" allows a final newline
"""A PostgreSQL schema Trellis writes into: lowercase, so quoted and unquoted
spellings agree, and safe to put in SQL text."""


def checked_schema(schema: str) -> str:
    """``schema`` if it is a :data:`SCHEMA_NAME`, else InvalidConfigError naming it
    (it becomes part of SQL text: no quotes, no tricks).

    >>> checked_schema("billing")
    'billing'
    """
    if not SCHEMA_NAME.match(schema):
        raise InvalidConfigError(
            f"schema name {schema!r} must be a lowercase identifier "
            "(letters, digits and '_', at most 63)"
        )
    return schema


# Stores that keep per-thread rows next to a saver's checkpoints (approval
# requests, run events) register their kind here, so deleting a thread from a
# saver deletes those rows too, without the savers knowing the stores exist.
@dataclass(frozen=True)
class _SidecarKind:
    forget: Callable[[Any, str], None]
    table: str
    opened: Any  # a mapping of savers to this kind's stores open in this process


_sidecar_kinds: list[_SidecarKind] = []
_sidecar_lock = threading.Lock()


def register_sidecar_kind(forget: Callable[[Any, str], None], *, table: str, opened: Any) -> None:
    """Have ``forget(saver, thread_id)`` run whenever a saver deletes a thread, in
    any process: one that never opened this kind of store (an admin script
    deleting threads) too. Skipped when the kind keeps nothing for the saver:
    ``opened`` (the kind's map of savers to open stores) does not hold it and its
    database has no ``table`` (so a delete never creates one).
    """
    kind = _SidecarKind(forget, table, opened)
    with _sidecar_lock:
        if kind not in _sidecar_kinds:
            _sidecar_kinds.append(kind)


def keeps_rows(saver: Any, *, table: str, opened: Any) -> bool:
    """Whether a kind of store beside ``saver`` may hold rows: one is open in this
    process (``opened``, the kind's map of savers to stores, holds ``saver``), or
    the saver's database has the kind's ``table`` (``""``: a kind that keeps rows
    elsewhere, known only to this process). Creates nothing."""
    try:
        if saver in opened:
            return True
    except TypeError:  # not weakly referenceable: no store was ever kept for it
        return False
    db = getattr(saver, "database", None)
    return bool(table) and db is not None and db.has_table(table)


# The stores that keep per-thread rows beside the checkpoints; each registers its
# kind when imported. Named here rather than imported: they sit above this layer,
# and a process that only deletes threads (an admin script) may never import them.
_SIDECAR_MODULES = ("trellis.persist.events", "trellis.hitl.store")


def thread_deleted(saver: Any, *thread_ids: str) -> None:
    """Savers call this after deleting threads (``delete_thread``, or a ``prune``
    that removed whole threads), outside their transaction; the sidecars forget
    those threads too. Whether a kind keeps rows is asked once for all of them."""
    if not thread_ids:
        return
    for module in _SIDECAR_MODULES:
        importlib.import_module(module)
    with _sidecar_lock:
        kinds = list(_sidecar_kinds)
    for kind in kinds:
        if keeps_rows(saver, table=kind.table, opened=kind.opened):
            for thread_id in thread_ids:
                kind.forget(saver, thread_id)
