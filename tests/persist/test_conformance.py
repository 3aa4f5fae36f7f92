"""The Checkpointer contract, checked on every backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import operator
import threading
import uuid
from decimal import Decimal
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.persist.conftest import History
from typing_extensions import TypedDict

from trellis import START, Command, StateGraph, interrupt
from trellis.errors import (
    CheckpointCorruptError,
    CheckpointNotFoundError,
    ConcurrentUpdateError,
    InvalidUpdateError,
    SerializationError,
)
from trellis.persist.base import PendingWrite, Put
from trellis.persist.storage import SKIP_SPAN


@dataclasses.dataclass
class Point:
    x: int
    y: int


# --- round trips -----------------------------------------------------------------------


def test_values_metadata_and_pending_round_trip(saver: Any) -> None:
    h = History(saver)
    h.put(
        set={
            "n": 1,
            "text": "héllo \u2603",
            "nested": {"a": [1, 2.5, None, True], "b": {"c": b"\x00\x01"}},
            "when": dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
            "pair": (1, "two"),
            "tags": {"x", "y"},
            "money": Decimal("1.10"),
            "id": uuid.UUID(int=7),
            "big": "z" * 100_000,  # compressed by the serializer
        },
        metadata={"source": "input", "step": -1, "parents": {}, "user": "ünï"},
    )
    h.put(set={"n": 2})
    h.check(saver.get_tuple(h.thread_id))
    first = next(iter(h.checkpoints))
    h.check(saver.get_tuple(h.thread_id, first), first)


def test_metadata_numbers_come_back_as_given(saver: Any) -> None:
    """Floats written with an exponent stay floats (PostgreSQL's jsonb keeps digits,
    not spelling: 1e+16 would read back as an int), strings that look like them stay."""
    h = History(saver)
    metadata = {
        "big": 1e16,
        "huge": -1.5e300,
        "tiny": 1.5e-7,
        "plain": 0.1,
        "int": 10**16,
        "text": 'q"1e+5',
        "nested": [{"x": 2e20}],
    }
    cid = h.put(metadata=metadata)
    got = saver.get_tuple(h.thread_id, cid).metadata
    assert {k: (v, type(v)) for k, v in got.items()} == {
        k: (v, type(v)) for k, v in metadata.items()
    }


def test_allowlisted_dataclass_needs_the_allowlist(saver: Any) -> None:
    allowed = saver.with_allowlist([Point])
    h = History(allowed)
    h.put(set={"p": Point(1, 2)})
    h.check(allowed.get_tuple(h.thread_id))
    with pytest.raises(SerializationError):
        History(saver).put(set={"p": Point(1, 2)})


def test_small_values_outlive_the_checkpoint_that_wrote_them(backend: Any) -> None:
    """Each record holds its small values itself: they survive the pruning of their
    writer, a fork, a fresh saver (nothing cached) and growing past inline size."""
    saver = backend.make()
    h = History(saver)
    h.put(set={"q": "ship it?", "doc": "x" * 500, "n": 0})
    for i in range(1, 5):
        h.put(set={"n": i})
    assert saver.prune(keep_last=2) == 3
    h.check(saver.get_tuple(h.thread_id))
    parent = h.checkpoints[h.head or ""].parent_id
    h.saver = saver = backend.make(fresh=True) if backend.kind != "memory" else saver
    fork = h.put(parent=parent, set={"n": 99})
    grown = h.put(set={"q": "x" * 300})
    shrunk = h.put(set={"q": "ok"})
    for cid in (fork, grown, shrunk):
        h.check(saver.get_tuple(h.thread_id, cid), cid)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_small_values_write_no_blob_rows(backend: Any) -> None:
    h = History(backend.make())
    h.put(set={"q": "ship it?", "n": 0, "doc": "x" * 500}, append={"log": ["a"]})
    h.put(set={"n": 1})
    assert backend.execute("SELECT channel FROM trellis_blobs ORDER BY 1") == [("doc",), ("log",)]
    h.check(h.saver.get_tuple(h.thread_id))


def test_appends_reconstruct_at_every_step(saver: Any) -> None:
    h = History(saver)
    ids = [h.put(append={"log": [f"item-{i}" * (1 + i % 7)]}, set={"i": i}) for i in range(120)]
    for cid in ids[::7] + ids[-3:]:
        h.check(saver.get_tuple(h.thread_id, cid), cid)
    h.check(saver.get_tuple(h.thread_id))
    assert len(saver.get_tuple(h.thread_id).checkpoint.values["log"]) == 120


def test_two_forks_of_one_parent_read_back_their_own_items(saver: Any) -> None:
    h = History(saver)
    for i in range(10):
        h.put(append={"log": [f"base-{i}"]})
    parent = h.head
    a = [h.put(append={"log": [f"a-{i}"]}) for i in range(6)]
    b = [h.put(parent=parent if i == 0 else True, append={"log": [f"b-{i}"]}) for i in range(6)]
    for cid in a + b:
        h.check(saver.get_tuple(h.thread_id, cid), cid)
    last_b = saver.get_tuple(h.thread_id).checkpoint.values["log"]
    assert last_b[-6:] == [f"b-{i}" for i in range(6)] and "a-0" not in last_b


def test_forks_across_skip_links_read_back_their_own_items(backend: Any) -> None:
    """Appends past two skip boundaries, a fork in the middle of a span that then
    crosses one, and a fresh saver (nothing cached) continuing a chain."""
    saver = backend.make()
    h = History(saver)
    ids = [h.put(append={"log": [f"a{i}"]}, set={"i": i}) for i in range(2 * SKIP_SPAN + 5)]
    mid = ids[SKIP_SPAN // 2]
    fork = [
        h.put(parent=mid if i == 0 else True, append={"log": [f"b{i}"]}) for i in range(SKIP_SPAN)
    ]
    h.saver = saver = backend.make(fresh=True) if backend.kind != "memory" else saver
    more = [h.put(append={"log": [f"c{i}"]}) for i in range(3)]
    for cid in ids[::5] + ids[-3:] + fork + more:
        h.check(saver.get_tuple(h.thread_id, cid), cid)
    assert saver.get_tuple(h.thread_id).checkpoint.values["log"][-4:] == ["b31", "c0", "c1", "c2"]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_chain_written_before_item_counts_continues_with_a_snapshot(backend: Any) -> None:
    h = History(backend.make())
    for i in range(5):
        h.put(append={"log": [i]})
    backend.execute("UPDATE trellis_blobs SET items = NULL")  # as schema versions before
    h.saver = backend.make()  # a cold cache: the chain state is read from the rows
    first, second = h.put(append={"log": [5]}), h.put(append={"log": [6]})
    kinds = backend.execute(
        "SELECT version, kind FROM trellis_blobs WHERE version IN (?, ?)", (first, second)
    )
    assert sorted(kinds) == sorted([(first, "full"), (second, "delta")])
    h.check(h.saver.get_tuple(h.thread_id))


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_delta_links_that_loop_are_corrupt_not_a_hang(backend: Any) -> None:
    h = History(backend.make())
    h.put(append={"log": ["a"]})
    h.put(append={"log": ["b"]})
    h.put(append={"log": ["c"]})
    backend.execute("UPDATE trellis_blobs SET base_version = version, kind = 'delta'")
    with pytest.raises(CheckpointCorruptError, match="'log'"):
        h.saver.get_tuple(h.thread_id)


def test_a_channel_replaced_after_appends_reads_the_replacement(saver: Any) -> None:
    h = History(saver)
    for i in range(5):
        h.put(append={"log": [i]})
    h.put(set={"log": ["reset"]})
    h.put(append={"log": ["after"]})
    h.check(saver.get_tuple(h.thread_id))


# --- heads, ids, namespaces ------------------------------------------------------------


def test_unknown_thread_is_none_and_unknown_id_raises(saver: Any) -> None:
    assert saver.get_tuple("no-such-thread") is None
    h = History(saver)
    h.put(set={"n": 1})
    with pytest.raises(CheckpointNotFoundError):
        saver.get_tuple(h.thread_id, "f" * 32)


def test_head_is_the_latest_put_even_after_a_fork(saver: Any) -> None:
    h = History(saver)
    first = h.put(set={"n": 1})
    h.put(set={"n": 2})
    fork = h.put(parent=first, set={"n": 3})
    got = saver.get_tuple(h.thread_id)
    assert got.checkpoint.id == fork and got.checkpoint.values == {"n": 3}
    assert got.checkpoint.parent_id == first


def test_namespaces_are_separate_threads(saver: Any) -> None:
    root = History(saver)
    sub = History(saver, root.thread_id, ns="child:1")
    root.put(set={"n": 1})
    sub.put(set={"n": 100})
    sub.put(set={"n": 101})
    root.check(saver.get_tuple(root.thread_id))
    sub.check(saver.get_tuple(sub.thread_id, checkpoint_ns="child:1"))
    assert len(list(saver.list(root.thread_id))) == 1
    assert len(list(saver.list(root.thread_id, checkpoint_ns="child:1"))) == 2


# --- optimistic concurrency -----------------------------------------------------------


def _race(saver: Any, h: History, expected: str | None, n: int = 6) -> tuple[list[str], int]:
    checkpoints = [h.make(set={"n": i}, parent=expected) for i in range(n)]
    barrier = threading.Barrier(n)
    won: list[str] = []
    lost: list[BaseException] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            saver.put(h.thread_id, checkpoints[i], {"w": i}, expected_head=expected)
            won.append(checkpoints[i].id)
        except ConcurrentUpdateError as exc:
            lost.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, len(lost)


@pytest.mark.parametrize("existing", [False, True], ids=["new-thread", "existing-thread"])
def test_racing_writers_exactly_one_wins_and_losers_leave_nothing(
    saver: Any, existing: bool
) -> None:
    h = History(saver)
    parent = h.put(set={"n": 0}) if existing else None
    won, lost = _race(saver, h, parent)
    assert len(won) == 1 and lost == 5
    assert saver.get_tuple(h.thread_id).checkpoint.id == won[0]
    stored = [t.checkpoint.id for t in saver.list(h.thread_id)]
    assert stored == [won[0]] + ([parent] if parent else [])


def test_stale_expected_head_raises_and_writes_nothing(saver: Any) -> None:
    h = History(saver)
    first = h.put(append={"log": ["a"]})
    h.put(append={"log": ["b"]})
    stale = h.make(parent=first, append={"log": ["c"]})
    with pytest.raises(ConcurrentUpdateError):
        saver.put(
            h.thread_id,
            stale,
            {},
            expected_head=first,
            writes=[PendingWrite("t", "n", 0, "x", 1)],
        )
    with pytest.raises(CheckpointNotFoundError):
        saver.get_tuple(h.thread_id, stale.id)
    h.check(saver.get_tuple(h.thread_id))
    with pytest.raises(ConcurrentUpdateError):  # a brand-new thread must be expected empty
        saver.put(h.thread_id, h.make(set={"n": 1}), {}, expected_head=None)


def test_repeating_a_committed_put_is_harmless(saver: Any) -> None:
    h = History(saver)
    h.put(set={"n": 1})
    before = h.head
    ck = h.make(set={"n": 2})
    saver.put(h.thread_id, ck, {"s": 1}, expected_head=before)
    saver.put(h.thread_id, ck, {"s": 1}, expected_head=before)  # ack lost, retried
    assert [t.checkpoint.id for t in saver.list(h.thread_id)] == [ck.id, before]


# --- pending writes --------------------------------------------------------------------


def test_put_many_stores_a_chain_with_deltas_across_it(saver: Any) -> None:
    h = History(saver)
    h.put(set={"n": 0}, append={"log": ["a"]})
    first, second = h.put_many(
        {"append": {"log": ["b"]}}, {"set": {"n": 2}, "append": {"log": ["c"]}}
    )
    assert saver.get_tuple(h.thread_id).checkpoint.id == second
    h.check(saver.get_tuple(h.thread_id, first), first)
    h.check(saver.get_tuple(h.thread_id))
    assert saver.get_tuple(h.thread_id).checkpoint.values["log"] == ["a", "b", "c"]
    assert [t.checkpoint.id for t in saver.list(h.thread_id)][:2] == [second, first]
    h.put(append={"log": ["d"]})  # a later put builds on the chain's deltas
    assert saver.get_tuple(h.thread_id).checkpoint.values["log"] == ["a", "b", "c", "d"]


def test_put_many_is_all_or_nothing(saver: Any) -> None:
    h = History(saver)
    h.put(set={"n": 0})
    head = h.head
    with pytest.raises(SerializationError, match="bad"):
        h.put_many({"set": {"n": 1}}, {"set": {"bad": object()}})
    assert [t.checkpoint.id for t in saver.list(h.thread_id)] == [head]
    fresh = History(saver)
    with pytest.raises(SerializationError):
        fresh.put_many({"set": {"n": 1}}, {"set": {"bad": object()}})
    assert saver.get_tuple(fresh.thread_id) is None


def test_put_many_checks_the_head_and_a_retry_is_harmless(saver: Any) -> None:
    h = History(saver)
    h.put(set={"n": 0})
    stale = History(saver, h.thread_id)  # believes the thread is new
    with pytest.raises(ConcurrentUpdateError):
        stale.put_many({"set": {"n": 1}}, {"set": {"n": 2}})
    assert len(list(saver.list(h.thread_id))) == 1
    expected = h.head
    ids = h.put_many({"set": {"n": 1}}, {"set": {"n": 2}})
    puts = [Put(h.checkpoints[i], h.metadata[i]) for i in ids]
    saver.put_many(h.thread_id, puts, expected_head=expected)  # acknowledgement lost, retried
    assert [t.checkpoint.id for t in saver.list(h.thread_id)] == [*reversed(ids), expected]


def test_put_many_refuses_one_id_twice(saver: Any) -> None:
    h = History(saver)
    h.put(set={"n": 0})
    ck = h.make(set={"n": 1})
    twice = [Put(ck, {"source": "loop"}), Put(ck, {"source": "loop"})]
    with pytest.raises(ConcurrentUpdateError):
        saver.put_many(h.thread_id, twice, expected_head=h.head)
    assert [t.checkpoint.id for t in saver.list(h.thread_id)] == [h.head]


async def test_aput_many_matches_put_many(saver: Any) -> None:
    h = History(saver)
    ids = await h.put_many({"set": {"n": 1}}, {"append": {"log": ["x"]}}, asynchronous=True)
    h.check(await saver.aget_tuple(h.thread_id))
    h.check(saver.get_tuple(h.thread_id, ids[0]), ids[0])


# Only the SQL savers read a delta's base before their write transaction.
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_delta_whose_base_was_pruned_meanwhile_is_refused(backend: Any) -> None:
    saver = backend.make()
    h = History(saver)
    h.put(append={"log": ["x" * 200]})  # the anchor: the next append is a delta on it
    head = h.head
    # Another process prunes the base away between this saver's read and its write.
    backend.execute("DELETE FROM trellis_blobs WHERE version = ?", (head,))
    with pytest.raises(ConcurrentUpdateError, match="pruned meanwhile"):
        h.put(append={"log": ["y"]})
    assert backend.execute("SELECT id FROM trellis_checkpoints") == [(head,)]
    assert backend.execute("SELECT head_id FROM trellis_threads") == [(head,)]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_put_many_checks_every_stored_blob_its_deltas_link_to(backend: Any) -> None:
    h = History(backend.make())
    ids = [h.put(append={"log": [i]}) for i in range(2 * SKIP_SPAN - 1)]  # positions 0..62
    # Position 63 links to 62 (the head), 64 skips back to 32: two stored blobs of
    # one channel. Another process prunes the first away before the write.
    backend.execute("DELETE FROM trellis_blobs WHERE version = ?", (ids[-1],))
    with pytest.raises(ConcurrentUpdateError, match="pruned meanwhile"):
        h.put_many({"append": {"log": ["a"]}}, {"append": {"log": ["b"]}})
    assert backend.execute("SELECT head_id FROM trellis_threads") == [(ids[-1],)]


def test_put_writes_is_idempotent_and_ordered(saver: Any) -> None:
    h = History(saver)
    cid = h.put(set={"n": 1})
    saver.put_writes(
        h.thread_id,
        cid,
        [PendingWrite("task-b", "b", 0, "x", 1), PendingWrite("task-a", "a", 1, "y", [2])],
    )
    saver.put_writes(
        h.thread_id,
        cid,
        [
            PendingWrite("task-b", "b", 0, "x", "retried"),  # idx >= 0: first one stays
            PendingWrite("task-a", "a", 0, "x", {"z": 3}),
            PendingWrite("task-a", "a", -3, "__interrupt__", ["ask"]),
        ],
    )
    saver.put_writes(h.thread_id, cid, [PendingWrite("task-a", "a", -3, "__interrupt__", ["2"])])
    got = saver.get_tuple(h.thread_id).pending_writes
    assert [(w.task_id, w.idx, w.channel, w.value) for w in got] == [
        ("task-a", -3, "__interrupt__", ["2"]),  # idx < 0: upserted
        ("task-a", 0, "x", {"z": 3}),
        ("task-a", 1, "y", [2]),
        ("task-b", 0, "x", 1),
    ]
    assert got[0].task_name == "a"


def test_writes_passed_with_put_belong_to_the_new_checkpoint(saver: Any) -> None:
    h = History(saver)
    first = h.put(set={"n": 1})
    second = h.put(set={"n": 2}, writes=[PendingWrite("t", "node", -3, "__interrupt__", "why")])
    assert saver.get_tuple(h.thread_id, first).pending_writes == ()
    (w,) = saver.get_tuple(h.thread_id, second).pending_writes
    assert (w.task_id, w.task_name, w.idx, w.channel, w.value) == (
        "t",
        "node",
        -3,
        "__interrupt__",
        "why",
    )


def test_writes_for_an_unknown_checkpoint_raise(saver: Any) -> None:
    h = History(saver)
    h.put(set={"n": 1})
    with pytest.raises(CheckpointNotFoundError):
        saver.put_writes(h.thread_id, "0" * 32, [PendingWrite("t", "n", 0, "x", 1)])
    with pytest.raises(CheckpointNotFoundError):
        saver.put_writes("nobody", "0" * 32, [PendingWrite("t", "n", 0, "x", 1)])


# --- list ------------------------------------------------------------------------------


def test_list_is_newest_first_with_exclusive_before_and_limit(saver: Any) -> None:
    h = History(saver)
    ids = [h.put(append={"log": [i]}) for i in range(8)]
    listed = list(saver.list(h.thread_id))
    assert [t.checkpoint.id for t in listed] == ids[::-1]
    for t in listed:
        h.check(t, t.checkpoint.id)
    assert [t.checkpoint.id for t in saver.list(h.thread_id, before=ids[5])] == ids[4::-1]
    assert [t.checkpoint.id for t in saver.list(h.thread_id, before=ids[5], limit=2)] == [
        ids[4],
        ids[3],
    ]
    assert list(saver.list(h.thread_id, limit=0)) == []
    assert list(saver.list("nobody")) == []


def test_list_filters_on_metadata_values(saver: Any) -> None:
    h = History(saver)
    a = h.put(set={"n": 1}, metadata={"source": "input", "step": -1, "flag": True, "score": 1.0})
    b = h.put(
        set={"n": 2}, metadata={"source": "loop", "step": 0, "flag": 1, "who": "zoë", "score": 1}
    )
    c = h.put(
        set={"n": 3},
        metadata={"source": "loop", "step": 1, "nested": {"k": [1, 2.5]}, "big": 10**23},
    )

    def ids(**f: Any) -> list[str]:
        return [t.checkpoint.id for t in saver.list(h.thread_id, filter=f)]

    assert ids(source="loop") == [c, b]
    assert ids(source="loop", step=0) == [b]
    assert ids(source="loop", step=0.0) == [b]
    assert ids(flag=True) == [a]  # true and 1 are different JSON values
    assert ids(flag=1) == [b]
    assert ids(flag=1.0) == [b]
    assert ids(score=1) == ids(score=1.0) == [b, a]  # numbers match by value
    assert ids(score=True) == []
    assert ids(step=-1.0, score=1) == [a]
    assert ids(who="zoë") == [b]
    assert ids(nested={"k": [1, 2.5]}) == [c]
    assert ids(nested={"k": [1.0, 2.50]}) == [c]
    assert ids(nested={"k": [True, 2.5]}) == []
    assert ids(nested={"k": [1, 2.5, 3]}) == ids(nested={"k": [2.5]}) == []
    # As jsonb compares them: the decimals written, not the floats (1e23 < 10**23).
    assert ids(big=1e23) == ids(big=10**23) == [c]
    assert ids(source="nope") == []
    assert ids(missing=None) == []
    assert [
        t.checkpoint.id for t in saver.list(h.thread_id, filter={"source": "loop"}, limit=1)
    ] == [c]


_BAD_KEY = st.text(min_size=1, max_size=80).filter(
    lambda k: (
        not (
            k.isascii()
            and len(k) <= 64
            and (k[0].isalpha() or k[0] == "_")
            and all(ch.isalnum() or ch == "_" for ch in k)
        )
    )
)
_GOOD_KEY = st.one_of(
    st.sampled_from(["source", "step", "note"]), st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
)
_SCALARS = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
_VALUES = st.one_of(
    st.sampled_from(["loop", "input", 1, 2, True, 1.0, 2.0, -0.0, 0.5, False, 0]),
    st.sampled_from([1e16, 10**16, 2**53 + 1, float(2**53 + 1), [1, "1"], [1.0, "1"], [True, "1"]]),
    st.sampled_from([{"k": [1, 2.5]}, {"k": [1.0, 2.50]}, {"k": [True, 2.5]}, {"k": [1, 2]}]),
    st.text(),
    st.sampled_from(["x') OR '1'='1", '" OR 1=1 --', "$.source", "loop'; DROP TABLE x;--"]),
    _SCALARS,
    st.recursive(
        _SCALARS,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("kj"), inner),
        max_leaves=4,
    ),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=_BAD_KEY, value=_VALUES)
def test_filter_keys_that_are_not_identifiers_are_rejected(
    saver: Any, key: str, value: Any
) -> None:
    with pytest.raises(InvalidUpdateError):
        list(saver.list("any-thread", filter={key: value}))


@pytest.fixture
def filter_history(saver: Any) -> History:
    h = History(saver)
    h.put(
        set={"n": 1},
        metadata={"source": "loop", "step": 1, "note": "x') OR '1'='1", "flag": True,
                  "score": 1, "nested": {"k": [1, 2.5]}, "big": 1e16},
    )  # fmt: skip
    h.put(
        set={"n": 2},
        metadata={"source": "input", "step": 2, "flag": 1, "score": 0.5,
                  "nested": {"k": [True, 2.5]}, "big": 2**53 + 1, "note": [1.0, "1"]},
    )  # fmt: skip
    h.put(
        set={"n": 3},
        metadata={"source": "loop", "step": 3.0, "flag": False, "score": -0.0,
                  "nested": [1, "1"], "big": 10**16},
    )  # fmt: skip
    return h


def _same_json(a: Any, b: Any) -> bool:
    """Python's == with JSON's booleans, which are not numbers (the filter rule, on
    numbers below 10**16, where the decimals floats are written as are exact)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.sampled_from(["score", "flag", "nested", "big", "note"]) | _GOOD_KEY, value=_VALUES)
