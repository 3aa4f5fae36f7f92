"""Finding the graph a command names: ``MODULE:ATTR`` or ``path/to/file.py:ATTR``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from trellis.cli.common import CliError
from trellis.engine.compiled import CompiledStateGraph
from trellis.graph.builder import StateGraph

__all__ = ["load_graph"]


def load_graph(target: str) -> CompiledStateGraph:
    """The compiled graph that ``target`` names.

    ``ATTR`` may be a compiled graph, a ``StateGraph`` builder (compiled here) or
    a function of no arguments returning either. Modules are looked up from the
    current directory first, as ``python -m`` would.

    >>> load_graph("examples.support:graph")
    <CompiledStateGraph 'LangGraph' nodes=[...]>
    """
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"expected MODULE:ATTR (e.g. examples.support:graph), got {target!r}")
    module = _import(module_name)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(f"module {module_name!r} has no attribute {attr!r}") from None
    return _as_graph(obj, target)


def _import(name: str) -> Any:
    if name.endswith(".py") or os.sep in name or "/" in name:
        return _import_file(Path(name))
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise CliError(
                f"cannot import {name!r}: no module named {exc.name!r} "
                f"(looked in {cwd!r} and the installed packages)"
            ) from None
        raise  # the module exists but one of its own imports failed: show that


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise CliError(f"no such file: {str(path)!r}")
    dotted = _dotted_name(path)
    if dotted is not None:
        # As MODULE:ATTR: checkpoints name the state's classes by module, so a thread
        # started as rp/dc.py:graph must be readable as rp.dc:graph, and by a worker
        # that imports rp.dc.
        try:
            module = _import(dotted)
        except CliError:  # the name is another (installed) package's: load the file itself
            module = None
        if Path(getattr(module, "__file__", "") or "").resolve() == path.resolve():
            return module
    name = f"_trellis_cli_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CliError(f"cannot load {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _dotted_name(path: Path) -> str | None:
    """``rp/dc.py`` under the current directory as the module name ``rp.dc``; None
    for a file outside it or a path that is no module name."""
    try:
        relative = path.resolve().relative_to(Path.cwd().resolve()).with_suffix("")
    except ValueError:
        return None
    parts = relative.parts
    return ".".join(parts) if parts and all(p.isidentifier() for p in parts) else None


def _as_graph(obj: Any, target: str) -> CompiledStateGraph:
    if isinstance(obj, CompiledStateGraph):
        return obj
    if isinstance(obj, StateGraph):
        return obj.compile()
    if callable(obj) and not isinstance(obj, type):
        required = _required_params(obj)
        if required:
            raise CliError(
                f"{target} is a function that needs arguments ({', '.join(required)}); point "
                "at a graph, a StateGraph, or a function of no arguments that returns one"
            )
        made = obj()
        if isinstance(made, (CompiledStateGraph, StateGraph)):
            return _as_graph(made, target)
        obj = made
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    hint = (
        " (a LangGraph graph: import StateGraph from trellis instead)"
        if "langgraph" in kind
        else ""
    )
    raise CliError(
        f"{target} is a {kind}{hint}; expected a compiled Trellis graph, a StateGraph, "
        "or a function of no arguments returning one"
    )


def _required_params(fn: Any) -> list[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in params
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
