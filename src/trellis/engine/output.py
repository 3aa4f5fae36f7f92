"""``output_keys=``: the part of the state a caller of ``invoke``/``stream`` gets.

As LangGraph: a list of keys gives dicts of those keys, one key (a ``str``) gives
its value alone. ``values`` chunks come only from steps that wrote one of the keys
(and when a resumed run shows where it stands); ``updates`` show each node's
writes to them, or None.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from trellis.errors import InvalidConfigError

if TYPE_CHECKING:
    from trellis.engine.task import Task

__all__ = ["OutputKeys"]

INTERRUPT = "__interrupt__"


class OutputKeys:
    """A caller's ``output_keys``, checked against the graph's state keys.

    >>> keys = OutputKeys("total", ["total", "items"], graph="cart")
    >>> keys.values({"total": 3, "items": []})
    3
    """

    __slots__ = ("keys", "shown", "single")

    def __init__(self, spec: str | Sequence[str], channels: Iterable[str], *, graph: str) -> None:
        self.shown = False  # whether the run made a values chunk of the keys (invoke)
        self.single = isinstance(spec, str)
        self.keys: tuple[str, ...] = (spec,) if isinstance(spec, str) else tuple(spec)
        known = set(channels)
        unknown = [k for k in self.keys if k not in known]
        if unknown:
            raise InvalidConfigError(
                f"graph {graph!r}: output_keys names unknown state key(s) "
                f"{', '.join(map(repr, unknown))}; the state has {', '.join(sorted(known))}"
            )

    def values(self, values: Mapping[str, Any]) -> Any:
        """A values chunk (or a run's output) cut to the keys."""
        if self.single:
            return values.get(self.keys[0])
        return {k: values[k] for k in self.keys if k in values}

    def with_interrupts(self, values: Mapping[str, Any], interrupts: Any) -> Any:
        """A values chunk of a run that stopped on ``interrupts``: LangGraph puts
        them beside the keys of a list, and alone for a single key."""
        if self.single:
            return {INTERRUPT: interrupts}
        return {**self.values(values), INTERRUPT: interrupts}

    def update(self, update: Mapping[str, Any] | None) -> Any:
        """What an ``updates`` chunk shows of a node's writes: those to the keys."""
        if not update:
            return None
        if self.single:
            return update.get(self.keys[0])
        return {k: update[k] for k in self.keys if k in update} or None

    def written(self, tasks: Iterable[Task]) -> bool:
        """Whether a step of ``tasks`` wrote one of the keys."""
        return any(t.update and any(k in t.update for k in self.keys) for t in tasks)

    def note(self, tasks: Iterable[Task]) -> None:
        """A step of ``tasks`` commits: a values chunk comes of it if it wrote a key."""
        self.shown = self.shown or self.written(tasks)