def test_filters_match_exactly_the_equal_json_values(
    saver: Any, filter_history: History, key: str, value: Any
) -> None:
    h = filter_history
    got = [t.checkpoint.id for t in saver.list(h.thread_id, filter={key: value})]

    def matches(md: dict[str, Any]) -> bool:
        return key in md and _same_json(md[key], value)

    assert got == [cid for cid in reversed(h.checkpoints) if matches(h.metadata[cid])]


def test_injection_in_filter_values_matches_literally(saver: Any, filter_history: History) -> None:
    h = filter_history
    got = list(saver.list(h.thread_id, filter={"note": "x') OR '1'='1"}))
    assert [t.metadata["step"] for t in got] == [1]


# --- deletion and retention ------------------------------------------------------------


def test_delete_thread_removes_every_namespace_and_nothing_else(saver: Any) -> None:
    gone, kept = History(saver), History(saver)
    sub = History(saver, gone.thread_id, ns="sub")
    for h in (gone, kept, sub):
        cid = h.put(append={"log": ["x"]})
        saver.put_writes(h.thread_id, cid, [PendingWrite("t", "n", 0, "x", 1)], checkpoint_ns=h.ns)
    saver.delete_thread(gone.thread_id)
    assert saver.get_tuple(gone.thread_id) is None
    assert saver.get_tuple(gone.thread_id, checkpoint_ns="sub") is None
    kept.check(saver.get_tuple(kept.thread_id))
    again = History(saver, gone.thread_id)  # the id is free to start over
    again.put(set={"n": 1})
    again.check(saver.get_tuple(gone.thread_id))


