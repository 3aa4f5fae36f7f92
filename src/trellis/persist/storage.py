"""The storage model every saver shares: how a checkpoint becomes records, and back.

A checkpoint is stored as one *checkpoint record* (metadata as JSON, plus one
serialized ``state`` blob holding the versions map and the engine's ``pending``
bookkeeping) and one *blob* per channel it wrote, small values aside (below). A
blob is keyed by ``(channel, version)`` where ``version`` is the id of the
checkpoint that wrote it, so blobs are immutable and unique across forks.

A channel value that is not a list and encodes to at most :data:`INLINE_MAX`
bytes is not a blob: it lives in the checkpoint record itself, copied into
every later checkpoint that still holds that version. A blob row's keys alone
outweigh such a value, and a put or read of it then costs no statement. (Only
with a serializer that encodes bytes, ``holds_bytes``: :class:`Serializer` does.)

A channel that only grew by appending (``Checkpoint.appends``) is stored as a
``delta`` blob linked to an earlier blob of its chain (``base_version``) and
holding the items appended since that one; the chain starts from a ``full``
snapshot (``anchor_version``). Compaction is periodic but never rewrites the
whole value (which made storage grow with the square of the history): every
:data:`SKIP_SPAN`-th delta compacts the span before it, holding its items and
linking ``SKIP_SPAN`` positions back, and every ``SKIP_SPAN**2``-th compacts
``SKIP_SPAN**2`` (a skip list). Every item is therefore stored at most
``1 +`` :data:`SKIP_LEVELS` times however long the loop runs, and a read of any
version follows at most ``(SKIP_SPAN - 1) * SKIP_LEVELS`` links plus one per
``SKIP_SPAN**SKIP_LEVELS`` positions (39 links, 40 rows, at step 1000).

>>> ck = Checkpoint("c1", None, 0, 0.0, {"log": ["hi"], "n": 1}, {"log": "c1", "n": "c1"})
>>> put = encode_put(Serializer(), ck, {"source": "loop"}, bases={})
>>> [(b.channel, b.kind) for b in put.blobs], list(put.inline)
([('log', 'full')], ['n'])
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Protocol

from trellis.errors import (
    CheckpointCorruptError,
    InvalidUpdateError,
    SerializationError,
)
from trellis.persist.base import Checkpoint, CheckpointTuple, PendingWrite, validate_filter

__all__ = [
    "FULL",
    "DELTA",
    "DecodedState",
    "INLINE_MAX",
    "INTERRUPT",
    "SKIP_LEVELS",
    "SKIP_SPAN",
    "BlobRow",
    "ChainState",
    "CheckpointRow",
    "Retention",
    "EncodedPut",
    "Inline",
    "Serde",
    "WriteRow",
    "build_tuple",
    "canonical_json",
    "chain_path",
    "chain_state",
    "compensation_reads",
    "decode_state",
    "encode_filter",
    "encode_metadata",
    "encode_put",
    "encode_writes",
    "exact_json",
    "has_number",
    "json_equal",
    "json_text_equal",
    "metadata_matcher",
    "needed_blobs",
    "reconstruct",
    "retention",
]

FULL: Final = "full"
DELTA: Final = "delta"
SKIP_SPAN: Final = 32
"""Positions a first-level skip link spans (the second level spans its square)."""
SKIP_LEVELS: Final = 2
"""Levels of skip links: each stores every item once more, so storage stays within
``1 + SKIP_LEVELS`` times the appended bytes."""
INLINE_MAX: Final = 64
"""Encoded size up to which a value that is not a list is kept in the checkpoint record."""
INTERRUPT: Final = "__interrupt__"
"""Pending-write channel of a run waiting for a human: such threads are never pruned."""
_STATE_FORMAT: Final = 2
# Format 1 had no inline values: its readers are gone, its rows still load.
_STATE_FORMATS: Final = frozenset({1, 2})
# Entries of Checkpoint.pending that the engine fills with names and counts only.
_BUILTIN_PENDING: Final = frozenset(
    {"nodes", "barriers", "visits", "deferred", "compensable", "compensated"}
)
_SPANS: Final = tuple(SKIP_SPAN ** (level + 1) for level in range(SKIP_LEVELS))


class Serde(Protocol):
    """What a saver needs from :class:`trellis.persist.serde.Serializer`."""

    def dumps(self, value: object, *, key: str | None = None) -> tuple[str, bytes]: ...

    def loads(
        self, codec: str, data: bytes, *, key: str | None = None, thread_id: str | None = None
    ) -> Any: ...


Inline = dict[str, tuple[str, str, bytes]]
"""The values a checkpoint record holds: channel -> ``(version, codec, data)``."""

Mark = tuple[str, int, int]
"""A blob a skip link can point to: ``(version, items, size)`` of the value there."""


@dataclass(slots=True)  # not frozen: built on every put, and frozen init costs 4x
class ChainState:
    """Where a stored channel value stands: what the next delta links to.

    ``position`` counts deltas since the ``anchor`` (0: the anchor itself);
    ``items`` is the value's length there and ``size`` its estimated encoded
    bytes; ``marks[j]`` is the latest blob of the chain (up to this one) at a
    position that is a multiple of ``SKIP_SPAN ** (j + 1)``.
    """

    version: str
    anchor: str
    position: int
    items: int
    size: int
    marks: tuple[Mark, ...]

    @classmethod
    def start(cls, version: str, items: int, size: int) -> ChainState:
        """The state of a full snapshot: a chain of its own."""
        return cls(version, version, 0, items, size, ((version, items, size),) * SKIP_LEVELS)

    def link(self) -> tuple[int, Mark]:
        """The skip level of the next position, and the blob its delta links to."""
        nxt = self.position + 1
        level = 0
        while level < SKIP_LEVELS and nxt % _SPANS[level] == 0:
            level += 1
        if level == 0:
            return 0, (self.version, self.items, self.size)
        return level, self.marks[level - 1]

    def advance(self, version: str, level: int, items: int, size: int) -> ChainState:
        """The state after a delta at the next position, with skip level ``level``."""
        mark = (version, items, size)
        marks = (mark,) * level + self.marks[level:] if level else self.marks
        return ChainState(version, self.anchor, self.position + 1, items, size, marks)


def chain_path(rows: Mapping[str, BlobRow], version: str) -> list[BlobRow]:
    """The rows of ``rows`` (by version) that the links from ``version`` lead
    through, newest first: down to a full snapshot, or as far as they go (a link
    to a missing row, or back into the path, ends it)."""
    path: list[BlobRow] = []
    seen: set[str] = set()
    row = rows.get(version)
    while row is not None and row.version not in seen:
        path.append(row)
        if row.kind != DELTA or row.base_version is None:
            break
        seen.add(row.version)
        row = rows.get(row.base_version)
    return path


def chain_state(path: Sequence[BlobRow]) -> ChainState | None:
    """The chain state at ``path[0]``, from the rows its links lead through (newest
    first, ending at the full anchor); None when it cannot be known (a chain written
    before item counts were stored, or a broken one): the next put writes a snapshot.
    """
    if not path or path[-1].kind != FULL or any(r.items is None for r in path):
        return None
    head = path[0]
    marks = []
    for span in _SPANS:
        row = next(r for r in path if r.deltas % span == 0)  # the anchor is at 0
        marks.append((row.version, row.items or 0, row.value_bytes))
    anchor = path[-1].version
    return ChainState(
        head.version, anchor, head.deltas, head.items or 0, head.value_bytes, tuple(marks)
    )


@dataclass(slots=True)  # not frozen: a chain read builds hundreds, and frozen init is 6x slower
class BlobRow:
    """One stored channel value: a ``full`` snapshot or a ``delta`` of appended items.

    ``anchor_version`` is None for a full blob (it is its own anchor);
    ``deltas`` is the chain position (deltas since the anchor); ``delta_bytes`` is
    the size of this row's items and ``value_bytes`` estimates the whole value's;
    ``items`` is the value's length (None in rows written before it was stored).
    """

    channel: str
    version: str
    kind: str
    base_version: str | None
    anchor_version: str | None
    deltas: int
    delta_bytes: int
    value_bytes: int
    codec: str
    data: bytes
    items: int | None = None


@dataclass(frozen=True, slots=True)
class WriteRow:
    """A pending write, serialized."""

    task_id: str
    idx: int
    task_name: str
    channel: str
    codec: str
    data: bytes


@dataclass(slots=True)  # not frozen: built on every put, and frozen init costs 4x
class CheckpointRow:
    """The checkpoint record: everything but channel values and pending writes."""

    id: str
    parent_id: str | None
    step: int
    created_at: float
    metadata: str
    codec: str
    state: bytes
    fingerprint: str


@dataclass(slots=True)  # not frozen: built on every put, and frozen init costs 4x
class EncodedPut:
    """Everything one ``put`` stores, ready for any backend."""

    row: CheckpointRow
    blobs: list[BlobRow]
    writes: list[WriteRow]
    chains: dict[str, ChainState] = field(default_factory=dict)
    """Chain state of every list channel this checkpoint wrote (for the next put)."""
    inline: Inline = field(default_factory=dict)
    """The values the record holds (for the next put, which copies what it keeps)."""


# One encoder, built once: json.dumps with these options would build a new one per call.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal JSON values give equal text."""
    return _CANONICAL.encode(value)


