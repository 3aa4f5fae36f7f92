"""Checkpoint serialization: typed msgpack, an allowlist of classes, no pickle by default.

Every blob travels with its codec name (``"msgpack"``, ``"msgpack+zlib"`` or, only
with :class:`PickleSerializer`, ``"pickle"``). Decoding never imports anything named
by the bytes, never falls back to another codec, and fails closed with
:class:`~trellis.errors.CheckpointCorruptError`.

>>> from dataclasses import dataclass
>>> @dataclass
... class Point:
...     x: int
...     y: int
>>> serde = Serializer(allowlist=[Point])
>>> codec, blob = serde.dumps({"where": Point(1, 2), "seen": {(1, 2)}}, key="state")
>>> serde.loads(codec, blob, key="state")
{'where': Point(x=1, y=2), 'seen': {(1, 2)}}
"""

from __future__ import annotations

import pickle
import struct
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Final

import ormsgpack

from trellis.errors import CheckpointCorruptError, SerializationError
from trellis.persist.serde_codec import MAX_DEPTH, OPTS, build_specs, corrupt_error, type_label
from trellis.persist.serde_decode import Decoder
from trellis.persist.serde_encode import Encoder, Unsupported, is_plain
from trellis.persist.serde_schema import allowlist_from_schema
from trellis.types import Command, Interrupt, Overwrite, Replaced, Send

__all__ = [
    "MSGPACK",
    "MSGPACK_ZLIB",
    "PICKLE",
    "PickleSerializer",
    "Serializer",
    "allowlist_from_schema",
]

MSGPACK: Final = "msgpack"
MSGPACK_ZLIB: Final = "msgpack+zlib"
PICKLE: Final = "pickle"

ALWAYS_ALLOWED: Final[frozenset[type]] = frozenset({Send, Command, Interrupt, Overwrite, Replaced})
MAX_DECOMPRESSED_BYTES: Final = 1 << 30
"""A zlib blob that inflates beyond this is treated as corrupt (a zip bomb)."""
# Level 3 inflates as fast as 6 and deflates ~2x faster, for a few percent in size.
_ZLIB_LEVEL: Final = 3
_CRC = struct.Struct(">I")
_SMALL: Final = 4096
_END: Final = "\x00trellis:end-of-batch"
_END_PACKED: Final = ormsgpack.packb(_END)


