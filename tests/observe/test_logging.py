from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from trellis.observe import (
    JsonFormatter,
    LoggingObserver,
    Outcome,
    RunEvents,
    configure_logging,
)


@pytest.fixture
def trellis_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("trellis")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    logger.propagate = False
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@contextmanager
def _json_logger(name: str) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own writing through JsonFormatter into the stream yielded."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def test_json_formatter_writes_one_object_per_line_with_extras() -> None:
    with _json_logger("test.trellis.json") as (logger, stream):
        logger.warning("slow %s", "node\nwith newline", extra={"node": "fetch", "step": 3})
        try:
            raise ValueError("bad")
        except ValueError:
            logger.exception("failed", extra={"thread_id": "t1"})
    first, second = _lines(stream)
    assert first["level"] == "WARNING" and first["logger"] == "test.trellis.json"
    assert first["message"] == "slow node\nwith newline"
    assert (first["node"], first["step"]) == ("fetch", 3)
    assert isinstance(first["ts"], str) and first["ts"].endswith("+00:00")
    assert second["thread_id"] == "t1"
    assert "ValueError: bad" in str(second["exception"])
    assert "args" not in first and "msg" not in first


def test_configure_logging_installs_one_replaceable_handler(
    trellis_logger: logging.Logger,
) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(level="DEBUG", stream=first)
    configure_logging(level=logging.INFO, stream=second)
    trellis_logger.debug("hidden")
    trellis_logger.info("shown", extra={"node": "n"})
    assert first.getvalue() == ""
    (line,) = _lines(second)
    assert line["message"] == "shown" and line["node"] == "n"
    plain = io.StringIO()
    configure_logging(json=False, stream=plain)
    trellis_logger.info("text")
    assert plain.getvalue().rstrip().endswith("INFO trellis: text")


def test_logging_observer_levels_and_fields(trellis_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging(level="DEBUG", stream=stream)
    run = RunEvents(LoggingObserver(), graph="g", thread_id="t1", join_otel=False)
    run.run_start()
    step = run.step_start(0)
    task = run.task_start(step, "call_api")
    run.task_error(task, ConnectionError("refused"))
    run.retry(task, 0.5)
    run.step_end(step)
    run.run_end(Outcome.ERROR)
    lines = _lines(stream)
    levels = {(line["event"], line["level"]) for line in lines}
    assert levels == {
        ("run_start", "INFO"), ("step_start", "DEBUG"), ("task_start", "DEBUG"),
        ("task_error", "WARNING"), ("retry", "WARNING"), ("step_end", "DEBUG"),
        ("run_end", "WARNING"),
    }  # fmt: skip
    error = next(line for line in lines if line["event"] == "task_error")
    assert error["node"] == "call_api" and error["thread_id"] == "t1"
    assert error["trace_id"] == run.trace_id and error["span_id"] == task.span_id
    assert error["step"] == 0 and error["error_type"] == "ConnectionError"
    assert error["error_message"] == "refused"
    assert "call_api" in str(error["message"]) and "refused" in str(error["message"])
    retry = next(line for line in lines if line["event"] == "retry")
    assert retry["data"] == {"delay": 0.5}


def test_logging_observer_skips_disabled_levels(trellis_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging(level="WARNING", stream=stream)
    run = RunEvents(LoggingObserver(), join_otel=False)
    run.run_start()
    run.task_end(run.task_start(run.step_start(0), "quiet"))
    assert stream.getvalue() == ""


def test_json_formatter_spells_nan_and_infinities_as_valid_json() -> None:
    with _json_logger("test.trellis.nan") as (logger, stream):
        logger.warning("odd", extra={"p95": float("nan"), "limits": [float("inf"), 1.5]})
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert (record["p95"], record["limits"]) == ("nan", ["inf", 1.5])


def test_json_formatter_keeps_every_record_and_its_own_fields() -> None:
    with _json_logger("test.trellis.keys") as (logger, stream):
        logger.warning("odd keys", extra={"by_pair": {("a", 1): 2, "ok": {(3,): "x"}}})
        logger.warning("clash", extra={"level": "custom", "ts": 1, "node": "n"})
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["by_pair"] == {"('a', 1)": 2, "ok": {"(3,)": "x"}}
    assert (second["level"], second["message"]) == ("WARNING", "clash")
    assert (second["extra_level"], second["extra_ts"], second["node"]) == ("custom", 1, "n")
    assert second["ts"].endswith("+00:00")


@pytest.mark.parametrize(
    ("status", "level"),
    [(Outcome.INTERRUPTED, "INFO"), (Outcome.CANCELLED, "WARNING"), (Outcome.ERROR, "WARNING")],
)
def test_a_run_waiting_on_a_person_is_no_warning(
    trellis_logger: logging.Logger, status: str, level: str
) -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", stream=stream)
    run = RunEvents(LoggingObserver(), graph="g", join_otel=False)
    run.run_start()
    run.run_end(status)
    (end,) = [line for line in _lines(stream) if line["event"] == "run_end"]
    assert end["level"] == level