def test_threads_lists_newest_first(saver: Any) -> None:
    hs = [History(saver) for _ in range(3)]
    for i, h in enumerate(hs):
        for j in range(i + 1):
            h.put(set={"n": j}, created_at=1000.0 + 10 * i + j)
    infos = saver.threads()
    assert [t.thread_id for t in infos] == [h.thread_id for h in reversed(hs)]
    assert [t.checkpoints for t in infos] == [3, 2, 1]
    assert infos[0].head_id == hs[2].head and infos[0].updated_at == pytest.approx(1022.0)
    assert len(saver.threads(limit=2)) == 2


def test_prune_keep_last_keeps_what_the_survivors_need(saver: Any) -> None:
    h, other = History(saver), History(saver)
    ids = [h.put(append={"log": [f"{i}" * 30]}, set={"i": i}) for i in range(40)]
    other.put(set={"n": 1})
    assert saver.prune(keep_last=5) == 35
    assert [t.checkpoint.id for t in saver.list(h.thread_id)] == ids[:-6:-1]
    for cid in ids[-5:]:
        h.check(saver.get_tuple(h.thread_id, cid), cid)
    with pytest.raises(CheckpointNotFoundError):
        saver.get_tuple(h.thread_id, ids[0])
    other.check(saver.get_tuple(other.thread_id))
    h.put(append={"log": ["after"]})  # appending on a pruned history still works
    h.check(saver.get_tuple(h.thread_id))
    assert saver.prune(keep_last=5) == 1


