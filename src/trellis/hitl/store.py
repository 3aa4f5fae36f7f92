"""Where approval requests live: one small protocol, one backend per checkpointer.

``store_for(saver)`` picks the backend that sits next to a run's checkpoints:

- ``MemorySaver`` → an in-process store, one per saver instance;
- ``SqliteSaver`` → the same database file (its own tables and connection);
- ``PostgresSaver`` → the same server (its own tables, the saver's pool).

so a ``ReviewQueue(saver)`` in any process that can open the saver sees the
requests its runs made. Every backend passes ``tests/hitl/test_store_conformance.py``.

>>> store = store_for(SqliteSaver.from_path("runs.db"))
>>> [r.id for r in store.pending()]
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol, runtime_checkable

from trellis.errors import AlreadyDecidedError, ApprovalError
from trellis.hitl.records import PENDING, ApprovalRequest, Decision
from trellis.persist.base import Database, keeps_rows, register_sidecar_kind

__all__ = [
    "ApprovalStore",
    "StatRow",
    "attach_store",
    "blocks_event_loop",
    "existing_store_for",
    "open_store",
    "refusal_for",
    "store_for",
]

StatRow = tuple[str, str, float, float | None]
"""``(node, status, created_at, decided_at)``: what metrics are computed from."""


@runtime_checkable
class ApprovalStore(Protocol):
    """What the gate and the review queue need from a backend.

    Contract (checked by the conformance suite):
    - ``create`` inserts a request unless one with its id exists, and returns
      the stored one (so a gate that runs again never duplicates a request).
      A request created already decided (auto-approval) gets its audit row too.
    - ``decide`` is exactly-once: it moves a *pending* request to the
      decision's status in one transaction with the audit row, or raises
      ``ApprovalNotFoundError`` (unknown id) or ``AlreadyDecidedError``
      (decided, timed out, or, for a person's decision, past its deadline —
      status ``"expired"``). A ``timed_out`` decision applies only at or past
      the deadline and records the request's ``on_timeout`` as its resolution.
    - ``pending`` lists pending requests ordered by deadline (none last), then
      creation time and id, from an index — never by reading checkpoints.
    """

    def setup(self) -> None: ...

    def create(self, request: ApprovalRequest) -> ApprovalRequest: ...

    def get(self, request_id: str) -> ApprovalRequest | None: ...

    def decide(self, decision: Decision, *, now: float) -> ApprovalRequest: ...

    def pending(
        self,
        *,
        risk: Sequence[str] | None = None,
        node: Sequence[str] | None = None,
        created_before: float | None = None,
        limit: int | None = None,
    ) -> list[ApprovalRequest]: ...

    def due(self, now: float, *, limit: int | None = None) -> list[ApprovalRequest]: ...

    def history(self, thread_id: str) -> list[ApprovalRequest]: ...

    def forget_thread(self, thread_id: str) -> None: ...

    def stats(self, node: str | None = None) -> list[StatRow]: ...

    def close(self) -> None: ...


_lock = threading.Lock()
_stores: weakref.WeakKeyDictionary[Any, ApprovalStore] = weakref.WeakKeyDictionary()


def store_for(saver: Any) -> ApprovalStore:
    """The approval store that belongs with ``saver`` (one per saver instance).

    >>> store_for(saver) is store_for(saver)
    True
    """
    with _lock:
        try:
            found = _stores.get(saver)
        except TypeError:  # not weak-referenceable: build a fresh store each time
            return _build(saver)
        if found is None:
            found = _build(saver)
            _stores[saver] = found
            if found is not saver:  # the store's connections live as long as the saver
                weakref.finalize(saver, found.close)
        return found


def blocks_event_loop(saver: Any, store: ApprovalStore | None = None) -> bool:
    """Whether calls to ``store`` (or else to ``store_for(saver)``, which is not
    made here) may wait on the network, so that an async run makes them from a
    worker thread: a PostgreSQL store, or one of the caller's whose class says
    ``blocking = True``. Memory and SQLite answer in less time than a thread hop.

    >>> blocks_event_loop(PostgresSaver.from_conn_string(url))
    True
    """
    if store is not None:
        return bool(getattr(store, "blocking", False))
    db = getattr(saver, "database", None)
    return db is not None and db.kind != "sqlite"


def existing_store_for(saver: Any) -> ApprovalStore | None:
    """``store_for(saver)`` if it may hold requests (``keeps_rows``); None
    otherwise, and nothing is created."""
    if saver is None:
        return None
    if isinstance(saver, ApprovalStore) or keeps_rows(saver, table=_REQUESTS, opened=_stores):
        return store_for(saver)
    return None


def _forget_thread(saver: Any, thread_id: str) -> None:
    store_for(saver).forget_thread(thread_id)


# A deleted thread's requests go, whichever process deletes it.
_REQUESTS: Final = "trellis_approval_requests"
register_sidecar_kind(_forget_thread, table=_REQUESTS, opened=_stores)

# Stores of the caller's own (ApprovalPolicy(store=...)) that hold requests of a
# saver's threads: the saver cannot name them, so this process remembers them.
_attached: weakref.WeakKeyDictionary[Any, list[ApprovalStore]] = weakref.WeakKeyDictionary()


def attach_store(saver: Any, store: ApprovalStore) -> None:
    """Have ``store`` forget the threads ``saver`` deletes (``delete_thread`` or a
    ``prune`` of whole threads), as the saver's own store does: a gate calls this
    when its policy keeps requests in a store of the caller's. In this process only;
    another process deleting threads from the saver does not know the store.

    >>> attach_store(saver, PostgresApprovalStore(url))
    """
    try:
        known = _attached.get(saver, ())
    except TypeError:  # not weak-referenceable: nothing to remember it by
        return
    if any(s is store for s in known):  # every later gate pass: no lock taken
        return
    with _lock:
        stores = _attached.setdefault(saver, [])
        if not any(s is store for s in stores):
            stores.append(store)


def _forget_in_attached(saver: Any, thread_id: str) -> None:
    with _lock:
        stores = list(_attached.get(saver, ()))
    for store in stores:
        store.forget_thread(thread_id)


register_sidecar_kind(_forget_in_attached, table="", opened=_attached)


def _build(saver: Any) -> ApprovalStore:
    if isinstance(saver, ApprovalStore):
        return saver
    serde = _SaverSerde(saver) if getattr(saver, "serde", None) is not None else None
    return _open(getattr(saver, "database", None), serde)


def _open(db: Database | None, serde: Any = None) -> ApprovalStore:
    if db is None:  # in-process savers keep their requests in memory
        from trellis.hitl.store_memory import MemoryApprovalStore

        return MemoryApprovalStore(serde=serde)
    if db.kind == "sqlite":
        from trellis.hitl.store_sqlite import SqliteApprovalStore

        return SqliteApprovalStore(db.target, serde=serde)
    from trellis.hitl.store_postgres import PostgresApprovalStore

    return PostgresApprovalStore(
        db.target, serde=serde, schema=db.schema, connect_kwargs=db.connect_kwargs
    )


class _SaverSerde:
    """The saver's serializer as it is *now*: ``compile()`` widens its allowlist
    with the graph's schemas after this store may already exist."""

    def __init__(self, saver: Any) -> None:
        self._saver = weakref.ref(saver)

    def _serde(self) -> Any:
        saver = self._saver()
        if saver is None:
            raise ApprovalError("the checkpointer of this approval store is gone")
        return saver.serde

    def dumps(self, value: Any, *, key: str | None = None) -> tuple[str, bytes]:
        codec, data = self._serde().dumps(value, key=key)
        return codec, data

    def loads(self, codec: str, data: bytes, *, key: str | None = None) -> Any:
        return self._serde().loads(codec, data, key=key)


def open_store(url: str, *, schema: str = "public") -> ApprovalStore:
    """A store for a database named by ``url``: a PostgreSQL URL or a SQLite path.

    >>> open_store("postgresql://app@db/prod")
    >>> open_store("runs.db")
    """
    return _open(Database.from_url(url, schema=schema))


def names(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """A filter argument as a tuple: one name, several, or None for all."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def refusal_for(rid: str, status: str, deadline: float, timeout: bool) -> ApprovalError:
    """The error for a decision on a request that is not (or no longer) decidable."""
    if status != PENDING:
        return AlreadyDecidedError(rid, status)
    if timeout:
        return ApprovalError(f"approval request {rid!r} is not due yet (deadline {deadline})")
    return AlreadyDecidedError(rid, "expired")
