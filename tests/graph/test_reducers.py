"""add_messages and RemoveMessage, alone and inside a graph; stdlib operators as reducers."""

from __future__ import annotations

import operator
import uuid
from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typing_extensions import TypedDict

from trellis import (
    END,
    REMOVE_ALL_MESSAGES,
    START,
    MessagesState,
    RemoveMessage,
    SqliteSaver,
    StateGraph,
    add_messages,
)
from trellis.graph import reducers


@pytest.fixture(autouse=True)
def without_langchain(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages as dicts, as where LangChain is not installed (tests marked
    ``with_langchain`` see LangChain's message objects instead)."""
    if "with_langchain" not in request.keywords:
        monkeypatch.setattr(reducers, "langchain_converter", lambda: None)


def msg(mid: str | None, content: str = "", role: str = "user") -> dict[str, Any]:
    out: dict[str, Any] = {"role": role, "content": content}
    if mid is not None:
        out["id"] = mid
    return out


def ids(messages: list[Any]) -> list[Any]:
    return [m["id"] if isinstance(m, dict) else m.id for m in messages]


def test_appends_new_messages_in_order() -> None:
    merged = add_messages([msg("1", "a")], [msg("2", "b"), msg("3", "c")])
    assert ids(merged) == ["1", "2", "3"]
    assert [m["content"] for m in merged] == ["a", "b", "c"]


def test_same_id_replaces_in_place() -> None:
    merged = add_messages([msg("1", "a"), msg("2", "b")], [msg("1", "A"), msg("3", "c")])
    assert ids(merged) == ["1", "2", "3"]
    assert merged[0]["content"] == "A"


def test_remove_message_deletes_by_id() -> None:
    merged = add_messages([msg("1"), msg("2"), msg("3")], [RemoveMessage(id="2")])
    assert ids(merged) == ["1", "3"]


def test_remove_then_re_add_in_one_update_keeps_the_message() -> None:
    merged = add_messages([msg("1", "a")], [RemoveMessage(id="1"), msg("1", "again")])
    assert [m["content"] for m in merged] == ["again"]


def test_remove_unknown_id_raises_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'m1'"):
        add_messages([msg("1")], [RemoveMessage(id="m1")])


def test_remove_all_clears_everything_before_it() -> None:
    merged = add_messages(
        [msg("1"), msg("2")],
        [msg("3"), RemoveMessage(id=REMOVE_ALL_MESSAGES), msg("4", "kept")],
    )
    assert ids(merged) == ["4"]


def test_missing_ids_are_assigned_as_uuid_strings() -> None:
    merged = add_messages([], [msg(None, "a"), msg(None, "b")])
    assert len(set(ids(merged))) == 2
    for mid in ids(merged):
        assert str(uuid.UUID(mid)) == mid


def test_shorthands_and_single_messages() -> None:
    merged = add_messages([], "hello")
    assert merged[0]["role"] == "user" and merged[0]["content"] == "hello"
    merged = add_messages(merged, ("assistant", "hi"))
    assert [(m["role"], m["content"]) for m in merged] == [("user", "hello"), ("assistant", "hi")]
    merged = add_messages(merged, msg("x", "single dict"))
    assert merged[-1]["id"] == "x"


def test_objects_with_an_id_attribute_work() -> None:
    class Message:
        def __init__(self, content: str, id: str | None = None) -> None:
            self.content = content
            self.id = id

    first, second = Message("a", "1"), Message("b")
    merged = add_messages([first], [second, Message("A", "1")])
    assert [m.content for m in merged] == ["A", "b"]
    assert isinstance(second.id, str) and second.id


def test_messages_state_in_a_graph() -> None:
    def reply(state: MessagesState) -> dict[str, Any]:
        last = state["messages"][-1]
        return {"messages": [{"role": "ai", "content": last["content"].upper(), "id": "r"}]}

    def edit(state: MessagesState) -> dict[str, Any]:
        return {"messages": [RemoveMessage(id="q"), {"role": "ai", "content": "edited", "id": "r"}]}

    builder = StateGraph(MessagesState)
    builder.add_sequence([reply, edit])
    builder.add_edge(START, "reply")
    builder.add_edge("edit", END)
    out = builder.compile().invoke({"messages": [msg("q", "hi")]})
    assert [(m["id"], m["content"]) for m in out["messages"]] == [("r", "edited")]


def keep_max(left: int, right: int) -> int:
    return max(left, right)


class Scores(TypedDict, total=False):
    items: Annotated[list[int], operator.add]
    best: Annotated[int, keep_max]


def test_operator_add_and_custom_reducers_in_a_graph() -> None:
    builder = StateGraph(Scores)
    builder.add_node("a", lambda s: {"items": [1], "best": 5})
    builder.add_node("b", lambda s: {"items": [2], "best": 3})
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    assert builder.compile().invoke({"best": 4}) == {"items": [1, 2], "best": 5}


# -- property: ids are never lost nor duplicated -----------------------------------

ID_POOL = [f"m{i}" for i in range(6)]

# One update item: a message with an id from the pool, one without an id, or a removal.
_item = st.one_of(
    st.builds(lambda i, c: ("add", i, c), st.sampled_from(ID_POOL), st.text(max_size=3)),
    st.builds(lambda c: ("add", None, c), st.text(max_size=3)),
    st.builds(lambda i: ("remove", i, None), st.sampled_from(ID_POOL)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_item, max_size=5), max_size=6))
def test_add_messages_never_loses_or_duplicates_ids(updates: list[list[Any]]) -> None:
    state: list[Any] = []
    for update in updates:
        # The model: an ordered list of [id, content, removed]; a re-added id keeps its slot.
        slots = [[m["id"], m["content"], False] for m in state]
        batch: list[Any] = []
        for kind, mid, content in update:
            slot = next((s for s in slots if mid is not None and s[0] == mid), None)
            if kind == "remove":
                if slot is None:
                    continue  # an unknown id raises; tested separately
                batch.append(RemoveMessage(id=mid))
                slot[2] = True
            elif slot is not None:
                batch.append(msg(mid, content))
                slot[1], slot[2] = content, False
            else:
                batch.append(msg(mid, content))
                slots.append([mid, content, False])
        state = add_messages(state, batch)
        got_ids = ids(state)
        assert len(got_ids) == len(set(got_ids)), "duplicate ids"
        assert all(isinstance(i, str) and i for i in got_ids), "missing ids"
        kept = [s for s in slots if not s[2]]
        assert [m["content"] for m in state] == [s[1] for s in kept]
        assert [i for i, s in zip(got_ids, kept, strict=True) if s[0] is not None] == [
            s[0] for s in kept if s[0] is not None
        ]


# --- with LangChain installed: message objects, as LangGraph makes them ---------------------

with_langchain = pytest.mark.with_langchain


@with_langchain
def test_shorthands_become_langchain_messages_with_ids() -> None:
    messages = pytest.importorskip("langchain_core.messages")
    merged = add_messages([], ["hello", ("ai", "hi"), {"role": "user", "content": "and?"}])
    assert [type(m) for m in merged] == [
        messages.HumanMessage, messages.AIMessage, messages.HumanMessage
    ]  # fmt: skip
    assert [m.content for m in merged] == ["hello", "hi", "and?"]
    for m in merged:
        assert str(uuid.UUID(m.id)) == m.id
    kept = add_messages(merged, {"role": "ai", "content": "edited", "id": merged[1].id})
    assert [m.content for m in kept] == ["hello", "edited", "and?"]


@with_langchain
def test_a_ported_chat_graph_reads_content_and_checkpoints_the_messages(tmp_path: Any) -> None:
    messages = pytest.importorskip("langchain_core.messages")

    def bot(state: MessagesState) -> dict[str, Any]:
        return {"messages": [("ai", f"you said {state['messages'][-1].content}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("bot", bot)
    builder.add_edge(START, "bot")
    config: Any = {"configurable": {"thread_id": "chat"}}
    with SqliteSaver.from_path(tmp_path / "chat.db") as saver:
        graph = builder.compile(checkpointer=saver)
        graph.invoke({"messages": [("user", "hi")]}, config)
    with SqliteSaver.from_path(tmp_path / "chat.db") as saver:
        stored = builder.compile(checkpointer=saver).get_state(config).values["messages"]
    assert [(type(m), m.content) for m in stored] == [
        (messages.HumanMessage, "hi"), (messages.AIMessage, "you said hi")
    ]  # fmt: skip