def test_an_edit_of_a_checkpoint_pruned_meanwhile_is_refused(saver: Any) -> None:
    """A fork or update_state of an older checkpoint reads it, then writes a child that
    copies its small values and shares its blobs: if a prune removed it in between,
    the write must fail whole rather than leave a head that cannot be read."""
    h = History(saver)
    ids = [h.put(set={"i": i, "note": f"{i}" * 300}, append={"log": [i]}) for i in range(5)]
    old = h.checkpoints[ids[1]]
    assert saver.prune(keep_last=1) == 3  # another process, after the read of ``old``
    with pytest.raises(ConcurrentUpdateError, match=f"{old.id!r}.*pruned meanwhile"):
        h.put(parent=old.id, set={"i": 99})
    assert [t.checkpoint.id for t in saver.list(h.thread_id)] == ids[:-3:-1]  # the head's parent
    h.check(saver.get_tuple(h.thread_id), ids[-1])
    h.put(set={"i": 100})  # the thread goes on from its head
    h.check(saver.get_tuple(h.thread_id))


def test_prune_ttl_spares_heads_and_threads_waiting_for_a_human(saver: Any) -> None:
    now = 10_000.0
    old, fresh, waiting = History(saver), History(saver), History(saver)
    for i in range(3):
        old.put(append={"log": [i]}, created_at=100.0 + i)
        fresh.put(append={"log": [i]}, created_at=100.0 + i)
        waiting.put(append={"log": [i]}, created_at=100.0 + i)
    fresh.put(append={"log": ["new"]}, created_at=now - 5)
    saver.put_writes(
        waiting.thread_id, waiting.head, [PendingWrite("t", "ask", -3, "__interrupt__", "ok?")]
    )
    removed = saver.prune(ttl=3600, now=now)
    assert removed == 3 + 2 + 1  # all of old; fresh's and waiting's old ones but the parents
    assert saver.get_tuple(old.thread_id) is None
    fresh.check(saver.get_tuple(fresh.thread_id))
    assert len(list(saver.list(fresh.thread_id))) == 2
    waiting.check(saver.get_tuple(waiting.thread_id))
    assert saver.get_tuple(waiting.thread_id).pending_writes[0].value == "ok?"


