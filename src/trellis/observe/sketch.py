"""A streaming quantile sketch with bounded memory and a known relative error.

This is DDSketch (Masson, Rim, Lee; VLDB 2019): values are counted in buckets
whose bounds grow geometrically by ``gamma = (1 + a) / (1 - a)``, so any quantile
is returned within relative error ``a`` of the exact one. Each sign keeps one
dense, contiguous range of at most ``max_buckets`` buckets; when a value would
widen the range past that, the lowest-magnitude buckets are merged into one
("collapsing lowest"), which only costs accuracy on the smallest values, far
below any percentile of interest for latencies. Memory is therefore
``O(max_buckets)`` whatever the number of values.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from functools import partial, reduce
from operator import add as _add
from operator import mul
from typing import Any

__all__ = ["DDSketch"]

_INF = math.inf
_ceil = math.ceil
_log2 = math.log2  # several times faster than math.log, which parses a base


class _Store:
    """Counts per bucket index, over one dense range ``[offset, offset + len(bins))``."""

    __slots__ = ("bins", "max_bins", "offset")

    def __init__(self, max_bins: int) -> None:
        self.bins: list[int] = []
        self.offset = 0
        self.max_bins = max_bins

    def add(self, index: int, n: int = 1) -> None:
        i = index - self.offset
        bins = self.bins
        if 0 <= i < len(bins):
            bins[i] += n
        elif i < 0 and len(bins) == self.max_bins:
            bins[0] += n  # Already collapsed: everything below the floor lands here.
        else:
            self._widen(index, n)

    def _widen(self, index: int, n: int) -> None:
        bins = self.bins
        if not bins:
            self.bins = [n]
            self.offset = index
            return
        lo = min(index, self.offset)
        hi = max(index, self.offset + len(bins) - 1)
        floor = max(lo, hi - self.max_bins + 1)
        new = [0] * (hi - floor + 1)
        for j, c in enumerate(bins):
            if c:
                new[max(self.offset + j, floor) - floor] += c
        new[max(index, floor) - floor] += n
        self.bins = new
        self.offset = floor

    def items_ascending(self) -> list[tuple[int, int]]:
        return [(self.offset + j, c) for j, c in enumerate(self.bins) if c]


class DDSketch:
    """Quantiles of a stream of numbers in constant memory.

    >>> s = DDSketch()
    >>> for ms in range(1, 1001):
    ...     s.add(ms / 1000)
    >>> abs(s.quantile(0.5) - 0.5) <= 0.01 * 0.5
    True
    >>> s.count, round(s.sum, 3), s.min, s.max
    (1000, 500.5, 0.001, 1.0)
    """

    __slots__ = (
        "_inv_log2_gamma",
        "_neg",
        "_pos",
        "_scale",
        "_zero",
        "count",
        "gamma",
        "max",
        "min",
        "relative_accuracy",
        "sum",
    )

    def __init__(self, relative_accuracy: float = 0.01, max_buckets: int = 2048) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError("relative_accuracy must be between 0 and 1 (exclusive)")
        if max_buckets < 2:
            raise ValueError("max_buckets must be at least 2")
        self.relative_accuracy = relative_accuracy
        self.gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._inv_log2_gamma = 1.0 / math.log2(self.gamma)
        self._scale = partial(mul, self._inv_log2_gamma)
        self._pos = _Store(max_buckets)
        self._neg = _Store(max_buckets)
        self._zero = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    @property
    def max_buckets(self) -> int:
        return self._pos.max_bins

    @property
    def bucket_count(self) -> int:
        """Buckets currently held (bounded by ``2 * max_buckets``)."""
        return len(self._pos.bins) + len(self._neg.bins)

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def add(self, value: float, n: int = 1) -> None:
        """Record ``value`` (``n`` times). NaN and infinities are rejected."""
        # On the hot path of every observed task: the index math and the store's
        # common case (a bucket inside the current range) are inlined.
        if 0.0 < value < _INF:
            store = self._pos
            index = _ceil(_log2(value) * self._inv_log2_gamma)
        elif -_INF < value < 0.0:
            store = self._neg
            index = _ceil(_log2(-value) * self._inv_log2_gamma)
        elif value == 0.0:
            store = None
            index = 0
            self._zero += n
        else:  # NaN or an infinity
            raise ValueError(f"cannot add {value!r} to a sketch")
        if store is not None:
            i = index - store.offset
            bins = store.bins
            if 0 <= i < len(bins):
                bins[i] += n
            else:
                store.add(index, n)
        self.count += n
        self.sum += value * n
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def add_many(self, values: Sequence[float]) -> None:
        """Record each of ``values``, in bulk: the same result as ``add`` for each.

        >>> s = DDSketch()
        >>> s.add_many([0.5, 0.25, 2.0])
        >>> s.count, s.sum, s.min, s.max
        (3, 2.75, 0.25, 2.0)
        """
        if not values:
            return
        low = min(values)
        total = reduce(_add, values, self.sum)  # left to right, exactly as add() sums
        if not (low > 0.0 and total < _INF):  # zeros, negatives, NaN or infinities
            for value in values:
                self.add(value)
            return
        # All positive and finite: the bucket indices in C-level loops.
        store = self._pos
        for index, n in Counter(map(_ceil, map(self._scale, map(_log2, values)))).items():
            store.add(index, n)
        self.count += len(values)
        self.sum = total
        if low < self.min:
            self.min = low
        high = max(values)
        if high > self.max:
            self.max = high

    def _value(self, index: int) -> float:
        # The bucket (gamma^(i-1), gamma^i] is represented by the point whose
        # relative distance to both bounds is exactly relative_accuracy.
        return 2.0 * self.gamma**index / (self.gamma + 1.0)

    def quantile(self, q: float) -> float:
        """The value at quantile ``q`` in [0, 1] (NaN when empty).

        Returns, within the relative accuracy, the element of rank
        ``floor(q * (count - 1))`` of the sorted stream.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError("quantile must be between 0 and 1")
        if self.count == 0:
            return math.nan
        if q == 0.0:
            return self.min
        if q == 1.0:
            return self.max
        rank = q * (self.count - 1)
        seen = 0
        for index, c in reversed(self._neg.items_ascending()):
            seen += c
            if seen > rank:
                return self._clamp(-self._value(index))
        seen += self._zero
        if seen > rank:
            return 0.0
        for index, c in self._pos.items_ascending():
            seen += c
            if seen > rank:
                return self._clamp(self._value(index))
        return self.max

    def _clamp(self, value: float) -> float:
        # min and max are exact, so clamping can only move the estimate closer.
        return min(max(value, self.min), self.max)

    def merge(self, other: DDSketch) -> None:
        """Add every value recorded by ``other`` (same relative accuracy required)."""
        if other.gamma != self.gamma:
            raise ValueError("cannot merge sketches with different relative accuracies")
        if other.count == 0:
            return
        for index, c in other._pos.items_ascending():
            self._pos.add(index, c)
        for index, c in other._neg.items_ascending():
            self._neg.add(index, c)
        self._zero += other._zero
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def copy(self) -> DDSketch:
        out = DDSketch(self.relative_accuracy, self.max_buckets)
        out.merge(self)
        return out

    def summary(self, quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict[str, Any]:
        """``count``, ``sum``, ``min``, ``max`` and ``p50``-style keys, JSON-able."""
        out: dict[str, Any] = {"count": self.count, "sum": self.sum}
        empty = self.count == 0
        out["min"] = None if empty else self.min
        out["max"] = None if empty else self.max
        for q in quantiles:
            out[_quantile_key(q)] = None if empty else self.quantile(q)
        return out

    def __repr__(self) -> str:
        return (
            f"DDSketch(count={self.count}, relative_accuracy={self.relative_accuracy}, "
            f"buckets={self.bucket_count})"
        )


def _quantile_key(q: float) -> str:
    """0.5 -> "p50", 0.95 -> "p95", 0.999 -> "p99.9"."""
    pct = round(q * 100, 6)
    return f"p{int(pct)}" if pct == int(pct) else f"p{pct:g}"
