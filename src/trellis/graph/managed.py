"""Managed values: state keys the engine fills in for each step instead of storing.

LangGraph's ``RemainingSteps`` and ``IsLastStep``: a node (or router) reads how many
steps the run's ``recursion_limit`` has left, to wrap up before it is reached.
They are never written, stored or returned; a node that writes one is told so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any

__all__ = [
    "IsLastStep",
    "IsLastStepManager",
    "ManagedValue",
    "RemainingSteps",
    "RemainingStepsManager",
    "managed_getter",
    "managed_note",
]


class ManagedValue:
    """What a managed key holds, from the steps the run has left (``get``)."""

    @staticmethod
    def get(remaining: int) -> Any:
        raise NotImplementedError


class RemainingStepsManager(ManagedValue):
    """The steps left before ``recursion_limit`` is reached, this one included."""

    @staticmethod
    def get(remaining: int) -> int:
        return remaining


class IsLastStepManager(ManagedValue):
    """Whether this is the last step ``recursion_limit`` allows."""

    @staticmethod
    def get(remaining: int) -> bool:
        return remaining == 1


RemainingSteps = Annotated[int, RemainingStepsManager]
"""A state key holding the steps left, as LangGraph's.

>>> class State(TypedDict):
...     messages: Annotated[list, add_messages]
...     remaining_steps: RemainingSteps
>>> def agent(state: State) -> dict:
...     if state["remaining_steps"] < 2:
...         return {"messages": [("ai", "Sorry, I need more steps for this.")]}
"""

IsLastStep = Annotated[bool, IsLastStepManager]
"""A state key that is True in the last step ``recursion_limit`` allows."""

# LangGraph's own markers, for a schema that still imports them from langgraph.managed.
_LANGGRAPH: dict[str, type[ManagedValue]] = {
    "RemainingStepsManager": RemainingStepsManager,
    "IsLastStepManager": IsLastStepManager,
}


def managed_getter(metadata: tuple[Any, ...]) -> Callable[[int], Any] | None:
    """The ``get`` of the managed value an ``Annotated`` key's metadata names, if any.

    >>> managed_getter((RemainingStepsManager,))(3)
    3
    """
    for item in metadata:
        if isinstance(item, type) and issubclass(item, ManagedValue):
            return item.get
        if isinstance(item, type) and item.__module__.startswith("langgraph."):
            ours = _LANGGRAPH.get(item.__name__)
            if ours is not None:
                return ours.get
    return None


def managed_note(keys: Iterable[str], managed: Mapping[str, Any]) -> str:
    """For an unknown-key error: which of ``keys`` are managed, so cannot be written.

    >>> managed_note(["remaining_steps", "typo"], {"remaining_steps": RemainingStepsManager.get})
    "; 'remaining_steps' is managed (filled in for each step), not written"
    """
    named = [key for key in keys if key in managed]
    if not named:
        return ""
    verb = "is" if len(named) == 1 else "are"
    return f"; {', '.join(map(repr, named))} {verb} managed (filled in for each step), not written"
