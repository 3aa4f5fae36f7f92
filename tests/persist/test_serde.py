"""The checkpoint serializer: exact round trips, encode-time errors, fail-closed decoding."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import io
import math
import operator
import pickle
import random
import subprocess
import sys
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, NotRequired, Optional
from zoneinfo import ZoneInfo

import ormsgpack
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typing_extensions import TypedDict

import trellis.persist.serde as serde_mod
from trellis.errors import CheckpointCorruptError, SerializationError
from trellis.persist.serde import (
    MSGPACK,
    MSGPACK_ZLIB,
    PickleSerializer,
    Serializer,
    allowlist_from_schema,
    seal,
)
from trellis.persist.serde_codec import CLASS_TAGS, DATACLASS, ENUM, TUPLE, U16
from trellis.types import Command, Interrupt, Send

# --- types used by the tests -------------------------------------------------------


class Color(enum.Enum):
    RED = 1
    GREEN = "g"
    BLUE = (1, 2)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 1
    W = 2


@dataclass
class Item:
    name: str
    count: int = 0
    derived: int = field(init=False, default=-1)

    def __post_init__(self) -> None:
        self.derived = len(self.name) + self.count


@dataclass(frozen=True)
class Box:
    content: Any
    label: str = ""


@dataclass
class Holder:
    payload: Any


class Pair(NamedTuple):
    a: Any
    b: Any = None


class Profile(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    name: str
    when: dt.datetime | None = None
    tags: list[str] = []
    _secret: int = pydantic.PrivateAttr(default=0)


class Foo:
    """A plain class: no codec."""


@dataclass
class Stray:
    """A dataclass nobody put on the allowlist."""

    x: int = 0


ALLOWED = [Color, Level, Perm, Item, Box, Holder, Pair, Profile]
SERDE = Serializer(allowlist=ALLOWED)

# --- canary: any code of these classes running during a decode is a failure -------

CANARY_HITS: list[str] = []
CANARY_FILE: list[Path] = []


def _fire(where: str) -> None:
    CANARY_HITS.append(where)
    for path in CANARY_FILE:
        path.write_text(where)


@dataclass
class Canary:
    x: int = 0

    def __new__(cls, *args: Any, **kwargs: Any) -> Canary:
        _fire("__new__")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        _fire("__post_init__")

    def __setstate__(self, state: Any) -> None:
        _fire("__setstate__")


class CanaryEnum(enum.Enum):
    A = 1

    @classmethod
    def _missing_(cls, value: object) -> Any:
        _fire("_missing_")
        return None


@pytest.fixture(scope="module", autouse=True)
def canary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("canary") / "fired"
    CANARY_FILE.append(path)
    return path


def assert_no_canary(canary: Path) -> None:
    assert CANARY_HITS == []
    assert not canary.exists()


# --- helpers ----------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (nan equal to nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, enum.Enum):
        return a is b
    if isinstance(a, (dt.datetime, dt.time)):
        return (
            a.replace(tzinfo=None) == b.replace(tzinfo=None)
            and a.fold == b.fold
            and same_tz(a.tzinfo, b.tzinfo)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return same(list(a.items()), list(b.items()))
    if isinstance(a, (set, frozenset)):
        index = {y: y for y in b}
        return a == b and all(same(x, index[x]) for x in a)
    if isinstance(a, pydantic.BaseModel):
        return (
            same(a.__dict__, b.__dict__)
            and a.__pydantic_fields_set__ == b.__pydantic_fields_set__
            and same(a.__pydantic_extra__, b.__pydantic_extra__)
            and same(a.__pydantic_private__, b.__pydantic_private__)
        )
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return bool(a == b)


def same_tz(a: dt.tzinfo | None, b: dt.tzinfo | None) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dt.timezone):
        assert isinstance(b, dt.timezone)
        return a.utcoffset(None) == b.utcoffset(None) and a.tzname(None) == b.tzname(None)
    return a is b or a == b


def round_trip(value: Any, serde: Serializer = SERDE) -> Any:
    codec, blob = serde.dumps(value, key="k")
    return serde.loads(codec, blob, key="k", thread_id="t")


def decode_or_corrupt(codec: str, data: bytes, serde: Serializer = SERDE) -> bool:
    """Decode; only success or CheckpointCorruptError (naming key and thread) is allowed."""
    try:
        serde.loads(codec, data, key="chan", thread_id="th-1")
    except CheckpointCorruptError as exc:
        assert exc.key == "chan" and exc.thread_id == "th-1"
        assert "'chan'" in str(exc) and "'th-1'" in str(exc)
        return False
    return True


def forged(tag: int, name: str, payload: Any) -> bytes:
    raw = name.encode()
    body = U16.pack(len(raw)) + raw + ormsgpack.packb(payload)
    return seal(ormsgpack.packb(ormsgpack.Ext(tag, body)))


# --- strategies -------------------------------------------------------------------

texts = st.text(max_size=8) | st.lists(
    st.sampled_from(["a", "é", "\ud800", "\udfff", "\U0001f600", "\x00", "€"]), max_size=5
).map("".join)
ints = (
    st.integers()
    | st.integers(min_value=-(2**130), max_value=2**130)
    | st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1])
)
offsets = st.timedeltas(
    min_value=-dt.timedelta(hours=23, minutes=59), max_value=dt.timedelta(hours=23, minutes=59)
)
tzinfos = (
    st.none()
    | st.timezones()
    | st.builds(dt.timezone, offsets)
    | st.builds(dt.timezone, offsets, st.text(min_size=1, max_size=5))
    | st.just(dt.UTC)
)


def make_item(name: str, count: int, derived: int) -> Item:
    item = Item(name, count)
    item.derived = derived  # stored as is, not recomputed on load
    return item


def make_profile(name: str, when: dt.datetime | None, tags: list[str], secret: int) -> Profile:
    profile = Profile(name=name, when=when) if tags else Profile(name=name, note=secret)
    profile.tags = tags
    profile._secret = secret
    return profile


hashable_leaves = (
    st.none()
    | st.booleans()
    | ints
    | st.floats(allow_nan=False)
    | texts
    | st.binary(max_size=8)
    | st.sampled_from(list(Color) + list(Level))
    | st.uuids()
    | st.decimals(allow_nan=False)
    | st.dates()
    | st.datetimes(timezones=tzinfos)
    | st.timedeltas()
)
hashables = st.recursive(
    hashable_leaves,
    lambda ch: (
        st.lists(ch, max_size=3).map(tuple)
        | st.frozensets(ch, max_size=3)
        | st.builds(Pair, ch, ch)
        | st.builds(Box, ch, texts)
    ),
    max_leaves=8,
)
leaves = (
    hashable_leaves
    | st.floats()
    | st.decimals()
    | st.binary(max_size=8).map(bytearray)
    | st.times(timezones=tzinfos)
    | st.sampled_from([Perm.R | Perm.W, Perm(0)])
    | st.builds(make_item, texts, ints, ints)
    | st.builds(
        make_profile,
        texts,
        st.none() | st.datetimes(timezones=tzinfos),
        st.lists(texts, max_size=3),
        ints,
    )
)
values = st.recursive(
    leaves | hashables,
    lambda ch: (
        st.lists(ch, max_size=4)
        | st.lists(ch, max_size=4).map(tuple)
        | st.dictionaries(texts, ch, max_size=4)
        | st.dictionaries(hashables, ch, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.builds(Holder, ch)
        | st.builds(Pair, ch, ch)
        | st.builds(Send, texts, ch)
        | st.builds(Interrupt, ch, texts)
        | st.builds(Command, update=ch, goto=st.lists(st.builds(Send, texts, ch), max_size=2))
    ),
    max_leaves=20,
)
# Hypothesis warns when it builds the (long, harmless) repr of this strategy.
big_repr_ok = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)


# --- round trips ------------------------------------------------------------------


@big_repr_ok
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_every_supported_value_round_trips_exactly(value: Any) -> None:
    assert same(round_trip(value), value)


EXAMPLES: list[Any] = [
    None,
    True,
    0,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**200),
    -0.0,
    math.inf,
    "",
    "\ud800",
    "a\udfffb",
    {"\ud800": "\udc00", "ok": 1},
    b"\x00\xff",
    bytearray(b"ab"),
    [bytearray(b"x"), {"inner": bytearray()}],
    (1, (2, (3,))),
    frozenset({(1, frozenset({2, (3, "x")}))}),
    {1: "int key", (1, 2): "tuple key", None: 0, Color.RED: "enum key"},
    {True: 1, 1.5: 2},
    set(),
    dt.datetime(2024, 3, 31, 2, 30),
    dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=dt.timezone(dt.timedelta(hours=-5), "EST")),
    dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris")),
    dt.date(1, 1, 1),
    dt.time(23, 59, 59, 999999, tzinfo=dt.UTC),
    dt.timedelta(days=-3, microseconds=7),
    uuid.UUID(int=2**128 - 1),
    Decimal("-1.50E+3"),
    Decimal("-0"),
    Decimal("sNaN12"),
    Color.BLUE,
    Level.HIGH,
    Perm.R | Perm.W,
    make_item("x", 2, 99),
    Box(Box(frozenset({1}))),
    Pair(1),
    Profile(name="p", when=dt.datetime(2020, 1, 1), note={"extra": (1,)}),
    Profile(name="parsed", when="2024-01-01T00:00:00+02:00"),  # pydantic's own TzInfo
    Send("node", {"item": (1, 2)}),
    Command(update={"a": 1}, goto=[Send("x", 1), "y"], resume=Interrupt("v", "id")),
    [[[[[[[[[[[[[]]]]]]]]]]]]],
]


@pytest.mark.parametrize("value", EXAMPLES, ids=lambda v: type(v).__name__)
def test_examples_round_trip_exactly(value: Any) -> None:
    assert same(round_trip(value), value)


def test_init_false_field_is_restored_and_post_init_does_not_rerun() -> None:
    item = make_item("ab", 1, derived=42)
    back = round_trip(item)
    assert back.derived == 42  # __post_init__ would have made it 3


def test_pydantic_fields_set_and_private_state_survive() -> None:
    profile = Profile(name="p")
    profile._secret = 7
    back = round_trip(profile)
    assert back == profile and back._secret == 7
    assert back.model_fields_set == {"name"}
    assert back.model_dump(exclude_unset=True) == {"name": "p"}


def test_plain_values_are_plain_msgpack_from_the_c_encoder() -> None:
    value = {f"k{i}": [i, "v", 1.5, None, True, b"x"] for i in range(20)}
    codec, blob = SERDE.dumps(value)
    assert codec == MSGPACK
    assert blob[:-4] == ormsgpack.packb(value)
    assert ormsgpack.unpackb(blob) == value  # plain msgpack readers ignore the checksum


def test_deep_but_bounded_nesting_round_trips() -> None:
    value: Any = "leaf"
    for i in range(150):
        value = (value,) if i % 2 else [value, {"k": i}]
    assert same(round_trip(value), value)


# --- encode-time failures ----------------------------------------------------------


def _lambda_value() -> Any:
    return lambda: 1


@pytest.mark.parametrize(
    ("value", "path", "type_name"),
    [
        (_lambda_value(), "items", "function"),
        ([1, 2, 3, Holder(payload=Foo())], "items[3].payload", "Foo"),
        ({"a": [{"b": {Foo()}}]}, "items['a'][0]['b']{", "Foo"),
        ({(1, 2): io.StringIO()}, "items[(1, 2)]", "StringIO"),
        ({Foo(): 1}, "items<key ", "Foo"),
        (memoryview(b"x"), "items", "memoryview"),
        (collections.OrderedDict(a=1), "items", "OrderedDict"),
        ([Stray()], "items[0]", "Stray"),
        (Box(dt.datetime(2020, 1, 1, tzinfo=dt.tzinfo())), "items.content", "tzinfo"),
        (Profile(name="p", note=Foo()), "items.note", "Foo"),
    ],
)
def test_unsupported_value_fails_at_encode_naming_key_path_and_type(
    value: Any, path: str, type_name: str
) -> None:
    with pytest.raises(SerializationError) as info:
        SERDE.dumps(value, key="items")
    message = str(info.value)
    assert "state key 'items'" in message
    assert f"at {path}" in message
    assert type_name in message
    assert info.value.key == "items"
    assert info.value.type_name is not None and type_name in info.value.type_name


def test_example_message_reads_well() -> None:
    pattern = (
        r"^cannot serialize state key 'items' at items\[3\]\.payload: type '.*Foo' has no codec$"
    )
    with pytest.raises(SerializationError, match=pattern):
        SERDE.dumps([1, 2, 3, Holder(payload=Foo())], key="items")


def test_class_off_the_allowlist_fails_at_encode_not_at_load() -> None:
    with pytest.raises(SerializationError, match="not on the serializer's allowlist"):
        Serializer().dumps({"x": Item("a")}, key="x")
    assert same(round_trip(Item("a"), Serializer().with_allowlist([Item])), Item("a"))


def test_too_deep_value_fails_at_encode() -> None:
    value: Any = []
    for _ in range(300):
        value = [value]
    with pytest.raises(SerializationError, match="nested more than"):
        SERDE.dumps(value, key="deep")


# --- decode-time failures ----------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([MSGPACK, MSGPACK_ZLIB]), st.booleans())
def test_random_bytes_fail_closed(data: bytes, codec: str, sealed: bool) -> None:
    if sealed:  # get past the checksum: what a writer who recomputes it can store
        data = seal(data)
        if codec == MSGPACK_ZLIB:
            data = zlib.compress(data)
    decode_or_corrupt(codec, data)
    assert CANARY_HITS == []


@big_repr_ok
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.data())
def test_mutated_blobs_fail_closed(value: Any, data: st.DataObject) -> None:
    body = SERDE.dumps(value)[1][:-4]
    kind = data.draw(st.sampled_from(["flip", "truncate", "splice"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(body) - 1))
        bad = body[:i] + bytes([body[i] ^ (1 << data.draw(st.integers(0, 7)))]) + body[i + 1 :]
    elif kind == "truncate":
        bad = body[: data.draw(st.integers(0, len(body) - 1))]
    else:
        i = data.draw(st.integers(0, len(body)))
        bad = body[:i] + data.draw(st.binary(min_size=1, max_size=8)) + body[i:]
    # Without a valid checksum every change is caught; with one, the decoder must cope.
    assert not decode_or_corrupt(MSGPACK, bad + seal(body)[-4:])
    decode_or_corrupt(MSGPACK, seal(bad))
    assert CANARY_HITS == []


def test_ten_thousand_tampered_blobs_fail_closed(canary: Path) -> None:
    rng = random.Random(20260615)
    corpus = [SERDE.dumps(v)[1][:-4] for v in EXAMPLES if v is not None]
    silent = 0
    for _ in range(10_000):
        original = rng.choice(corpus)
        body = bytearray(original)
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            if op < 0.5 and body:
                body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
            elif op < 0.75 and body:
                del body[rng.randrange(len(body)) :]
            else:
                at = rng.randrange(len(body) + 1)
                body[at:at] = rng.randbytes(rng.randint(1, 4))
        if bytes(body) != original:  # corruption under the old checksum: always caught
            assert not decode_or_corrupt(MSGPACK, bytes(body) + seal(original)[-4:])
        silent += decode_or_corrupt(MSGPACK, seal(bytes(body)))  # tampering: must cope
    assert_no_canary(canary)
    assert silent < 5_000  # most tampering is caught even past the checksum


@pytest.mark.parametrize("name", ["os:system", "subprocess:Popen", "builtins:eval"])
@pytest.mark.parametrize("tag", sorted(CLASS_TAGS))
def test_forged_class_names_are_refused(tag: int, name: str, canary: Path) -> None:
    blob = forged(tag, name, ["touch", str(canary)])
    with pytest.raises(CheckpointCorruptError, match=f"class '{name}' is not on the") as info:
        SERDE.loads(MSGPACK, blob, key="chan", thread_id="th-1")
    assert info.value.key == "chan" and "'chan'" in str(info.value)
    assert_no_canary(canary)


def test_real_class_off_the_allowlist_is_refused_without_running_its_code(
    canary: Path,
) -> None:
    writer = Serializer(allowlist=[Canary, CanaryEnum])
    blobs = [writer.dumps(Canary(1))[1], writer.dumps([CanaryEnum.A])[1]]
    CANARY_HITS.clear()  # constructing the value above ran __new__/__post_init__
    canary.unlink(missing_ok=True)
    for blob in blobs:
        with pytest.raises(CheckpointCorruptError, match="Canary.*not on the.*allowlist"):
            SERDE.loads(MSGPACK, blob, key="chan", thread_id="th-1")
    assert_no_canary(canary)


def test_wrong_kind_tag_for_an_allowed_class_is_refused() -> None:
    name = f"{Item.__module__}:{Item.__qualname__}"
    with pytest.raises(CheckpointCorruptError, match="wrong kind"):
        SERDE.loads(MSGPACK, forged(ENUM, name, 1), key="k")
    with pytest.raises(CheckpointCorruptError, match="no field"):
        SERDE.loads(MSGPACK, forged(DATACLASS, name, {"name": "a", "evil": 1}), key="k")


def test_pathological_nesting_is_corrupt_not_recursion_error() -> None:
    native = seal(b"\x91" * 100_000 + b"\xc0")
    ext = ormsgpack.packb(None)
    for _ in range(10_000):
        ext = ormsgpack.packb(ormsgpack.Ext(TUPLE, b"\x91" + ext))
    for blob in (native, seal(ext)):
        with pytest.raises(CheckpointCorruptError, match="chan"):
            SERDE.loads(MSGPACK, blob, key="chan")


def test_codec_names_are_never_second_guessed() -> None:
    codec, blob = SERDE.dumps({"text": "abc" * 10_000})
    assert codec == MSGPACK_ZLIB
    plain = SERDE.dumps({"a": 1})[1]
    for wrong_codec, data in [(MSGPACK, blob), (MSGPACK_ZLIB, plain), ("json", plain)]:
        with pytest.raises(CheckpointCorruptError):
            SERDE.loads(wrong_codec, data, key="k")
    with pytest.raises(CheckpointCorruptError, match="expected bytes"):
        SERDE.loads(MSGPACK, None, key="k")  # type: ignore[arg-type]


def test_pickle_is_refused_unless_chosen_explicitly(canary: Path) -> None:
    class Exploit:
        def __reduce__(self) -> Any:
            return (Path.write_text, (canary, "pwned"))

    payload = pickle.dumps(Exploit())
    with pytest.raises(CheckpointCorruptError, match="pickle"):
        SERDE.loads("pickle", payload, key="k")
    assert_no_canary(canary)

    opt_in = PickleSerializer()
    codec, blob = opt_in.dumps(collections.OrderedDict(a=range(3)))
    assert codec == "pickle"
    assert opt_in.loads(codec, blob) == collections.OrderedDict(a=range(3))
    assert same(opt_in.loads(*SERDE.dumps((1, "\ud800"))), (1, "\ud800"))
    assert isinstance(opt_in.with_allowlist([Item]), PickleSerializer)
    with pytest.raises(CheckpointCorruptError, match="pickle failed"):
        opt_in.loads("pickle", payload[:-3], key="k")


# --- compression -------------------------------------------------------------------


def test_large_values_are_compressed_only_when_it_helps() -> None:
    big = {"log": [f"step {i % 10} done" for i in range(5_000)]}
    codec, blob = SERDE.dumps(big)
    assert codec == MSGPACK_ZLIB and len(blob) < len(ormsgpack.packb(big)) // 4
    assert SERDE.loads(codec, blob) == big
    noise = random.Random(1).randbytes(40_000)
    assert SERDE.dumps(noise)[0] == MSGPACK
    small = Serializer(compress_threshold=8).dumps("a" * 100)
    assert small[0] == MSGPACK_ZLIB and Serializer().loads(*small) == "a" * 100


def test_zlib_bombs_and_broken_streams_are_corrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    codec, blob = SERDE.dumps("z" * 100_000)
    monkeypatch.setattr(serde_mod, "MAX_DECOMPRESSED_BYTES", 10_000)
    with pytest.raises(CheckpointCorruptError, match="inflates beyond"):
        SERDE.loads(codec, blob, key="k")
    monkeypatch.undo()
    for bad in (blob[:-10], blob + b"junk", blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]):
        with pytest.raises(CheckpointCorruptError):
            SERDE.loads(codec, bad, key="k")


# --- allowlist_from_schema -----------------------------------------------------------


class Shade(enum.Enum):
    DARK = 1


@dataclass
class Leaf:
    shade: Shade


class Point(NamedTuple):
    x: int
    leaf: Leaf | None = None


@dataclass
class Node:
    value: int
    children: list[Node] = field(default_factory=list)


class Doc(pydantic.BaseModel):
    points: dict[str, Point] = {}


class Sub(TypedDict):
    doc: Doc


class GraphState(TypedDict):
    items: Annotated[list[Item], operator.add]
    maybe: Optional[Profile]  # noqa: UP045 - the old spelling must work too
    by_id: NotRequired[dict[str, Sequence[Node]]]
    sub: Sub
    mode: Literal["a", "b"]
    callback: Callable[[Canary], None]
    kind: type[Canary]


@dataclass
class DataState:
    box: tuple[Box, ...]
    level: Level = Level.LOW


class ModelState(pydantic.BaseModel):
    pair: Pair | None = None
    color: frozenset[Color] = frozenset()


def test_allowlist_from_schema_finds_nested_classes() -> None:
    found = allowlist_from_schema(GraphState)
    assert found == {Item, Profile, Node, Doc, Point, Leaf, Shade}
    assert allowlist_from_schema(DataState) == {DataState, Box, Level}
    assert allowlist_from_schema(ModelState, None) == {ModelState, Pair, Color}


def test_schema_allowlist_round_trips_state() -> None:
    serde = Serializer(allowlist=allowlist_from_schema(GraphState))
    state = {"by_id": {"a": [Node(1, [Node(2)])]}, "sub": {"doc": Doc(points={"p": Point(1)})}}
    assert same(round_trip(state, serde), state)


def test_pydantic_is_not_imported_by_the_serializer() -> None:
    code = "import sys, trellis.persist.serde; assert 'pydantic' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- many blobs at once (delta chains) -------------------------------------------------


@given(
    st.lists(
        st.lists(
            st.one_of(
                st.none(),
                st.integers(),
                st.text(max_size=5),
                st.binary(max_size=5),
                st.tuples(st.integers()),
                st.frozensets(st.integers(), max_size=2),
            ),
            max_size=4,
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_loads_many_equals_loads_of_each(parts: list[list[Any]], big: bool) -> None:
    serde = Serializer(compress_threshold=64 if big else 16 * 1024)
    blobs = [serde.dumps(part) for part in parts]
    if big:  # some compressed blobs in the chain take the one-by-one path
        blobs.append(serde.dumps(["x" * 200]))
        parts = [*parts, ["x" * 200]]
    assert serde.loads_many(blobs) == [serde.loads(c, d) for c, d in blobs] == parts


def test_loads_many_names_the_corrupt_blob_and_reads_each_as_loads_would() -> None:
    serde = Serializer()
    blobs = [serde.dumps([i]) for i in range(20)]
    flipped = bytearray(blobs[7][1])
    flipped[0] ^= 0xFF
    with pytest.raises(CheckpointCorruptError, match="checksum"):
        serde.loads_many([*blobs[:7], (blobs[7][0], bytes(flipped)), *blobs[8:]], key="log")
    # Two values under one valid checksum must not shift the later items: each
    # blob reads as it would alone (its first value, as msgpack readers do).
    body = ormsgpack.packb([1]) + ormsgpack.packb([2])
    sneaky = ("msgpack", body + zlib.crc32(body).to_bytes(4, "big"))
    assert serde.loads_many([blobs[0], sneaky, blobs[1]]) == [[0], [1], [1]]
