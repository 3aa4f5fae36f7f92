"""State schemas: TypedDict, dataclass and pydantic channels, reducers, initial values,
input/output schemas and node-level input schemas."""

from __future__ import annotations

import operator
from collections.abc import Mapping, MutableSequence, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Annotated, Any

import pydantic
import pytest
import typing_extensions as te
from typing_extensions import TypedDict

from trellis import END, START, StateGraph, add_messages
from trellis.errors import InvalidUpdateError
from trellis.graph.schema import schema_info


def _merge(left: dict[str, int], right: dict[str, int]) -> dict[str, int]:
    return {**left, **right}


class TD(TypedDict, total=False):
    name: str
    items: Annotated[list[str], operator.add]
    total: Annotated[int, operator.add]
    text: Annotated[str, operator.add]
    counts: Annotated[dict[str, int], _merge]


class Qualified(TypedDict, total=False):
    optional: te.NotRequired[Annotated[list[str], operator.add]]
    required: te.Required[Annotated[list[str], operator.add]]
    read_only: te.ReadOnly[Annotated[list[str], operator.add]]


def single(schema: Any, fn: Any, **options: Any) -> Any:
    builder = StateGraph(schema)
    builder.add_node("n", fn, **options)
    builder.add_edge(START, "n")
    builder.add_edge("n", END)
    return builder.compile()


# -- channels ----------------------------------------------------------------


def test_typeddict_channels_and_reducers() -> None:
    info = schema_info(TD)
    assert info.kind == "typeddict"
    assert list(info.channels) == ["name", "items", "total", "text", "counts"]
    assert info.channels["name"].reducer is None
    assert info.channels["items"].reducer is operator.add
    assert info.channels["counts"].reducer is _merge


def test_a_reducer_inside_required_or_not_required_is_kept() -> None:
    # As LangGraph: the key qualifiers wrap the Annotated that names the reducer.
    # Losing it would make each write replace the list instead of adding to it.
    graph = single(Qualified, lambda s: {k: ["node"] for k in Qualified.__annotations__})
    out = graph.invoke({k: ["input"] for k in Qualified.__annotations__})
    assert out == {k: ["input", "node"] for k in Qualified.__annotations__}
    assert schema_info(Qualified).channels["optional"].initial is list


def test_annotated_without_a_two_argument_callable_is_a_last_value_key() -> None:
    class Doc(TypedDict, total=False):
        note: Annotated[str, "just documentation"]

    assert schema_info(Doc).channels["note"].reducer is None


def test_reducer_keys_start_from_their_types_zero_value() -> None:
    graph = single(TD, lambda s: {"name": "x"})
    assert graph.invoke({}) == {"name": "x", "items": [], "total": 0, "text": "", "counts": {}}


def test_abstract_collection_reducer_keys_start_as_their_concrete_type() -> None:
    """The LangGraph tutorial state: ``Annotated[Sequence[...], add_messages]``."""

    class Abstract(TypedDict):
        messages: Annotated[Sequence[Any], add_messages]
        queue: Annotated[MutableSequence[int], operator.add]
        seen: Annotated[AbstractSet[str], operator.or_]
        meta: Annotated[Mapping[str, int], lambda a, b: {**a, **b}]

    builder = StateGraph(Abstract)
    builder.add_node("agent", lambda s: {"queue": [len(s["messages"])]})
    builder.add_edge(START, "agent")
    out = builder.compile().invoke({})
    assert out == {"messages": [], "queue": [0], "seen": set(), "meta": {}}


def test_reducers_fold_updates_across_steps() -> None:
    builder = StateGraph(TD)
    builder.add_node("a", lambda s: {"items": ["a"], "total": 2, "text": "a", "counts": {"a": 1}})
    builder.add_node("b", lambda s: {"items": ["b"], "total": 3, "text": "b", "counts": {"b": 2}})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    out = builder.compile().invoke({"items": ["in"], "total": 1})
    assert out == {
        "items": ["in", "a", "b"],
        "total": 6,
        "text": "ab",
        "counts": {"a": 1, "b": 2},
    }


def test_output_keys_follow_schema_order_not_write_order() -> None:
    graph = single(TD, lambda s: {"counts": {"k": 1}, "name": "x"})
    assert list(graph.invoke({"text": "t"})) == ["name", "items", "total", "text", "counts"]


def test_unset_last_value_keys_are_absent() -> None:
    assert "name" not in single(TD, lambda s: {"items": ["x"]}).invoke({})


# -- dataclass ---------------------------------------------------------------


@dataclass
class DC:
    a: str = "defA"
    n: int = 0
    log: Annotated[list[str], operator.add] = field(default_factory=list)


def test_dataclass_node_receives_an_instance_with_defaults() -> None:
    seen: list[Any] = []

    def node(state: DC) -> dict[str, Any]:
        seen.append(state)
        return {"n": state.n + 1}

    out = single(DC, node).invoke({"n": 5})
    assert seen == [DC(a="defA", n=5, log=[])]
    assert out == {"n": 6, "log": []}  # a plain dict; unwritten defaults are absent


def test_dataclass_instance_as_input_writes_every_field() -> None:
    out = single(DC, lambda s: {"n": s.n + 1}).invoke(DC(a="z", n=1))
    assert out == {"a": "z", "n": 2, "log": []}


def test_dataclass_instance_returned_by_a_node_writes_every_field() -> None:
    out = single(DC, lambda s: DC(n=9)).invoke({"a": "given"})
    assert out == {"a": "defA", "n": 9, "log": []}


# -- pydantic ----------------------------------------------------------------


class PM(pydantic.BaseModel):
    a: str = "defA"
    n: int = 0
    log: Annotated[list[str], operator.add] = []


class Required(pydantic.BaseModel):
    q: str
    n: int = 0


