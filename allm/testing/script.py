"""Script entries for :class:`~allm.providers.Fake` (re-exported by :mod:`allm.testing`)::

    from allm.testing import text, tool_call, usage, finish, error, delay

    fake = Fake(scripts=[
        [tool_call("lookup", {"q": "allm"})],
        [text("Found it."), usage(input_tokens=10, output_tokens=3)],
    ])

and two conveniences: :func:`collect` lists a stream's events, :func:`event_types`
names them (handy in assertions about order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..events import Event
from ..providers import _fake_script as entries
from ..types import Usage

__all__ = [
    "collect",
    "delay",
    "error",
    "event_types",
    "finish",
    "image",
    "raw_chunk",
    "reasoning",
    "text",
    "tool_call",
    "tool_call_delta",
    "usage",
]


def text(value: str) -> entries.TextEntry:
    """Answer text (one ``TextDelta``). A plain string in a script means the same."""
    return entries.TextEntry(value)


def reasoning(value: str, signature: str | None = None) -> entries.ReasoningEntry:
    """Model reasoning (a ``ReasoningDelta``), optionally with a provider signature."""
    return entries.ReasoningEntry(value, signature)


def tool_call(
    name: str, arguments: Mapping[str, Any] | None = None, *, id: str | None = None, raw_arguments: str | None = None
) -> entries.ToolCallEntry:
    """A complete tool call. ``id`` defaults to ``call_1``, ``call_2``... per Fake.
    ``raw_arguments`` sends exact JSON text (for example invalid JSON, to test errors)."""
    return entries.ToolCallEntry(name, dict(arguments) if arguments is not None else None, id, raw_arguments)


def tool_call_delta(id: str, arguments_delta: str, *, name: str | None = None) -> entries.ToolCallDeltaEntry:
    """A fragment of a streamed tool call's arguments; the call completes at the end of the script."""
    return entries.ToolCallDeltaEntry(id, arguments_delta, name)


def usage(
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    *,
    cached_input_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    total_tokens: int | None = None,
) -> entries.UsageEntry:
    """Token usage reported by the call (counters left ``None`` stay unreported)."""
    if total_tokens is None and input_tokens is not None and output_tokens is not None:
        total_tokens = input_tokens + output_tokens
    return entries.UsageEntry(
        Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached_input_tokens,
            reasoning_tokens=reasoning_tokens,
            total_tokens=total_tokens,
        )
    )


def raw_chunk(data: Any) -> entries.RawChunkEntry:
    """A raw provider chunk (seen only with ``include_raw_chunks=True``)."""
    return entries.RawChunkEntry(data)


def finish(reason: str = "stop") -> entries.FinishEntry:
    """End the call with this raw finish reason (``stop``, ``length``, ``content_filter``...)."""
    return entries.FinishEntry(reason)


def error(
    reason: str = "provider_unavailable",
    message: str = "scripted error",
    *,
    status: int | None = None,
    retry_after: float | None = None,
    before_stream: bool = False,
) -> entries.ErrorEntry:
    """A failure: mid-stream by default (an ``Error`` event), or ``before_stream=True``
    to fail the call before any event (retried when the reason is retryable).
    ``reason`` is an :class:`~allm.errors.AdapterError` reason."""
    return entries.ErrorEntry(reason, message, status, retry_after, before_stream)


def image(
    data: bytes | None = None,
    *,
    url: str | None = None,
    mime_type: str | None = "image/png",
    revised_prompt: str | None = None,
) -> entries.ImageEntry:
    """One image of a Fake image call (``Fake(images=[image(png_bytes)])``): inline ``data``
    or a ``url``, with an optional ``revised_prompt``."""
    if (data is None) == (url is None):
        raise ValueError("image() takes data or url=, exactly one")
    return entries.ImageEntry(data, url, mime_type if data is not None or mime_type != "image/png" else None, revised_prompt)


def delay(seconds: float) -> entries.DelayEntry:
    """Pause before the next entry (counts against the engine's deadlines)."""
    return entries.DelayEntry(seconds)


def collect(events: Iterable[Event]) -> list[Event]:
    """The events of a stream, as a list."""
    return list(events)


def event_types(events: Iterable[Event]) -> list[str]:
    """Class names of the events, in order."""
    return [type(e).__name__ for e in events]