@pytest.mark.parametrize("policy", [{"keep_last": 1}, {"ttl": 3600, "now": 10_000.0}])
def test_prune_keeps_the_parent_of_every_head(saver: Any, policy: dict[str, Any]) -> None:
    """``update_state`` reads the head's parent to tell which node wrote the head."""
    root = History(saver)
    sub = History(saver, root.thread_id, ns="child:1")
    for h in (root, sub):
        for i in range(4):
            h.put(append={"log": [i]}, set={"i": i}, created_at=100.0 + i)
    root.put(set={"fresh": True})  # the head is new: the thread does not expire whole
    parents = [h.checkpoints[h.head or ""].parent_id for h in (root, sub)]
    assert saver.prune(**policy) == 3 + 2
    for h, parent in zip((root, sub), parents, strict=True):
        listed = [t.checkpoint.id for t in saver.list(h.thread_id, checkpoint_ns=h.ns)]
        assert listed == [h.head, parent]
        h.check(saver.get_tuple(h.thread_id, checkpoint_ns=h.ns))
        h.check(saver.get_tuple(h.thread_id, parent, checkpoint_ns=h.ns), parent)
    assert saver.prune(**policy) == 0


class _Asking(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    answer: str


def _ask(state: _Asking) -> _Asking:
    return {"answer": interrupt("ok?"), "log": ["asked"]}


@pytest.mark.parametrize("policy", [{"keep_last": 1}, {"ttl": 60, "now": 4e9}])
def test_update_state_works_on_a_pruned_thread_waiting_in_interrupt(
    saver: Any, policy: dict[str, Any]
) -> None:
    builder = StateGraph(_Asking)
    builder.add_sequence(
        [("a", lambda s: {"log": ["a"]}), ("b", lambda s: {"log": ["b"]}), ("ask", _ask)]
    )
    builder.add_edge(START, "a")
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}"}}
    graph.invoke({"log": []}, config)
    assert saver.prune(**policy) > 0
    graph.update_state(config, {"log": ["edited"]})
    assert graph.get_state(config).next == ("ask",)  # still waiting, as before the prune
    assert graph.invoke(Command(resume="yes"), config) == {
        "log": ["a", "b", "edited", "asked"],
        "answer": "yes",
    }


