"""The backend-independent storage model: deltas, skip links, reconstruction, retention."""

from __future__ import annotations

import json
import math
import os
import signal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trellis.errors import CheckpointCorruptError, InvalidUpdateError, SerializationError
from trellis.persist.base import Checkpoint, new_checkpoint_id
from trellis.persist.memory import MemorySaver
from trellis.persist.serde import Serializer
from trellis.persist.storage import (
    DELTA,
    FULL,
    INLINE_MAX,
    SKIP_LEVELS,
    SKIP_SPAN,
    BlobRow,
    ChainState,
    build_tuple,
    canonical_json,
    chain_state,
    decode_state,
    encode_filter,
    encode_metadata,
    encode_put,
    exact_json,
    has_number,
    json_equal,
    json_text_equal,
    needed_blobs,
    prune_plan,
    reconstruct,
)

SERDE = Serializer()


def _links(steps: int) -> dict[int, int]:
    """Chain position -> the position its blob links to, over ``steps`` appends."""
    state = ChainState.start("0", 0, 0)
    positions = {"0": 0}
    links = {}
    for p in range(1, steps + 1):
        level, (link, _, _) = state.link()
        links[p] = positions[link]
        positions[str(p)] = p
        state = state.advance(str(p), level, p, p)
    return links


def test_skip_links_span_one_position_or_a_power_of_the_span() -> None:
    links = _links(3 * SKIP_SPAN**2)
    for p, to in links.items():
        level = next((j for j in range(SKIP_LEVELS, 0, -1) if p % SKIP_SPAN**j == 0), 0)
        assert p - to == SKIP_SPAN**level


def _hops(links: dict[int, int], p: int) -> int:
    hops = 0
    while p:
        p, hops = links[p], hops + 1
    return hops


def test_reading_any_position_follows_a_bounded_number_of_links() -> None:
    steps = 2 * SKIP_SPAN**2 + 100
    links = _links(steps)
    bound = (SKIP_SPAN - 1) * SKIP_LEVELS + steps // SKIP_SPAN**SKIP_LEVELS
    assert max(_hops(links, p) for p in range(1, steps + 1)) <= bound
    assert _hops(links, 1000) == 31 + 8  # 1000 = 31 * 32 + 8


def _checkpoint(parent: Checkpoint | None, **appends: list[Any]) -> Checkpoint:
    cid = new_checkpoint_id()
    values = dict(parent.values) if parent else {}
    versions = dict(parent.versions) if parent else {}
    for k, items in appends.items():
        values[k] = list(values.get(k, [])) + items
        versions[k] = cid
    return Checkpoint(cid, parent.id if parent else None, 0, 0.0, values, versions, appends)


def test_encode_put_writes_deltas_only_on_a_known_base() -> None:
    first = _checkpoint(None, log=["a" * 50])
    enc = encode_put(SERDE, first, {}, bases={})
    assert [b.kind for b in enc.blobs] == [FULL]
    second = _checkpoint(first, log=["b"])
    enc2 = encode_put(SERDE, second, {}, bases=enc.chains)
    (blob,) = enc2.blobs
    assert (blob.kind, blob.base_version, blob.anchor_version) == (DELTA, first.id, first.id)
    assert SERDE.loads(blob.codec, blob.data) == ["b"]
    assert (blob.deltas, blob.items) == (1, 2)
    assert encode_put(SERDE, second, {}, bases={}).blobs[0].kind == FULL


def test_a_skip_delta_repeats_the_items_since_the_blob_it_links_to() -> None:
    head = _checkpoint(None, log=[0])
    chains = encode_put(SERDE, head, {}, bases={}).chains
    blobs = []
    for i in range(1, SKIP_SPAN + 1):
        head = _checkpoint(head, log=[i])
        enc = encode_put(SERDE, head, {}, bases=chains)
        chains, blobs = enc.chains, blobs + enc.blobs
    skip = blobs[-1]
    assert skip.base_version == blobs[0].anchor_version  # back to the anchor
    assert SERDE.loads(skip.codec, skip.data) == list(range(1, SKIP_SPAN + 1))
    rows = {b.version: b for b in blobs}
    assert reconstruct(SERDE, "log", skip.version, rows | _anchor(blobs[0]), thread_id="t") == (
        list(range(SKIP_SPAN + 1))
    )


