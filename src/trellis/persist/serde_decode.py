"""Decoding: msgpack bytes back to values, failing closed on anything unexpected."""

from __future__ import annotations

import datetime as dt
import re
import sys
import uuid
import zoneinfo
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import ormsgpack

from trellis.errors import CheckpointCorruptError
from trellis.persist.serde_codec import (
    BIGINT,
    BYTEARRAY,
    CLASS_TAGS,
    DATACLASS,
    DATE,
    DATETIME,
    DECIMAL,
    ENUM,
    FROZENSET,
    MAX_DEPTH,
    NAMEDTUPLE,
    PAIRS,
    SET,
    SURROGATE_STR,
    TIME,
    TIMEDELTA,
    TUPLE,
    U16,
    UUID,
    ClassSpec,
    corrupt_error,
)

__all__ = ["Decoder"]

_NONE = type(None)
_NESTED_TAGS = frozenset({TUPLE, SET, FROZENSET, PAIRS, DATETIME, DATE, TIME, TIMEDELTA})
_DECIMAL_RE = re.compile(
    r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|Infinity|Inf|s?NaN\d*)", re.IGNORECASE
)
_ZONE_RE = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")


class Decoder:
    """One ``loads`` call: an ext hook bounded in depth that only rebuilds allowlisted classes.

    ormsgpack replaces an exception raised in the hook by a bare ``ValueError``,
    so the first real error is kept in ``error`` for the caller to raise.
    """

    __slots__ = ("by_name", "depth", "error", "key", "thread_id")

    def __init__(
        self, by_name: Mapping[str, ClassSpec], key: str | None, thread_id: str | None
    ) -> None:
        self.by_name = by_name
        self.key = key
        self.thread_id = thread_id
        self.depth = 0
        self.error: CheckpointCorruptError | None = None

    def corrupt(self, reason: str) -> CheckpointCorruptError:
        return corrupt_error(reason, key=self.key, thread_id=self.thread_id)

    def unpack(self, data: bytes | bytearray | memoryview) -> Any:
        return ormsgpack.unpackb(data, ext_hook=self.hook)

    def hook(self, tag: int, data: bytes) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise self.corrupt(f"value is nested more than {MAX_DEPTH} levels deep")
            return self._ext(tag, data)
        except CheckpointCorruptError as exc:
            if self.error is None:
                self.error = exc
            raise
        except Exception as exc:
            if self.error is None:
                self.error = self.corrupt(f"bad ext value (tag {tag}): {type(exc).__name__}")
            raise self.error from exc
        finally:
            self.depth -= 1

    def _ext(self, tag: int, data: bytes) -> Any:
        if tag in CLASS_TAGS:
            return self._class_bearing(tag, data)
        if tag == UUID:
            return uuid.UUID(bytes=data)
        if tag == DECIMAL:
            text = data.decode("ascii")
            if not _DECIMAL_RE.fullmatch(text):
                raise self.corrupt("bad Decimal literal")
            return Decimal(text)
        if tag == BYTEARRAY:
            return bytearray(data)
        if tag == BIGINT:
            return int.from_bytes(data, "big", signed=True)
        if tag == SURROGATE_STR:
            return data.decode("utf-8", "surrogatepass")
        if tag not in _NESTED_TAGS:
            raise self.corrupt(f"unknown ext tag {tag}")
        payload = self.unpack(data)
        if type(payload) is not list:
            raise self.corrupt(f"ext tag {tag} does not hold an array")
        if tag == TUPLE:
            return tuple(payload)
        if tag == SET:
            return set(payload)
        if tag == FROZENSET:
            return frozenset(payload)
        if tag == PAIRS:
            if len(payload) % 2:
                raise self.corrupt("odd-length key/value pairs")
            it = iter(payload)
            return dict(zip(it, it, strict=True))
        if tag == DATETIME:
            y, mo, d, h, mi, s, us, fold, tz = self._ints(payload, 9, zone=True)
            return dt.datetime(y, mo, d, h, mi, s, us, tzinfo=self._tz(tz), fold=fold)
        if tag == DATE:
            return dt.date(*self._ints(payload, 3))
        if tag == TIME:
            h, mi, s, us, fold, tz = self._ints(payload, 6, zone=True)
            return dt.time(h, mi, s, us, tzinfo=self._tz(tz), fold=fold)
        return dt.timedelta(*self._ints(payload, 3))

    def _ints(self, payload: list[Any], n: int, zone: bool = False) -> list[Any]:
        """Check an array of ``n`` ints (the last one a time zone if ``zone``)."""
        if len(payload) != n:
            raise self.corrupt(f"expected an array of {n} items")
        ints = payload[:-1] if zone else payload
        if any(type(x) is not int for x in ints):
            raise self.corrupt("expected integers")
        return payload

    def _tz(self, raw: object) -> dt.tzinfo | None:
        if raw is None:
            return None
        if type(raw) is str:
            if not _ZONE_RE.fullmatch(raw):
                raise self.corrupt("bad time zone key")
            return zoneinfo.ZoneInfo(raw)
        if type(raw) is list and len(raw) == 3:
            seconds, micros, name = raw
            if type(seconds) is int and type(micros) is int and type(name) in (str, _NONE):
                off = dt.timedelta(seconds=seconds, microseconds=micros)
                return dt.timezone(off) if name is None else dt.timezone(off, name)
        if type(raw) is list and len(raw) == 2 and raw[0] == "pydantic" and type(raw[1]) is int:
            # pydantic's own fixed offset (from parsing "...+02:00"); it compares equal
            # to datetime.timezone, which stands in if pydantic_core is not loaded.
            tz_cls = getattr(sys.modules.get("pydantic_core"), "TzInfo", None)
            if tz_cls is not None:
                return tz_cls(raw[1])  # type: ignore[no-any-return]
            return dt.timezone(dt.timedelta(seconds=raw[1]))
        raise self.corrupt("bad time zone")

    def _class_bearing(self, tag: int, data: bytes) -> Any:
        view = memoryview(data)
        if len(view) < 2:
            raise self.corrupt("truncated class name")
        (size,) = U16.unpack(view[:2])
        raw = bytes(view[2 : 2 + size])
        if len(raw) != size:
            raise self.corrupt("truncated class name")
        name = raw.decode("utf-8", "surrogatepass")
        spec = self.by_name.get(name)
        if spec is None:
            shown = name if len(name) <= 200 else name[:200] + "..."
            raise self.corrupt(
                f"class {shown!r} is not on the serializer's allowlist; refusing to rebuild it"
            )
        if spec.tag != tag:
            raise self.corrupt(f"class {name!r} stored with the wrong kind tag {tag}")
        payload = self.unpack(view[2 + size :])
        cls: Any = spec.cls
        if tag == ENUM:
            return cls(payload)
        if tag == NAMEDTUPLE:
            if type(payload) is not list or len(payload) > len(spec.fields):
                raise self.corrupt(f"bad fields for {name!r}")
            missing = spec.fields[len(payload) :]
            values = dict(zip(spec.fields, payload, strict=False))
            values.update(self._defaults(spec, missing))
            return tuple.__new__(cls, [values[f] for f in spec.fields])
        if tag == DATACLASS:
            # Restoring is not constructing: like pickle, build with __new__ and set
            # every field (init=False ones included) without running __init__ or
            # __post_init__, which could have side effects, need InitVars that are
            # not stored, or recompute init=False fields differently.
            values = self._fields(spec, payload)
            obj = cls.__new__(cls)
            for fname, value in values.items():
                object.__setattr__(obj, fname, value)
            return obj
        return self._pydantic(spec, payload)

    def _fields(self, spec: ClassSpec, payload: Any) -> dict[str, Any]:
        if type(payload) is not dict:
            raise self.corrupt(f"bad fields for {spec.name!r}")
        unknown = set(payload) - set(spec.fields)
        if unknown:
            raise self.corrupt(f"{spec.name!r} has no field(s) {sorted(map(str, unknown))}")
        missing = [f for f in spec.fields if f not in payload]
        payload.update(self._defaults(spec, missing))
        return payload

    def _defaults(self, spec: ClassSpec, missing: Iterable[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for fname in missing:
            factory = spec.defaults.get(fname)
            if factory is None:
                raise self.corrupt(f"{spec.name!r} is missing field {fname!r}")
            out[fname] = factory()
        return out

    def _pydantic(self, spec: ClassSpec, payload: Any) -> Any:
        if type(payload) is not list or len(payload) != 4:
            raise self.corrupt(f"bad fields for {spec.name!r}")
        values, fields_set, extra, private = payload
        values = self._fields(spec, values)
        if type(fields_set) is not list or any(type(f) is not str for f in fields_set):
            raise self.corrupt(f"bad fields set for {spec.name!r}")
        for part in (extra, private):
            if part is not None and type(part) is not dict:
                raise self.corrupt(f"bad extra/private values for {spec.name!r}")
        # What BaseModel.__setstate__ does for pickle: no validators, no __init__.
        cls: Any = spec.cls
        obj = cls.__new__(cls)
        object.__setattr__(obj, "__dict__", values)
        object.__setattr__(obj, "__pydantic_fields_set__", set(fields_set))
        object.__setattr__(obj, "__pydantic_extra__", extra)
        object.__setattr__(obj, "__pydantic_private__", private)
        return obj