def test_pydantic_node_receives_a_model_and_invoke_returns_a_dict() -> None:
    seen: list[Any] = []

    def node(state: PM) -> dict[str, Any]:
        seen.append(state)
        return {"n": state.n + 1}

    out = single(PM, node).invoke({"n": 1})
    assert isinstance(seen[0], PM) and seen[0].n == 1 and seen[0].a == "defA"
    assert out == {"n": 2, "log": []}


def test_a_returned_pydantic_instance_leaves_an_unset_none_default_field_alone() -> None:
    # As LangGraph: a field the node did not set, at its None default, is no write;
    # set explicitly (even to None) it is one.
    class Note(pydantic.BaseModel):
        n: int = 0
        note: str | None = None

    keep = single(Note, lambda s: Note(n=s.n + 1))
    assert keep.invoke({"n": 1, "note": "keep me"}) == {"n": 2, "note": "keep me"}
    clear = single(Note, lambda s: Note(n=s.n + 1, note=None))
    assert clear.invoke({"n": 1, "note": "keep me"}) == {"n": 2, "note": None}


def test_pydantic_input_is_validated_and_coerced() -> None:
    graph = single(PM, lambda s: {"n": s.n * 10})
    assert graph.invoke({"n": "3"})["n"] == 30
    with pytest.raises(InvalidUpdateError, match="PM"):
        graph.invoke({"n": "not-an-int"})
    with pytest.raises(InvalidUpdateError, match="q"):
        single(Required, lambda s: None).invoke({"n": 1})


def test_pydantic_reducer_channel() -> None:
    info = schema_info(PM)
    assert info.kind == "pydantic"
    assert info.channels["log"].reducer is operator.add
    assert info.channels["a"].reducer is None


# -- input / output schemas ---------------------------------------------------


class In(TypedDict):
    q: str


class Out(TypedDict):
    ans: str


class Full(TypedDict, total=False):
    q: str
    ans: str
    scratch: str


def _in_out_graph() -> Any:
    builder = StateGraph(Full, input_schema=In, output_schema=Out)
    builder.add_node("n1", lambda s: {"scratch": s["q"] + "!"})
    builder.add_node("n2", lambda s: {"ans": s["scratch"] + "?"})
    builder.add_edge(START, "n1")
    builder.add_edge("n1", "n2")
    return builder.compile()


def test_output_schema_filters_invoke_but_not_the_values_stream() -> None:
    graph = _in_out_graph()
    assert graph.invoke({"q": "hi"}) == {"ans": "hi!?"}
    assert list(graph.stream({"q": "hi"}, stream_mode="values"))[-1] == {
        "q": "hi",
        "ans": "hi!?",
        "scratch": "hi!",
    }


def test_input_keys_outside_the_input_schema_are_rejected() -> None:
    with pytest.raises(InvalidUpdateError, match="scratch"):
        _in_out_graph().invoke({"q": "hi", "scratch": "S"})


# -- node-level input schemas --------------------------------------------------


class Pub(TypedDict, total=False):
    q: str
    ans: str


class Priv(TypedDict, total=False):
    q: str
    private: str


def test_node_input_schema_by_annotation_adds_private_channels() -> None:
    seen: list[Any] = []

    def p1(state: Priv) -> dict[str, Any]:
        return {"private": "P:" + state["q"]}

    def p2(state: Priv) -> dict[str, Any]:
        seen.append(dict(state))
        return {"ans": state["private"]}

    builder = StateGraph(Pub)
    builder.add_sequence([p1, p2])
    builder.add_edge(START, "p1")
    graph = builder.compile()
    assert graph.invoke({"q": "z"}) == {"q": "z", "ans": "P:z"}
    assert seen == [{"q": "z", "private": "P:z"}]
    assert list(graph.stream({"q": "z"}, stream_mode="values"))[-1]["private"] == "P:z"


def test_node_input_schema_by_option() -> None:
    seen: list[Any] = []

    def writer(state: Pub) -> dict[str, Any]:
        return {"private": "x", "ans": "a"}

    def reader(state: Any) -> None:
        seen.append(dict(state))

    builder = StateGraph(Pub)
    builder.add_node("reader", reader, input_schema=Priv)
    builder.add_node("writer", writer)
    builder.add_edge(START, "writer")
    builder.add_edge("writer", "reader")
    assert builder.compile().invoke({"q": "z"}) == {"q": "z", "ans": "a"}
    assert seen == [{"q": "z", "private": "x"}]  # only Priv's keys, not "ans"


def test_node_annotated_with_a_subset_sees_only_that_subset() -> None:
    seen: list[Any] = []

    def node(state: In) -> None:
        seen.append(dict(state))

    builder = StateGraph(Full)
    builder.add_node(node)
    builder.add_edge(START, "node")
    builder.compile().invoke({"q": "z", "scratch": "s"})
    assert seen == [{"q": "z"}]


def test_return_annotation_registers_private_channels() -> None:
    def p1(state: Pub) -> Priv:
        return {"private": "P:" + state["q"]}

    builder = StateGraph(Pub)
    builder.add_node(p1)
    builder.add_edge(START, "p1")
    chunks = list(builder.compile().stream({"q": "z"}, stream_mode="values"))
    assert chunks[-1] == {"q": "z", "private": "P:z"}


def test_unresolvable_annotation_never_silently_drops_a_reducer() -> None:
    def local_reducer(left: list[str], right: list[str]) -> list[str]:
        return left + right

    class Local(TypedDict, total=False):
        items: Annotated[list[str], local_reducer]  # a string naming a local, here

    try:
        info = schema_info(Local)
    except Exception as exc:  # a clear error is fine too
        assert "items" in str(exc) or "local_reducer" in str(exc)
        return
    assert info.channels["items"].reducer is local_reducer