def test_constructor_retention_settings_are_prune_defaults(backend: Any) -> None:
    saver = backend.make(keep_last=2)
    h = History(saver)
    for i in range(5):
        h.put(append={"log": [i]})
    assert saver.prune() == 3
    h.check(saver.get_tuple(h.thread_id))
    assert backend.make(fresh=True).prune() == 0  # no defaults: nothing to do


def test_prune_rejects_settings_that_would_delete_heads(saver: Any) -> None:
    with pytest.raises(ValueError):
        saver.prune(keep_last=0)


# --- failure isolation -----------------------------------------------------------------


@pytest.mark.parametrize("what", ["blobs", "state"])
def test_a_corrupt_thread_fails_alone(backend: Any, what: str) -> None:
    saver = backend.make()
    bad, good = History(saver), History(saver)
    for i in range(4):
        bad.put(append={"log": [i]}, set={"n": i})
        good.put(append={"log": [i]}, set={"n": i})
    backend.corrupt(saver, bad.thread_id, what)
    with pytest.raises(CheckpointCorruptError) as info:
        saver.get_tuple(bad.thread_id)
    assert info.value.thread_id == bad.thread_id
    with pytest.raises(CheckpointCorruptError):
        list(saver.list(bad.thread_id))
    good.check(saver.get_tuple(good.thread_id))
    assert len(list(saver.list(good.thread_id))) == 4
    good.put(append={"log": ["more"]})
    good.check(saver.get_tuple(good.thread_id))
    saver.prune(keep_last=1)  # a corrupt thread does not stop retention elsewhere
    good.check(saver.get_tuple(good.thread_id))