class Serializer:
    """Encode checkpoint values as typed msgpack; rebuild only allowlisted classes.

    ``allowlist`` names the dataclasses, pydantic models, Enums and NamedTuples that
    may be stored (use :func:`allowlist_from_schema` on the graph's schemas);
    Trellis's ``Send``, ``Command``, ``Interrupt`` and ``Overwrite`` are always allowed. Encoded
    values of at least ``compress_threshold`` bytes are zlib-compressed when that
    makes them smaller.

    >>> codec, blob = Serializer().dumps({"n": 1, "tags": frozenset({"a"})})
    >>> Serializer().loads(codec, blob)
    {'n': 1, 'tags': frozenset({'a'})}
    """

    holds_bytes: ClassVar[bool] = True
    """It encodes ``bytes`` values, so a checkpoint record it encodes may carry
    small values already encoded (see :data:`trellis.persist.storage.INLINE_MAX`)."""

    def __init__(
        self, *, allowlist: Iterable[type] = (), compress_threshold: int = 16 * 1024
    ) -> None:
        classes = frozenset(allowlist)
        for cls in classes:
            if not isinstance(cls, type):
                raise TypeError(f"allowlist entries must be classes, got {cls!r}")
        self._allowlist: frozenset[type] = classes | ALWAYS_ALLOWED
        self._threshold = compress_threshold
        by_type, self._by_name = build_specs(self._allowlist)
        self._encoder = Encoder(by_type)

    @property
    def allowlist(self) -> frozenset[type]:
        """Every class this serializer may store and rebuild."""
        return self._allowlist

    def with_allowlist(self, types: Iterable[type]) -> Serializer:
        """A new serializer of the same kind that also allows ``types``.

        >>> serde = Serializer().with_allowlist(allowlist_from_schema(MyState))
        """
        return type(self)(
            allowlist=self._allowlist | frozenset(types), compress_threshold=self._threshold
        )

    def dumps(self, value: object, *, key: str | None = None) -> tuple[str, bytes]:
        """``(codec, blob)`` for ``value``; raises SerializationError naming key, path and type."""
        blob = None
        if is_plain(value):  # the hot path: one C call, no walk
            try:  # noqa: SIM105 - contextlib.suppress costs more than the packb itself
                blob = ormsgpack.packb(value, option=OPTS)
            except ormsgpack.MsgpackEncodeError:
                pass  # a surrogate, a non-str key or a big int somewhere: walk it
        if blob is None:
            blob = self._walk(value, key)
        return self._seal(blob)

    def dumps_builtin(self, value: object, *, key: str | None = None) -> tuple[str, bytes]:
        """:meth:`dumps` for a value its caller built from exact builtin containers,
        str, int, float, bool and None only (the engine's own bookkeeping), skipping
        :meth:`dumps`' scan. What msgpack rejects still takes the typed walk; only a
        ``bytearray`` or ``memoryview`` would come back as ``bytes``, so callers
        must not pass one.

        >>> Serializer().dumps_builtin([1, {"nodes": ["a"]}])[0]
        'msgpack'
        """
        if type(self).dumps is not Serializer.dumps:  # a subclass with its own codec
            return self.dumps(value, key=key)
        try:
            blob = ormsgpack.packb(value, option=OPTS)
        except ormsgpack.MsgpackEncodeError:
            blob = self._walk(value, key)
        return self._seal(blob)

    def _seal(self, blob: bytes) -> tuple[str, bytes]:
        blob = seal(blob)
        if len(blob) >= self._threshold:
            packed = zlib.compress(blob, _ZLIB_LEVEL)
            if len(packed) < len(blob):
                return MSGPACK_ZLIB, packed
        return MSGPACK, blob

    def _walk(self, value: object, key: str | None) -> bytes:
        try:
            return self._encoder.encode(value)
        except Unsupported as exc:
            raise _unsupported(exc, key) from None
        except RecursionError:
            raise SerializationError(
                f"cannot serialize {_where(key)}: value is nested more than {MAX_DEPTH} "
                "levels deep",
                key=key,
                type_name=type_label(type(value)),
            ) from None

    def loads(
        self,
        codec: str,
        data: bytes,
        *,
        key: str | None = None,
        thread_id: str | None = None,
    ) -> Any:
        """Decode a blob written by :meth:`dumps`; anything wrong raises CheckpointCorruptError."""
        if codec == MSGPACK and type(data) is bytes and 4 < len(data) <= _SMALL:
            # The hot path, inlined; a bytes slice beats a memoryview for small blobs.
            body = data[:-4]
            if zlib.crc32(body) == int.from_bytes(data[-4:]):
                return self._unpack(body, key, thread_id)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise corrupt_error(
                f"expected bytes, got {type(data).__name__}", key=key, thread_id=thread_id
            )
        if codec == MSGPACK:
            return self._unpack(unseal(data, key, thread_id), key, thread_id)
        if codec == MSGPACK_ZLIB:
            inflated = _inflate(data, key, thread_id)
            return self._unpack(unseal(inflated, key, thread_id), key, thread_id)
        if codec == PICKLE:
            raise corrupt_error(
                "the 'pickle' codec is refused: only a PickleSerializer, chosen explicitly, "
                "reads pickle blobs",
                key=key,
                thread_id=thread_id,
            )
        raise corrupt_error(f"unknown codec {codec!r}", key=key, thread_id=thread_id)

    def loads_many(
        self,
        blobs: Sequence[tuple[str, bytes]],
        *,
        key: str | None = None,
        thread_id: str | None = None,
    ) -> list[Any]:
        """:meth:`loads` of each ``(codec, data)``, in order.

        Small plain blobs (a delta chain's hundreds of short rows) are checked one
        by one and decoded together, as one msgpack array of their bodies: one
        decoder call instead of hundreds. Anything else, or any doubt, takes
        :meth:`loads` per blob, which also names what is wrong.

        >>> serde = Serializer()
        >>> serde.loads_many([serde.dumps([1]), serde.dumps([2, 3])])
        [[1], [2, 3]]
        """
        if type(self).loads is not Serializer.loads:  # a subclass with its own codec
            return [self.loads(c, d, key=key, thread_id=thread_id) for c, d in blobs]
        bodies = []
        for codec, data in blobs:
            if codec != MSGPACK or type(data) is not bytes or not 4 < len(data) <= _SMALL:
                break
            body = data[:-4]
            if zlib.crc32(body) != int.from_bytes(data[-4:]):
                break
            bodies.append(body)
        else:
            # The end marker shows the bodies held one value per blob between them.
            # It cannot tell which bytes belonged to which blob: a body that borrows
            # bytes from the next (possible only with a recomputed checksum) goes
            # unnoticed, as trailing bytes do for loads itself.
            n = len(bodies) + 1
            head = bytes([0x90 | n]) if n < 16 else b"\xdd" + n.to_bytes(4, "big")
            try:
                items = self._unpack(head + b"".join(bodies) + _END_PACKED, key, thread_id)
            except CheckpointCorruptError:
                pass  # decoded one by one below, so the error names the right blob
            else:
                if type(items) is list and len(items) == n and items.pop() == _END:
                    return items
        return [self.loads(c, d, key=key, thread_id=thread_id) for c, d in blobs]

    def _unpack(
        self, data: bytes | bytearray | memoryview, key: str | None, thread_id: str | None
    ) -> Any:
        decoder = Decoder(self._by_name, key, thread_id)
        try:
            return decoder.unpack(data)
        except Exception as exc:
            if decoder.error is not None:
                raise decoder.error from None
            reason = f"{type(exc).__name__}: {exc}"
            raise corrupt_error(reason, key=key, thread_id=thread_id) from exc

    def __repr__(self) -> str:
        extra = sorted(name for name in self._by_name if not name.startswith("trellis."))
        return f"{type(self).__name__}(allowlist={extra}, compress_threshold={self._threshold})"


