"""Errors a user catches: each names the node and the key, and is also the builtin."""

from __future__ import annotations

import operator
import threading
from typing import Annotated, Any

import pydantic
import pytest
from typing_extensions import TypedDict

from trellis import END, START, Command, MemorySaver, Overwrite, Send, StateGraph, interrupt
from trellis.errors import (
    GraphRecursionError,
    InterruptError,
    InvalidUpdateError,
    RoutingError,
    TrellisError,
)


class S(TypedDict, total=False):
    a: str
    log: Annotated[list[str], operator.add]


def single(fn: Any, name: str = "node", schema: Any = S, **options: Any) -> Any:
    builder = StateGraph(schema)
    builder.add_node(name, fn, **options)
    builder.add_edge(START, name)
    builder.add_edge(name, END)
    return builder.compile()


# -- bad node returns --------------------------------------------------------------


@pytest.mark.parametrize("value", ["hello", 42, ["a"], ({"a": "x"},), [{"a": "x"}]])
def test_non_dict_return_names_the_node_and_the_value(value: Any) -> None:
    graph = single(lambda s: value, name="talker")
    with pytest.raises(InvalidUpdateError, match="'talker'") as info:
        graph.invoke({})
    assert repr(value)[:20] in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TrellisError)


def test_update_with_an_unknown_key_names_the_node_and_the_key() -> None:
    graph = single(lambda s: {"a": "ok", "zzz": 1}, name="writer")
    with pytest.raises(InvalidUpdateError, match="'writer'") as info:
        graph.invoke({})
    assert "'zzz'" in str(info.value)


def test_command_update_with_an_unknown_key_is_rejected() -> None:
    graph = single(lambda s: Command(update={"nope": 1}), name="cmd")
    with pytest.raises(InvalidUpdateError, match="'nope'"):
        graph.invoke({})


def test_command_update_of_a_wrong_type_is_rejected() -> None:
    graph = single(lambda s: Command(update="text"), name="cmd")
    with pytest.raises(InvalidUpdateError, match="'cmd'"):
        graph.invoke({})


# -- routing ---------------------------------------------------------------------


def _routed(result: Any, path_map: Any = None) -> Any:
    builder = StateGraph(S)
    builder.add_node("source", lambda s: {"a": "wrote"})
    builder.add_node("x", lambda s: None)
    builder.add_edge(START, "source")
    builder.add_conditional_edges("source", lambda s: result, path_map)
    return builder.compile()


@pytest.mark.parametrize(
    ("result", "path_map"),
    [("nope", None), (["x", "nope"], None), ("nope", {"go": "x"}), ("nope", ["x"]), (None, None)],
)
def test_router_naming_no_node_names_source_and_value(result: Any, path_map: Any) -> None:
    with pytest.raises(RoutingError, match="'source'") as info:
        _routed(result, path_map).invoke({})
    assert repr(result if not isinstance(result, list) else result[-1]) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_send_to_unknown_node_is_a_routing_error() -> None:
    with pytest.raises(RoutingError, match="'ghost'"):
        _routed([Send("ghost", 1)]).invoke({})


def test_command_goto_unknown_node_is_a_routing_error() -> None:
    graph = single(lambda s: Command(goto="ghost"), name="cmd", destinations=())
    with pytest.raises(RoutingError, match="'ghost'") as info:
        graph.invoke({})
    assert "'cmd'" in str(info.value)


# -- concurrent writes -----------------------------------------------------------


def test_two_parallel_writes_to_a_last_value_key_name_key_and_both_nodes() -> None:
    builder = StateGraph(S)
    builder.add_node("left", lambda s: {"a": "L"})
    builder.add_node("right", lambda s: {"a": "R"})
    builder.add_edge(START, "left")
    builder.add_edge(START, "right")
    with pytest.raises(InvalidUpdateError) as info:
        builder.compile().invoke({})
    message = str(info.value)
    assert "'a'" in message and "'left'" in message and "'right'" in message


