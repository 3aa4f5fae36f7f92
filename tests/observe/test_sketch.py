from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trellis.observe import DDSketch

ALPHA = 0.01
# Floating-point rounding at bucket boundaries can add a hair to the bound.
TOLERANCE = ALPHA * (1 + 1e-9) + 1e-12


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


magnitudes = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False)
signed = st.one_of(magnitudes, magnitudes.map(lambda v: -v), st.just(0.0))


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(signed, min_size=1, max_size=400),
    q=st.floats(min_value=0.0, max_value=1.0),
)
def test_quantile_is_within_relative_accuracy(values: list[float], q: float) -> None:
    sketch = DDSketch(relative_accuracy=ALPHA)
    for v in values:
        sketch.add(v)
    expected = exact_quantile(values, q)
    got = sketch.quantile(q)
    assert abs(got - expected) <= TOLERANCE * abs(expected)


@settings(max_examples=50, deadline=None)
@given(st.lists(magnitudes, min_size=1, max_size=200), st.lists(magnitudes, max_size=200))
def test_merge_equals_adding_everything_to_one(a: list[float], b: list[float]) -> None:
    left, right, both = DDSketch(), DDSketch(), DDSketch()
    for v in a:
        left.add(v)
        both.add(v)
    for v in b:
        right.add(v)
        both.add(v)
    left.merge(right)
    assert left.count == both.count == len(a) + len(b)
    assert left.sum == pytest.approx(both.sum)
    assert (left.min, left.max) == (both.min, both.max)
    for q in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0):
        assert left.quantile(q) == both.quantile(q)


def test_memory_is_bounded_after_a_million_widely_ranging_values() -> None:
    sketch = DDSketch(relative_accuracy=ALPHA, max_buckets=512)
    rng = random.Random(7)
    for _ in range(1_000_000):
        # Thirty decades of magnitude: far more buckets than allowed.
        sketch.add(10.0 ** rng.uniform(-15, 15))
    assert sketch.count == 1_000_000
    assert sketch.bucket_count <= 512
    # Collapsing only costs accuracy at the low end: high quantiles stay exact-ish.
    p99_expected = 10.0 ** (-15 + 30 * 0.99)
    assert abs(sketch.quantile(0.99) - p99_expected) <= 0.05 * p99_expected


def test_collapsing_keeps_counts_and_high_quantiles_accurate() -> None:
    sketch = DDSketch(relative_accuracy=ALPHA, max_buckets=64)
    values = [10.0**e for e in range(-20, 1)] + [1.0 + i / 100 for i in range(1000)]
    for v in values:
        sketch.add(v)
    assert sketch.bucket_count <= 64
    assert sketch.count == len(values)
    for q in (0.5, 0.9, 0.99):
        expected = exact_quantile(values, q)
        assert abs(sketch.quantile(q) - expected) <= TOLERANCE * expected


def test_empty_and_edge_cases() -> None:
    sketch = DDSketch()
    assert math.isnan(sketch.quantile(0.5)) and sketch.count == 0
    assert sketch.summary() == {
        "count": 0, "sum": 0.0, "min": None, "max": None, "p50": None, "p95": None, "p99": None,
    }  # fmt: skip
    sketch.add(0.0, n=3)
    sketch.add(2.0)
    assert sketch.quantile(0.5) == 0.0 and sketch.quantile(1.0) == 2.0
    assert sketch.count == 4 and sketch.sum == 2.0 and sketch.mean == 0.5
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            sketch.add(bad)
    with pytest.raises(ValueError):
        sketch.quantile(1.5)
    with pytest.raises(ValueError):
        DDSketch(relative_accuracy=0.0)
    with pytest.raises(ValueError):
        sketch.merge(DDSketch(relative_accuracy=0.05))


def test_copy_is_independent() -> None:
    a = DDSketch()
    a.add(1.0)
    b = a.copy()
    b.add(100.0)
    assert (a.count, b.count) == (1, 2)
    assert a.quantile(1.0) == 1.0


def _state(sketch: DDSketch) -> tuple[object, ...]:
    stores = (sketch._pos, sketch._neg)
    return (
        sketch.count, sketch.sum, sketch.min, sketch.max, sketch._zero,
        *((s.offset, tuple(s.bins)) for s in stores),
    )  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(
    st.lists(signed, max_size=300),
    st.lists(magnitudes, max_size=300),
    st.integers(min_value=2, max_value=64),
)
def test_add_many_leaves_the_sketch_exactly_as_adding_one_by_one(
    mixed: list[float], positive: list[float], max_buckets: int
) -> None:
    # Few buckets, so collapsing happens too; ``positive`` takes the bulk path.
    bulk, single = DDSketch(max_buckets=max_buckets), DDSketch(max_buckets=max_buckets)
    for values in (mixed, positive):
        bulk.add_many(values)
        for v in values:
            single.add(v)
    assert _state(bulk) == _state(single)


def test_add_many_rejects_nan_and_infinities_like_add() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        sketch = DDSketch()
        with pytest.raises(ValueError, match="cannot add"):
            sketch.add_many([0.5, bad, 0.25])
        assert sketch.count == 1  # what came before the bad value, as with add()