def _anchor(first_delta: BlobRow) -> dict[str, BlobRow]:
    codec, data = SERDE.dumps([0])
    anchor = first_delta.anchor_version or ""
    return {anchor: BlobRow("log", anchor, FULL, None, None, 0, 0, 0, codec, data, 1)}


def test_a_value_that_does_not_match_its_chain_gets_a_snapshot() -> None:
    first = _checkpoint(None, log=["a"])
    chains = encode_put(SERDE, first, {}, bases={}).chains
    second = _checkpoint(first, log=["b"])
    second.values["log"] = ["b"]  # not the parent's items plus the appended ones
    assert encode_put(SERDE, second, {}, bases=chains).blobs[0].kind == FULL


def test_chain_state_from_a_path_of_rows() -> None:
    def row(version: str, kind: str, position: int, items: int | None) -> BlobRow:
        return BlobRow("log", version, kind, None, None, position, 0, items or 0, "", b"", items)

    path = [row("v70", DELTA, 70, 70), row("v64", DELTA, 64, 64), row("v32", DELTA, 32, 32)]
    state = chain_state([*path, row("v0", FULL, 0, 0)])
    assert state is not None
    assert (state.version, state.position, state.items, state.anchor) == ("v70", 70, 70, "v0")
    assert [m[0] for m in state.marks] == ["v64", "v0"]
    assert chain_state([*path, row("v0", FULL, 0, None)]) is None  # written before items
    assert chain_state(path) is None  # no anchor: a broken chain


def test_a_value_needs_a_version_and_versions_may_lack_values() -> None:
    ck = Checkpoint("c1", None, 0, 0.0, {"a": 1}, {})
    with pytest.raises(InvalidUpdateError, match="'a'"):
        encode_put(SERDE, ck, {}, bases={})
    ck = Checkpoint("c1", None, 0, 0.0, {"a": 1}, {"a": "c1", "gone": "c0"})
    enc = encode_put(SERDE, ck, {}, bases={})
    state = decode_state(SERDE, enc.row.codec, enc.row.state, thread_id="t")
    assert state.versions == {"a": "c1", "gone": "c0"} and state.valued == {"a": "c1"}


def test_small_values_that_are_not_lists_live_in_the_record() -> None:
    big = "x" * INLINE_MAX
    values = {"n": 1, "q": "ship it?", "big": big, "log": ["a"], "gone": 0}
    first = Checkpoint("c1", None, 0, 0.0, values, dict.fromkeys(values, "c1"))
    enc = encode_put(SERDE, first, {}, bases={})
    assert sorted(b.channel for b in enc.blobs) == ["big", "log"]  # too big, or a list
    assert sorted(enc.inline) == ["gone", "n", "q"]
    values2 = {"n": 2, "q": "ship it?", "big": big, "log": ["a"]}  # "gone" emptied
    versions2 = {"n": "c2", "q": "c1", "big": "c1", "log": "c1", "gone": "c2"}
    second = Checkpoint("c2", "c1", 1, 0.0, values2, versions2)
    enc2 = encode_put(SERDE, second, {}, bases=enc.chains, inline=enc.inline)
    assert enc2.blobs == []
    assert enc2.inline == {"n": ("c2", *SERDE.dumps(2)), "q": enc.inline["q"]}
    back = build_tuple(SERDE, "t", "", enc2.row, enc.blobs, ())
    assert back.checkpoint.values == values2 and back.checkpoint.versions == versions2
    # Without the parent's record, a value it held inline has no row to be read from.
    orphan = encode_put(SERDE, second, {}, bases={})
    with pytest.raises(CheckpointCorruptError, match="'q'"):
        build_tuple(SERDE, "t", "", orphan.row, enc.blobs, ())


