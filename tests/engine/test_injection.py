"""Parameters injected into nodes and routers: config, runtime, writer; sync/async mixing."""

from __future__ import annotations

import asyncio
import operator
import threading
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, RunnableConfig, Runtime, StateGraph
from trellis.engine.context import get_config
from trellis.errors import InvalidConfigError
from trellis.persist.memory import MemorySaver


class S(TypedDict, total=False):
    a: str
    log: Annotated[list[str], operator.add]


@dataclass
class Ctx:
    user: str


def chain(*nodes: tuple[str, Any], **compile_options: Any) -> Any:
    builder = StateGraph(S, context_schema=Ctx)
    for name, fn in nodes:
        builder.add_node(name, fn)
    builder.add_edge(START, nodes[0][0])
    for (a, _), (b, _) in zip(nodes, nodes[1:], strict=False):
        builder.add_edge(a, b)
    builder.add_edge(nodes[-1][0], END)
    return builder.compile(**compile_options)


# -- config ------------------------------------------------------------------------


def test_config_carries_user_configurable_and_step_metadata() -> None:
    seen: list[RunnableConfig] = []

    def first(state: S, config: RunnableConfig) -> None:
        seen.append(config)

    def second(state: S, config: RunnableConfig) -> None:
        seen.append(config)

    chain(("first", first), ("second", second)).invoke(
        {}, {"configurable": {"user_id": "u1"}, "metadata": {"trace": "t"}}
    )
    assert [c["metadata"]["langgraph_step"] for c in seen] == [1, 2]
    assert [c["metadata"]["langgraph_node"] for c in seen] == ["first", "second"]
    assert all(c["configurable"]["user_id"] == "u1" for c in seen)
    assert all(c["metadata"]["trace"] == "t" for c in seen)
    assert seen[0]["metadata"]["langgraph_triggers"] == ("branch:to:first",)


def test_config_has_the_thread_id_with_a_checkpointer() -> None:
    seen: list[RunnableConfig] = []
    graph = chain(("n", lambda s, config: seen.append(config)), checkpointer=MemorySaver())
    thread = uuid.uuid4().hex
    graph.invoke({"a": "x"}, {"configurable": {"thread_id": thread}})
    assert seen[0]["configurable"]["thread_id"] == thread
    assert seen[0]["configurable"]["checkpoint_id"]


def test_keyword_only_injection_and_get_config() -> None:
    seen: list[Any] = []

    def node(state: S, *, config: RunnableConfig) -> None:
        seen.append(
            (config["metadata"]["langgraph_node"], get_config()["metadata"]["langgraph_node"])
        )

    chain(("kw", node)).invoke({})
    assert seen == [("kw", "kw")]


def test_get_config_outside_a_node_raises() -> None:
    with pytest.raises(RuntimeError, match="inside a running node"):
        get_config()


def test_router_gets_config_injected() -> None:
    seen: list[Any] = []

    def route(state: S, config: RunnableConfig) -> str:
        seen.append(config["configurable"]["flag"])
        return END

    builder = StateGraph(S)
    builder.add_node("s", lambda s: None)
    builder.add_edge(START, "s")
    builder.add_conditional_edges("s", route)
    builder.compile().invoke({}, {"configurable": {"flag": "on"}})
    assert seen == ["on"]


# -- runtime -----------------------------------------------------------------------


def test_runtime_context_and_execution_info() -> None:
    seen: list[Runtime[Ctx]] = []

    def first(state: S, runtime: Runtime[Ctx]) -> dict[str, Any]:
        seen.append(runtime)
        return {"a": f"hello {runtime.context.user}"}

    def second(state: S, runtime: Runtime[Ctx]) -> None:
        seen.append(runtime)

    out = chain(("first", first), ("second", second)).invoke({}, context=Ctx(user="ada"))
    assert out["a"] == "hello ada"
    infos = [r.execution_info for r in seen]
    assert all(i is not None for i in infos)
    assert [(i.node, i.step) for i in infos if i] == [("first", 1), ("second", 2)]
    ids = [i.task_id for i in infos if i]
    assert all(isinstance(t, str) and t for t in ids) and ids[0] != ids[1]
    assert infos[0] is not None and infos[0].node_attempt == 1
    assert infos[0].thread_id is None


def test_get_runtime_gives_the_node_its_runtime_as_langgraph() -> None:
    from trellis import get_runtime, get_stream_writer

    def greet(state: S) -> dict[str, Any]:
        runtime = get_runtime(Ctx)
        runtime.stream_writer("custom chunk")
        info = runtime.execution_info
        return {"a": f"hello {runtime.context.user} at {info.node if info else None}"}

    graph = chain(("greet", greet))
    assert graph.invoke({}, context=Ctx(user="ada"))["a"] == "hello ada at greet"
    chunks = list(graph.stream({}, context=Ctx(user="ada"), stream_mode="custom"))
    assert chunks == ["custom chunk"]
    with pytest.raises(RuntimeError, match="get_runtime"):
        get_runtime()
    assert get_stream_writer()("outside: discarded") is None


def test_get_runtime_context_matches_langgraph() -> None:
    pytest.importorskip("langgraph.runtime", reason="the bench extra (LangGraph) is not installed")
    from langgraph.graph import StateGraph as LGStateGraph
    from langgraph.runtime import get_runtime as lg_get_runtime

    from trellis import get_runtime

    def lg_greet(state: S) -> dict[str, Any]:
        return {"a": lg_get_runtime(Ctx).context.user}

    def greet(state: S) -> dict[str, Any]:
        return {"a": get_runtime(Ctx).context.user}

    got = {}
    for lib, builder_cls, node in (
        ("langgraph", LGStateGraph, lg_greet),
        ("trellis", StateGraph, greet),
    ):
        builder = builder_cls(S, context_schema=Ctx)
        builder.add_node("greet", node)
        builder.add_edge(START, "greet")
        got[lib] = builder.compile().invoke({}, context={"user": "bob"})
    assert got["trellis"] == got["langgraph"]
    assert got["trellis"]["a"] == "bob"