def encode_metadata(metadata: Mapping[str, Any]) -> str:
    """Metadata as JSON text; a value JSON cannot hold raises SerializationError naming its key.

    NUL characters and lone surrogates are refused too: PostgreSQL's ``jsonb`` and
    UTF-8 text cannot store them, and every backend must accept the same metadata.

    >>> encode_metadata({"step": 1, "source": "loop"})
    '{"source":"loop","step":1}'
    """
    if metadata.keys() == _STEP_KEYS:
        text = _step_metadata(metadata)
        if text is not None:
            return text
    if all(type(key) is str for key in metadata):
        # The common case, in one pass; the key-by-key checks below only run to
        # name the culprit when something is wrong.
        try:
            text = canonical_json(dict(metadata))
            text.encode("utf-8")
        except (TypeError, ValueError, UnicodeError):
            pass
        else:
            if "\\u0000" not in text:
                return text
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise SerializationError(
                f"metadata key {key!r} is not a string", key=str(key), type_name=type(key).__name__
            )
        _check_json(value, key)
    return canonical_json(dict(metadata))


_STEP_KEYS: Final = frozenset({"parents", "run_id", "source", "step"})


def _step_metadata(metadata: Mapping[str, Any]) -> str | None:
    """The canonical JSON of the metadata the engine writes at every step when the
    caller adds none, spelled out directly: a checkpoint per step makes the general
    encoder a visible share of a put. None when a value is not of the usual shape."""
    run_id, source, step = metadata["run_id"], metadata["source"], metadata["step"]
    if (
        type(step) is int
        and type(run_id) is str
        and type(source) is str
        and run_id.isascii()
        and run_id.isalnum()
        and source.isascii()
        and source.isalnum()
        and metadata["parents"] == {}
        and type(metadata["parents"]) is dict
    ):
        return f'{{"parents":{{}},"run_id":"{run_id}","source":"{source}","step":{step}}}'
    return None


