"""Differential tests: every program in programs.py runs on LangGraph and on Trellis.

LangGraph side: each program's invoke result must equal the LangGraph behaviour recorded in
programs.py (and .helpers/langgraph-semantics.md), and error programs must raise as recorded.
Trellis side: every observation (invoke, stream "updates" / "values" / both, ainvoke,
astream, custom, batch) must equal LangGraph's live observation of the same program, except
where a program is marked ``trellis_stricter``.

Each observation rebuilds the program, so closures (counters, retry attempts) start fresh.
"""

import asyncio
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest


def _load_programs() -> Any:
    # --import-mode=importlib puts no test directory on sys.path; load the sibling by path.
    name = "trellis_differential_programs"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("programs.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


programs = _load_programs()
Case = programs.Case
PROGRAMS: dict[str, Callable[[Any], Any]] = programs.PROGRAMS

try:
    from trellis import StateGraph as _TrellisStateGraph  # noqa: F401

    TRELLIS_OK = True
except ImportError:
    TRELLIS_OK = False

requires_trellis = pytest.mark.skipif(not TRELLIS_OK, reason="trellis engine not importable yet")

API_NAMES = (
    "StateGraph",
    "START",
    "END",
    "Send",
    "Command",
    "RetryPolicy",
    "get_stream_writer",
    "add_messages",
    "RemoveMessage",
)


def langgraph_api() -> SimpleNamespace:
    import langgraph.errors
    from langgraph.config import get_stream_writer
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.message import RemoveMessage, add_messages
    from langgraph.types import Command, RetryPolicy, Send

    return SimpleNamespace(
        StateGraph=StateGraph,
        START=START,
        END=END,
        Send=Send,
        Command=Command,
        RetryPolicy=RetryPolicy,
        get_stream_writer=get_stream_writer,
        add_messages=add_messages,
        RemoveMessage=RemoveMessage,
        errors=langgraph.errors,
    )


def trellis_api() -> SimpleNamespace:
    import trellis
    import trellis.errors

    names = {name: getattr(trellis, name, None) for name in API_NAMES}
    return SimpleNamespace(**names, errors=trellis.errors)


# --------------------------------------------------------------------------- observing


@dataclass
class Outcome:
    """What one call produced: a value, or an error plus the chunks streamed before it."""

    value: Any = None
    error: BaseException | None = None
    prefix: list[Any] = field(default_factory=list)

    @property
    def error_name(self) -> str | None:
        return None if self.error is None else type(self.error).__name__


def _sync(fn: Callable[[], Any]) -> Outcome:
    try:
        return Outcome(value=fn())
    except Exception as exc:
        return Outcome(error=exc)


def _sync_stream(make: Callable[[], Any]) -> Outcome:
    chunks: list[Any] = []
    try:
        for chunk in make():
            chunks.append(chunk)
    except Exception as exc:
        return Outcome(error=exc, prefix=chunks)
    return Outcome(value=chunks)


def _async(make: Callable[[], Any]) -> Outcome:
    async def run() -> Any:
        return await make()

    try:
        return Outcome(value=asyncio.run(run()))
    except Exception as exc:
        return Outcome(error=exc)


def _async_stream(make: Callable[[], Any]) -> Outcome:
    chunks: list[Any] = []

    async def run() -> None:
        async for chunk in make():
            chunks.append(chunk)

    try:
        asyncio.run(run())
    except Exception as exc:
        return Outcome(error=exc, prefix=chunks)
    return Outcome(value=chunks)


def _kwargs(run: Any) -> dict[str, Any]:
    return {} if run.context is None else {"context": run.context}


def observe(api: SimpleNamespace, build: Callable[[Any], Any]) -> dict[str, Outcome]:
    """Run one program every way the case asks for; key = observation name."""
    case = build(api)
    out: dict[str, Outcome] = {}

    def fresh() -> Any:
        return build(api).graph

    def observe_run(i: int, inp: Any, cfg: Any, kw: dict[str, Any]) -> None:
        if not case.is_async:
            out[f"invoke[{i}]"] = _sync(lambda: fresh().invoke(inp, cfg, **kw))
            for mode in ("updates", "values"):
                out[f"stream_{mode}[{i}]"] = _sync_stream(
                    lambda m=mode: fresh().stream(inp, cfg, stream_mode=m, **kw)
                )
            out[f"stream_multi[{i}]"] = _sync_stream(
                lambda: fresh().stream(inp, cfg, stream_mode=["updates", "values"], **kw)
            )
            if case.custom:
                out[f"stream_custom[{i}]"] = _sync_stream(
                    lambda: fresh().stream(inp, cfg, stream_mode="custom", **kw)
                )
                out[f"stream_custom_updates[{i}]"] = _sync_stream(
                    lambda: fresh().stream(inp, cfg, stream_mode=["custom", "updates"], **kw)
                )
            if case.debug:
                out[f"stream_debug[{i}]"] = _sync_stream(
                    lambda: fresh().stream(inp, cfg, stream_mode="debug", **kw)
                )
        # Sync programs are also run through the async API (sync nodes under ainvoke).
        out[f"ainvoke[{i}]"] = _async(lambda: fresh().ainvoke(inp, cfg, **kw))
        out[f"astream_updates[{i}]"] = _async_stream(
            lambda: fresh().astream(inp, cfg, stream_mode="updates", **kw)
        )
        if case.is_async:
            out[f"astream_values[{i}]"] = _async_stream(
                lambda: fresh().astream(inp, cfg, stream_mode="values", **kw)
            )
            out[f"astream_multi[{i}]"] = _async_stream(
                lambda: fresh().astream(inp, cfg, stream_mode=["updates", "values"], **kw)
            )

    for i, run in enumerate(case.runs):
        observe_run(i, run.input, run.config, _kwargs(run))
    if case.batch:
        inputs = [run.input for run in case.runs]
        out["batch"] = _sync(lambda: fresh().batch(inputs))
        out["abatch"] = _async(lambda: fresh().abatch(inputs))
    if case.mermaid:
        out["draw_mermaid"] = _sync(lambda: fresh().get_graph().draw_mermaid())
    return {key: _canonical(case, key, outcome) for key, outcome in out.items()}


def _debug_view(events: Any) -> Any:
    """Keep the deterministic part of debug events (ids and timestamps differ per run)."""
    if not isinstance(events, list):
        return events
    view = []
    for event in events:
        payload = event.get("payload", {})
        detail = payload.get("input") if event.get("type") == "task" else payload.get("result")
        view.append((event.get("type"), event.get("step"), payload.get("name"), detail))
    return view


def _canonical(case: Any, key: str, outcome: Outcome) -> Outcome:
    norm = case.normalize or (lambda v: v)
    value, prefix = norm(outcome.value), norm(outcome.prefix)
    if key.startswith("stream_debug"):
        value, prefix = _debug_view(value), _debug_view(prefix)
    if case.parallel:
        value, prefix = _per_step_multiset(key, value), _per_step_multiset(key, prefix)
    return Outcome(value=value, error=outcome.error, prefix=prefix)


def _stable_repr(value: Any) -> str:
    """repr with dict keys sorted: dict equality ignores key order, so sorting must too."""
    if isinstance(value, dict):
        items = sorted((repr(k), _stable_repr(v)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_stable_repr(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_stable_repr(v) for v in value) + ",)"
    return repr(value)


def _per_step_multiset(key: str, chunks: Any) -> Any:
    """Order-insensitive view of updates within a super-step.

    LangGraph streams the updates of one step in task *completion* order, which varies run to
    run; Trellis promises a fixed order. Either way only the multiset per step is comparable.
    A plain "updates" stream has no step markers, so it is compared as one multiset; the
    ["updates", "values"] stream is cut at each "values" chunk (one per writing step) and
    sorted within each segment, which keeps the step structure.
    """
    if not isinstance(chunks, list):
        return chunks
    if "multi" in key:
        segments: list[list[str]] = [[]]
        for chunk in chunks:
            segments[-1].append(_stable_repr(chunk))
            if isinstance(chunk, tuple) and chunk[0] == "values":
                segments.append([])
        return [sorted(seg) for seg in segments if seg]
    if "updates" in key or "debug" in key:
        return sorted(_stable_repr(c) for c in chunks)
    return chunks


_LANGGRAPH_CACHE: dict[str, dict[str, Outcome]] = {}


def langgraph_observations(name: str) -> dict[str, Outcome]:
    if name not in _LANGGRAPH_CACHE:
        _LANGGRAPH_CACHE[name] = observe(langgraph_api(), PROGRAMS[name])
    return _LANGGRAPH_CACHE[name]


# --------------------------------------------------------------------------- tests

NAMES = sorted(PROGRAMS)


def test_enough_programs() -> None:
    assert len(PROGRAMS) >= 30


@pytest.mark.parametrize("name", NAMES)
def test_langgraph(name: str) -> None:
    """LangGraph behaves as recorded in programs.py (guards the programs themselves)."""
    case = PROGRAMS[name](langgraph_api())
    obs = langgraph_observations(name)
    problems: list[str] = []
    for key, outcome in obs.items():
        if case.error is not None:
            if outcome.error_name != case.error:
                problems.append(f"{key}: expected {case.error}, got {outcome.error_name}")
        elif case.error_base is not None:
            if not isinstance(outcome.error, case.error_base):
                problems.append(f"{key}: expected a {case.error_base.__name__}, got {outcome!r}")
        elif outcome.error is not None:
            problems.append(f"{key}: unexpected {outcome.error_name}: {outcome.error}")
    for i, run in enumerate(case.runs):
        if run.expect is programs._MISSING:
            continue
        for key in (f"invoke[{i}]", f"ainvoke[{i}]"):
            if key in obs and obs[key].value != run.expect:
                problems.append(f"{key}: {obs[key].value!r} != expected {run.expect!r}")
    assert not problems, "\n".join(problems)


@requires_trellis
# Trellis hints at compile time about nodes reachable only through an undeclared Command goto;
# LangGraph accepts such programs silently, and the hint must not fail a ported program's run.
@pytest.mark.filterwarnings(r"ignore:node\(s\) :UserWarning")
@pytest.mark.parametrize("name", NAMES)
def test_trellis(name: str) -> None:
    """Trellis gives LangGraph's results, update for update (or its promised stricter error)."""
    case = PROGRAMS[name](trellis_api())
    reference = langgraph_observations(name)
    actual = observe(trellis_api(), PROGRAMS[name])
    problems: list[str] = []
    for key, ref in reference.items():
        got = actual.get(key)
        if got is None:
            problems.append(f"{key}: not observed on trellis")
            continue
        if case.trellis_stricter is not None:
            if got.error_name != case.trellis_stricter:
                problems.append(f"{key}: expected {case.trellis_stricter}, got {got!r}")
        elif case.error is not None or case.error_base is not None:
            if case.error is not None and got.error_name != ref.error_name:
                problems.append(f"{key}: error {got.error_name} != langgraph {ref.error_name}")
            if case.error_base is not None and not isinstance(got.error, case.error_base):
                problems.append(f"{key}: {got.error!r} is not a {case.error_base.__name__}")
            if case.error_prefix and got.prefix != ref.prefix:
                problems.append(f"{key}: chunks before error {got.prefix!r} != {ref.prefix!r}")
        elif got.error is not None:
            problems.append(f"{key}: trellis raised {got.error_name}: {got.error}")
        elif got.value != ref.value:
            problems.append(f"{key}:\n  trellis   {got.value!r}\n  langgraph {ref.value!r}")
        if got.error is not None and case.trellis_mentions:
            message = str(got.error)
            missing = [m for m in case.trellis_mentions if m not in message]
            if missing:
                problems.append(f"{key}: message {message!r} does not name {missing}")
    assert not problems, "\n".join(problems)
