"""The run history: every event of a traced run, stored next to its checkpoints.

``compile(checkpointer=saver, trace=True)`` keeps each run's events (as plain
JSON dicts) in the saver's own database, in a table of its own, so
``trellis trace THREAD`` can draw the timeline long after the process is gone.

- ``MemorySaver`` → a list per saver instance;
- ``SqliteSaver`` → table ``trellis_events`` in the same file;
- ``PostgresSaver`` → table ``trellis_events`` in the saver's schema.

>>> log = event_log_for(saver)
>>> log.append("thread-1", [event.to_dict() for event in events])
>>> [e["kind"] for e in log.list("thread-1")]
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import weakref
from collections.abc import Sequence
from typing import Any, Protocol

from trellis.persist.base import Database, checked_schema, register_sidecar_kind

__all__ = ["EventLog", "event_log_for", "open_event_log"]


Row = dict[str, Any]


class EventLog(Protocol):
    """Append-only storage of event dicts, per thread, in emission order."""

    def append(self, thread_id: str, events: Sequence[Row]) -> None: ...

    def list(self, thread_id: str, run_id: str | None = None) -> list[Row]: ...

    def runs(self, thread_id: str) -> builtins.list[str]: ...

    def forget(self, thread_id: str) -> None: ...

    def prune(self, before: float) -> int:
        """Delete the runs whose last event is older than ``before`` (epoch
        seconds), whole, so no timeline is left half; returns how many. Each
        thread's latest run stays: a run that paused or failed continues under
        its own id when the thread is resumed."""
        ...


class MemoryEventLog:
    """Events of a ``MemorySaver``'s threads, in this process."""

    def __init__(self) -> None:
        self._rows: dict[str, list[Row]] = {}
        self._lock = threading.Lock()

    def append(self, thread_id: str, events: Sequence[Row]) -> None:
        with self._lock:
            self._rows.setdefault(thread_id, []).extend(json.loads(json.dumps(events)))

    def list(self, thread_id: str, run_id: str | None = None) -> list[Row]:
        with self._lock:
            rows = list(self._rows.get(thread_id, ()))
        return [r for r in rows if run_id is None or r.get("run_id") == run_id]

    def runs(self, thread_id: str) -> builtins.list[str]:
        return list(dict.fromkeys(r.get("run_id", "") for r in self.list(thread_id)))

    def forget(self, thread_id: str) -> None:
        with self._lock:
            self._rows.pop(thread_id, None)

    def run_count(self) -> int:
        with self._lock:
            return sum(len({r.get("run_id", "") for r in rows}) for rows in self._rows.values())

    def prune(self, before: float) -> int:
        removed = 0
        with self._lock:
            for thread_id, rows in self._rows.items():
                last: dict[str, float] = {}
                for r in rows:
                    run = r.get("run_id", "")
                    last[run] = max(last.get(run, 0.0), r.get("ts", 0.0))
                latest = rows[-1].get("run_id", "") if rows else None
                old = {run for run, ts in last.items() if ts < before and run != latest}
                removed += len(old)
                self._rows[thread_id] = [r for r in rows if r.get("run_id", "") not in old]
        return removed


