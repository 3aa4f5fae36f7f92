"""The synchronous checkpointer calls both SQL savers share.

A backend supplies ``_run`` (run one transaction's plan on its connection),
``_sql`` (its dialect), ``_cache``, ``serde`` and its retention defaults; these
methods turn each protocol call into the dialect's plan. ``_after_removal`` lets
a backend give space back (SQLite vacuums incrementally).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from trellis.persist.base import (
    CheckpointTuple,
    PendingWrite,
    Put,
    PutAsPutMany,
    ThreadInfo,
    thread_deleted,
)
from trellis.persist.config_calls import ConfigCalls, accepts_config, lists_by_config
from trellis.persist.sql import ChainCache, SqlDialect, Txn, run_job
from trellis.persist.storage import retention

__all__ = ["SqlSaverMethods"]

T = TypeVar("T")


class SqlSaverMethods(PutAsPutMany, ConfigCalls):
    """Mixed into ``SqliteSaver`` and ``PostgresSaver``."""

    _sql: SqlDialect
    _cache: ChainCache
    _clock: Callable[[], float]
    serde: Any
    ttl: float | None
    keep_last: int | None

    def _run(self, txn: Txn[T]) -> T:
        raise NotImplementedError

    def _after_removal(self) -> None:
        """Called after rows were deleted (a thread, or a prune that removed some)."""

    @accepts_config
    def get_tuple(
        self, thread_id: str, checkpoint_id: str | None = None, *, checkpoint_ns: str = ""
    ) -> CheckpointTuple | None:
        return self._run(
            Txn(
                self._sql.get_plan(self.serde, thread_id, checkpoint_ns, checkpoint_id, self._cache)
            )
        )

    def put_many(
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
        run_job(job, self._run)

    def put_writes(
        self,
        thread_id: str,
        checkpoint_id: str,
        writes: Sequence[PendingWrite],
        *,
        checkpoint_ns: str = "",
    ) -> None:
        self._run(
            self._sql.put_writes_txn(self.serde, thread_id, checkpoint_ns, checkpoint_id, writes)
        )

    @lists_by_config
    def list(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str = "",
        before: str | None = None,
        limit: int | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> Iterator[CheckpointTuple]:
        plan = self._sql.list_plan(
            self.serde, thread_id, checkpoint_ns, before=before, limit=limit, filter=filter
        )
        return iter(self._run(Txn(plan)))

    def delete_thread(self, thread_id: str) -> None:
        """Remove every checkpoint, blob and write of ``thread_id``, in one transaction."""
        run_job(self._sql.delete_job(self._cache, thread_id), self._run)
        self._after_removal()
        thread_deleted(self, thread_id)

    def threads(self, *, limit: int | None = None) -> builtins.list[ThreadInfo]:
        """Root-namespace threads, most recently updated first."""
        return self._run(Txn(self._sql.threads_plan(limit)))

    def prune(
        self, *, ttl: float | None = None, keep_last: int | None = None, now: float | None = None
    ) -> int:
        """Apply retention; returns how many checkpoints were removed.

        ``keep_last`` keeps each thread's N newest checkpoints; ``ttl`` removes
        checkpoints created more than ``ttl`` seconds before ``now``, and whole
        threads whose heads are that old, unless a head waits on an interrupt or
        a breakpoint (with their approval requests and run history, as
        ``delete_thread``). Heads, their parents (which ``update_state`` reads) and
        every blob a kept checkpoint needs always stay.
        Each thread is pruned in its own transaction.
        """
        policy = retention(
            ttl, keep_last, now, defaults=(self.ttl, self.keep_last), clock=self._clock
        )
        if policy is None:
            return 0
        job = self._sql.prune_job(self.serde, self._cache, policy)
        removed, gone = run_job(job, self._run)
        if removed:
            self._after_removal()
        thread_deleted(self, *gone)
        return removed
