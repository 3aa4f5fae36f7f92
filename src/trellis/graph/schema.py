"""Turn a state schema (TypedDict, dataclass or pydantic model) into channels.

Every top-level key of the schema becomes a channel. ``Annotated[T, reducer]``
gives the channel a reducer ``(current, update) -> new``; other keys keep the
last value written. All of this is decided once, at compile time.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args, get_origin

import typing_extensions
from typing_extensions import is_typeddict

from trellis.graph.managed import managed_getter

__all__ = ["Channel", "SchemaInfo", "is_pydantic_class", "schema_info"]

Reducer = Callable[[Any, Any], Any]
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Channel:
    """One state key: its reducer (``None`` = last value wins) and initial value."""

    name: str
    annotation: Any
    reducer: Reducer | None = None
    # A reducer channel starts from ``T()`` when T can be built without arguments,
    # as LangGraph's BinaryOperatorAggregate does; otherwise it starts empty.
    initial: Callable[[], Any] | None = None


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """What Trellis knows about one schema class."""

    schema: Any
    kind: str  # "typeddict" | "dataclass" | "pydantic" | "dict"
    channels: dict[str, Channel]
    defaults: dict[str, Any]
    keys: frozenset[str] = frozenset()
    # RemainingSteps, IsLastStep: keys the engine fills in for each step (not channels)
    managed: dict[str, Callable[[int], Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", frozenset(self.channels))

    def to_update(self, obj: Any) -> dict[str, Any] | None:
        """A schema instance returned by a node, as a partial update, or None."""
        if self.kind == "dataclass" and dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        if self.kind == "pydantic" and _is_pydantic_instance(obj):
            # Every field, defaults included, as LangGraph writes it; except one left
            # None by its None default (not set), which would wipe the state's value.
            fields, given = type(obj).model_fields, obj.model_fields_set
            return {
                k: value
                for k, field in fields.items()
                if (value := getattr(obj, k)) is not None or field.default is not None or k in given
            }
        return None


def _is_pydantic_instance(obj: Any) -> bool:
    return hasattr(type(obj), "model_fields") and hasattr(obj, "model_fields_set")


def is_pydantic_class(cls: Any) -> bool:
    """Whether ``cls`` is a pydantic model class (told without importing pydantic)."""
    return isinstance(cls, type) and hasattr(cls, "model_fields") and hasattr(cls, "model_validate")


def _hints(schema: Any) -> dict[str, Any]:
    module = sys.modules.get(getattr(schema, "__module__", ""), None)
    globalns = vars(module) if module else None
    try:
        return typing.get_type_hints(schema, globalns=globalns, include_extras=True)
    except Exception as exc:
        raw = dict(getattr(schema, "__annotations__", {}))
        text = {k: str(getattr(v, "__forward_arg__", v)) for k, v in raw.items()}
        reduced = [k for k, v in text.items() if "Annotated" in v]
        if reduced:
            # Falling back to the raw strings would silently drop these reducers.
            raise TypeError(
                f"cannot resolve the annotations of state schema {schema.__name__!r} "
                f"(keys {', '.join(map(repr, reduced))}): {exc}. Define the schema and its "
                "reducers at module level so their names can be found"
            ) from exc
        return raw


# TypedDict key qualifiers: get_type_hints keeps them (include_extras), around the
# Annotated that may carry the reducer.
_QUALIFIERS = frozenset(
    q
    for module in (typing, typing_extensions)
    for name in ("Required", "NotRequired", "ReadOnly")
    if (q := getattr(module, name, None)) is not None
)


def _unqualified(annotation: Any) -> Any:
    while get_origin(annotation) in _QUALIFIERS:
        (annotation,) = get_args(annotation)
    return annotation


def _managed(annotation: Any) -> Callable[[int], Any] | None:
    annotation = _unqualified(annotation)
    if get_origin(annotation) is typing.Annotated:
        return managed_getter(annotation.__metadata__)
    return None


def _reducer_of(annotation: Any) -> tuple[Any, Reducer | None]:
    annotation = _unqualified(annotation)
    if get_origin(annotation) is typing.Annotated:
        base, *meta = get_args(annotation)
        for item in reversed(meta):
            if callable(item) and _takes_two_args(item):
                return base, item
        return base, None
    return annotation, None


def _takes_two_args(fn: Any) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (
        TypeError,
        ValueError,
    ):  # builtins such as operator.add have no signature on old Pythons
        return True
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    return len(positional) == 2 or (varargs and len(positional) <= 2)


def _initial_for(base: Any) -> Callable[[], Any] | None:
    origin = get_origin(base) or base
    if origin is typing.Union or origin is Any or not isinstance(origin, type):
        return None
    # An abstract collection starts as its usual concrete one (as LangGraph):
    # ``Annotated[Sequence[BaseMessage], add_messages]`` starts as [].
    origin = _CONCRETE.get(origin, origin)
    try:
        origin()
    except Exception:
        return None
    return typing.cast("Callable[[], Any]", origin)


_CONCRETE: dict[Any, type] = {
    collections.abc.Sequence: list,
    collections.abc.MutableSequence: list,
    collections.abc.Set: set,
    collections.abc.MutableSet: set,
    collections.abc.Mapping: dict,
    collections.abc.MutableMapping: dict,
}


def schema_info(schema: Any) -> SchemaInfo:
    """Inspect ``schema`` once. ``dict`` (or ``None``) means an untyped dict state.

    >>> class State(TypedDict):
    ...     items: Annotated[list, operator.add]
    ...     name: str
    >>> sorted(schema_info(State).channels)
    ['items', 'name']
    """
    if schema is None or schema is dict:
        return SchemaInfo(schema=dict, kind="dict", channels={}, defaults={})
    if is_typeddict(schema):
        kind = "typeddict"
    elif dataclasses.is_dataclass(schema) and isinstance(schema, type):
        kind = "dataclass"
    elif is_pydantic_class(schema):
        kind = "pydantic"
    else:
        raise TypeError(
            f"state schema {schema!r} must be a TypedDict, a dataclass or a pydantic model"
        )
    channels: dict[str, Channel] = {}
    defaults: dict[str, Any] = {}
    hints = _hints(schema)
    managed = {name: get for name, hint in hints.items() if (get := _managed(hint)) is not None}
    if kind == "pydantic":
        for name, info in schema.model_fields.items():
            if name in managed:
                continue
            annotation = hints.get(name, info.annotation)
            base, reducer = _reducer_of(annotation)
            if reducer is None:
                for meta in info.metadata:
                    if callable(meta) and _takes_two_args(meta):
                        reducer = meta
            channels[name] = Channel(name, base, reducer, _initial_for(base) if reducer else None)
            if not info.is_required():
                defaults[name] = info.get_default(call_default_factory=True)
    else:
        for name, annotation in hints.items():
            if name.startswith("__") or name in managed:
                continue
            base, reducer = _reducer_of(annotation)
            channels[name] = Channel(name, base, reducer, _initial_for(base) if reducer else None)
        if kind == "dataclass":
            for f in dataclasses.fields(schema):
                if f.name in managed:
                    continue
                if f.default is not dataclasses.MISSING:
                    defaults[f.name] = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    defaults[f.name] = f.default_factory()
    return SchemaInfo(schema, kind, channels, defaults, managed=managed)