class PickleSerializer(Serializer):
    """Pickle everything: explicit opt-in for values msgpack cannot represent.

    Loading a pickle runs code chosen by whoever wrote the bytes, so use this only
    when nobody else can write to the checkpoint store. It still reads the msgpack
    codecs, so blobs written before switching to it stay readable.

    >>> serde = PickleSerializer()
    >>> serde.loads(*serde.dumps(range(3)))
    range(0, 3)
    """

    def dumps(self, value: object, *, key: str | None = None) -> tuple[str, bytes]:
        try:
            return PICKLE, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize {_where(key)}: pickle failed: {type(exc).__name__}: {exc}",
                key=key,
                type_name=type_label(type(value)),
            ) from exc

    def loads(
        self,
        codec: str,
        data: bytes,
        *,
        key: str | None = None,
        thread_id: str | None = None,
    ) -> Any:
        if codec != PICKLE:
            return super().loads(codec, data, key=key, thread_id=thread_id)
        try:
            return pickle.loads(data)
        except Exception as exc:
            reason = f"pickle failed: {type(exc).__name__}: {exc}"
            raise corrupt_error(reason, key=key, thread_id=thread_id) from exc


def seal(body: bytes) -> bytes:
    """``body`` followed by its CRC-32.

    msgpack readers ignore trailing bytes, so without the checksum a truncated-
    then-extended, mislabelled (a zlib stream read as msgpack decodes as the int
    120) or bit-flipped blob could decode to a wrong value instead of failing.
    Plain msgpack tools still read the body.
    """
    return body + _CRC.pack(zlib.crc32(body))


def unseal(
    data: bytes | bytearray | memoryview, key: str | None, thread_id: str | None
) -> memoryview:
    """The body of a sealed blob, or CheckpointCorruptError if the checksum does not match."""
    view = memoryview(data)
    if len(view) < 5:
        raise corrupt_error("blob is too short", key=key, thread_id=thread_id)
    body = view[:-4]
    if zlib.crc32(body) != _CRC.unpack(view[-4:])[0]:
        raise corrupt_error(
            "checksum mismatch (the blob was truncated or altered)", key=key, thread_id=thread_id
        )
    return body


def _inflate(data: bytes | bytearray | memoryview, key: str | None, thread_id: str | None) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_DECOMPRESSED_BYTES)
    except zlib.error as exc:
        raise corrupt_error(f"zlib: {exc}", key=key, thread_id=thread_id) from exc
    if inflater.unconsumed_tail:
        reason = f"inflates beyond {MAX_DECOMPRESSED_BYTES} bytes"
    elif not inflater.eof:
        reason = "zlib stream is truncated"
    elif inflater.unused_data:
        reason = "trailing bytes after the zlib stream"
    else:
        return out
    raise corrupt_error(reason, key=key, thread_id=thread_id)


def _where(key: str | None) -> str:
    return f"state key {key!r}" if key is not None else "value"


def _unsupported(exc: Unsupported, key: str | None) -> SerializationError:
    label = type_label(exc.type)
    path = (key if key is not None else "value") + "".join(reversed(exc.path))
    return SerializationError(
        f"cannot serialize {_where(key)} at {path}: type {label!r} {exc.reason}",
        key=key,
        type_name=label,
    )