def _check_json(value: Any, key: str) -> None:
    try:
        text = canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"metadata key {key!r} is not JSON-serializable: {exc}",
            key=key,
            type_name=type(value).__name__,
        ) from None
    try:
        text.encode("utf-8")
    except UnicodeError:
        raise _Unstorable(
            f"metadata key {key!r} contains a lone surrogate, which UTF-8 cannot hold",
            key=key,
            type_name="str",
        ) from None
    if "\\u0000" in text and _has_nul(value):
        raise _Unstorable(
            f"metadata key {key!r} contains a NUL character", key=key, type_name="str"
        )


class _Unstorable(SerializationError):
    """Valid JSON that some backend cannot store (NUL, lone surrogates)."""


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


def encode_filter(filter: Mapping[str, Any] | None) -> list[tuple[str, str]] | None:
    """Validated ``(key, canonical JSON value)`` pairs of a metadata filter.

    Keys must match the identifier pattern (``validate_filter``); values are
    compared as JSON values (:func:`json_equal`) and always travel as bound
    parameters. None means the filter can match nothing (a value no metadata can
    hold, such as a NUL).
    """
    pairs = []
    for key, value in validate_filter(filter).items():
        try:
            _check_json(value, key)
        except SerializationError as exc:
            if isinstance(exc, _Unstorable):
                return None
            raise InvalidUpdateError(f"metadata filter value: {exc}") from None
        pairs.append((key, canonical_json(value)))
    return pairs