def test_parallel_writes_to_a_reducer_key_are_fine() -> None:
    builder = StateGraph(S)
    builder.add_node("left", lambda s: {"log": ["L"]})
    builder.add_node("right", lambda s: {"log": ["R"]})
    builder.add_edge(START, "left")
    builder.add_edge(START, "right")
    assert builder.compile().invoke({})["log"] == ["L", "R"]


# -- graph input -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["hello", ["a"], 3])
def test_non_dict_input_is_rejected(value: Any) -> None:
    with pytest.raises(InvalidUpdateError, match=type(value).__name__):
        single(lambda s: None).invoke(value)


def test_input_with_an_unknown_key_names_it() -> None:
    with pytest.raises(InvalidUpdateError, match="'zzz'"):
        single(lambda s: None).invoke({"zzz": 1})


def test_an_input_value_that_cannot_be_stored_names_its_key() -> None:
    from trellis import MemorySaver
    from trellis.errors import SerializationError

    class Any_(TypedDict, total=False):
        v: Any

    graph = single(lambda s: None, schema=Any_).builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(
        SerializationError, match=r"^cannot serialize state key 'v' at v: .*complex"
    ):
        graph.invoke({"v": 1 + 2j}, config)  # not 'pending', the engine's own bookkeeping
    assert graph.get_state(config).values == {}


class Model(pydantic.BaseModel):
    n: int


def test_input_failing_pydantic_validation() -> None:
    graph = single(lambda s: None, schema=Model)
    with pytest.raises(InvalidUpdateError, match="Model") as info:
        graph.invoke({"n": "not a number"})
    assert isinstance(info.value.__cause__, pydantic.ValidationError)
    with pytest.raises(InvalidUpdateError):
        graph.invoke({})  # n is required


# -- recursion ------------------------------------------------------------------------


def test_recursion_limit_none_is_the_default_and_below_one_is_refused() -> None:
    from trellis.errors import InvalidConfigError

    graph = single(lambda s: {"a": "x"})
    assert graph.invoke({}, {"recursion_limit": None})["a"] == "x"  # as LangGraph
    assert graph.invoke({}, {"recursion_limit": 1e9})["a"] == "x"  # LangGraph's idiom
    for bad in (0, -1, "10", True):
        with pytest.raises(InvalidConfigError, match="recursion_limit must be at least 1"):
            graph.invoke({}, {"recursion_limit": bad})


def test_a_partial_or_a_callable_instance_is_named_as_in_langgraph() -> None:
    import functools

    class Shout:
        def __call__(self, state: S) -> dict[str, Any]:
            return {"log": ["shout"]}

    def say(state: S, word: str) -> dict[str, Any]:
        return {"log": [word]}

    builder = StateGraph(S)
    builder.add_node(functools.partial(say, word="hi"))
    builder.add_node(Shout())
    assert list(builder.nodes) == ["partial", "Shout"]
    builder.add_edge(START, "partial")
    builder.add_edge("partial", "Shout")
    assert builder.compile().invoke({"log": []}) == {"log": ["hi", "shout"]}


def test_recursion_limit_error_is_a_recursion_error() -> None:
    builder = StateGraph(S)
    builder.add_node("spin", lambda s: None)
    builder.add_edge(START, "spin")
    builder.add_edge("spin", "spin")
    graph = builder.compile()
    with pytest.raises(RecursionError):
        graph.invoke({}, {"recursion_limit": 4})
    with pytest.raises(GraphRecursionError, match="'spin'"):
        graph.invoke({}, {"recursion_limit": 4})


# -- a node's own exception -------------------------------------------------------------


class Boom(Exception):
    pass


def test_node_exception_propagates_unchanged() -> None:
    error = Boom("boom in node")

    def fail(state: S) -> None:
        raise error

    with pytest.raises(Boom) as info:
        single(fail).invoke({})
    assert info.value is error


def test_node_exception_in_a_parallel_step_propagates_unchanged() -> None:
    error = KeyError("missing")
    done = threading.Event()

    def ok(state: S) -> dict[str, Any]:
        done.set()
        return {"log": ["ok"]}

    def fail(state: S) -> None:
        done.wait(5)
        raise error

    builder = StateGraph(S)
    builder.add_node("ok", ok)
    builder.add_node("fail", fail)
    builder.add_edge(START, "ok")
    builder.add_edge(START, "fail")
    with pytest.raises(KeyError) as info:
        builder.compile().invoke({})
    assert info.value is error


