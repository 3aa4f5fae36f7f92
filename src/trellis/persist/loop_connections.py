"""Async PostgreSQL connections kept for one event loop, with nothing running on it.

psycopg_pool's ``AsyncConnectionPool`` keeps maintenance tasks on its loop. When
that loop ends without the pool being closed (``asyncio.run`` returning while a
saver lives on), ``asyncio.run`` cancels those tasks; one cancelled mid-connect
swallows the cancellation and waits on its queue for good, and ``asyncio.run``
never returns. A saver cannot know when a caller's loop will end, so for the
pools it makes itself it keeps these instead: connections made by the caller
that needs one, kept idle for the next, and no task of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import PoolTimeout

__all__ = ["LoopConnections"]


class LoopConnections:
    """Up to ``size`` connections to ``conninfo`` for the loop that creates this.

    >>> conns = LoopConnections(url, {"autocommit": True}, size=4)
    >>> async with conns.connection(timeout=30) as conn:
    ...     await conn.execute("SELECT 1")
    >>> conns.close()
    """

    def __init__(self, conninfo: str, kwargs: dict[str, Any], *, size: int) -> None:
        self._conninfo, self._kwargs = conninfo, kwargs
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self.closed = False

    @asynccontextmanager
    async def connection(
        self, timeout: float | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection for one transaction; raises PoolTimeout if all ``size`` stay
        busy for ``timeout`` seconds. It is kept for reuse if it comes back idle."""
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolTimeout(f"couldn't get a connection after {timeout} sec") from None
        try:
            conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs)
            try:
                yield conn
            finally:
                idle = conn.info.transaction_status == TransactionStatus.IDLE
                if idle and not self.closed:
                    self._idle.append(conn)
                else:  # closed, or mid-transaction after an error: not to be lent again
                    await conn.close()
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close the idle connections; one in use closes as it comes back. Needs no
        running loop (psycopg's close is libpq's finish: no round trip), so it also
        serves a loop that has ended."""
        self.closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.pgconn.finish()