def exact_json(text: str) -> Any:
    """JSON text decoded for :func:`json_equal`: fractions and exponents become
    ``Decimal`` s, which (like ints) hold exactly the number the text spells."""
    return json.loads(text, parse_float=Decimal)


def json_equal(a: Any, b: Any) -> bool:
    """Whether two values decoded by :func:`exact_json` are equal, the rule metadata
    filters follow on every backend.

    It is PostgreSQL's ``jsonb`` equality: numbers are equal when the decimal
    numbers their JSON spells are, so ``1`` matches ``1.0`` (and ``-0.0`` matches
    ``0``) as Python's ``==`` has it; ``true`` and ``false`` are not numbers, so
    ``True`` does not match ``1``, unlike Python's ``==``; strings, ``null``,
    lists (in order) and objects (by key) compare as their parts do. The spelled
    decimal is the float's shortest repr, so for integers of 17 or more digits
    it can disagree with ``==``: ``10**23`` matches ``1e23``, a float just below it.

    >>> json_equal(exact_json('[1, {"k": 2.50}]'), exact_json('[1.0, {"k": 2.5}]'))
    True
    >>> json_equal(exact_json("true"), exact_json("1"))
    False
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, _NUMBERS) and isinstance(b, _NUMBERS):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(json_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(v, b[k]) for k, v in a.items())
    return type(a) is type(b) and a == b


_NUMBERS: Final = (int, Decimal)


def json_text_equal(a: str | None, b: str | None) -> bool:
    """:func:`json_equal` of two JSON texts; False when either is missing (SQL NULL)."""
    return a is not None and b is not None and json_equal(exact_json(a), exact_json(b))


def has_number(value: Any) -> bool:
    """Whether a decoded JSON value holds a number (not a boolean) anywhere: only
    then can two different JSON texts of it be equal values."""
    if isinstance(value, bool):
        return False
    if isinstance(value, _NUMBERS):
        return True
    if isinstance(value, list):
        return any(map(has_number, value))
    if isinstance(value, dict):
        return any(map(has_number, value.values()))
    return False


def metadata_matcher(pairs: Sequence[tuple[str, str]]) -> Callable[[str], bool]:
    """A test of metadata JSON text: has it every filter key, with an equal value?"""
    wanted = [(k, exact_json(v)) for k, v in pairs]

    def matches(metadata: str) -> bool:
        decoded = exact_json(metadata)
        return all(k in decoded and json_equal(decoded[k], v) for k, v in wanted)

    return matches


def encode_writes(serde: Serde, writes: Iterable[PendingWrite]) -> list[WriteRow]:
    """Serialize pending writes (fails on the first unserializable value, naming its channel)."""
    rows = []
    for w in writes:
        codec, data = serde.dumps(w.value, key=w.channel)
        rows.append(WriteRow(w.task_id, w.idx, w.task_name, w.channel, codec, data))
    return rows


def appended_bases(checkpoint: Checkpoint, parent_versions: Mapping[str, str]) -> dict[str, str]:
    """For each channel this checkpoint appended to: its version at the parent."""
    me = checkpoint.id
    return {
        k: parent_versions[k]
        for k in checkpoint.appends
        if checkpoint.versions.get(k) == me and k in parent_versions and k in checkpoint.values
    }


def encode_put(
    serde: Serde,
    checkpoint: Checkpoint,
    metadata: Mapping[str, Any],
    *,
    bases: Mapping[str, ChainState],
    writes: Sequence[PendingWrite] = (),
    inline: Mapping[str, tuple[str, str, bytes]] | None = None,
) -> EncodedPut:
    """Turn a checkpoint into records. ``bases`` holds, for appended channels, the
    chain state of their version at the parent; other changed channels get a full
    blob, or go inline when small. ``inline`` is the parent's record's values
    (``EncodedPut.inline`` or ``DecodedState.inline``): those the checkpoint
    still holds are copied, since no blob row of them exists.
    """
    values, versions, me = checkpoint.values, checkpoint.versions, checkpoint.id
    if not values.keys() <= versions.keys():
        k = next(k for k in values if k not in versions)
        raise InvalidUpdateError(f"checkpoint {me!r}: channel {k!r} has a value but no version")
    meta = encode_metadata(metadata)
    kept: Inline = {}
    if inline:
        for k, held in inline.items():
            if versions.get(k) == held[0] and k in values:
                kept[k] = held
    blobs = []
    chains = {}
    # A serializer that may not encode bytes (one of the caller's own, say JSON)
    # gets no inline values: the state it encodes must hold builtins only.
    most = INLINE_MAX if getattr(serde, "holds_bytes", False) else -1
    for k, version in versions.items():
        if version == me and k in values:
            blob, chain = _encode_channel(serde, checkpoint, k, bases.get(k), most)
            if isinstance(blob, tuple):
                kept[k] = blob
                continue
            blobs.append(blob)
            if chain is not None:
                chains[k] = chain
    if checkpoint.pending.keys() <= _BUILTIN_PENDING:
        dumps = getattr(serde, "dumps_builtin", serde.dumps)
    else:  # the input or Sends wait in it: user values, to be checked in full
        dumps = serde.dumps
    try:
        codec, state = dumps(_encode_state(checkpoint, kept), key="pending")
    except SerializationError as exc:
        raise _input_error(serde, checkpoint) or exc from None
    ck = checkpoint
    row = CheckpointRow(
        me, ck.parent_id, ck.step, float(ck.created_at), meta, codec, state, ck.fingerprint
    )
    return EncodedPut(row, blobs, encode_writes(serde, writes) if writes else [], chains, kept)


def _input_error(serde: Serde, checkpoint: Checkpoint) -> SerializationError | None:
    """The error for the run's input value that cannot be stored, by its state key
    (``pending`` would mean nothing to the caller); None if the input is fine."""
    start = checkpoint.pending.get("start")
    if isinstance(start, Mapping):
        for key, value in start.items():
            try:
                serde.dumps(value, key=str(key))
            except SerializationError as exc:
                return exc
    return None


def _encode_channel(
    serde: Serde, checkpoint: Checkpoint, k: str, base: ChainState | None, most: int
) -> tuple[BlobRow | tuple[str, str, bytes], ChainState | None]:
    """A delta of the items appended to channel ``k`` since the blob its skip link
    points to, if its chain is known; else a full snapshot, or the value to keep
    inline when it encodes to ``most`` bytes or fewer. Also the chain state after
    it (None for a value that is not a list)."""
    me, value = checkpoint.id, checkpoint.values[k]
    if base is not None and k in checkpoint.appends:
        appended = checkpoint.appends[k]
        items = base.items + len(appended)
        if isinstance(value, (list, tuple)) and len(value) == items:
            level, (link, link_items, link_size) = base.link()
            codec, data = serde.dumps(list(value[link_items:]), key=k)  # since the link
            size = link_size + len(data)
            row = BlobRow(
                k, me, DELTA, link, base.anchor, base.position + 1, len(data), size,
                codec, data, items,
            )  # fmt: skip
            return row, base.advance(me, level, items, size)
    codec, data = serde.dumps(value, key=k)
    if isinstance(value, (list, tuple)):
        row = BlobRow(k, me, FULL, None, None, 0, len(data), len(data), codec, data, len(value))
        return row, ChainState.start(me, len(value), len(data))
    if len(data) <= most:
        return (me, codec, data), None
    return BlobRow(k, me, FULL, None, None, 0, len(data), len(data), codec, data), None


def _encode_state(checkpoint: Checkpoint, inline: Inline) -> list[Any]:
    # Version ids repeat across channels (every channel written by one step shares
    # one), so they are interned: a 200-key state stores each id once, not 200x.
    # Codecs of inline values are interned the same way.
    ids: dict[str, int] = {}
    chans: dict[str, int] = {}
    for k, version in checkpoint.versions.items():
        i = ids.setdefault(version, len(ids))
        chans[k] = i if k in checkpoint.values else -i - 1
    codecs: dict[str, int] = {}
    held = {k: [codecs.setdefault(c, len(codecs)), data] for k, (_, c, data) in inline.items()}
    return [_STATE_FORMAT, list(ids), chans, dict(checkpoint.pending), list(codecs), held]


@dataclass(frozen=True, slots=True)
class DecodedState:
    """The state blob of a checkpoint record, decoded."""

    versions: dict[str, str]
    valued: dict[str, str]
    """The channels that carry a value (the rest are versioned but empty)."""
    pending: dict[str, Any]
    inline: Inline = field(default_factory=dict)
    """The values the record holds itself: no blob row of them need exist."""

    @property
    def stored(self) -> dict[str, str]:
        """The valued channels whose value is read from blob rows."""
        inline = self.inline
        return {k: v for k, v in self.valued.items() if k not in inline} if inline else self.valued


def decode_state(
    serde: Serde, codec: str, data: bytes, *, thread_id: str, checkpoint_id: str | None = None
) -> DecodedState:
    """Decode a checkpoint's state blob; a malformed one raises CheckpointCorruptError."""
    raw = serde.loads(codec, bytes(data), key="pending", thread_id=thread_id)
    try:
        fmt = raw[0]
        if fmt not in _STATE_FORMATS:
            raise ValueError(f"unknown state format {fmt!r}")
        if fmt == 1:
            _, ids, chans, pending = raw
            codecs, held = [], {}
        else:
            _, ids, chans, pending, codecs, held = raw
        if not isinstance(pending, dict):
            raise ValueError("pending is not a map")
        if not isinstance(ids, list) or not isinstance(chans, dict):
            raise ValueError("versions are not a list of ids and a map of channels")
        versions: dict[str, str] = {}
        valued: dict[str, str] = {}
        for k, i in chans.items():
            if not isinstance(k, str) or not isinstance(i, int):
                raise ValueError("bad versions entry")
            version = ids[i] if i >= 0 else ids[-i - 1]
            if not isinstance(version, str):
                raise ValueError("bad version id")
            versions[k] = version
            if i >= 0:
                valued[k] = version
        inline: Inline = {}
        for k, (c, blob) in held.items():
            value_codec = codecs[c]
            if k not in valued or not isinstance(value_codec, str) or not isinstance(blob, bytes):
                raise ValueError(f"bad inline value of channel {k!r}")
            inline[k] = (valued[k], value_codec, blob)
    except (ValueError, TypeError, LookupError, AttributeError) as exc:
        raise CheckpointCorruptError(
            f"thread {thread_id!r}: checkpoint {checkpoint_id!r} has a malformed state: {exc}",
            thread_id=thread_id,
            key="pending",
        ) from None
    return DecodedState(versions, valued, pending, inline)


