"""merge_configs: how ``with_config``'s bound config and a call's own combine; and
what ``compile()`` refuses rather than ignores."""

from __future__ import annotations

from typing import Any

import pytest

from trellis.engine.config import merge_configs
from trellis.errors import InvalidConfigError


def test_later_configs_win_key_by_key_and_tags_join() -> None:
    bound = {
        "recursion_limit": 5,
        "tags": ["b", "a"],
        "metadata": {"team": "ops", "run": 1},
        "configurable": {"user": "ann", "thread_id": "t0"},
    }
    call = {"tags": ["a", "c"], "metadata": {"run": 2}, "configurable": {"thread_id": "t1"}}
    assert merge_configs(bound, None, call) == {
        "recursion_limit": 5,
        "tags": ["b", "a", "a", "c"],  # joined in order, as LangGraph's
        "metadata": {"team": "ops", "run": 2},
        "configurable": {"user": "ann", "thread_id": "t1"},
    }


def test_a_none_value_keeps_the_bound_one_and_inputs_are_not_changed() -> None:
    bound = {"recursion_limit": 5, "run_name": "x", "configurable": {"user": "ann"}}
    call = {"recursion_limit": None, "configurable": None}
    assert merge_configs(bound, call) == bound
    assert bound == {"recursion_limit": 5, "run_name": "x", "configurable": {"user": "ann"}}
    assert call == {"recursion_limit": None, "configurable": None}
    assert merge_configs() == {}


# --- compile() options: nothing is silently ignored ------------------------------------------


def _builder() -> Any:
    from typing import TypedDict

    from trellis import START, StateGraph

    class S(TypedDict, total=False):
        n: int

    builder = StateGraph(S)
    builder.add_node("inc", lambda s: {"n": s.get("n", 0) + 1})
    builder.add_edge(START, "inc")
    return builder


def test_a_misspelt_compile_option_is_refused_naming_it() -> None:
    with pytest.raises(InvalidConfigError, match=r"unknown option\(s\) 'metric'.*metrics"):
        _builder().compile(metric=True)


@pytest.mark.parametrize("option", ["store", "cache"])
def test_langgraphs_store_and_cache_are_refused_not_ignored(option: str) -> None:
    with pytest.raises(InvalidConfigError, match=rf"compile\({option}=...\)"):
        _builder().compile(**{option: object()})
    assert _builder().compile(**{option: None}).invoke({}) == {"n": 1}


def test_a_langgraph_saver_is_refused_at_compile_naming_its_class() -> None:
    memory = pytest.importorskip("langgraph.checkpoint.memory")
    with pytest.raises(InvalidConfigError, match=r"langgraph\..*InMemorySaver is not a Trellis"):
        _builder().compile(checkpointer=memory.InMemorySaver())