def test_a_serializer_of_the_callers_own_gets_no_inline_values() -> None:
    """The Serde protocol asks only dumps/loads of values: a JSON one cannot encode
    the bytes an inline value is, so its records hold none."""

    class JsonSerde:
        def dumps(self, value: object, *, key: str | None = None) -> tuple[str, bytes]:
            return "json", json.dumps(value).encode()

        def loads(self, codec: str, data: bytes, **kwargs: Any) -> Any:
            return json.loads(bytes(data))

    serde = JsonSerde()
    saver = MemorySaver(serde=serde)
    cid = new_checkpoint_id()
    values = {"n": 1, "msg": "hi"}
    ck = Checkpoint(cid, None, 0, 0.0, values, dict.fromkeys(values, cid), pending={"x": 1})
    assert encode_put(serde, ck, {}, bases={}).inline == {}
    saver.put("t", ck, {"source": "loop"}, expected_head=None)
    assert saver.get_tuple("t").checkpoint.values == values


def test_a_format_1_record_reads_every_value_from_blobs() -> None:
    codec, data = SERDE.dumps([1, ["c1", "c0"], {"n": 0, "gone": -2}, {"nodes": ["a"]}])
    state = decode_state(SERDE, codec, data, thread_id="t")
    assert state.versions == {"n": "c1", "gone": "c0"}
    assert state.inline == {} and state.stored == {"n": "c1"}
    assert state.pending == {"nodes": ["a"]}


@pytest.mark.parametrize(
    "inline",
    [{"other": [0, b"\x01"]}, {"n": [1, b"\x01"]}, {"n": [0, "text"]}],
    ids=["unvalued-channel", "unknown-codec", "not-bytes"],
)
def test_a_malformed_inline_value_is_corrupt(inline: dict[str, Any]) -> None:
    codec, data = SERDE.dumps([2, ["c1"], {"n": 0}, {}, ["msgpack"], inline])
    with pytest.raises(CheckpointCorruptError, match="malformed state"):
        decode_state(SERDE, codec, data, thread_id="t", checkpoint_id="c1")


def _rows(*specs: tuple[str, str, str | None, list[Any]]) -> dict[str, BlobRow]:
    out = {}
    for version, kind, base, items in specs:
        codec, data = SERDE.dumps(items)
        out[version] = BlobRow("log", version, kind, base, None, 0, 0, 0, codec, data, None)
    return out


def test_reconstruct_follows_base_links_and_ignores_other_forks() -> None:
    rows = _rows(
        ("v1", FULL, None, [1]),
        ("v2", DELTA, "v1", [2]),
        ("v3", DELTA, "v2", ["fork-a"]),
        ("v4", DELTA, "v2", ["fork-b"]),
    )
    assert reconstruct(SERDE, "log", "v3", rows, thread_id="t") == [1, 2, "fork-a"]
    assert reconstruct(SERDE, "log", "v4", rows, thread_id="t") == [1, 2, "fork-b"]


def test_reconstruct_fails_closed_on_a_broken_chain() -> None:
    rows = _rows(("v2", DELTA, "v1", [2]))
    with pytest.raises(CheckpointCorruptError, match="broken") as info:
        reconstruct(SERDE, "log", "v2", rows, thread_id="t9")
    assert info.value.thread_id == "t9" and info.value.key == "log"
    with pytest.raises(CheckpointCorruptError, match="missing"):
        reconstruct(SERDE, "log", "v7", rows, thread_id="t9")
    looped = _rows(("v2", DELTA, "v3", [2]), ("v3", DELTA, "v2", [3]))
    with pytest.raises(CheckpointCorruptError, match="broken"):
        reconstruct(SERDE, "log", "v3", looped, thread_id="t9")


def test_needed_blobs_keep_whole_chains() -> None:
    bases = {("log", "v1"): None, ("log", "v2"): "v1", ("log", "v3"): "v2", ("n", "v3"): None}
    keep = needed_blobs([{"log": "v3", "n": "v3"}], bases)
    assert keep == set(bases)
    assert needed_blobs([{"log": "v1"}], bases) == {("log", "v1")}