def reconstruct(
    serde: Serde,
    channel: str,
    version: str,
    rows: Mapping[str, BlobRow],
    *,
    thread_id: str,
) -> Any:
    """Rebuild a channel's value at ``version`` from the rows of its chain.

    ``rows`` may hold rows of other forks sharing the anchor: only the
    ``base_version`` links back from ``version`` are followed.
    """
    path = chain_path(rows, version)
    row = path[-1] if path else None
    if row is None or row.kind != FULL:
        raise CheckpointCorruptError(
            f"thread {thread_id!r}: channel {channel!r} at version {version!r}: "
            f"{'the delta chain is broken' if path else 'the blob is missing'}",
            thread_id=thread_id,
            key=channel,
        )
    deltas = path[:-1]
    value = serde.loads(row.codec, row.data, key=channel, thread_id=thread_id)
    if not deltas:
        return value
    if not isinstance(value, (list, tuple)):
        raise CheckpointCorruptError(
            f"thread {thread_id!r}: channel {channel!r} at version {version!r}: its delta "
            f"chain starts from a {type(value).__name__} (version {row.version!r}), not a list",
            thread_id=thread_id,
            key=channel,
        )
    items: list[Any] = list(value)
    deltas.reverse()
    loads_many = getattr(serde, "loads_many", None)
    if loads_many is not None:
        parts = loads_many([(d.codec, d.data) for d in deltas], key=channel, thread_id=thread_id)
    else:
        parts = [serde.loads(d.codec, d.data, key=channel, thread_id=thread_id) for d in deltas]
    for delta, part in zip(deltas, parts, strict=True):
        if not isinstance(part, list):
            raise CheckpointCorruptError(
                f"thread {thread_id!r}: channel {channel!r} at version {version!r}: the delta "
                f"of version {delta.version!r} is a {type(part).__name__}, not a list",
                thread_id=thread_id,
                key=channel,
            )
        items.extend(part)
    return tuple(items) if isinstance(value, tuple) else items


