"""Approval requests in a SQLite file: the checkpoint database, own tables, own connection.

Writes take SQLite's write lock up front (``BEGIN IMMEDIATE``), so two
processes deciding the same request are serialised by the database and the
conditional update lets exactly one win.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trellis.errors import ApprovalError
from trellis.hitl.store_sql import Cursor, SqlApprovalStore
from trellis.persist.serde import Serializer

__all__ = ["SqliteApprovalStore"]


class SqliteApprovalStore(SqlApprovalStore):
    """The review queue's tables in the SQLite file at ``path``.

    Normally built for you by ``ReviewQueue(saver)``; open one directly to
    read a database without its saver.

    >>> store = SqliteApprovalStore("runs.db")
    >>> store.pending(risk=["high"])
    """

    def __init__(self, path: str | Path, *, serde: Any = None, busy_timeout: float = 10.0) -> None:
        self.path = str(path)
        self.serde = serde if serde is not None else Serializer()
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise ApprovalError(f"cannot open approval database {self.path!r}: {exc}") from exc
        self._conn = conn
        self._lock = threading.RLock()
        self._busy_ms = int(busy_timeout * 1000)
        self._ready = False
        self.setup()

    def setup(self) -> None:
        """Create the tables if missing; refuse a database from a newer Trellis."""
        with self._lock:
            if self._ready:
                return
            conn = self._conn
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            with self._tx(True) as cur:
                self._migrate(cur, real="REAL", blob="BLOB", where=repr(self.path))
            self._ready = True

    @contextmanager
    def _tx(self, write: bool) -> Iterator[Cursor]:
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise ApprovalError(f"approval database {self.path!r}: {exc}") from exc
            cur = conn.cursor()
            try:
                yield cur
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise ApprovalError(f"approval database {self.path!r}: {exc}") from exc
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
            finally:
                cur.close()

    def close(self) -> None:
        """Close this store's connection (the saver's is untouched)."""
        with self._lock:
            self._conn.close()