def test_unserializable_value_fails_at_put_naming_the_key(saver: Any) -> None:
    h = History(saver)
    h.put(set={"n": 1})
    with pytest.raises(SerializationError) as info:
        h.put(set={"n": 2, "bad": object()})
    assert info.value.key == "bad" and "bad" in str(info.value)
    with pytest.raises(SerializationError) as info:
        h.put(set={"n": 2}, metadata={"ok": 1, "when": object()})
    assert info.value.key == "when"
    with pytest.raises(SerializationError):
        h.put(set={"n": 2}, writes=[PendingWrite("t", "n", 0, "x", object())])
    with pytest.raises(SerializationError):
        saver.put_writes(h.thread_id, h.head, [PendingWrite("t", "n", 0, "w", object())])
    assert len(list(saver.list(h.thread_id))) == 1
    h.check(saver.get_tuple(h.thread_id))
    assert saver.get_tuple(h.thread_id).pending_writes == ()


def test_stored_history_is_not_mutated_by_later_changes(saver: Any) -> None:
    h = History(saver)
    items = [{"a": 1}]
    ck = h.make(set={"items": items})
    saver.put(h.thread_id, ck, {}, expected_head=None)
    items[0]["a"] = 999
    got = saver.get_tuple(h.thread_id)
    assert got.checkpoint.values["items"] == [{"a": 1}]
    got.checkpoint.values["items"].append("mutated")
    assert saver.get_tuple(h.thread_id).checkpoint.values["items"] == [{"a": 1}]


