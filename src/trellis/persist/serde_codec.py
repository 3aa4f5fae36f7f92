"""The msgpack wire format behind :class:`trellis.persist.serde.Serializer`.

Plain JSON-like values (exact ``dict``/``list``/``str``/``int``/``float``/``bool``/
``None``/``bytes``) are plain msgpack, written by ormsgpack's C encoder. Everything
else is a msgpack *ext* value whose payload is itself msgpack (or raw bytes):

* tags 1-13: builtin and stdlib types (tuple, set, datetime, Decimal, ...);
* tags 20-23: class-bearing values (Enum, dataclass, pydantic model, NamedTuple),
  whose payload starts with ``u16 length + "module:qualname"``. The name is only
  ever looked up in the allowlist map; nothing named by the bytes is imported.

Every ext payload is decoded by its own ``unpackb`` call, so nesting is bounded
by :data:`MAX_DEPTH` on both sides (ormsgpack's C encoder itself stops at 254).
This module holds the tags and the allowlist index; ``serde_encode`` and
``serde_decode`` the two directions.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import ormsgpack

from trellis.errors import CheckpointCorruptError

__all__ = [
    "CLASS_TAGS",
    "MAX_DEPTH",
    "OPTS",
    "ClassSpec",
    "build_specs",
    "class_name",
    "class_tag",
    "corrupt_error",
    "is_namedtuple_class",
    "is_pydantic_class",
    "type_label",
]

MAX_DEPTH: Final = 200
"""Deepest nesting accepted; ormsgpack's own encoder stops at 254."""

# ormsgpack would otherwise turn these into lists/strings/maps and lose the type;
# with them set, anything that is not an exact builtin raises instead.
OPTS: Final = (
    ormsgpack.OPT_PASSTHROUGH_BIG_INT
    | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_ENUM
    | ormsgpack.OPT_PASSTHROUGH_SUBCLASS
    | ormsgpack.OPT_PASSTHROUGH_TUPLE
    | ormsgpack.OPT_PASSTHROUGH_UUID
)

TUPLE, SET, FROZENSET, BYTEARRAY, BIGINT, SURROGATE_STR, PAIRS = 1, 2, 3, 4, 5, 6, 7
DATETIME, DATE, TIME, TIMEDELTA, UUID, DECIMAL = 8, 9, 10, 11, 12, 13
ENUM, DATACLASS, PYDANTIC, NAMEDTUPLE = 20, 21, 22, 23
CLASS_TAGS: Final = frozenset({ENUM, DATACLASS, PYDANTIC, NAMEDTUPLE})

U16: Final = struct.Struct(">H")


@dataclasses.dataclass(frozen=True, slots=True)
class ClassSpec:
    """How one allowlisted class is written and rebuilt."""

    cls: type
    name: str
    tag: int
    header: bytes
    fields: tuple[str, ...] = ()
    defaults: Mapping[str, Callable[[], Any]] = dataclasses.field(default_factory=dict)


def class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _pydantic_base() -> type | None:
    # Never import pydantic: if it is not loaded yet, no object can be a model.
    mod = sys.modules.get("pydantic")
    base = getattr(mod, "BaseModel", None) if mod is not None else None
    return base if isinstance(base, type) else None


def is_pydantic_class(cls: type) -> bool:
    base = _pydantic_base()
    return base is not None and issubclass(cls, base)


def is_namedtuple_class(cls: type) -> bool:
    return issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)


def class_tag(cls: type) -> int | None:
    """The ext tag for a class-bearing type, or None if it has no class codec."""
    if issubclass(cls, enum.Enum):
        return ENUM
    if dataclasses.is_dataclass(cls):
        return DATACLASS
    if is_namedtuple_class(cls):
        return NAMEDTUPLE
    if is_pydantic_class(cls):
        return PYDANTIC
    return None


def _const(value: object) -> Callable[[], Any]:
    return lambda: value


def _spec(cls: type, tag: int) -> ClassSpec:
    name = class_name(cls)
    raw = name.encode("utf-8", "surrogatepass")
    header = U16.pack(len(raw)) + raw
    defaults: dict[str, Callable[[], Any]] = {}
    fields: tuple[str, ...] = ()
    if tag == DATACLASS:
        dc_fields = dataclasses.fields(cls)
        fields = tuple(f.name for f in dc_fields)
        for f in dc_fields:
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = _const(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory
    elif tag == NAMEDTUPLE:
        fields = tuple(cls._fields)  # type: ignore[attr-defined]
        defaults = {k: _const(v) for k, v in cls._field_defaults.items()}  # type: ignore[attr-defined]
    elif tag == PYDANTIC:
        model_fields: dict[str, Any] = cls.model_fields  # type: ignore[attr-defined]
        fields = tuple(model_fields)
        for fname, info in model_fields.items():
            if not info.is_required():
                defaults[fname] = _pydantic_default(info)
    return ClassSpec(cls, name, tag, header, fields, defaults)


def _pydantic_default(info: Any) -> Callable[[], Any]:
    return lambda: info.get_default(call_default_factory=True, validated_data={})


def build_specs(classes: Iterable[type]) -> tuple[dict[type, ClassSpec], dict[str, ClassSpec]]:
    """Index the allowlist by class (for encoding) and by name (for decoding).

    Two classes with one ``module:qualname`` (e.g. made by one factory twice)
    are both left out: the name alone could not say which one to rebuild.
    """
    by_type: dict[type, ClassSpec] = {}
    by_name: dict[str, ClassSpec] = {}
    clashes: set[str] = set()
    for cls in classes:
        tag = class_tag(cls)
        if tag is None:
            continue  # e.g. a TypedDict: stored as a plain dict, needs no entry
        spec = _spec(cls, tag)
        other = by_name.get(spec.name)
        if other is not None and other.cls is not cls:
            clashes.add(spec.name)
        by_name[spec.name] = spec
        by_type[cls] = spec
    for name in clashes:
        del by_name[name]
    by_type = {c: s for c, s in by_type.items() if s.name not in clashes}
    return by_type, by_name


def type_label(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def corrupt_error(reason: str, *, key: str | None, thread_id: str | None) -> CheckpointCorruptError:
    where = f" for state key {key!r}" if key is not None else ""
    thread = f" of thread {thread_id!r}" if thread_id is not None else ""
    return CheckpointCorruptError(
        f"checkpoint blob{where}{thread} cannot be decoded: {reason}",
        thread_id=thread_id,
        key=key,
    )
