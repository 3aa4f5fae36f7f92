"""LangGraph's config-shaped checkpointer reads, on every backend.

Code written against LangGraph's savers calls ``saver.get_tuple(config)``,
``saver.list(config, before=config)``, ``saver.get(config)`` and reads
``tup.config``, ``tup.parent_config`` and ``checkpoint["channel_values"]``.
"""

from __future__ import annotations

import operator
from datetime import datetime
from typing import Annotated, Any, TypedDict

import pytest
from tests.persist.conftest import History

from trellis import END, START, StateGraph
from trellis.errors import InvalidConfigError


def _cfg(thread_id: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": thread_id}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _ids(tuples: Any) -> list[str]:
    return [t.checkpoint.id for t in tuples]


def _three(saver: Any) -> tuple[History, list[str]]:
    h = History(saver)
    ids = [
        h.put(set={"n": i}, append={"log": [i]}, metadata={"source": "loop", "step": i})
        for i in range(3)
    ]
    return h, ids


def test_get_tuple_and_get_take_a_config(saver: Any) -> None:
    h, ids = _three(saver)
    latest = saver.get_tuple(_cfg(h.thread_id))
    assert latest.checkpoint.id == ids[-1] == saver.get_tuple(h.thread_id).checkpoint.id
    h.check(latest)
    first = saver.get_tuple(_cfg(h.thread_id, ids[0]))
    h.check(first, ids[0])
    checkpoint = saver.get(_cfg(h.thread_id, ids[1]))
    assert checkpoint["id"] == ids[1]
    assert checkpoint["channel_values"] == {"n": 1, "log": [0, 1]}
    assert checkpoint["channel_versions"] == dict(h.checkpoints[ids[1]].versions)
    assert datetime.fromisoformat(checkpoint["ts"]).timestamp() == pytest.approx(
        checkpoint.created_at
    )
    with pytest.raises(KeyError, match="versions_seen.*channel_values"):
        checkpoint["versions_seen"]
    assert saver.get(_cfg("no-such-thread")) is None
    assert saver.get_tuple(_cfg("no-such-thread")) is None


def test_a_tuple_names_itself_and_its_parent_as_configs(saver: Any) -> None:
    h, ids = _three(saver)
    tup = saver.get_tuple(h.thread_id)
    assert tup.config == {
        "configurable": {"thread_id": h.thread_id, "checkpoint_ns": "", "checkpoint_id": ids[2]}
    }
    assert tup.parent_config["configurable"]["checkpoint_id"] == ids[1]
    assert saver.get_tuple(tup.parent_config).checkpoint.id == ids[1]
    assert saver.get_tuple(h.thread_id, ids[0]).parent_config is None


def test_list_takes_configs_for_the_thread_and_for_before(saver: Any) -> None:
    h, ids = _three(saver)
    newest_first = list(reversed(ids))
    assert _ids(saver.list(_cfg(h.thread_id))) == newest_first == _ids(saver.list(h.thread_id))
    assert _ids(saver.list(_cfg(h.thread_id), before=_cfg(h.thread_id, ids[2]))) == ids[1::-1]
    assert _ids(saver.list(_cfg(h.thread_id), limit=1)) == [ids[2]]
    assert _ids(saver.list(_cfg(h.thread_id), filter={"step": 1})) == [ids[1]]
    # A config naming a checkpoint lists that one alone, as LangGraph does.
    assert _ids(saver.list(_cfg(h.thread_id, ids[1]))) == [ids[1]]
    assert _ids(saver.list(_cfg(h.thread_id, ids[1]), filter={"step": 2})) == []
    assert _ids(saver.list(_cfg(h.thread_id, ids[1]), before=ids[1])) == []
    assert _ids(saver.list(_cfg("no-such-thread"))) == []


def test_list_of_none_lists_every_thread_newest_first(saver: Any) -> None:
    a, a_ids = _three(saver)
    b, b_ids = _three(saver)
    everything = _ids(saver.list(None))
    assert sorted(everything) == sorted(a_ids + b_ids)
    assert everything == sorted(everything, reverse=True)
    assert _ids(saver.list(None, limit=2)) == everything[:2]
    assert _ids(saver.list(None, filter={"step": 0})) == sorted([a_ids[0], b_ids[0]], reverse=True)
    assert _ids(saver.list(None, before=_cfg(b.thread_id, b_ids[0]))) == [
        i for i in everything if i < b_ids[0]
    ]


async def test_the_async_reads_take_configs_too(saver: Any) -> None:
    h, ids = _three(saver)
    assert (await saver.aget_tuple(_cfg(h.thread_id))).checkpoint.id == ids[2]
    assert (await saver.aget(_cfg(h.thread_id, ids[0])))["channel_values"] == {"n": 0, "log": [0]}
    assert _ids([t async for t in saver.alist(_cfg(h.thread_id), limit=2)]) == ids[:0:-1]
    assert _ids([t async for t in saver.alist(_cfg(h.thread_id, ids[1]))]) == [ids[1]]
    everything = _ids([t async for t in saver.alist(None)])
    assert set(ids) <= set(everything)


def test_a_config_that_names_no_thread_is_a_named_error(saver: Any) -> None:
    with pytest.raises(InvalidConfigError, match="get_tuple.*thread_id.*checkpoint_id"):
        saver.get_tuple({"configurable": {"checkpoint_id": "x"}})
    with pytest.raises(InvalidConfigError, match="list.*thread_id"):
        saver.list({"configurable": {}})
    with pytest.raises(TypeError, match="get_tuple takes a thread id or a config.*int"):
        saver.get_tuple(7)


class _Log(TypedDict):
    log: Annotated[list[str], operator.add]


def test_a_listed_tuples_config_replays_the_graph_from_there(saver: Any) -> None:
    """The LangGraph way of time travel: list the history, run from one of its configs."""
    builder = StateGraph(_Log)
    builder.add_node("a", lambda s: {"log": ["a"]})
    builder.add_node("b", lambda s: {"log": ["b"]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    graph = builder.compile(checkpointer=saver)
    config = _cfg("replayed")
    assert graph.invoke({"log": []}, config) == {"log": ["a", "b"]}
    listed = list(saver.list(config))
    after_a = next(t for t in listed if t.checkpoint["channel_values"] == {"log": ["a"]})
    assert len(listed) == len(list(graph.get_state_history(config)))
    assert graph.get_state(after_a.config).next == ("b",)
    assert graph.invoke(None, after_a.config) == {"log": ["a", "b"]}
