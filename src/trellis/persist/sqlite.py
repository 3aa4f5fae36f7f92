"""The embedded default checkpointer: one SQLite file in WAL mode, stdlib ``sqlite3``."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from trellis.errors import (
    CheckpointError,
    ConcurrentUpdateError,
    InvalidConfigError,
    SchemaVersionError,
)
from trellis.persist.base import Database, SaverBase
from trellis.persist.serde import Serializer
from trellis.persist.sql import JSON_EQUAL, ChainCache, Rows, SqlDialect, Stmt, Txn
from trellis.persist.sql_saver import SqlSaverMethods
from trellis.persist.storage import Serde, check_prune_args, json_text_equal

__all__ = ["SCHEMA_VERSION", "AsyncSqliteSaver", "SqliteSaver"]

T = TypeVar("T")

SCHEMA_VERSION: Final = 4
_MIGRATIONS: Final[dict[int, list[str]]] = {
    1: [
        """CREATE TABLE trellis_threads (
            tid INTEGER PRIMARY KEY,
            thread_id TEXT NOT NULL,
            checkpoint_ns TEXT NOT NULL,
            head_id TEXT NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE (thread_id, checkpoint_ns))""",
        "CREATE INDEX trellis_threads_by_time ON trellis_threads (updated_at)",
        """CREATE TABLE trellis_checkpoints (
            tid INTEGER NOT NULL,
            id TEXT NOT NULL,
            parent_id TEXT,
            step INTEGER NOT NULL,
            created_at REAL NOT NULL,
            metadata TEXT NOT NULL,
            codec TEXT NOT NULL,
            state BLOB NOT NULL,
            fingerprint TEXT NOT NULL,
            PRIMARY KEY (tid, id)) WITHOUT ROWID""",
        """CREATE TABLE trellis_blobs (
            tid INTEGER NOT NULL,
            channel TEXT NOT NULL,
            version TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('full', 'delta')),
            base_version TEXT,
            anchor_version TEXT,
            deltas INTEGER NOT NULL,
            delta_bytes INTEGER NOT NULL,
            value_bytes INTEGER NOT NULL,
            codec TEXT NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (tid, channel, version)) WITHOUT ROWID""",
        """CREATE TABLE trellis_writes (
            tid INTEGER NOT NULL,
            checkpoint_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            task_name TEXT NOT NULL,
            channel TEXT NOT NULL,
            codec TEXT NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (tid, checkpoint_id, task_id, idx),
            FOREIGN KEY (tid, checkpoint_id) REFERENCES trellis_checkpoints (tid, id)
                ON DELETE CASCADE
        ) WITHOUT ROWID""",
    ],
    # Nothing reads threads by time through an index (listing sorts, pruning scans),
    # and keeping it cost a page write on every put.
    2: ["DROP INDEX IF EXISTS trellis_threads_by_time"],
    # Skip-linked delta chains need each value's length (None in older rows,
    # whose chains get a fresh snapshot on their next append).
    3: ["ALTER TABLE trellis_blobs ADD COLUMN items INTEGER"],
    # Checkpoint records hold small values themselves (state format 2), which a
    # Trellis knowing only version 3 would read as corrupt: it now refuses the file.
    4: [],
}
_SYNC_LEVELS: Final = ("OFF", "NORMAL", "FULL", "EXTRA")


class SqliteSaver(SqlSaverMethods, SaverBase):
    """Checkpoints in one SQLite file (WAL mode): the embedded default.

    ``synchronous`` is SQLite's durability setting. ``"NORMAL"`` (the default)
    in WAL mode survives a crash of the process; a power loss or OS crash may
    lose the last few commits (never corrupting the file). ``"FULL"`` fsyncs
    every commit and survives power loss too, at the cost of one fsync per
    ``put``. ``ttl`` (seconds) and ``keep_last`` are the defaults of :meth:`prune`.

    Every ``put`` is exactly one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``):
    checkpoint record, changed channel blobs, the pending writes passed with
    it and the head update. One connection is shared by threads under a lock;
    pass your own as ``SqliteSaver(conn)``, opened with
    ``check_same_thread=False`` (the saver sets ``isolation_level=None`` and
    issues transactions itself). The async methods run the sync ones inline: a
    put takes ~50 µs, a hop through ``asyncio.to_thread`` ~140 µs (measured);
    with ``synchronous="FULL"`` or ``"EXTRA"`` (an fsync per commit, which may
    block for milliseconds) they run in a worker thread instead.

    >>> saver = SqliteSaver.from_path("checkpoints.db")
    >>> graph = builder.compile(checkpointer=saver)
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        serde: Serde | None = None,
        synchronous: str = "NORMAL",
        ttl: float | None = None,
        keep_last: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(conn, sqlite3.Connection):
            raise TypeError(
                f"SqliteSaver takes an open sqlite3.Connection, got {type(conn).__name__}; "
                "for a file or ':memory:' use SqliteSaver.from_conn_string(...)"
            )
        level = synchronous.upper()
        if level not in _SYNC_LEVELS:
            raise ValueError(f"synchronous must be one of {_SYNC_LEVELS}, got {synchronous!r}")
        check_prune_args(ttl, keep_last)
        conn.isolation_level = None  # transactions are begun and ended explicitly
        # Metadata filters compare numbers by value (1 matches 1.0) with it.
        conn.create_function(JSON_EQUAL, 2, json_text_equal, deterministic=True)
        self.serde: Any = serde if serde is not None else Serializer()
        self.ttl, self.keep_last, self._clock = ttl, keep_last, clock
        self._conn = conn
        self._sync = level
        self._offload = level in ("FULL", "EXTRA")
        self._lock = threading.RLock()
        self._ready = False
        self._cache = ChainCache()
        self._sql = SqlDialect()
        self.path = _db_path(conn)

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: Any) -> SqliteSaver:
        """Open (creating it and its directory if needed) the database at ``path``.

        >>> saver = SqliteSaver.from_path("state/checkpoints.db", synchronous="FULL")
        """
        return cls._open(Path(path), kwargs)

    @classmethod
    def from_conn_string(cls, conn_string: str, **kwargs: Any) -> SqliteSaver:
        """LangGraph's constructor: a path, ``":memory:"`` or a ``file:`` URI, as
        ``sqlite3.connect`` takes it. The saver is its own context manager, so
        LangGraph's ``with`` form ports unchanged.

        >>> with SqliteSaver.from_conn_string(":memory:") as saver:
        ...     graph = builder.compile(checkpointer=saver)
        """
        if conn_string.startswith("file:"):
            return cls._open(conn_string, kwargs, uri=True)
        # sqlite:///x.db is the path x.db; another scheme is refused, not made a file
        # whose path spells the URL (a password in it, say).
        where = Database.from_url(conn_string)
        if where.kind != "sqlite":
            raise InvalidConfigError(
                "SqliteSaver.from_conn_string was given a PostgreSQL URL; "
                "use PostgresSaver.from_conn_string"
            )
        return cls._open(where.target, kwargs)

    @classmethod
    def _open(cls, target: str | Path, kwargs: dict[str, Any], *, uri: bool = False) -> SqliteSaver:
        """A saver owning a new connection to ``target`` (a path's directory is
        created), its schema ready; the connection is closed if that fails."""
        try:
            if not uri:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(target, check_same_thread=False, isolation_level=None, uri=uri)
        except (OSError, sqlite3.Error) as exc:
            raise CheckpointError(
                f"cannot open SQLite checkpoint database {str(target)!r}: {exc}"
            ) from exc
        try:
            saver = cls(conn, **kwargs)
            saver._prepare()
        except BaseException:
            conn.close()
            raise
        return saver

    @property
    def database(self) -> Database | None:
        """The database file; ``None`` for an in-memory one (its approvals and run
        history then stay in the process too)."""
        if self.path in (":memory:", "", "<unknown>"):
            return None
        return Database("sqlite", self.path)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> SqliteSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # --- setup ---------------------------------------------------------------------

    def setup(self) -> None:
        """Create or migrate the schema; a no-op when it is current.

        Raises SchemaVersionError if the file was written by a newer Trellis.
        """
        self._prepare()

    def _prepare(self) -> None:
        with self._lock:
            if self._ready:
                return
            try:
                self._setup()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            self._ready = True

    def _setup(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA synchronous = {self._sync}")  # validated in __init__
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 10000")
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            # Only settable on an empty file: lets prune hand pages back to the OS.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS trellis_schema_version "
                "(version INTEGER NOT NULL, applied_at REAL NOT NULL)"
            )
            current = conn.execute("SELECT max(version) FROM trellis_schema_version").fetchone()[0]
            current = current or 0
            if current > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"SQLite checkpoint database {self.path!r} has schema version {current}, "
                    f"newer than this Trellis understands ({SCHEMA_VERSION}); upgrade Trellis"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for ddl in _MIGRATIONS[version]:
                    conn.execute(ddl)
                conn.execute(
                    "INSERT INTO trellis_schema_version VALUES (?, ?)", (version, time.time())
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # --- the driver ------------------------------------------------------------------

    def _run(self, txn: Txn[T]) -> T:
        """Run one plan as one transaction (``BEGIN IMMEDIATE`` when it writes)."""
        with self._lock:
            if not self._ready:
                self._prepare()
            conn, plan = self._conn, txn.plan
            try:
                conn.execute("BEGIN IMMEDIATE" if txn.write else "BEGIN")
                try:
                    batch = next(plan)
                    while True:
                        results = [self._exec(stmt) for stmt in batch.stmts]
                        if batch.final:
                            conn.execute("COMMIT")
                        batch = plan.send(results)
                except StopIteration as stop:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
                    return stop.value  # type: ignore[no-any-return]
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.IntegrityError as exc:
                raise (txn.integrity() if txn.integrity else self._error(exc)) from exc
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def _exec(self, stmt: Stmt) -> Rows:
        if stmt.many is not None:
            self._conn.executemany(stmt.sql, stmt.many)
            return []
        rows = self._conn.execute(stmt.sql, stmt.params).fetchall()
        if stmt.required is not None and not (rows and rows[0][0]):
            raise ConcurrentUpdateError(stmt.required)
        return rows

    def _error(self, exc: sqlite3.Error) -> CheckpointError:
        return CheckpointError(f"SQLite checkpoint database {self.path!r}: {exc}")

    def _vacuum(self) -> None:
        """Hand freed pages back to the file system (the file is auto_vacuum=INCREMENTAL)."""
        with self._lock:
            try:
                # executescript steps the pragma to completion; execute frees one page.
                self._conn.executescript("PRAGMA incremental_vacuum;")
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    # --- the Checkpointer protocol ---------------------------------------------------

    def _after_removal(self) -> None:
        self._vacuum()  # freed pages go back to the file system


class AsyncSqliteSaver(SqliteSaver):
    """:class:`SqliteSaver` under LangGraph's async name, for code that awaits
    ``setup()``; everything else is the same saver.

    >>> async with AsyncSqliteSaver.from_conn_string("checkpoints.db") as saver:
    ...     await saver.setup()
    """

    async def setup(self) -> None:  # type: ignore[override]  # LangGraph's is awaited
        await self._call(self._prepare)


def _db_path(conn: sqlite3.Connection) -> str:
    try:
        for _, name, file in conn.execute("PRAGMA database_list").fetchall():
            if name == "main":
                return str(file) or ":memory:"
    except sqlite3.Error:
        pass
    return "<unknown>"