def decode_writes(
    serde: Serde, rows: Iterable[Sequence[Any]], *, thread_id: str
) -> tuple[PendingWrite, ...]:
    """``(task_id, idx, task_name, channel, codec, data)`` rows as PendingWrites."""
    return tuple(
        PendingWrite(
            task_id,
            task_name,
            idx,
            channel,
            serde.loads(codec, bytes(data), key=channel, thread_id=thread_id),
        )
        for task_id, idx, task_name, channel, codec, data in rows
    )


def build_tuple(
    serde: Serde,
    thread_id: str,
    checkpoint_ns: str,
    row: CheckpointRow,
    blobs: Iterable[BlobRow],
    writes: tuple[PendingWrite, ...],
    state: DecodedState | None = None,
) -> CheckpointTuple:
    """Assemble a read checkpoint from its record (``state``: its state, when
    already decoded), its chain rows and its writes."""
    if state is None:
        state = decode_state(serde, row.codec, row.state, thread_id=thread_id, checkpoint_id=row.id)
    by_channel: dict[str, dict[str, BlobRow]] = {}
    for b in blobs:
        by_channel.setdefault(b.channel, {})[b.version] = b
    inline = state.inline
    values = {
        k: serde.loads(inline[k][1], inline[k][2], key=k, thread_id=thread_id)
        if k in inline
        else reconstruct(serde, k, v, by_channel.get(k, {}), thread_id=thread_id)
        for k, v in state.valued.items()
    }
    try:
        metadata = json.loads(row.metadata) if isinstance(row.metadata, str) else row.metadata
        if not isinstance(metadata, dict):
            raise ValueError(f"expected a JSON object, got {type(metadata).__name__}")
    except ValueError as exc:
        raise CheckpointCorruptError(
            f"thread {thread_id!r}, checkpoint {row.id!r}: malformed metadata: {exc}",
            thread_id=thread_id,
        ) from None
    checkpoint = Checkpoint(
        id=row.id,
        parent_id=row.parent_id,
        step=row.step,
        created_at=row.created_at,
        values=values,
        versions=state.versions,
        pending=state.pending,
        fingerprint=row.fingerprint,
    )
    return CheckpointTuple(thread_id, checkpoint_ns, checkpoint, dict(metadata), writes)


