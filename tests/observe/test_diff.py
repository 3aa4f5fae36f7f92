from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from trellis.observe import Change, diff_states, render_diff


def test_added_removed_changed_and_nested_paths() -> None:
    a = {"n": 1, "gone": "x", "report": {"score": 0.5, "notes": "ok", "deep": {"k": 1}}}
    b = {"n": 2, "new": [1], "report": {"score": 0.9, "notes": "ok", "deep": {"k": 2}}}
    assert diff_states(a, b) == [
        Change("removed", "gone", old="x"),
        Change("changed", "n", old=1, new=2),
        Change("added", "new", new=[1]),
        Change("changed", "report.score", old=0.5, new=0.9),
        Change("changed", "report.deep.k", old=1, new=2),
    ]


def test_lists_that_grew_at_the_end_report_only_the_new_items() -> None:
    a = {"messages": ["hi", "hello"]}
    b = {"messages": ["hi", "hello", "how are you?", "fine"]}
    (change,) = diff_states(a, b)
    assert change == Change("appended", "messages", old=2, new=["how are you?", "fine"])
    text = render_diff([change])
    assert text == "+ messages: +2 items\n    + 'how are you?'\n    + 'fine'\n"


def test_lists_changed_elsewhere_are_changed_not_appended() -> None:
    (change,) = diff_states({"xs": [1, 2]}, {"xs": [9, 2, 3]})
    assert change.kind == "changed"
    (change,) = diff_states({"xs": [1, 2, 3]}, {"xs": [1, 2]})
    assert change.kind == "changed"
    (change,) = diff_states({"xs": "ab"}, {"xs": "abc"})  # strings are values, not lists
    assert change.kind == "changed"


def test_render_diff_marks_and_truncates() -> None:
    changes = diff_states({"a": 1, "b": "x" * 500}, {"a": 2, "c": True})
    text = render_diff(changes, width=40)
    lines = text.splitlines()
    assert lines[0].startswith("- b: 'xxx") and len(lines[0]) < 60
    assert lines[1:] == ["~ a: 1 → 2", "+ c: True"]
    assert render_diff([]) == "(no changes)\n"


def test_values_that_refuse_comparison_are_reported_as_changed() -> None:
    class Odd:
        def __eq__(self, other: object) -> bool:
            raise TypeError("no truth value")

        __hash__ = object.__hash__

    a, b = Odd(), Odd()
    (change,) = diff_states({"v": a}, {"v": b})
    assert change.kind == "changed"
    assert diff_states({"v": a}, {"v": a}) == []


def test_a_value_that_changed_type_is_a_change_even_if_it_compares_equal() -> None:
    a = {"done": 0, "score": 1, "ok": True, "flags": [0], "deep": {"n": 1}}
    b = {"done": False, "score": 1.0, "ok": 1, "flags": [False], "deep": {"n": 1.0}}
    assert [(c.path, c.old, c.new) for c in diff_states(a, b)] == [
        ("done", 0, False),
        ("score", 1, 1.0),
        ("ok", True, 1),
        ("flags", [0], [False]),
        ("deep.n", 1, 1.0),
    ]
    assert render_diff(diff_states({"done": 0}, {"done": False})) == "~ done: 0 → False\n"


def _typed(value: Any) -> Any:
    """``value`` with each leaf paired with its type, so ``==`` tells 0 from False."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
states = st.dictionaries(st.text(max_size=4), json_values, max_size=5)


def _apply(state: dict[str, Any], changes: list[Change]) -> dict[str, Any]:
    """Replay a diff; paths are dotted, so this only holds for dot-free keys."""
    out: dict[str, Any] = {k: v for k, v in state.items()}

    def walk(path: str) -> tuple[dict[str, Any], str]:
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node[p] = dict(node[p])
            node = node[p]
        return node, leaf

    for c in changes:
        node, leaf = walk(c.path)
        if c.kind == "removed":
            del node[leaf]
        elif c.kind == "appended":
            node[leaf] = list(node[leaf]) + c.new
        else:
            node[leaf] = c.new
    return out


@given(states, states)
def test_applying_the_diff_to_a_gives_b(a: dict[str, Any], b: dict[str, Any]) -> None:
    def dot_free(value: Any) -> bool:
        if isinstance(value, dict):
            return all("." not in k and dot_free(v) for k, v in value.items())
        return True

    changes = diff_states(a, b)
    assert (changes == []) == (_typed(a) == _typed(b))
    if dot_free(a) and dot_free(b):
        assert _typed(_apply(a, changes)) == _typed(b)
