"""Import direction and module size, checked on the source with ast (nothing is imported).

Rules (DESIGN.md section 7):
- trellis.errors, trellis.types and trellis.jsonable are leaves: they import nothing
  from trellis.
- trellis.graph imports only errors, types and graph. The one exception: the
  function-level import of trellis.engine inside ``StateGraph.compile`` (any function
  named ``compile``).
- trellis.persist, trellis.resilience and trellis.observe import only errors, types
  and themselves.
- trellis.engine never imports trellis.cli or trellis.hitl.
- trellis.cli may import anything.
Imports under ``if TYPE_CHECKING:`` are annotations only, never executed, and are not
counted. No module is longer than 900 lines.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "trellis"
MAX_LINES = 900


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "trellis.graph.builder"
    target: str  # the imported module, e.g. "trellis.engine.compiled"
    line: int
    function: str | None  # innermost enclosing function, if any


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _is_module(dotted: str) -> bool:
    path = SRC.parent / dotted.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").is_file()


def imports_of(path: Path) -> list[Import]:
    module = module_name(path)
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, function)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.Import):
            found.extend(Import(module, a.name, node.lineno, function) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            found.append(Import(module, target, node.lineno, function))
            # `from trellis.engine import drivers` imports the submodule itself
            found.extend(
                Import(module, f"{target}.{a.name}", node.lineno, function)
                for a in node.names
                if _is_module(f"{target}.{a.name}")
            )
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(path.read_text(), str(path)), None)
    return [i for i in found if i.target == "trellis" or i.target.startswith("trellis.")]


MODULES = sorted(SRC.rglob("*.py"))
IMPORTS = [imp for path in MODULES for imp in imports_of(path)]


def layer(name: str) -> str:
    """'trellis.graph.builder' -> 'graph'; 'trellis.errors' -> 'errors'; 'trellis' -> ''."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(source_layers: set[str], allowed: set[str], *, forbidden: bool = False) -> list[str]:
    out = []
    for imp in IMPORTS:
        if layer(imp.module) not in source_layers:
            continue
        hit = layer(imp.target) in allowed
        if hit == forbidden:
            out.append(f"{imp.module}:{imp.line} imports {imp.target}")
    return out


def test_the_ast_scan_sees_imports() -> None:
    # Guard against a scan that silently finds nothing.
    assert len(MODULES) > 20
    assert any(i.module == "trellis.engine.loop" and i.target == "trellis.errors" for i in IMPORTS)


@pytest.mark.parametrize("leaf", ["errors", "types", "jsonable"])
def test_leaves_import_nothing_from_trellis(leaf: str) -> None:
    assert violations({leaf}, set()) == []


def test_graph_imports_only_errors_types_and_graph() -> None:
    found = []
    for imp in IMPORTS:
        if layer(imp.module) != "graph" or layer(imp.target) in {"errors", "types", "graph"}:
            continue
        if imp.function == "compile" and layer(imp.target) == "engine":
            continue  # StateGraph.compile builds the engine's compiled graph
        found.append(f"{imp.module}:{imp.line} imports {imp.target} (in {imp.function})")
    assert found == []


@pytest.mark.parametrize("package", ["persist", "resilience", "observe"])
def test_support_packages_import_only_errors_types_and_themselves(package: str) -> None:
    assert violations({package}, {"errors", "types", package}) == []


def test_engine_never_imports_cli_or_hitl() -> None:
    assert violations({"engine"}, {"cli", "hitl"}, forbidden=True) == []


def test_no_module_is_longer_than_the_limit() -> None:
    too_long = {
        module_name(p): n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert too_long == {}
