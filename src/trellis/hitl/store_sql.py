"""The SQL both database stores share: tables, queries, and the exactly-once decision.

Two tables. ``trellis_approval_requests`` is the queue's index: one row per
request, with ``(status, deadline)`` indexed so listing what waits, oldest
deadline first, never scans (and never reads checkpoints).
``trellis_approval_decisions`` is the audit trail: one row per decision, who,
when, notes, the edit — keyed by request id, so a request can be decided once.

A decision is one transaction: ``UPDATE ... WHERE id = ? AND status = 'pending'``
(plus the deadline test) and, only when that changed a row, the audit insert.
Two reviewers racing: the database serialises the two updates, the second
finds the row no longer pending and changes nothing. A request with no
deadline stores ``deadline = +inf`` so one index orders everything.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Final, Protocol

from trellis.errors import ApprovalError, ApprovalNotFoundError, SchemaVersionError
from trellis.hitl.records import (
    PENDING,
    SUPERSEDED,
    TIMED_OUT,
    ApprovalRequest,
    Decision,
    from_json,
    to_json,
)
from trellis.hitl.store import StatRow, refusal_for

__all__ = ["SCHEMA_VERSION", "Cursor", "SqlApprovalStore", "ddl"]

SCHEMA_VERSION: Final = 1

_REQUEST_COLS: Final = (
    "id, thread_id, node, summary, context, risk, confidence, created_at, deadline, status, "
    "on_timeout, state_keys, checkpoint_id, decided_at"
)
_DECISION_COLS: Final = (
    "d.status, d.reviewer, d.notes, d.decided_at, d.update_codec, d.update_data, d.resolution"
)
_JOINED: Final = (
    f"SELECT {', '.join('r.' + c.strip() for c in _REQUEST_COLS.split(','))}, {_DECISION_COLS} "
    "FROM trellis_approval_requests r "
    "LEFT JOIN trellis_approval_decisions d ON d.request_id = r.id"
)
_BY_ID: Final = f"{_JOINED} WHERE r.id = ?"
_ORDER: Final = " ORDER BY deadline, created_at, id"


def ddl(real: str, blob: str) -> list[str]:
    """The schema, in a dialect's names for floating point and binary columns."""
    return [
        f"""CREATE TABLE IF NOT EXISTS trellis_approval_requests (
            id TEXT PRIMARY KEY,
            thread_id TEXT NOT NULL,
            node TEXT NOT NULL,
            summary TEXT NOT NULL,
            context TEXT NOT NULL,
            risk TEXT NOT NULL,
            confidence {real},
            created_at {real} NOT NULL,
            deadline {real} NOT NULL,
            status TEXT NOT NULL,
            on_timeout TEXT NOT NULL,
            state_keys TEXT NOT NULL,
            checkpoint_id TEXT,
            decided_at {real})""",
        "CREATE INDEX IF NOT EXISTS trellis_approval_queue "
        "ON trellis_approval_requests (status, deadline, created_at, id)",
        "CREATE INDEX IF NOT EXISTS trellis_approval_by_thread "
        "ON trellis_approval_requests (thread_id, created_at)",
        "CREATE INDEX IF NOT EXISTS trellis_approval_by_node "
        "ON trellis_approval_requests (node, status)",
        f"""CREATE TABLE IF NOT EXISTS trellis_approval_decisions (
            request_id TEXT PRIMARY KEY REFERENCES trellis_approval_requests (id),
            status TEXT NOT NULL,
            reviewer TEXT,
            notes TEXT,
            decided_at {real} NOT NULL,
            update_codec TEXT,
            update_data {blob},
            resolution TEXT)""",
    ]


