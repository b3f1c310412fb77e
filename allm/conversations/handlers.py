"""Event handlers: objects that observe a conversation (persistence, logging, analytics).

A handler is any object with one or more of these methods, sync or ``async``:

- ``on_message(conversation_id, message)``: a message was stored (user, assistant, tool);
- ``on_error(conversation_id, error)``: a turn failed (provider, tool loop or store error);
- ``on_tool_call(conversation_id, name, arguments)``: a tool call is about to run;
- ``on_tool_result(conversation_id, name, result, error)``: it returned ``result`` or
  failed with ``error`` (a :class:`~allm.errors.ToolError`).

A conversation calls its handlers in the order given, one callback at a time, and waits
for each: ``async`` methods run on the manager's event loop, plain ones in a worker
thread (so a slow one holds up its own conversation only, and may call the manager).
A handler that raises is logged (logger ``allm.conversations``) and reported to
subscribers as :class:`~allm.conversations.events.HandlerFailed`; the other handlers and
the conversation go on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

__all__ = ["CALLBACKS", "EventHandler", "dispatch"]

CALLBACKS = ("on_message", "on_error", "on_tool_call", "on_tool_result")

log = logging.getLogger("allm.conversations")


class EventHandler(Protocol):
    """The shape of a handler (every method is optional; see the module docstring)."""

    def on_message(self, conversation_id: str, message: Any) -> Any: ...


Report = Callable[[object, str, BaseException], None]


async def dispatch(handlers: Sequence[object], callback: str, args: tuple[Any, ...], report: Report) -> None:
    """Call ``callback(*args)`` on each handler that has it, in order; failures go to ``report``."""
    for handler in handlers:
        fn = getattr(handler, callback, None)
        if fn is None:
            continue
        try:
            if inspect.iscoroutinefunction(fn):
                await fn(*args)
            else:
                result = await asyncio.to_thread(fn, *args)
                if inspect.isawaitable(result):
                    await result
        except Exception as exc:
            log.error(
                "event handler %s.%s raised for conversation %s", type(handler).__name__, callback, args[0], exc_info=exc
            )
            report(handler, callback, exc)
