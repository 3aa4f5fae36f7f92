"""to_jsonable: what the CLI prints and the review queue stores for any state value."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import uuid
from typing import Any

import pydantic
from hypothesis import given
from hypothesis import strategies as st

from trellis.jsonable import to_jsonable


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Order:
    id: int
    placed: dt.datetime
    tags: frozenset[str]


class Ticket(pydantic.BaseModel):
    id: uuid.UUID
    due: dt.date


class Broken(pydantic.BaseModel):
    def model_dump(self, **kwargs: Any) -> Any:
        raise RuntimeError("cannot dump")


def test_known_types_become_their_json_shapes() -> None:
    when = dt.datetime(2025, 1, 2, 3, 4, 5)
    key = uuid.UUID(int=7)
    value = {
        "order": Order(1, when, frozenset({"b", "a"})),
        "ticket": Ticket(id=key, due=dt.date(2025, 1, 3)),
        "color": Color.RED,
        "wait": dt.timedelta(minutes=90),
        "raw": b"\x00\xff",
        "pair": (1, 2),
        3: "int key",
    }
    assert to_jsonable(value) == {
        "order": {"id": 1, "placed": "2025-01-02T03:04:05", "tags": ["a", "b"]},
        "ticket": {"id": str(key), "due": "2025-01-03"},
        "color": "red",
        "wait": "1:30:00",
        "raw": "AP8=",
        "pair": [1, 2],
        "3": "int key",
    }


def test_sets_print_in_a_stable_order_even_when_mixed() -> None:
    assert to_jsonable({10, 9, 100}) == [9, 10, 100]
    assert to_jsonable({1, "a", None}) == to_jsonable({None, "a", 1})


def test_what_json_cannot_hold_becomes_its_repr_and_never_raises() -> None:
    loop: list[Any] = []
    loop.append(loop)
    out = to_jsonable({"nan": float("nan"), "inf": float("-inf"), "obj": object,
                       "broken": Broken(), "loop": loop})  # fmt: skip
    assert out["nan"] == "nan" and out["inf"] == "-inf"
    assert out["obj"] == repr(object) and out["broken"].startswith("Broken(")
    json.dumps(out, allow_nan=False)  # valid JSON, cycle cut at the depth limit


_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()


@given(
    st.recursive(
        _LEAVES,
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner) | st.frozensets(_LEAVES),
        max_leaves=20,
    )
)
def test_every_output_is_strict_json(value: Any) -> None:
    json.dumps(to_jsonable(value), allow_nan=False)
