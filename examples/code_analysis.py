"""Parallel code analysis: three analyzers fan out, one aggregator joins them.

``parse`` checks that the code is Python; ``analyze_style``,
``analyze_security`` and ``analyze_performance`` then run in the same step
(concurrently) and each appends its findings to ``issues``, an
``operator.add`` list. ``aggregate`` waits for all three
(``add_edge([...], "aggregate")``). The findings are merged in node-name order
(performance, security, style), never in completion order, so every run gives
the same list.

>>> result = graph.invoke({"code": "def f(q):\\n    return eval(q)\\n"})
>>> result["severity"], result["total_issues"]
('high', 2)
"""

from __future__ import annotations

import ast
import operator
import re
from typing import Annotated, Any, Literal, TypedDict

from trellis import END, START, StateGraph

__all__ = ["ANALYZERS", "SAMPLE_CODE", "AnalysisState", "Issue", "build", "graph"]

ANALYZERS = ("analyze_style", "analyze_security", "analyze_performance")
MAX_LINE = 100

SAMPLE_CODE = '''\
import pickle


def getUser(db, name):
    return db.execute(f"SELECT * FROM users WHERE name = '{name}'")


def load(blob):
    """Restore a saved session."""
    return pickle.loads(blob)


def pairs(items):
    """Every ordered pair."""
    out = []
    for a in items:
        for b in items:
            out.append((a, b))
    return out
'''
"""Code with one or more findings for every analyzer."""

_SNAKE = re.compile(r"^_*[a-z][a-z0-9_]*$")
_SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
_UNSAFE_CALLS = {
    "eval": "eval() runs arbitrary code",
    "exec": "exec() runs arbitrary code",
    "pickle.loads": "pickle.loads() on untrusted data runs arbitrary code",
    "pickle.load": "pickle.load() on untrusted data runs arbitrary code",
    "yaml.load": "yaml.load() without SafeLoader can build arbitrary objects",
}


class Issue(TypedDict):
    analyzer: Literal["style", "security", "performance"]
    line: int
    message: str


class AnalysisState(TypedDict, total=False):
    code: str
    functions: list[str]
    issues: Annotated[list[Issue], operator.add]
    total_issues: int
    severity: Literal["high", "medium", "low"]
    summary: str


def parse(state: AnalysisState) -> dict[str, Any]:
    tree = ast.parse(state["code"])  # a SyntaxError fails the run here, before fan-out
    functions = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    return {"functions": functions}


def analyze_style(state: AnalysisState) -> dict[str, Any]:
    code = state["code"]
    issues: list[Issue] = []
    for number, text in enumerate(code.splitlines(), start=1):
        if len(text) > MAX_LINE:
            issues.append(_issue("style", number, f"line longer than {MAX_LINE} characters"))
    for fn in _functions(code):
        if not _SNAKE.match(fn.name):
            issues.append(_issue("style", fn.lineno, f"function {fn.name!r} is not snake_case"))
        if ast.get_docstring(fn) is None:
            issues.append(_issue("style", fn.lineno, f"function {fn.name!r} has no docstring"))
    return {"issues": issues}


def analyze_security(state: AnalysisState) -> dict[str, Any]:
    issues: list[Issue] = []
    for node in ast.walk(ast.parse(state["code"])):
        if not isinstance(node, ast.Call):
            continue
        problem = _UNSAFE_CALLS.get(_dotted(node.func))
        if problem:
            issues.append(_issue("security", node.lineno, problem))
        if any(k.arg == "shell" and _is_true(k.value) for k in node.keywords):
            issues.append(_issue("security", node.lineno, "shell=True invites shell injection"))
        if node.args and _formatted_sql(node.args[0]):
            issues.append(_issue("security", node.lineno, "SQL built by string formatting"))
    return {"issues": issues}


def analyze_performance(state: AnalysisState) -> dict[str, Any]:
    finder = _LoopFinder()
    finder.visit(ast.parse(state["code"]))
    return {"issues": finder.issues}


def aggregate(state: AnalysisState) -> dict[str, Any]:
    issues = state.get("issues", [])
    counts = {name: sum(1 for i in issues if i["analyzer"] == name) for name in _KINDS}
    severity = "high" if counts["security"] else "medium" if issues else "low"
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) or "no issues"
    return {"total_issues": len(issues), "severity": severity, "summary": summary}


_KINDS = ("performance", "security", "style")


def _issue(analyzer: Any, line: int, message: str) -> Issue:
    return {"analyzer": analyzer, "line": line, "message": message}


def _functions(code: str) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(code)
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _formatted_sql(node: ast.expr) -> bool:
    """An f-string, ``%`` or ``.format`` whose literal text starts like SQL."""
    if isinstance(node, ast.JoinedStr):
        head = next((v.value for v in node.values if isinstance(v, ast.Constant)), "")
        return bool(_SQL.match(str(head)))
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return isinstance(node.left, ast.Constant) and bool(_SQL.match(str(node.left.value)))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        target = node.func.value
        return (
            node.func.attr == "format"
            and isinstance(target, ast.Constant)
            and bool(_SQL.match(str(target.value)))
        )
    return False


class _LoopFinder(ast.NodeVisitor):
    """Loops inside loops, and sorting inside loops: the usual O(n²) suspects."""

    def __init__(self) -> None:
        self.depth = 0
        self.issues: list[Issue] = []

    def _loop(self, node: ast.For | ast.AsyncFor | ast.While) -> None:
        if self.depth:
            self.issues.append(_issue("performance", node.lineno, "nested loop: O(n²)"))
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_For = visit_AsyncFor = visit_While = _loop

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        sorts = _dotted(func) == "sorted" or (
            isinstance(func, ast.Attribute) and func.attr == "sort"
        )
        if self.depth and sorts:
            self.issues.append(_issue("performance", node.lineno, "sorting inside a loop"))
        self.generic_visit(node)


def build() -> StateGraph[AnalysisState, None]:
    """The analysis workflow, uncompiled."""
    builder: StateGraph[AnalysisState, None] = StateGraph(AnalysisState)
    builder.add_node("parse", parse)
    builder.add_node("analyze_style", analyze_style)
    builder.add_node("analyze_security", analyze_security)
    builder.add_node("analyze_performance", analyze_performance)
    builder.add_node("aggregate", aggregate)
    builder.add_edge(START, "parse")
    for name in ANALYZERS:
        builder.add_edge("parse", name)
    builder.add_edge(list(ANALYZERS), "aggregate")
    builder.add_edge("aggregate", END)
    return builder


graph = build().compile()