async def test_node_exception_propagates_unchanged_async() -> None:
    error = Boom("async boom")

    async def fail(state: S) -> None:
        raise error

    with pytest.raises(Boom) as info:
        await single(fail).ainvoke({})
    assert info.value is error


def test_router_exception_propagates_unchanged() -> None:
    error = Boom("router")

    def route(state: S) -> str:
        raise error

    builder = StateGraph(S)
    builder.add_node("s", lambda s: None)
    builder.add_edge(START, "s")
    builder.add_conditional_edges("s", route)
    with pytest.raises(Boom) as info:
        builder.compile().invoke({})
    assert info.value is error


def test_list_of_commands_writing_a_last_value_key_twice_is_an_error() -> None:
    graph = single(lambda s: [Command(update={"a": "1"}), Command(update={"a": "2"})])
    with pytest.raises(InvalidUpdateError, match="'a'"):
        graph.invoke({})


def test_a_reducer_failing_on_an_update_names_the_node_and_keys() -> None:
    class Items(TypedDict):
        items: Annotated[list[int], operator.add]

    builder = StateGraph(Items)
    builder.add_node("bad", lambda s: {"items": 5})  # a list reducer given an int
    builder.add_edge(START, "bad")
    with pytest.raises(TypeError) as info:  # the reducer's own error, unchanged
        builder.compile().invoke({"items": []})
    assert "node 'bad'" in info.value.__notes__[-1] and "'items'" in info.value.__notes__[-1]


def test_a_bad_timeout_or_retry_policy_fails_when_declared_naming_the_node() -> None:
    from trellis import RetryPolicy

    builder = StateGraph(S)
    with pytest.raises(ValueError, match=r"add_node\('slow'\): timeout .* got 0"):
        builder.add_node("slow", lambda s: {}, timeout=0)
    builder.add_node("boom", lambda s: {}, retry_policy=[RetryPolicy(), "oops"])
    builder.add_edge(START, "boom")
    with pytest.raises(TypeError, match=r"node 'boom': retry_policy items must be RetryPolicy"):
        builder.compile()


def test_declaration_errors_name_the_edge_and_the_graph() -> None:
    builder = StateGraph(S)
    with pytest.raises(TypeError, match=r"add_conditional_edges\('a'\): path_map must be"):
        builder.add_conditional_edges("a", lambda s: "b", "notamap")
    builder.add_node("a", lambda s: {})
    builder.add_edge(START, "a")
    with pytest.raises(InterruptError, match="graph 'intake': Command"):
        builder.compile(name="intake").invoke(Command(resume="yes"))


def test_two_overwrites_of_one_key_name_the_key_and_the_node() -> None:
    def twice(state: S) -> Any:
        return [Command(update={"log": Overwrite(["a"])}), Command(update={"log": Overwrite([])})]

    with pytest.raises(InvalidUpdateError, match="'log' got two Overwrite values from node 'n'"):
        single(twice, name="n").invoke({"log": ["x"]})


def test_two_overwrites_in_a_step_that_waits_name_the_node_when_read() -> None:
    """The step does not commit (a sibling asks a question), so its writes are merged
    when the run pauses and when the state is read: both errors say which node."""
    builder = StateGraph(S)
    builder.add_node("a", lambda s: {"log": Overwrite(["a"])})
    builder.add_node("b", lambda s: {"log": Overwrite(["b"])})
    builder.add_node("ask", lambda s: {"log": [interrupt("go on?")]})
    for node in ("a", "b", "ask"):
        builder.add_edge(START, node)
    graph = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    for call in (lambda: graph.invoke({"log": []}, config), lambda: graph.get_state(config)):
        with pytest.raises(InvalidUpdateError, match="two Overwrite") as caught:
            call()
        assert "while applying the update of node 'b' (keys 'log')" in caught.value.__notes__