def test_prune_plan_keeps_heads_their_parents_and_the_newest() -> None:
    cps = [(f"c{i}", float(i)) for i in range(6)]
    assert sorted(prune_plan(cps, "c5", "c4", cutoff=-math.inf, keep_last=2)) == [
        "c0",
        "c1",
        "c2",
        "c3",
    ]
    assert sorted(prune_plan(cps, "c5", "c4", cutoff=-math.inf, keep_last=1)) == [
        "c0",
        "c1",
        "c2",
        "c3",
    ]
    assert sorted(prune_plan(cps, "c1", "c0", cutoff=3.0, keep_last=None)) == ["c2"]
    assert sorted(prune_plan(cps, "c5", "c1", cutoff=3.0, keep_last=None)) == ["c0", "c2"]
    assert prune_plan([("c0", 0.0)], "c0", None, cutoff=math.inf, keep_last=1) == []


def test_metadata_must_be_storable_json_and_errors_name_the_key() -> None:
    assert encode_metadata({"b": 1, "a": [True, None]}) == '{"a":[true,null],"b":1}'
    for bad in ({"x": object()}, {"x": math.nan}, {"x": "a\x00b"}, {"x": {"y": "\ud800"}}):
        with pytest.raises(SerializationError) as info:
            encode_metadata(bad)
        assert info.value.key == "x"


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=4,
)


@given(
    run_id=st.text(max_size=34) | st.just("dfbb24dbf47c4227be81939cf8815a78") | st.integers(),
    source=st.sampled_from(["input", "loop", "update", "fork", 'a"b', "l\u00f6op"]) | st.text(),
    step=st.integers() | st.booleans() | st.floats(allow_nan=False),
    parents=st.just({}) | _JSONISH,
)
def test_step_metadata_encodes_exactly_as_the_general_encoder(
    run_id: Any, source: Any, step: Any, parents: Any
) -> None:
    # The per-step metadata has a hand-written fast path; it must never differ.
    metadata = {"source": source, "step": step, "parents": parents, "run_id": run_id}
    try:
        expected = canonical_json(metadata)
        expected.encode("utf-8")
    except (TypeError, ValueError, UnicodeError):
        with pytest.raises(SerializationError):
            encode_metadata(metadata)
        return
    if "\\u0000" in expected:
        with pytest.raises(SerializationError):
            encode_metadata(metadata)
        return
    assert encode_metadata(metadata) == expected


def test_filters_that_can_never_match_are_recognised() -> None:
    assert encode_filter({"a": "\x00"}) is None
    assert encode_filter({"a": 1}) == [("a", "1")]
    with pytest.raises(InvalidUpdateError):
        encode_filter({"a": object()})
    with pytest.raises(InvalidUpdateError):
        encode_filter({"a b": 1})


def test_a_malformed_state_blob_is_corrupt() -> None:
    codec, data = SERDE.dumps([99, [], {}, {}])
    with pytest.raises(CheckpointCorruptError, match="thread 't': checkpoint 'c1' has a malformed"):
        decode_state(SERDE, codec, data, thread_id="t", checkpoint_id="c1")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=150), st.randoms(use_true_random=False))
def test_append_loops_store_linear_bytes(sizes: list[int], rnd: Any) -> None:
    """Stored blob bytes <= 3x the appended bytes (+ a constant), whatever the sizes."""
    saver = MemorySaver(serde=Serializer(compress_threshold=1 << 30))
    head: Checkpoint | None = None
    appended = 0
    for size in sizes:
        item = rnd.randbytes(size)
        ck = _checkpoint(head, log=[item])
        saver.put("t", ck, {}, expected_head=head.id if head else None)
        appended += len(SERDE.dumps([item])[1])
        head = ck
    ns = saver._data[("t", "")]
    stored = sum(len(b.data) for b in ns.blobs.values())
    assert stored <= 3 * appended + 64
    assert saver.get_tuple("t").checkpoint.values["log"] == head.values["log"]  # type: ignore[union-attr]


