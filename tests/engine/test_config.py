"""merge_configs: how ``with_config``'s bound config and a call's own combine."""

from __future__ import annotations

from trellis.engine.config import merge_configs


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
