"""Encoding: any supported value to msgpack bytes, with the path of what is not."""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, Final

import ormsgpack

from trellis.persist.serde_codec import (
    BIGINT,
    BYTEARRAY,
    DATACLASS,
    DATE,
    DATETIME,
    DECIMAL,
    ENUM,
    FROZENSET,
    MAX_DEPTH,
    NAMEDTUPLE,
    OPTS,
    PAIRS,
    SET,
    SURROGATE_STR,
    TIME,
    TIMEDELTA,
    TUPLE,
    UUID,
    ClassSpec,
    class_tag,
)

__all__ = ["Encoder", "Unsupported", "is_plain"]

_NONE = type(None)
_SCALARS: Final = frozenset({str, int, float, bool, _NONE, bytes})
_PLAIN: Final = _SCALARS | {dict, list}
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def is_plain(obj: object, depth: int = 0) -> bool:
    """True if ``obj`` is JSON-like all the way down (exact builtin types only).

    Item types are collected with ``map(type, ...)`` in C; Python only recurses
    per nested container. The scan exists because ormsgpack encodes
    ``bytearray``/``memoryview`` natively as ``bytes`` and cannot be told not to.
    Non-str keys, surrogates and big ints are not checked here: the C encoder
    raises on those and the caller falls back to :class:`Encoder`'s walk.
    """
    t = type(obj)
    vals: Iterable[object]
    if t is dict:
        vals = obj.values()  # type: ignore[attr-defined]
    elif t is list:
        vals = obj  # type: ignore[assignment]
    else:
        return t in _SCALARS
    kinds = set(map(type, vals))
    if kinds <= _SCALARS:
        return True
    if depth >= MAX_DEPTH or not kinds <= _PLAIN:
        return False
    for v in vals:
        tv = type(v)
        if (tv is dict or tv is list) and not is_plain(v, depth + 1):
            return False
    return True


class Unsupported(Exception):
    """Raised inside the encoder walk; each container level adds its path segment."""

    def __init__(self, obj: object, reason: str) -> None:
        super().__init__(reason)
        self.type = type(obj)
        self.reason = reason
        self.path: list[str] = []  # innermost first