class SqlEventLog:
    """Events in a SQL table; ``connect`` opens a DB-API connection."""

    def __init__(self, connect: Any, *, table: str, placeholder: str) -> None:
        self._connect = connect
        self._table = table
        self._p = placeholder
        self._conn: Any = None
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        if self._conn is not None and getattr(self._conn, "closed", False):
            self._conn = None  # the server went away (restart, idle timeout): reconnect
        if self._conn is None:
            self._conn = self._connect()
            with _transaction(self._conn):
                self._conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._table} ("
                    " thread_id TEXT NOT NULL, run_id TEXT NOT NULL, seq INTEGER NOT NULL,"
                    " ts DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, event TEXT NOT NULL,"
                    " PRIMARY KEY (thread_id, run_id, seq))"
                )
        return self._conn

    def append(self, thread_id: str, events: Sequence[Row]) -> None:
        if not events:
            return
        p = self._p
        with self._lock:
            conn = self._connection()
            with _transaction(conn):
                cursor = conn.execute(
                    f"SELECT COALESCE(MAX(seq), -1) FROM {self._table} WHERE thread_id = {p}",
                    (thread_id,),
                )
                start = int(cursor.fetchone()[0]) + 1
                rows = [
                    (thread_id, e.get("run_id") or "", start + i, e.get("ts", 0.0), e["kind"],
                     json.dumps(e, default=str))
                    for i, e in enumerate(events)
                ]  # fmt: skip
                insert = (
                    f"INSERT INTO {self._table} (thread_id, run_id, seq, ts, kind, event)"
                    f" VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
                )
                _executemany(conn, insert, rows)

    def list(self, thread_id: str, run_id: str | None = None) -> list[Row]:
        p = self._p
        query = f"SELECT event FROM {self._table} WHERE thread_id = {p}"
        params: tuple[Any, ...] = (thread_id,)
        if run_id is not None:
            query += f" AND run_id = {p}"
            params += (run_id,)
        with self._lock:
            rows = self._connection().execute(query + " ORDER BY seq", params).fetchall()
        return [json.loads(r[0]) for r in rows]

    def runs(self, thread_id: str) -> builtins.list[str]:
        return list(dict.fromkeys(r.get("run_id", "") for r in self.list(thread_id)))

    def forget(self, thread_id: str) -> None:
        """Delete every event of ``thread_id`` (the thread itself was deleted)."""
        with self._lock:
            conn = self._connection()
            with _transaction(conn):
                conn.execute(f"DELETE FROM {self._table} WHERE thread_id = {self._p}", (thread_id,))

    def run_count(self) -> int:
        runs = f"SELECT DISTINCT thread_id, run_id FROM {self._table}"
        with self._lock:
            (count,) = self._connection().execute(f"SELECT count(*) FROM ({runs}) r").fetchone()
        return int(count)

    def prune(self, before: float) -> int:
        t, p = self._table, self._p
        old_runs = (
            f"SELECT thread_id, run_id FROM {t} r GROUP BY thread_id, run_id "
            f"HAVING MAX(ts) < {p} "
            f"AND MAX(seq) < (SELECT MAX(seq) FROM {t} l WHERE l.thread_id = r.thread_id)"
        )
        with self._lock:
            conn = self._connection()
            with _transaction(conn):
                runs = conn.execute(old_runs, (before,)).fetchall()
                if runs:
                    delete = f"DELETE FROM {t} WHERE thread_id = {p} AND run_id = {p}"
                    _executemany(conn, delete, [tuple(run) for run in runs])
        return len(runs)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _executemany(conn: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    # sqlite3 connections have executemany; psycopg's is on the cursor.
    if hasattr(conn, "executemany"):
        conn.executemany(sql, rows)
    else:
        conn.cursor().executemany(sql, rows)


def _transaction(conn: Any) -> Any:
    # sqlite3 commits on leaving `with conn`; psycopg would close the connection.
    return conn.transaction() if hasattr(conn, "transaction") else conn


_lock = threading.Lock()
_logs: weakref.WeakKeyDictionary[Any, EventLog] = weakref.WeakKeyDictionary()


def event_log_for(saver: Any) -> EventLog:
    """The event log that lives with ``saver`` (one per saver instance)."""
    with _lock:
        found = _logs.get(saver)
        if found is None:
            found = _logs[saver] = _build(saver)
            if isinstance(found, SqlEventLog):  # its connection goes when the saver goes
                weakref.finalize(saver, found.close)
        return found


def _forget_thread(saver: Any, thread_id: str) -> None:
    event_log_for(saver).forget(thread_id)


# A deleted thread's events go, whichever process deletes it.
register_sidecar_kind(_forget_thread, table="trellis_events", opened=_logs)


def _build(saver: Any) -> EventLog:
    db = getattr(saver, "database", None)
    return MemoryEventLog() if db is None else _open(db)


def open_event_log(url: str, *, schema: str = "public") -> EventLog:
    """The event log of a database named by ``url`` (a PostgreSQL URL or a SQLite path)."""
    return _open(Database.from_url(url, schema=schema))


def _open(db: Database) -> EventLog:
    if db.kind == "postgres":
        table = f'"{checked_schema(db.schema)}".trellis_events'
        return SqlEventLog(db.connect_postgres, table=table, placeholder="%s")
    path = db.target

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    return SqlEventLog(connect, table="trellis_events", placeholder="?")
