"""Derive the serializer's class allowlist from a graph's type hints."""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from typing_extensions import is_typeddict

from trellis.persist.serde_codec import is_namedtuple_class, is_pydantic_class

__all__ = ["allowlist_from_schema"]

# Origins whose arguments are not values that end up in the state.
_SKIP_ORIGINS: frozenset[Any] = frozenset({Literal, ClassVar, type, Callable, dataclasses.InitVar})


def allowlist_from_schema(*schemas: object) -> frozenset[type]:
    """Every dataclass, pydantic model, Enum and NamedTuple a schema's values can hold.

    Walks type hints recursively: through ``Annotated``, ``Optional``/unions,
    container arguments (``list``, ``dict``, ``Sequence``, ``tuple``, ...) and the
    fields of nested TypedDicts, dataclasses, pydantic models and NamedTuples.
    Self-referencing types are visited once.

    >>> from typing import Annotated, TypedDict
    >>> class Color(enum.Enum):
    ...     RED = 1
    >>> class State(TypedDict):
    ...     colors: Annotated[list[Color], "reducer"]
    >>> allowlist_from_schema(State) == {Color}
    True
    """
    found: set[type] = set()
    seen: set[type] = set()
    for schema in schemas:
        _visit(schema, found, seen)
    return frozenset(found)


def _visit(tp: Any, found: set[type], seen: set[type]) -> None:
    if tp is None or isinstance(tp, (str, typing.ForwardRef)):
        return  # unresolvable forward references carry no class
    if isinstance(tp, typing.TypeVar):
        for arg in (tp.__bound__, *tp.__constraints__):
            _visit(arg, found, seen)
        return
    supertype = getattr(tp, "__supertype__", None)
    if supertype is not None:  # typing.NewType
        _visit(supertype, found, seen)
        return
    origin = typing.get_origin(tp)
    if origin is not None:
        if origin in _SKIP_ORIGINS:
            return
        if origin is typing.Annotated:
            _visit(typing.get_args(tp)[0], found, seen)
            return
        if isinstance(origin, type):
            _visit_class(origin, found, seen)  # e.g. a generic dataclass Box[int]
        for arg in typing.get_args(tp):
            if arg is not Ellipsis:
                _visit(arg, found, seen)
        return
    if isinstance(tp, type):
        _visit_class(tp, found, seen)


def _visit_class(cls: type, found: set[type], seen: set[type]) -> None:
    if cls in seen:
        return
    seen.add(cls)
    if issubclass(cls, enum.Enum):
        found.add(cls)
        return
    if is_typeddict(cls):
        pass  # stored as a plain dict: walk its fields, allow nothing for itself
    elif dataclasses.is_dataclass(cls) or is_namedtuple_class(cls) or is_pydantic_class(cls):
        found.add(cls)
    else:
        return
    for hint in _hints(cls):
        _visit(hint, found, seen)


def _hints(cls: type) -> list[Any]:
    try:
        hints = list(typing.get_type_hints(cls, include_extras=True).values())
    except Exception:
        # Unresolvable forward references: keep whatever is already a real object.
        hints = []
        for klass in reversed(cls.__mro__):
            hints.extend(vars(klass).get("__annotations__", {}).values())
    if is_pydantic_class(cls):
        # pydantic resolves annotations itself, also where get_type_hints cannot.
        model_fields: dict[str, Any] = getattr(cls, "model_fields", {})
        hints.extend(info.annotation for info in model_fields.values())
    return hints