class Cursor(Protocol):
    """The DB-API cursor subset used here (``sqlite3`` and ``psycopg`` both fit)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: Any, params: Sequence[Any] = ...) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class SqlApprovalStore:
    """Queries written once, for any backend that gives ``_tx`` and ``_q``.

    ``_tx(write)`` is a context manager yielding a cursor inside one
    transaction (committed on success, rolled back on error); ``_q`` turns the
    ``?`` placeholders used here into the driver's.
    """

    serde: Any

    def _tx(self, write: bool) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        return sql

    def _migrate(self, cur: Cursor, *, real: str, blob: str, where: str) -> None:
        """Create or check the versioned tables, inside the caller's setup transaction.

        ``real``/``blob`` are the dialect's column types; ``where`` names the
        database in errors.
        """
        cur.execute(
            "CREATE TABLE IF NOT EXISTS trellis_approval_schema "
            f"(version INTEGER NOT NULL, applied_at {real} NOT NULL)"
        )
        cur.execute("SELECT max(version) FROM trellis_approval_schema")
        current = cur.fetchall()[0][0] or 0
        if current > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"approval tables in {where} have schema version {current}, newer than this "
                f"Trellis understands ({SCHEMA_VERSION}); upgrade Trellis"
            )
        if current < SCHEMA_VERSION:
            for statement in ddl(real, blob):
                cur.execute(statement)
            cur.execute(
                self._q("INSERT INTO trellis_approval_schema VALUES (?, ?)"),
                (SCHEMA_VERSION, time.time()),
            )

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._tx(False) as cur:
            cur.execute(self._q(sql), params)
            return cur.fetchall()

    # -- writing ---------------------------------------------------------------

    def create(self, request: ApprovalRequest) -> ApprovalRequest:
        r = request
        params = (
            r.id, r.thread_id, r.node, r.summary, to_json(r.context), r.risk, r.confidence,
            r.created_at, _deadline_in(r.deadline), r.status, r.on_timeout,
            to_json(list(r.state_keys)), r.checkpoint_id, r.decided_at,
        )  # fmt: skip
        with self._tx(True) as cur:
            cur.execute(
                self._q(
                    f"INSERT INTO trellis_approval_requests ({_REQUEST_COLS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
                ),
                params,
            )
            if cur.rowcount == 1 and r.decision is not None:
                self._audit(cur, r.decision, r.decision.resolution)
            return self._read(cur, r.id)  # in the same transaction: no second round trip

    def decide(self, decision: Decision, *, now: float) -> ApprovalRequest:
        timeout = decision.status == TIMED_OUT
        # A person may decide before the deadline; the clock only at or after it;
        # a thread that moved on supersedes its request whenever it does.
        params: tuple[Any, ...] = (
            decision.status,
            decision.decided_at,
            decision.request_id,
            PENDING,
        )
        deadline_test = ""
        if decision.status != SUPERSEDED:
            deadline_test = " AND deadline <= ?" if timeout else " AND deadline > ?"
            params += (now,)
        with self._tx(True) as cur:
            cur.execute(
                self._q(
                    "UPDATE trellis_approval_requests SET status = ?, decided_at = ? "
                    f"WHERE id = ? AND status = ?{deadline_test} RETURNING on_timeout"
                ),
                params,
            )
            won = cur.fetchall()
            if not won:
                cur.execute(
                    self._q("SELECT status, deadline FROM trellis_approval_requests WHERE id = ?"),
                    (decision.request_id,),
                )
                raise _refusal(decision, cur.fetchall(), now)
            self._audit(cur, decision, won[0][0] if timeout else decision.resolution)
            return self._read(cur, decision.request_id)

    def _audit(self, cur: Cursor, decision: Decision, resolution: str | None) -> None:
        codec = data = None
        if decision.update is not None:
            codec, data = self.serde.dumps(decision.update, key="update")
        cur.execute(
            self._q(
                "INSERT INTO trellis_approval_decisions (request_id, status, reviewer, notes, "
                "decided_at, update_codec, update_data, resolution) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                decision.request_id, decision.status, decision.reviewer, decision.notes,
                decision.decided_at, codec, data, resolution,
            ),
        )  # fmt: skip

    # -- reading ---------------------------------------------------------------

    def get(self, request_id: str) -> ApprovalRequest | None:
        rows = self._rows(_BY_ID, (request_id,))
        return self._joined(rows[0]) if rows else None

    def _read(self, cur: Cursor, request_id: str) -> ApprovalRequest:
        """A request just written, read back on the writing transaction's cursor."""
        cur.execute(self._q(_BY_ID), (request_id,))
        return self._joined(cur.fetchall()[0])

    def pending(
        self,
        *,
        risk: Sequence[str] | None = None,
        node: Sequence[str] | None = None,
        created_before: float | None = None,
        limit: int | None = None,
    ) -> list[ApprovalRequest]:
        where = ["status = ?"]
        params: list[Any] = [PENDING]
        for column, values in (("risk", risk), ("node", node)):
            if values is not None:
                where.append(f"{column} IN ({', '.join('?' * len(values))})" if values else "0=1")
                params.extend(values)
        if created_before is not None:
            where.append("created_at <= ?")
            params.append(created_before)
        sql = f"SELECT {_REQUEST_COLS} FROM trellis_approval_requests WHERE {' AND '.join(where)}"
        sql += _ORDER
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [_request(row) for row in self._rows(sql, params)]

    def due(self, now: float, *, limit: int | None = None) -> list[ApprovalRequest]:
        sql = (
            f"SELECT {_REQUEST_COLS} FROM trellis_approval_requests "
            f"WHERE status = ? AND deadline <= ?{_ORDER}"
        )
        params: list[Any] = [PENDING, now]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [_request(row) for row in self._rows(sql, params)]

    def forget_thread(self, thread_id: str) -> None:
        """Delete the requests (and their audit rows) of a deleted thread."""
        with self._tx(True) as cur:
            cur.execute(
                self._q(
                    "DELETE FROM trellis_approval_decisions WHERE request_id IN "
                    "(SELECT id FROM trellis_approval_requests WHERE thread_id = ?)"
                ),
                (thread_id,),
            )
            cur.execute(
                self._q("DELETE FROM trellis_approval_requests WHERE thread_id = ?"), (thread_id,)
            )

    def history(self, thread_id: str) -> list[ApprovalRequest]:
        rows = self._rows(
            f"{_JOINED} WHERE r.thread_id = ? ORDER BY r.created_at, r.id", (thread_id,)
        )
        return [self._joined(row) for row in rows]

    def stats(self, node: str | None = None) -> list[StatRow]:
        sql = "SELECT node, status, created_at, decided_at FROM trellis_approval_requests"
        rows = self._rows(sql + " WHERE node = ?", (node,)) if node is not None else self._rows(sql)
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def _joined(self, row: Sequence[Any]) -> ApprovalRequest:
        request = _request(row)
        status, reviewer, notes, decided_at, codec, data, resolution = row[14:21]
        if status is None:
            return request
        update = None
        if codec is not None:
            update = self.serde.loads(codec, bytes(data), key="update")
        decision = Decision(
            request.id, status, reviewer, notes, decided_at, update=update, resolution=resolution
        )
        return _replace(request, decision)


