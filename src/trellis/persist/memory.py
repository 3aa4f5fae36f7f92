"""An in-process checkpointer with the same storage model as the SQL savers.

Values are serialized at ``put`` (so node code cannot mutate stored history, and
a value with no codec fails here exactly as it would on disk) and appended
channels are stored as deltas, so memory grows O(n) in an append loop.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trellis.errors import CheckpointNotFoundError, ConcurrentUpdateError
from trellis.persist.base import (
    Checkpoint,
    CheckpointTuple,
    PendingWrite,
    Put,
    SaverBase,
    ThreadInfo,
    thread_deleted,
)
from trellis.persist.config_calls import ConfigCalls, accepts_config, lists_by_config
from trellis.persist.messages import (
    duplicate_checkpoint,
    head_moved,
    no_checkpoint,
    parent_pruned,
)
from trellis.persist.serde import Serializer
from trellis.persist.storage import (
    INTERRUPT,
    BlobRow,
    ChainState,
    CheckpointRow,
    Inline,
    Serde,
    WriteRow,
    appended_bases,
    build_tuple,
    check_prune_args,
    compensation_reads,
    decode_writes,
    encode_filter,
    encode_put,
    encode_writes,
    metadata_matcher,
    needed_blobs,
    prune_plan,
    retention,
)

__all__ = ["InMemorySaver", "MemorySaver"]


@dataclass(slots=True)
class _Namespace:
    """One (thread_id, checkpoint_ns): the same records a SQL saver keeps in tables."""

    head: str
    updated_at: float
    checkpoints: dict[str, CheckpointRow] = field(default_factory=dict)
    versions: dict[str, Mapping[str, str]] = field(default_factory=dict)
    blobs: dict[tuple[str, str], BlobRow] = field(default_factory=dict)
    writes: dict[str, dict[tuple[str, int], WriteRow]] = field(default_factory=dict)
    chains: dict[tuple[str, str], ChainState] = field(default_factory=dict)
    """The chain state at each list blob: what a delta on top of it links to."""
    inline: dict[str, Inline] = field(default_factory=dict)
    """Each record's inline values (also in its state): what a child copies."""