def needed_blobs(
    versions_maps: Iterable[Mapping[str, str]],
    bases: Mapping[tuple[str, str], str | None],
) -> set[tuple[str, str]]:
    """Every ``(channel, version)`` blob the given checkpoints need, delta chains included.

    ``bases`` maps each stored blob to its ``base_version`` (None for a full blob).
    """
    keep: set[tuple[str, str]] = set()
    for versions in versions_maps:
        for item in versions.items():
            while item not in keep and item in bases:
                keep.add(item)
                base = bases[item]
                if base is None:
                    break
                item = (item[0], base)
    return keep


def prune_plan(
    checkpoints: Iterable[tuple[str, float]],
    head_id: str,
    head_parent: str | None,
    *,
    cutoff: float,
    keep_last: int | None,
    needed: Collection[str] = (),
) -> list[str]:
    """Ids of one namespace's ``(id, created_at)`` checkpoints that prune removes.

    The head and its parent always stay, and so do the ``needed`` ones (those
    the head's compensations read their state from: :func:`compensation_reads`);
    ``keep_last`` keeps the N newest ids; checkpoints created before ``cutoff`` go.

    The parent stays because ``update_state`` without ``as_node`` reads it to tell
    which node wrote the head (and so whose edges route the update). It does so
    for every head a step wrote, whether its run waits in ``interrupt()``, stopped
    at a breakpoint, failed or finished, so every head keeps its parent: one
    checkpoint per namespace, whose blobs the head mostly shares.
    """
    ordered = sorted(checkpoints, reverse=True)
    doomed = []
    for rank, (cid, created_at) in enumerate(ordered):
        if cid in (head_id, head_parent) or cid in needed:
            continue
        if (keep_last is not None and rank >= keep_last) or created_at < cutoff:
            doomed.append(cid)
    return doomed


