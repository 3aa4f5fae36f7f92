"""The public surface: ``trellis.__all__`` is a contract, and every name in it imports."""

from __future__ import annotations

import builtins
import importlib

import pytest

import trellis
import trellis.errors

# DESIGN.md section 1: everything a user needs, importable from the top level.
DESIGN_NAMES = frozenset(
    {
        "StateGraph",
        "START",
        "END",
        "Send",
        "Command",
        "interrupt",
        "RetryPolicy",
        "get_stream_writer",
        "add_messages",
        "RemoveMessage",
        "MemorySaver",
        "InMemorySaver",
        "SqliteSaver",
        "PostgresSaver",
        "CircuitBreaker",
        "once",
        "Approval",
        "ApprovalPolicy",
        "ReviewQueue",
    }
)

# Also public (LangGraph names a ported program imports, and Trellis's small additions).
EXTRA_NAMES = frozenset(
    {
        "REMOVE_ALL_MESSAGES",
        "AsyncPostgresSaver",
        "AsyncSqliteSaver",
        "CompensationReport",
        "CompiledStateGraph",
        "Interrupt",
        "IsLastStep",
        "RemainingSteps",
        "MessagesState",
        "Overwrite",
        "RunnableConfig",
        "Runtime",
        "StateSnapshot",
        "StateUpdate",
        "aonce",
        "get_config",
        "get_runtime",
        "get_store",
    }
)

EXPECTED = DESIGN_NAMES | EXTRA_NAMES

# DESIGN.md section 1: the documented errors and the builtin each one must also be.
DESIGN_ERRORS: dict[str, type[BaseException]] = {
    "GraphValidationError": ValueError,
    "InvalidUpdateError": ValueError,
    "RoutingError": ValueError,
    "GraphRecursionError": RecursionError,
    "NodeError": RuntimeError,
    "NodeTimeoutError": RuntimeError,
    "CircuitOpenError": RuntimeError,
    "CheckpointCorruptError": RuntimeError,
    "ConcurrentUpdateError": RuntimeError,
    "GraphVersionError": RuntimeError,
    "AlreadyDecidedError": RuntimeError,
    "EmptyInputError": ValueError,
    "InvalidConfigError": ValueError,
    "InterruptError": RuntimeError,
    "CheckpointNotFoundError": LookupError,
}


def test_all_equals_the_intended_public_names() -> None:
    actual = set(trellis.__all__)
    missing, extra = sorted(EXPECTED - actual), sorted(actual - EXPECTED)
    assert (missing, extra) == ([], []), f"missing from __all__: {missing}; unexpected: {extra}"
    assert len(trellis.__all__) == len(actual), "duplicates in __all__"


def test_every_design_name_is_exported() -> None:
    missing = sorted(DESIGN_NAMES - set(trellis.__all__))
    assert missing == [], f"DESIGN.md names not exported: {missing}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_public_name_is_importable(name: str) -> None:
    module = importlib.import_module("trellis")
    assert getattr(module, name) is not None


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from trellis import *", namespace)  # the import a user writes
    assert set(namespace) - {"__builtins__"} == set(trellis.__all__)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        trellis.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_saver_aliases_and_public_identities() -> None:
    from trellis.engine.interrupts import interrupt
    from trellis.persist.memory import InMemorySaver, MemorySaver

    assert trellis.MemorySaver is MemorySaver and trellis.InMemorySaver is InMemorySaver
    assert issubclass(trellis.InMemorySaver, trellis.MemorySaver) or (
        trellis.InMemorySaver is trellis.MemorySaver
    )
    assert trellis.interrupt is interrupt


@pytest.mark.parametrize("name", sorted(DESIGN_ERRORS))
def test_errors_are_importable_and_subclass_the_builtin(name: str) -> None:
    error = getattr(trellis.errors, name)
    assert name in trellis.errors.__all__
    assert issubclass(error, trellis.errors.TrellisError)
    assert issubclass(error, DESIGN_ERRORS[name])


def test_every_error_is_drawn_in_the_error_tree() -> None:
    doc = trellis.errors.__doc__ or ""
    for name in trellis.errors.__all__:
        error = getattr(trellis.errors, name)
        assert isinstance(error, type) and issubclass(error, Exception)
        assert name in doc, f"{name} missing from the errors.py docstring tree"


def test_error_names_do_not_shadow_builtins() -> None:
    assert not set(trellis.errors.__all__) & set(dir(builtins))