class MemorySaver(SaverBase, ConfigCalls):
    """Checkpoints in a dict, for tests and short-lived processes. Thread-safe.

    ``ttl`` (seconds) and ``keep_last`` are the defaults of :meth:`prune`;
    ``clock`` is what "now" means for it.

    >>> saver = MemorySaver()
    >>> graph = builder.compile(checkpointer=saver)
    """

    database: None = None
    """Nothing is kept outside the process (``Database``'s contract for such a saver)."""

    def __init__(
        self,
        *,
        serde: Serde | None = None,
        ttl: float | None = None,
        keep_last: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_prune_args(ttl, keep_last)
        self.serde: Any = serde if serde is not None else Serializer()
        self.ttl, self.keep_last, self._clock = ttl, keep_last, clock
        self._lock = threading.Lock()
        self._data: dict[tuple[str, str], _Namespace] = {}

    def setup(self) -> None:
        """Nothing to create; present for the Checkpointer protocol."""

    def close(self) -> None:
        """Nothing to release; present so every saver can be closed alike."""

    @accepts_config
    def get_tuple(
        self, thread_id: str, checkpoint_id: str | None = None, *, checkpoint_ns: str = ""
    ) -> CheckpointTuple | None:
        with self._lock:
            ns = self._data.get((thread_id, checkpoint_ns))
            if ns is None:
                return None
            cid = ns.head if checkpoint_id is None else checkpoint_id
            row = ns.checkpoints.get(cid)
            if row is None:
                missing = no_checkpoint(thread_id, checkpoint_ns, checkpoint_id)
                raise CheckpointNotFoundError(missing)
            blobs, writes = self._rows_of(ns, cid)
        return self._build(thread_id, checkpoint_ns, row, blobs, writes)

    def _build(
        self,
        thread_id: str,
        checkpoint_ns: str,
        row: CheckpointRow,
        blobs: list[BlobRow],
        writes: list[WriteRow],
    ) -> CheckpointTuple:
        pending = decode_writes(
            self.serde,
            ((w.task_id, w.idx, w.task_name, w.channel, w.codec, w.data) for w in writes),
            thread_id=thread_id,
        )
        return build_tuple(self.serde, thread_id, checkpoint_ns, row, blobs, pending)

    @classmethod
    def _rows_of(cls, ns: _Namespace, cid: str) -> tuple[list[BlobRow], list[WriteRow]]:
        """The blob rows and pending writes a read of checkpoint ``cid`` needs."""
        writes = sorted(ns.writes.get(cid, {}).values(), key=lambda w: (w.task_id, w.idx))
        return cls._chain_rows(ns, ns.versions[cid]), writes

    @staticmethod
    def _chain_rows(ns: _Namespace, versions: Mapping[str, str]) -> list[BlobRow]:
        out = []
        for k, v in versions.items():
            row = ns.blobs.get((k, v))
            while row is not None:
                out.append(row)
                row = ns.blobs.get((k, row.base_version)) if row.base_version else None
        return out

    def put_many(
        self,
        thread_id: str,
        puts: Sequence[Put],
        *,
        expected_head: str | None,
        checkpoint_ns: str = "",
    ) -> None:
        if not puts:
            return
        key = (thread_id, checkpoint_ns)
        with self._lock:
            ns = self._data.get(key)
            head = ns.head if ns is not None else None
            if head != expected_head:
                if head == puts[-1].checkpoint.id:
                    return  # a retry of a put that committed: already done
                raise ConcurrentUpdateError(head_moved(thread_id, checkpoint_ns, expected_head))
            continued = puts[0].checkpoint.parent_id
            if continued not in (None, head) and (ns is None or continued not in ns.checkpoints):
                # An edit or fork of an older checkpoint that a prune removed since it
                # was read: its values are gone with it (the head is never pruned).
                raise ConcurrentUpdateError(parent_pruned(thread_id, checkpoint_ns, continued))
            # Everything is encoded before anything is stored: an unserializable
            # value in any checkpoint leaves no trace of the others.
            encoded = []
            parent_id = continued or ""
            parent = ns.versions.get(parent_id) if ns else None
            held = ns.inline.get(parent_id) if ns else None
            chains: dict[str, ChainState] = {}
            for i, put in enumerate(puts):
                ck = put.checkpoint
                if (ns is not None and ck.id in ns.checkpoints) or (
                    i and any(p.checkpoint.id == ck.id for p in puts[:i])
                ):
                    raise ConcurrentUpdateError(
                        duplicate_checkpoint(thread_id, checkpoint_ns, [ck.id])
                    )
                bases = self._bases(ns, ck, parent, chains)
                enc = encode_put(
                    self.serde, ck, put.metadata, bases=bases, writes=put.writes, inline=held
                )
                encoded.append(enc)
                parent, held = ck.versions, enc.inline
                chains.update(enc.chains)
            if ns is None:
                first = puts[0].checkpoint
                ns = self._data[key] = _Namespace(first.id, first.created_at)
            for put, enc in zip(puts, encoded, strict=True):
                ck = put.checkpoint
                ns.head, ns.updated_at = ck.id, ck.created_at
                ns.checkpoints[ck.id] = enc.row
                ns.versions[ck.id] = dict(ck.versions)
                ns.inline[ck.id] = enc.inline
                for b in enc.blobs:
                    ns.blobs[(b.channel, b.version)] = b
                for k, chain in enc.chains.items():
                    ns.chains[(k, chain.version)] = chain
                if enc.writes:
                    self._store_writes(ns, ck.id, enc.writes)

    @staticmethod
    def _bases(
        ns: _Namespace | None,
        checkpoint: Checkpoint,
        parent: Mapping[str, str] | None,
        pending: Mapping[str, ChainState],
    ) -> dict[str, ChainState]:
        """Chain states at ``parent`` (its versions) of what ``checkpoint`` appended
        to; ``pending`` holds those of a parent put in the same call, not yet stored."""
        if not checkpoint.appends or parent is None:
            return {}
        out = {}
        for k, v in appended_bases(checkpoint, parent).items():
            known = pending.get(k)
            if known is not None and known.version == v:
                out[k] = known
                continue
            chain = ns.chains.get((k, v)) if ns is not None else None
            if chain is not None:
                out[k] = chain
        return out

    @staticmethod
    def _store_writes(ns: _Namespace, checkpoint_id: str, rows: list[WriteRow]) -> None:
        slot = ns.writes.setdefault(checkpoint_id, {})
        for w in rows:
            if w.idx < 0 or (w.task_id, w.idx) not in slot:
                slot[(w.task_id, w.idx)] = w

    def put_writes(
        self,
        thread_id: str,
        checkpoint_id: str,
        writes: Sequence[PendingWrite],
        *,
        checkpoint_ns: str = "",
    ) -> None:
        rows = encode_writes(self.serde, writes)
        with self._lock:
            ns = self._data.get((thread_id, checkpoint_ns))
            if ns is None or checkpoint_id not in ns.checkpoints:
                missing = no_checkpoint(thread_id, checkpoint_ns, checkpoint_id)
                raise CheckpointNotFoundError(missing)
            self._store_writes(ns, checkpoint_id, rows)

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
        pairs = encode_filter(filter)  # invalid filters fail now, not on first next()
        return self._iter(thread_id, checkpoint_ns, before, limit, pairs)

    def _iter(
        self,
        thread_id: str,
        checkpoint_ns: str,
        before: str | None,
        limit: int | None,
        pairs: builtins.list[tuple[str, str]] | None,
    ) -> Iterator[CheckpointTuple]:
        if pairs is None:  # a filter no metadata can match
            return
        matches = metadata_matcher(pairs) if pairs else None
        with self._lock:
            ns = self._data.get((thread_id, checkpoint_ns))
            if ns is None:
                return
            ids = sorted(ns.checkpoints, reverse=True)
        found = 0
        for cid in ids:
            if before is not None and cid >= before:
                continue
            if limit is not None and found >= limit:
                break
            with self._lock:
                row = ns.checkpoints.get(cid)
                if row is None:
                    continue  # pruned while we iterated
                if matches is not None and not matches(row.metadata):
                    continue
                blobs, writes = self._rows_of(ns, cid)
            found += 1
            yield self._build(thread_id, checkpoint_ns, row, blobs, writes)

    def delete_thread(self, thread_id: str) -> None:
        """Forget every namespace of ``thread_id``."""
        with self._lock:
            for key in [k for k in self._data if k[0] == thread_id]:
                del self._data[key]
        thread_deleted(self, thread_id)

    def threads(self, *, limit: int | None = None) -> builtins.list[ThreadInfo]:
        """Root-namespace threads, most recently updated first."""
        with self._lock:
            infos = [
                ThreadInfo(tid, ns.head, ns.updated_at, len(ns.checkpoints))
                for (tid, name), ns in self._data.items()
                if name == ""
            ]
        infos.sort(key=lambda t: (-t.updated_at, t.thread_id))
        return infos if limit is None else infos[:limit]

    def prune(
        self, *, ttl: float | None = None, keep_last: int | None = None, now: float | None = None
    ) -> int:
        """Apply retention; returns how many checkpoints were removed.

        ``keep_last`` keeps each thread's N newest checkpoints; ``ttl`` removes
        checkpoints created more than ``ttl`` seconds before ``now``, and whole
        threads whose heads are that old, unless a head waits on an interrupt
        (with their approval requests and run history, as ``delete_thread``).
        Heads, their parents (which ``update_state`` reads) and every blob a
        kept checkpoint needs always stay.
        """
        policy = retention(
            ttl, keep_last, now, defaults=(self.ttl, self.keep_last), clock=self._clock
        )
        if policy is None:
            return 0
        cutoff, keep_last = policy.cutoff, policy.keep_last
        removed = 0
        gone = []
        with self._lock:
            by_thread: dict[str, list[tuple[str, str]]] = {}
            for key in self._data:
                by_thread.setdefault(key[0], []).append(key)
            for thread_id, keys in by_thread.items():
                spaces = [self._data[k] for k in keys]
                if all(self._expired(ns, cutoff) for ns in spaces):
                    removed += sum(len(ns.checkpoints) for ns in spaces)
                    for k in keys:
                        del self._data[k]
                    gone.append(thread_id)
                    continue
                for ns in spaces:
                    removed += self._prune_namespace(ns, thread_id, cutoff, keep_last)
        thread_deleted(self, *gone)
        return removed

    @staticmethod
    def _expired(ns: _Namespace, cutoff: float) -> bool:
        head = ns.checkpoints[ns.head]
        waiting = any(w.channel == INTERRUPT for w in ns.writes.get(ns.head, {}).values())
        return head.created_at < cutoff and not waiting

    def _prune_namespace(
        self, ns: _Namespace, thread_id: str, cutoff: float, keep_last: int | None
    ) -> int:
        pairs = [(cid, row.created_at) for cid, row in ns.checkpoints.items()]
        head = ns.checkpoints[ns.head]
        needed = compensation_reads(
            self.serde, head.codec, head.state, thread_id=thread_id, head_id=ns.head
        )
        if needed is None:
            return 0  # cannot tell what its compensations need: keep it all
        doomed = prune_plan(
            pairs, ns.head, head.parent_id, cutoff=cutoff, keep_last=keep_last, needed=needed
        )
        if not doomed:
            return 0
        for cid in doomed:
            del ns.checkpoints[cid]
            del ns.versions[cid]
            del ns.inline[cid]
            ns.writes.pop(cid, None)
        bases = {key: row.base_version for key, row in ns.blobs.items()}
        keep = needed_blobs(ns.versions.values(), bases)
        ns.blobs = {key: row for key, row in ns.blobs.items() if key in keep}
        ns.chains = {key: chain for key, chain in ns.chains.items() if key in keep}
        return len(doomed)


InMemorySaver = MemorySaver
"""LangGraph's name for :class:`MemorySaver`."""
