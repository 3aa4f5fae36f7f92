"""``stream_mode="messages"``: the messages a run's nodes make, as LangGraph streams them.

Two sources, as in LangGraph. The tokens of each LangChain chat model a node
calls reach a callback handler that the node's config carries (and LangChain's
config context, for a model called without the config). Then, when the node
returns, each message in its update that was not streamed already (a model
called without streaming, a message the node built itself) follows whole. A
chunk is ``(message, metadata)``: the node's ``langgraph_*`` keys, and for
tokens the model's own (``ls_model_name``, ...). Messages already in the
node's input are never streamed again, and each message id is streamed whole
at most once per run.

Chunks reach the caller as they are made (:mod:`trellis.engine.live`), as
``"custom"`` chunks do. ``langchain_core`` is imported only when a run asks for
this mode.
"""

from __future__ import annotations

import functools
import importlib.util
import uuid
from collections.abc import Iterable, Mapping
from contextvars import Token
from typing import TYPE_CHECKING, Any

from trellis.errors import InvalidConfigError
from trellis.types import START, RunnableConfig

if TYPE_CHECKING:
    from trellis.engine.task import Task

__all__ = ["MessageStream"]

NOSTREAM = "nostream"
"""LangGraph's tag for a chat model whose tokens must not be streamed."""


class MessageStream:
    """What one run streams in ``"messages"`` mode: the ids already out, and the
    hooks its driver calls around each node. A run that does not stream them but
    runs inside a node of one that does is ``muted``: its nodes' configs carry no
    handler, so their models reach neither its caller nor the outer stream.

    >>> stream = MessageStream.for_run()
    """

    __slots__ = ("handlers", "seen", "streams")

    def __init__(self, seen: set[Any], *, streams: bool = True) -> None:
        self.seen = seen
        self.streams = streams
        self.handlers: dict[Task, Any] = {}  # of the tasks whose nodes run now

    @classmethod
    def for_run(cls, outer: MessageStream | None = None) -> MessageStream:
        """The stream of a new run; one run inside a node of ``outer``'s run shares
        the ids that run already streamed."""
        if importlib.util.find_spec("langchain_core") is None:
            raise InvalidConfigError(
                "stream_mode='messages' streams the messages of LangChain chat models: "
                "pip install langchain-core"
            )
        return cls(outer.seen if outer is not None else set())

    def muted(self) -> MessageStream:
        """The stream of a run inside a node of this one that does not stream messages."""
        return MessageStream(self.seen, streams=False)

    def enter(self, task: Task) -> tuple[Token[Any], RunnableConfig] | None:
        """Before ``task``'s node runs: the messages it was given count as seen, and
        chat models it calls without its config report to its handler. None for the
        input step, which runs no node."""
        if task.name == START:
            return None
        from langchain_core.runnables.config import var_child_runnable_config

        if self.streams:
            for message in _messages_in(_values(task.input)):
                if message.id is not None:
                    self.seen.add(message.id)
        config = task.config()
        return var_child_runnable_config.set(config), config  # type: ignore[arg-type]

    def leave(self, task: Task, entered: tuple[Token[Any], RunnableConfig]) -> None:
        """After ``task``'s node: the messages of its update not streamed yet."""
        from langchain_core.runnables.config import var_child_runnable_config

        token, config = entered
        var_child_runnable_config.reset(token)
        if not self.streams:
            return
        if task.done and task.update:
            metadata = dict(config["metadata"])
            for message in _messages_in(task.update.values()):
                self.emit(task, message, metadata, whole=True)
        self.handlers.pop(task, None)

    def callbacks(self, task: Task, given: Any) -> Any:
        """The callbacks of ``task``'s config: the caller's (less any outer run's
        handler) and, when this run streams, its own, in one callback manager (as
        LangGraph's), which keeps a handler from being added twice when LangChain
        merges the config with its config context."""
        given = _without_ours(given)
        if not self.streams:
            return given
        from langchain_core.callbacks import CallbackManager

        handler = self.handlers.get(task)
        if handler is None:
            handler = self.handlers[task] = _handler_class()(self, task)
        manager = CallbackManager.configure(inheritable_callbacks=given)
        manager.add_handler(handler, inherit=True)
        return manager

    def emit(self, task: Task, message: Any, metadata: dict[str, Any], *, whole: bool) -> None:
        """Stream ``message``; a ``whole`` one only if its id is not out yet."""
        if whole and message.id in self.seen:
            return
        if message.id is None:
            message.id = str(uuid.uuid4())
        self.seen.add(message.id)
        task.stream("messages", (message, metadata))