def _request(row: Sequence[Any]) -> ApprovalRequest:
    return ApprovalRequest(
        id=row[0],
        thread_id=row[1],
        node=row[2],
        summary=row[3],
        context=from_json(row[4]),
        risk=row[5],
        confidence=row[6],
        created_at=row[7],
        deadline=None if math.isinf(row[8]) else row[8],
        status=row[9],
        on_timeout=row[10],
        state_keys=_keys(row[11]),
        checkpoint_id=row[12],
        decided_at=row[13],
    )


_KEYS: dict[str, tuple[str, ...]] = {}


def _keys(text: str) -> tuple[str, ...]:
    """Decoded state keys; the runs of one graph share one tuple."""
    keys = _KEYS.get(text)
    if keys is None:
        keys = tuple(from_json(text))
        if len(_KEYS) < 1024:
            _KEYS[text] = keys
    return keys


def _replace(request: ApprovalRequest, decision: Decision) -> ApprovalRequest:
    from dataclasses import replace

    return replace(request, decision=decision)


def _deadline_in(deadline: float | None) -> float:
    return math.inf if deadline is None else deadline


def _refusal(decision: Decision, rows: list[Any], now: float) -> ApprovalError:
    """Why a conditional update changed nothing: unknown, decided, or not in time."""
    rid = decision.request_id
    if not rows:
        return ApprovalNotFoundError(f"no approval request {rid!r}")
    status, deadline = rows[0]
    return refusal_for(rid, status, deadline, decision.status == TIMED_OUT)