def test_runtime_context_is_none_when_not_given_and_dicts_pass_through() -> None:
    """Without a context_schema, a dict context reaches nodes as it is."""
    seen: list[Any] = []
    builder = StateGraph(S)
    builder.add_node("n", lambda s, runtime: seen.append(runtime.context))
    builder.add_edge(START, "n")
    graph = builder.compile()
    graph.invoke({})
    graph.invoke({}, context={"user": "bob"})
    assert seen == [None, {"user": "bob"}]


def test_a_dict_context_becomes_the_context_schema() -> None:
    """As LangGraph: with ``context_schema`` a dataclass (or pydantic model), a dict
    passed as ``context=`` reaches nodes as an instance of it."""
    seen: list[Any] = []
    builder = StateGraph(S, context_schema=Ctx)
    builder.add_node("n", lambda s, runtime: seen.append(runtime.context))
    builder.add_edge(START, "n")
    graph = builder.compile()
    graph.invoke({}, context={"user": "bob"})
    assert seen == [Ctx(user="bob")]
    with pytest.raises(InvalidConfigError, match=r"context \[.nobody.\] does not fit .* Ctx"):
        graph.invoke({}, context={"nobody": 1})


def test_runtime_task_id_matches_config_task_id_and_thread() -> None:
    seen: list[Any] = []

    def node(state: S, config: RunnableConfig, runtime: Runtime[Any]) -> None:
        assert runtime.execution_info is not None
        seen.append(
            (config["configurable"]["task_id"], runtime.execution_info.task_id,
             runtime.execution_info.thread_id)
        )  # fmt: skip

    graph = chain(("n", node), checkpointer=MemorySaver())
    graph.invoke({"a": "x"}, {"configurable": {"thread_id": "T1"}})
    assert seen[0][0] == seen[0][1] and seen[0][2] == "T1"


def test_runtime_stream_writer_feeds_custom_mode() -> None:
    graph = chain(("n", lambda s, runtime: runtime.stream_writer("via runtime")))
    assert list(graph.stream({}, stream_mode="custom")) == ["via runtime"]


def test_writer_and_store_are_injected() -> None:
    seen: list[Any] = []

    def node(state: S, writer: Any, store: Any) -> None:
        writer({"progress": 1})
        seen.append(store)

    assert list(chain(("n", node)).stream({}, stream_mode="custom")) == [{"progress": 1}]
    assert seen == [None]


def test_a_node_without_a_state_parameter_is_called_without_it() -> None:
    seen: list[Any] = []

    def node(*, config: RunnableConfig) -> dict[str, Any]:
        seen.append(config["metadata"]["langgraph_node"])
        return {"a": "ran"}

    assert chain(("bare", node)).invoke({})["a"] == "ran"
    assert seen == ["bare"]


# -- sync and async ----------------------------------------------------------------


async def test_sync_nodes_run_under_ainvoke_off_the_event_loop() -> None:
    threads: list[int] = []

    def node(state: S) -> dict[str, Any]:
        threads.append(threading.get_ident())
        return {"log": ["sync"]}

    out = await chain(("a", node), ("b", node)).ainvoke({})
    assert out["log"] == ["sync", "sync"]
    assert threading.get_ident() not in threads


async def test_mixed_sync_and_async_nodes_under_ainvoke_with_injection() -> None:
    async def anode(state: S, config: RunnableConfig, runtime: Runtime[Ctx]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"log": [f"{config['metadata']['langgraph_node']}:{runtime.context.user}"]}

    def snode(state: S, runtime: Runtime[Ctx]) -> dict[str, Any]:
        return {"log": [f"s:{runtime.context.user}"]}

    out = await chain(("an", anode), ("sn", snode)).ainvoke({}, context=Ctx("eve"))
    assert out["log"] == ["an:eve", "s:eve"]


def test_async_node_under_invoke_is_a_type_error_naming_it() -> None:
    async def slow(state: S) -> None:
        return None

    with pytest.raises(TypeError, match="'slow'"):
        chain(("slow", slow)).invoke({})


def test_async_router_under_invoke_is_a_type_error() -> None:
    async def route(state: S) -> str:
        return END

    builder = StateGraph(S)
    builder.add_node("s", lambda s: None)
    builder.add_edge(START, "s")
    builder.add_conditional_edges("s", route)
    with pytest.raises(TypeError, match="'s'"):
        builder.compile().invoke({})


async def test_async_router_under_ainvoke() -> None:
    async def route(state: S) -> str:
        return "x"

    builder = StateGraph(S)
    builder.add_node("s", lambda s: None)
    builder.add_node("x", lambda s: {"a": "routed"})
    builder.add_edge(START, "s")
    builder.add_conditional_edges("s", route, ["x"])
    assert (await builder.compile().ainvoke({}))["a"] == "routed"


def test_a_node_wrapped_by_a_decorator_without_wraps_gets_the_state() -> None:
    # def wrapper(*args, **kwargs): the signature says nothing; LangGraph passes the state.
    def logged(fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return wrapper

    @logged
    def inc(state: dict[str, Any]) -> dict[str, Any]:
        return {"n": state["n"] + 1}

    class N(TypedDict):
        n: int

    builder = StateGraph(N)
    builder.add_node("inc", inc)
    builder.add_conditional_edges("inc", logged(lambda s: END))
    builder.add_edge(START, "inc")
    assert builder.compile().invoke({"n": 1}) == {"n": 2}