def compensation_reads(
    serde: Serde, codec: str, state: bytes, *, thread_id: str, head_id: str
) -> set[str] | None:
    """The checkpoints the compensations of the head ``head_id`` (its encoded
    ``state``) read their node's state from, its ``pending["compensable"]``
    entries ``[node, checkpoint_id, ...]``: a prune must keep them, or
    ``graph.compensate()`` could not run them. None when the head's state cannot
    be read: then nothing of its namespace may go."""
    try:
        pending = decode_state(
            serde, codec, state, thread_id=thread_id, checkpoint_id=head_id
        ).pending
    except CheckpointCorruptError:
        return None
    out = set()
    for entry in pending.get("compensable", ()):
        if isinstance(entry, (list, tuple)) and len(entry) > 1 and isinstance(entry[1], str):
            out.add(entry[1])
    return out


def check_prune_args(ttl: float | None, keep_last: int | None) -> None:
    """Reject retention settings that would delete a thread's head."""
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be at least 1, got {keep_last}")
    if ttl is not None and (math.isnan(ttl) or ttl < 0):
        raise ValueError(f"ttl must be a non-negative number of seconds, got {ttl}")


@dataclass(frozen=True, slots=True)
class Retention:
    """What ``prune`` removes: checkpoints created before ``cutoff`` (and whole
    threads whose heads are), and all but the ``keep_last`` newest per thread."""

    cutoff: float
    keep_last: int | None


def retention(
    ttl: float | None,
    keep_last: int | None,
    now: float | None,
    *,
    defaults: tuple[float | None, int | None],
    clock: Callable[[], float],
) -> Retention | None:
    """Resolve ``prune`` arguments against a saver's defaults; None: nothing to do."""
    ttl = defaults[0] if ttl is None else ttl
    keep_last = defaults[1] if keep_last is None else keep_last
    check_prune_args(ttl, keep_last)
    if ttl is None and keep_last is None:
        return None
    cutoff = -math.inf if ttl is None else (clock() if now is None else now) - ttl
    return Retention(cutoff, keep_last)