def _without_ours(callbacks: Any) -> Any:
    """``callbacks`` (a list or a LangChain callback manager) less Trellis's handlers."""
    if callbacks is None:
        return None
    if isinstance(callbacks, list):
        return [c for c in callbacks if not _is_ours(c)] or None
    if not any(_is_ours(h) for h in callbacks.handlers):
        return callbacks
    callbacks = callbacks.copy()
    for handler in [h for h in callbacks.handlers if _is_ours(h)]:
        callbacks.remove_handler(handler)
    return callbacks


def _is_ours(callback: Any) -> bool:
    return getattr(callback, "trellis_messages", False) is True


@functools.cache
def _handler_class() -> type:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk

    try:  # what makes a chat model's invoke() stream its tokens to callbacks
        from langchain_core.tracers._streaming import _StreamingCallbackHandler
    except ImportError:  # an older langchain_core: tokens then come only when asked for
        _StreamingCallbackHandler = object  # type: ignore[assignment,misc]

    class MessagesHandler(BaseCallbackHandler, _StreamingCallbackHandler):  # type: ignore[type-arg]
        """Streams the tokens of the chat models one task calls."""

        run_inline = True  # called in the model's thread, in order
        trellis_messages = True

        def __init__(self, stream: MessageStream, task: Task) -> None:
            self.stream, self.task = stream, task
            self.namespace = task.namespace()
            # The metadata of each model run this task's node started, and the attempt
            # that started it: an attempt abandoned at its timeout streams no more.
            self.runs: dict[uuid.UUID, tuple[dict[str, Any], int]] = {}

        def _live(self, run_id: uuid.UUID, *, end: bool = False) -> dict[str, Any] | None:
            found = self.runs.pop(run_id, None) if end else self.runs.get(run_id)
            if found is None or found[1] != self.task.attempt:
                return None
            return found[0]

        def tap_output_iter(self, run_id: uuid.UUID, output: Any) -> Any:
            return output

        def tap_output_aiter(self, run_id: uuid.UUID, output: Any) -> Any:
            return output

        def on_chat_model_start(
            self,
            serialized: dict[str, Any],
            messages: list[list[Any]],
            *,
            run_id: uuid.UUID,
            tags: list[str] | None = None,
            metadata: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> None:
            if tags and NOSTREAM in tags:
                return
            if metadata is None or metadata.get("langgraph_checkpoint_ns") != self.namespace:
                return  # called in a graph this task's node runs, not by the node
            self.runs[run_id] = (metadata, self.task.current_attempt())

        def on_llm_new_token(
            self, token: Any, *, chunk: Any = None, run_id: uuid.UUID, **kwargs: Any
        ) -> None:
            metadata = self._live(run_id)
            if metadata is not None and isinstance(chunk, ChatGenerationChunk):
                self.stream.emit(self.task, chunk.message, metadata, whole=False)

        def on_llm_end(self, response: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
            metadata = self._live(run_id, end=True)
            generations = getattr(response, "generations", None)
            if metadata is not None and generations and generations[0]:
                generation = generations[0][0]
                if isinstance(generation, ChatGeneration):  # unless its tokens went out
                    self.stream.emit(self.task, generation.message, metadata, whole=True)

        def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
            self.runs.pop(run_id, None)

    return MessagesHandler


def _values(state: Any) -> Iterable[Any]:
    """The top-level values of a node's input: a dict, pydantic model or dataclass."""
    if isinstance(state, Mapping):
        return state.values()
    fields = getattr(type(state), "model_fields", None) or getattr(
        type(state), "__dataclass_fields__", None
    )
    return [getattr(state, name) for name in fields] if fields else ()


def _messages_in(values: Iterable[Any]) -> Iterable[Any]:
    """The LangChain messages among ``values``, or in the lists among them."""
    from langchain_core.messages import BaseMessage

    for value in values:
        if isinstance(value, BaseMessage):
            yield value
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, BaseMessage):
                    yield item
