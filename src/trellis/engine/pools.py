"""Thread pools made on first use: most runs never need one.

>>> pool = LazyPool("trellis", 8)
>>> pool.get().submit(print, "hi")
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import Executor

__all__ = ["LazyPool"]


class LazyPool:
    """A ``ThreadPoolExecutor`` of ``workers`` threads named ``prefix``, made the
    first time it is asked for and kept."""

    def __init__(self, prefix: str, workers: int) -> None:
        self.prefix, self.workers = prefix, workers
        self._pool: Executor | None = None
        self._lock = threading.Lock()

    def get(self) -> Executor:
        pool = self._pool
        if pool is not None:  # made once; the lock only guards making it
            return pool
        with self._lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.prefix)
            return self._pool