def test_a_long_append_loop_stays_linear_and_reads_few_rows() -> None:
    """Past the point where the old compaction rewrote the whole value every 256
    steps (quadratic growth): 3000 steps still store < 3x, and reading the head
    touches a bounded number of rows."""
    saver = MemorySaver(serde=Serializer(compress_threshold=1 << 30))
    head: Checkpoint | None = None
    appended = 0
    for i in range(3000):
        item = i.to_bytes(4, "big") * 8
        ck = _checkpoint(head, log=[item])
        saver.put("t", ck, {}, expected_head=head.id if head else None)
        appended += len(SERDE.dumps([item])[1])
        head = ck
    ns = saver._data[("t", "")]
    assert sum(len(b.data) for b in ns.blobs.values()) <= 3 * appended
    assert head is not None
    rows = saver._chain_rows(ns, {"log": head.id})
    assert len(rows) <= (SKIP_SPAN - 1) * SKIP_LEVELS + 3000 // SKIP_SPAN**SKIP_LEVELS + 1
    assert saver.get_tuple("t").checkpoint.values["log"] == head.values["log"]  # type: ignore[union-attr]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_its_own_ids_even_if_the_lock_was_held() -> None:
    from trellis.persist import base

    parent_id = new_checkpoint_id()
    read, write = os.pipe()
    with base._id_lock:  # as if another thread were inside new_checkpoint_id at the fork
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            signal.alarm(5)
            os.write(write, new_checkpoint_id().encode())
            os._exit(0)
    os.close(write)
    child_id = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    assert len(child_id) == 32, "the child hung on the lock it inherited"
    assert child_id[16:] != parent_id[16:]  # its own random half


def test_encoding_a_put_uses_a_serializer_subclass_codec_everywhere() -> None:
    class Tagged(Serializer):  # say, an encrypting serializer
        def dumps(self, value: object, *, key: str | None = None) -> tuple[str, bytes]:
            codec, data = super().dumps(value, key=key)
            return "tagged:" + codec, data

        def loads(self, codec: str, data: bytes, **kwargs: Any) -> Any:
            return super().loads(codec.removeprefix("tagged:"), data, **kwargs)

    serde = Tagged()
    cid = new_checkpoint_id()
    checkpoint = Checkpoint(cid, None, 0, 0.0, {"n": 1}, {"n": cid}, pending={"nodes": ["a"]})
    put = encode_put(serde, checkpoint, {"source": "loop"}, bases={})
    assert put.row.codec.startswith("tagged:")
    assert all(b.codec.startswith("tagged:") for b in put.blobs)
    blobs = [serde.dumps([i]) for i in range(3)]
    assert serde.loads_many(blobs) == [[0], [1], [2]]


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("1", "1.0", True),
        ("-0.0", "0", True),
        ("1e+16", "10000000000000000", True),
        ("9007199254740993", "9007199254740992.0", False),
        ("true", "1", False),
        ("false", "0.0", False),
        ("true", "true", True),
        ("null", "null", True),
        ('"1"', "1", False),
        ('[1, {"k": 2.50}]', '[1.0, {"k": 2.5}]', True),
        ("[1, 2]", "[2, 1]", False),
        ('{"a": 1}', '{"a": 1, "b": 1}', False),
        ("[true]", "[1]", False),
    ],
)
def test_filter_values_are_equal_as_jsonb_says(a: str, b: str, equal: bool) -> None:
    assert json_equal(exact_json(a), exact_json(b)) is equal
    assert json_text_equal(b, a) is equal
    assert json_text_equal(None, a) is False


def test_only_values_with_numbers_need_more_than_their_text() -> None:
    assert has_number(exact_json('{"k": [true, "1", null, 2.5]}'))
    assert not has_number(exact_json('{"k": [true, "1", null]}'))
