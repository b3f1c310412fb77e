"""The Fake's usual reply (text and complete tool calls, up to a finish) built directly.

The events are the ones the Fake's :class:`~allm.providers.assembler.Assembler` path gives,
value for value (tests compare the two), at a quarter of the cost: the tool loop's scripted
turns are mostly these. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import orjson

from ..events import (
    Event,
    MessageCompleted,
    MessageStarted,
    TextCompleted,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
)
from ..types import Message, ToolCall, unchecked
from ._fake_script import FINISH_REASONS, Entry, FinishEntry, TextEntry, ToolCallEntry
from .assembler import distinct_id, parse_arguments

__all__ = ["is_plain", "play_plain"]

# The values of a plain reply, built by their fields (each in the form their checks give).
_message_started = unchecked(MessageStarted)
_text_delta = unchecked(TextDelta)
_text_completed = unchecked(TextCompleted)
_tool_call_started = unchecked(ToolCallStarted)
_tool_call_delta = unchecked(ToolCallDelta)
_tool_call_completed = unchecked(ToolCallCompleted)
_message_completed = unchecked(MessageCompleted)
_tool_call = unchecked(ToolCall)
_message = unchecked(Message)


def is_plain(entries: list[Entry]) -> bool:
    """Whether :func:`play_plain` can play ``entries``: text and named tool calls, up to a finish."""
    for e in entries:
        t = type(e)
        if t is FinishEntry:
            return True
        if (t is not TextEntry and t is not ToolCallEntry) or (t is ToolCallEntry and not e.name):  # type: ignore[union-attr]
            return False
    return True


def play_plain(entries: list[Entry], index: int, model: str, next_tool_id: Callable[[], str]) -> Iterator[Event]:
    """The events of the Fake's call ``index`` playing ``entries`` (see :func:`is_plain`);
    ``next_tool_id()`` gives the id of a tool call scripted without one."""
    yield _message_started(f"fake-{index + 1}", model, ())
    texts: list[str] = []
    calls: list[ToolCall] = []
    ids: set[str] = set()
    finish = raw_finish = "stop"
    for e in entries:
        t = type(e)
        if t is TextEntry:
            assert isinstance(e, TextEntry)
            texts.append(e.text)
            yield _text_delta(e.text, None)
        elif t is ToolCallEntry:
            assert isinstance(e, ToolCallEntry)
            raw = e.raw_arguments
            if raw is None:
                raw = orjson.dumps(dict(e.arguments or {})).decode()
            call_id = distinct_id(e.id or next_tool_id(), ids)  # a repeated id gets a suffix, as in the Assembler
            i = len(calls)
            yield _tool_call_started(call_id, e.name, i)
            if raw:
                yield _tool_call_delta(call_id, raw, i)
            args, err = parse_arguments(raw)
            call = _tool_call(call_id, e.name, args, raw or "{}", err, {})
            calls.append(call)
            yield _tool_call_completed(call, i)
        else:
            assert isinstance(e, FinishEntry)
            finish = e.reason if e.reason in FINISH_REASONS else "other"
            raw_finish = e.reason
            break
    content = ""
    if texts:
        content = "".join(texts)
        yield _text_completed(content, None)
    message = _message("assistant", content, tuple(calls), None, None, False, {})
    yield _message_completed(message, "tool_calls" if calls else finish, raw_finish, None, {})
