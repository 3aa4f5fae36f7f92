"""Approval requests in PostgreSQL: the checkpoint server, own tables.

Decisions are ``UPDATE ... WHERE status = 'pending' RETURNING ...`` under READ
COMMITTED: a second reviewer's update waits for the first to commit, then
re-reads the row, finds it decided and changes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from trellis.errors import ApprovalError
from trellis.hitl.store_sql import Cursor, SqlApprovalStore
from trellis.persist.base import Database, checked_schema, own_connection_kwargs
from trellis.persist.serde import Serializer

__all__ = ["PostgresApprovalStore"]


class PostgresApprovalStore(SqlApprovalStore):
    """The review queue's tables on a PostgreSQL server.

    Give a ``conninfo`` (the store opens a small pool of its own, passing
    ``connect_kwargs`` to each connection as psycopg's ``connect`` takes them)
    or a ``psycopg_pool.ConnectionPool`` to share. Tables go in ``schema`` (a
    PostgresSaver's store uses the saver's schema and connection arguments).

    >>> store = PostgresApprovalStore("postgresql://app@db/prod")
    >>> store.pending(node=["refund"])
    """

    blocking: ClassVar[bool] = True
    """Each call waits on the server: async runs call it from a worker thread."""

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        pool: Any = None,
        serde: Any = None,
        schema: str = "public",
        max_size: int = 4,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if conninfo and conninfo.startswith(("postgres://", "postgresql://")):
            where = Database.from_url(conninfo, schema=schema)  # it may say ?schema=
            conninfo, schema = where.target, where.schema
        self.schema = checked_schema(schema)
        try:
            from psycopg_pool import AsyncConnectionPool, ConnectionPool
        except ImportError as exc:  # pragma: no cover - the postgres extra is missing
            raise ImportError("PostgreSQL approvals need: pip install 'trellis[postgres]'") from exc
        self.serde = serde if serde is not None else Serializer()
        self._owned = pool is None or isinstance(pool, AsyncConnectionPool) or schema != "public"
        if pool is not None and self._owned:
            # A sync store cannot borrow async connections, and its search_path is its own.
            conninfo = str(pool.conninfo)
            connect_kwargs = {**(pool.kwargs or {}), **(connect_kwargs or {})}
        if self._owned:
            if not conninfo:
                raise ValueError("PostgresApprovalStore needs a conninfo or a pool")
            try:
                kwargs = _connection_kwargs(connect_kwargs or {}, schema)
                pool = ConnectionPool(
                    conninfo, min_size=1, max_size=max_size, open=True,
                    kwargs=kwargs, name="trellis-approvals",
                )  # fmt: skip
                pool.wait(timeout=10.0)
            except Exception as exc:
                raise ApprovalError(f"cannot connect to the approval database: {exc}") from exc
        self._pool = pool
        self._ready = False
        self._setup_lock = threading.Lock()
        try:
            self.setup()
        except BaseException:
            self.close()  # do not leave a pool (and its threads) behind a failed setup
            raise

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def setup(self) -> None:
        """Create the tables if missing; refuse a database from a newer Trellis."""
        with self._setup_lock:
            if self._ready:
                return
            with self._tx(True) as cur:
                # Concurrent CREATE ... IF NOT EXISTS can still collide: serialise setups.
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('trellis_approval_schema'))")
                cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                self._migrate(
                    cur, real="DOUBLE PRECISION", blob="BYTEA", where=f"schema {self.schema!r}"
                )
            self._ready = True

    @contextmanager
    def _tx(self, write: bool) -> Iterator[Cursor]:
        import psycopg

        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            raise ApprovalError(f"approval database (schema {self.schema!r}): {exc}") from exc

    def close(self) -> None:
        """Close the store's own pool (a shared pool is left to its owner)."""
        if self._owned:
            self._pool.close()


def _connection_kwargs(given: Mapping[str, Any], schema: str) -> dict[str, Any]:
    """The caller's connection arguments, with what the store relies on forced:
    autocommit (it opens its own transactions) and, outside ``public``, its schema
    first on the search path (after any ``options`` the caller set)."""
    kwargs = own_connection_kwargs(given)
    if schema != "public":
        kwargs["options"] = f"{kwargs.get('options', '')} -c search_path={schema}".strip()
    return kwargs
