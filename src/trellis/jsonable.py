"""JSON-ready copies of arbitrary state values, for display and export.

A leaf module: it imports nothing else from Trellis. The CLI prints states with
it and the review queue stores approval contexts with it, so both show a value
the same way.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import math
import uuid
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["to_jsonable"]

_MAX_DEPTH: Final = 32


def to_jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of ``value`` that never fails: dataclasses and pydantic
    models become dicts, dates ISO strings, sets and tuples lists, bytes base64,
    NaN and infinities and anything else unknown their ``repr``.

    >>> to_jsonable({"when": dt.date(2025, 1, 2), "tags": {"b", "a"}, "x": float("nan")})
    {'when': '2025-01-02', 'tags': ['a', 'b'], 'x': 'nan'}
    """
    if depth > _MAX_DEPTH:  # a cycle, or nesting no reader wants printed
        return repr(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # JSON has no NaN
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        try:  # a stable order, so equal sets print alike
            items = sorted(value)
        except TypeError:
            items = sorted(value, key=repr)
        return [to_jsonable(v, depth + 1) for v in items]
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, depth + 1)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, dt.timedelta)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return to_jsonable(fields, depth + 1)
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # a pydantic model; pydantic is optional, so duck-typed
        try:
            return to_jsonable(dump(mode="json"), depth + 1)
        except Exception:  # a broken model is still shown, as its repr
            return repr(value)
    return repr(value)