# --- async -----------------------------------------------------------------------------


async def test_async_methods_match_the_sync_ones(backend: Any) -> None:
    saver = backend.make()
    h = History(saver)
    try:
        for i in range(5):
            await h.aput(append={"log": [i]}, set={"n": i})
        await saver.aput_writes(h.thread_id, h.head, [PendingWrite("t", "n", 0, "x", 1)])
        got = await saver.aget_tuple(h.thread_id)
        h.check(got)
        assert got == saver.get_tuple(h.thread_id)
        alisted = [t async for t in saver.alist(h.thread_id, limit=3)]
        assert alisted == list(saver.list(h.thread_id, limit=3))
        assert await saver.aget_tuple("nobody") is None
        with pytest.raises(ConcurrentUpdateError):
            await saver.aput(h.thread_id, h.make(set={"n": 0}), {}, expected_head=None)
        await saver.adelete_thread(h.thread_id)
        assert await saver.aget_tuple(h.thread_id) is None
    finally:
        if hasattr(saver, "aclose"):
            await saver.aclose()


def test_errors_name_the_thread_and_its_namespace_alike_on_every_backend(saver: Any) -> None:
    h = History(saver, ns="review:1")
    h.put(set={"n": 0})
    stale = History(saver, h.thread_id, ns="review:1")  # believes the thread is new
    with pytest.raises(ConcurrentUpdateError, match=r"\(namespace 'review:1'\) already exists"):
        stale.put(set={"n": 1})
    with pytest.raises(ConcurrentUpdateError, match=r"the head is no longer 'old'"):
        h.put(set={"n": 2}, expected_head="old")
    missing = r"\(namespace 'review:1'\) has no checkpoint"
    with pytest.raises(CheckpointNotFoundError, match=missing):
        saver.get_tuple(h.thread_id, "nope", checkpoint_ns="review:1")


def test_a_filter_key_with_a_trailing_newline_is_rejected(saver: Any) -> None:
    # "$" in a regex also matches before a final newline; the key check must not.
    with pytest.raises(InvalidUpdateError):
        list(saver.list("any-thread", filter={"source\n": "loop"}))
