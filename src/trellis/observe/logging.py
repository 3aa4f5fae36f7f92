"""Structured logging through the standard ``logging`` module.

Trellis logs under the ``trellis`` logger. :func:`configure_logging` attaches one
handler there that writes one JSON object per line; :class:`LoggingObserver`
turns run events into log records carrying ``node``, ``thread_id``, ``trace_id``,
``span_id``, ``step`` and friends as record attributes, which
:class:`JsonFormatter` writes out as fields.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from datetime import UTC, datetime
from typing import IO, Any

from trellis.observe.events import Event, EventKind, Outcome

__all__ = ["JsonFormatter", "LoggingObserver", "configure_logging"]

# Everything a LogRecord has by itself; anything else on a record came from `extra`.
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: ``ts``, ``level``, ``logger``, ``message``,
    then every ``extra`` field, then ``exc_info`` as ``exception`` text.

    An ``extra`` field named like one of these is written as ``extra_<name>``
    rather than replace it. Values JSON cannot hold are written as their
    ``repr``, and so are mapping keys that are not strings: a record is never lost.

    >>> handler = logging.StreamHandler()
    >>> handler.setFormatter(JsonFormatter())
    >>> logging.getLogger("trellis").addHandler(handler)
    >>> logging.getLogger("trellis").warning("slow node", extra={"node": "fetch"})  # doctest: +SKIP
    {"ts": "2025-01-01T12:00:00.000000+00:00", "level": "WARNING", ..., "node": "fetch"}
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extras = {
            key: value
            for key, value in record.__dict__.items()
            if key not in _RESERVED and not key.startswith("_")
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        for key, value in extras.items():
            out[f"extra_{key}" if key in _OWN_FIELDS else key] = value
        try:
            return json.dumps(out, ensure_ascii=False, default=repr, allow_nan=False)
        except (ValueError, TypeError):  # NaN, infinities, keys that are not strings
            return json.dumps(_plain(out), ensure_ascii=False, default=repr)


_OWN_FIELDS = frozenset({"ts", "level", "logger", "message", "exception", "stack"})
_KEYS = (str, int, float, bool, type(None))  # what json.dumps accepts as a key


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` with what JSON cannot spell (NaN, infinities, other keys) as text."""
    if depth > 32:  # deep or circular: as text, as default=repr would have it
        return repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # 'nan', 'inf', '-inf'
    if isinstance(value, dict):
        return {
            (k if isinstance(k, _KEYS) else repr(k)): _plain(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    return value


class _TrellisHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so a second call replaces it."""


def configure_logging(
    json: bool = True,
    level: int | str = logging.INFO,
    *,
    stream: IO[str] | None = None,
    logger: str = "trellis",
) -> logging.Logger:
    """Send ``logger``'s records to ``stream`` (stderr), one JSON object per line.

    Calling it again replaces the handler it installed before. With
    ``json=False`` lines are plain text instead.

    >>> log = configure_logging(level="DEBUG")                # doctest: +SKIP
    """
    target = logging.getLogger(logger)
    for handler in list(target.handlers):
        if isinstance(handler, _TrellisHandler):
            target.removeHandler(handler)
    handler = _TrellisHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    target.addHandler(handler)
    target.setLevel(level)
    return target


_QUIET_ENDS = (None, Outcome.OK, Outcome.INTERRUPTED)  # ends that are no cause for concern
_LEVELS = {
    EventKind.RUN_START: logging.INFO,
    EventKind.RUN_END: logging.INFO,
    EventKind.STEP_START: logging.DEBUG,
    EventKind.STEP_END: logging.DEBUG,
    EventKind.TASK_START: logging.DEBUG,
    EventKind.TASK_END: logging.DEBUG,
    EventKind.TASK_ERROR: logging.WARNING,
    EventKind.RETRY: logging.WARNING,
    EventKind.INTERRUPT: logging.INFO,
    EventKind.APPROVAL_REQUESTED: logging.INFO,
    EventKind.APPROVAL_DECIDED: logging.INFO,
    EventKind.CHECKPOINT_SAVED: logging.DEBUG,
    EventKind.COMPENSATION: logging.WARNING,
    EventKind.CIRCUIT_STATE: logging.WARNING,
}

_EXTRA_FIELDS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "thread_id",
    "run_id",
    "graph",
    "step",
    "node",
    "task_id",
    "attempt",
    "status",
    "duration",
    "error_type",
    "error_message",
)


class LoggingObserver:
    """An event sink that logs each event to the ``trellis`` logger.

    Task and step events log at DEBUG, runs, interrupts and approvals at INFO,
    failures, retries, compensations and circuit changes at WARNING (a run that
    ends in error or is cancelled also at WARNING; one waiting on a person stays
    at INFO). Records carry the event's fields as extras.

    >>> configure_logging(level="INFO")                        # doctest: +SKIP
    >>> graph = builder.compile(observers=[LoggingObserver()])  # doctest: +SKIP
    """

    __slots__ = ("levels", "logger")

    def __init__(
        self,
        logger: logging.Logger | str = "trellis",
        *,
        levels: dict[EventKind, int] | None = None,
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.levels = {**_LEVELS, **(levels or {})}

    def __call__(self, event: Event) -> None:
        level = self.levels.get(event.kind, logging.INFO)
        if event.kind is EventKind.RUN_END and event.status not in _QUIET_ENDS:
            level = max(level, logging.WARNING)
        if not self.logger.isEnabledFor(level):
            return
        extra: dict[str, Any] = {"event": event.kind.value}
        for name in _EXTRA_FIELDS:
            value = getattr(event, name)
            if value is not None:
                extra[name] = value
        if event.data:
            extra["data"] = dict(event.data)
        self.logger.log(level, _message(event), extra=extra)


def _message(event: Event) -> str:
    parts = [event.kind.value]
    if event.node:
        parts.append(event.node)
    if event.step is not None:
        parts.append(f"step={event.step}")
    if event.attempt is not None and event.attempt > 1:
        parts.append(f"attempt={event.attempt}")
    if event.status:
        parts.append(event.status)
    if event.duration is not None:
        parts.append(f"{event.duration * 1000:.1f}ms")
    if event.error_type:
        parts.append(f"{event.error_type}: {event.error_message or ''}".rstrip(": "))
    return " ".join(parts)