def _has_surrogate(s: str) -> bool:
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class Encoder:
    """Turns any supported value into msgpack bytes, or raises :class:`Unsupported`."""

    __slots__ = ("_by_type", "_handlers")

    def __init__(self, by_type: Mapping[type, ClassSpec]) -> None:
        self._by_type = by_type
        self._handlers: dict[type, Callable[[Any, int], Any]] = {
            dict: self._dict,
            list: self._list,
            tuple: self._tuple,
            set: self._set,
            frozenset: self._set,
            bytearray: lambda o, d: ormsgpack.Ext(BYTEARRAY, bytes(o)),
            dt.datetime: self._datetime,
            dt.date: lambda o, d: ormsgpack.Ext(DATE, _pack([o.year, o.month, o.day])),
            dt.time: self._time,
            dt.timedelta: lambda o, d: ormsgpack.Ext(
                TIMEDELTA, _pack([o.days, o.seconds, o.microseconds])
            ),
            uuid.UUID: lambda o, d: ormsgpack.Ext(UUID, o.bytes),
            Decimal: lambda o, d: ormsgpack.Ext(DECIMAL, str(o).encode("ascii")),
        }

    def encode(self, value: object) -> bytes:
        """Walk ``value`` in Python; the caller has tried ormsgpack on it directly first."""
        prepared = self.prepare(value, 0, shortcut=False)
        try:
            return _pack(prepared)
        except ormsgpack.MsgpackEncodeError as exc:  # a bug here, never a silent fallback
            raise Unsupported(value, f"cannot be encoded ({exc})") from exc

    def prepare(self, obj: Any, depth: int, shortcut: bool = True) -> Any:
        """``obj`` as something ormsgpack encodes exactly, without a ``default``."""
        t = type(obj)
        if t is str:
            if _has_surrogate(obj):
                return ormsgpack.Ext(SURROGATE_STR, obj.encode("utf-8", "surrogatepass"))
            return obj
        if t is int:
            if _INT_MIN <= obj <= _INT_MAX:
                return obj
            size = (obj.bit_length() + 8) // 8
            return ormsgpack.Ext(BIGINT, obj.to_bytes(size, "big", signed=True))
        if t is float or t is bool or t is _NONE or t is bytes:
            return obj
        if depth >= MAX_DEPTH:
            raise Unsupported(obj, f"is nested more than {MAX_DEPTH} levels deep")
        if shortcut and (t is dict or t is list) and is_plain(obj, depth):
            try:
                return ormsgpack.Fragment(ormsgpack.packb(obj, option=OPTS))
            except ormsgpack.MsgpackEncodeError:
                pass
        handler = self._handlers.get(t)
        if handler is not None:
            return handler(obj, depth + 1)
        return self._class_bearing(obj, depth + 1)

    def _items(self, items: Iterable[object], depth: int, seg: Callable[[int], str]) -> list[Any]:
        out: list[Any] = []
        i = 0
        try:
            for i, v in enumerate(items):  # noqa: B007 - i is read in the handler
                out.append(self.prepare(v, depth))
        except Unsupported as exc:
            exc.path.append(seg(i))
            raise
        return out

    def _list(self, obj: list[Any], depth: int) -> Any:
        return self._items(obj, depth, lambda i: f"[{i}]")

    def _tuple(self, obj: tuple[Any, ...], depth: int) -> Any:
        return ormsgpack.Ext(TUPLE, _pack(self._items(obj, depth, lambda i: f"[{i}]")))

    def _set(self, obj: set[Any] | frozenset[Any], depth: int) -> Any:
        tag = SET if type(obj) is set else FROZENSET
        # Set order is arbitrary, so the segment names the member, briefly.
        members = list(obj)
        items = self._items(members, depth, lambda i: f"{{{_brief(members[i])}}}")
        return ormsgpack.Ext(tag, _pack(items))

    def _dict(self, obj: dict[Any, Any], depth: int, attrs: bool = False) -> Any:
        """A map if every key is a clean str, else an ext of key/value pairs.

        ``attrs`` names entries ``.k`` (object attributes) instead of ``['k']``.
        """
        keys_ok = all(type(k) is str and not _has_surrogate(k) for k in obj)
        out: dict[str, Any] = {}
        pairs: list[Any] = []
        k: Any = None
        where = "value"
        try:
            for k, v in obj.items():
                if keys_ok:
                    out[k] = self.prepare(v, depth)
                else:
                    where = "key"
                    pairs.append(self.prepare(k, depth))
                    where = "value"
                    pairs.append(self.prepare(v, depth))
        except Unsupported as exc:
            if where == "key":
                exc.path.append(f"<key {_brief(k)}>")
            else:
                exc.path.append(f".{k}" if attrs and type(k) is str else f"[{_brief(k)}]")
            raise
        return out if keys_ok else ormsgpack.Ext(PAIRS, _pack(pairs))

    def _datetime(self, o: dt.datetime, depth: int) -> Any:
        tz = _tz(o)
        fields = [o.year, o.month, o.day, o.hour, o.minute, o.second, o.microsecond, o.fold, tz]
        # prepare(): a fixed-offset zone's name may hold a lone surrogate.
        return ormsgpack.Ext(DATETIME, _pack(self.prepare(fields, depth)))

    def _time(self, o: dt.time, depth: int) -> Any:
        fields = [o.hour, o.minute, o.second, o.microsecond, o.fold, _tz(o)]
        return ormsgpack.Ext(TIME, _pack(self.prepare(fields, depth)))

    def _class_bearing(self, obj: object, depth: int) -> Any:
        t = type(obj)
        spec = self._by_type.get(t)
        if spec is None:
            if class_tag(t) is not None:
                raise Unsupported(
                    obj,
                    "is not on the serializer's allowlist (declare it in the graph's "
                    "state schema or add it with Serializer.with_allowlist)",
                )
            raise Unsupported(obj, "has no codec")
        tag = spec.tag
        payload: Any
        if tag == ENUM:
            payload = self._field(obj._value_, depth, ".value")  # type: ignore[attr-defined]
        elif tag in (DATACLASS, NAMEDTUPLE):
            payload = {}
            for name in spec.fields:
                try:
                    value = getattr(obj, name)
                except AttributeError:
                    exc = Unsupported(obj, f"has field {name!r} unset")
                    raise exc from None
                payload[name] = self._field(value, depth, f".{name}")
            if tag == NAMEDTUPLE:
                payload = list(payload.values())
        else:
            payload = self._pydantic(obj, depth)
        return ormsgpack.Ext(tag, spec.header + _pack(payload))

    def _field(self, value: object, depth: int, seg: str) -> Any:
        try:
            return self.prepare(value, depth)
        except Unsupported as exc:
            exc.path.append(seg)
            raise

    def _pydantic(self, obj: Any, depth: int) -> list[Any]:
        # The state pydantic's own __getstate__ hands to pickle: fields, which of
        # them were set explicitly, extra fields (any str key) and private attributes.
        parts: list[Any] = []
        for attr in ("__dict__", "__pydantic_extra__", "__pydantic_private__"):
            part = getattr(obj, attr, None)
            parts.append(None if part is None else self._dict(part, depth, attrs=True))
        fields_set = self.prepare(sorted(getattr(obj, "__pydantic_fields_set__", ())), depth)
        return [parts[0], fields_set, parts[1], parts[2]]


def _brief(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."


def _pack(value: object) -> bytes:
    return ormsgpack.packb(value, option=OPTS)


def _tz(o: dt.datetime | dt.time) -> object:
    tz = o.tzinfo
    if tz is None:
        return None
    if type(tz) is dt.timezone:
        off = tz.utcoffset(None)
        name = tz.tzname(None)
        custom = None if dt.timezone(off).tzname(None) == name else name
        return [off.days * 86400 + off.seconds, off.microseconds, custom]
    if type(tz) is zoneinfo.ZoneInfo and tz.key is not None:
        return tz.key
    if type(tz).__qualname__ == "TzInfo" and type(tz).__module__.startswith("pydantic_core"):
        pyd_off = tz.utcoffset(None)
        if pyd_off is not None and not pyd_off.microseconds:
            return ["pydantic", pyd_off.days * 86400 + pyd_off.seconds]
    raise Unsupported(tz, "is a tzinfo without a codec (use datetime.timezone or zoneinfo)")
