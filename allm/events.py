"""The one event union every adapter and every loop emits.

Events are frozen, slotted ``attrs`` classes, matched with ``match``::

    for event in allm.stream_generate(engine, req):
        match event:
            case allm.events.TextDelta(delta=d):
                print(d, end="")
            case allm.events.MessageCompleted(finish_reason=r):
                print("\\n", r)

Order for one model call (``stream_generate``): ``MessageStarted``, then per
content block ``TextDelta*`` / ``ReasoningDelta*`` / ``ToolCallStarted``,
``ToolCallDelta*`` each closed by ``TextCompleted`` / ``ReasoningCompleted`` /
``ToolCallCompleted``, then one ``MessageCompleted``. ``RawChunk`` events appear
only when asked for (``include_raw_chunks=True``), except those carrying
``usage``, which always pass. An ``Error`` event reports a failure after the
stream began; nothing but ``MessageCompleted``-less end follows it.

The tool loop adds, per tool call, ``ToolExecutionStarted``,
``ToolExecutionCompleted`` and one of ``ToolResultEncoded`` /
``AskUserRequested`` / ``ToolHalt``; one ``StepCompleted`` per turn; one
``ChatCompleted`` at the end of a chat.

Adding a field to an event is not a breaking change; adding an event class is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Union

import attrs

from .types import CallWarning, ChatResult, Message, ReasoningPart, Response, Step, Thread, ToolCall, Usage

if TYPE_CHECKING:
    from .errors import AllmError

__all__ = [
    "AskUserRequested",
    "ChatCompleted",
    "Error",
    "Event",
    "MessageCompleted",
    "MessageStarted",
    "RawChunk",
    "ReasoningCompleted",
    "ReasoningDelta",
    "StepCompleted",
    "TextCompleted",
    "TextDelta",
    "ToolCallCompleted",
    "ToolCallDelta",
    "ToolCallStarted",
    "ToolExecutionCompleted",
    "ToolExecutionStarted",
    "ToolHalt",
    "ToolResultEncoded",
]

_EMPTY: Mapping[str, Any] = {}


@attrs.frozen
class MessageStarted:
    """The provider accepted the call and began its answer.

    ``id`` and ``model`` are the provider's response id and model name when known;
    ``warnings`` lists what the adapter did not send as asked
    (:class:`~allm.types.CallWarning`: settings the provider does not support...).
    """

    id: str | None = None
    model: str | None = None
    warnings: tuple[CallWarning, ...] = ()


@attrs.frozen
class TextDelta:
    """A fragment of answer text. ``id`` names the content block (``None`` for the only one)."""

    delta: str
    id: str | None = None


@attrs.frozen
class TextCompleted:
    """A text block is complete; ``text`` is all of it."""

    text: str
    id: str | None = None


@attrs.frozen
class ReasoningDelta:
    """A fragment of model reasoning (Anthropic thinking, Gemini thoughts, OpenAI summaries)."""

    delta: str
    id: str | None = None


@attrs.frozen
class ReasoningCompleted:
    """A reasoning block is complete, with what must be sent back (signatures, encrypted content)."""

    part: ReasoningPart
    id: str | None = None

    @property
    def text(self) -> str:
        return self.part.text


@attrs.frozen
class ToolCallStarted:
    """The model began a tool call. ``index`` is its position among this message's calls."""

    tool_call_id: str
    name: str
    index: int = 0


@attrs.frozen
class ToolCallDelta:
    """A fragment of a tool call's JSON arguments."""

    tool_call_id: str
    arguments_delta: str
    index: int = 0


@attrs.frozen
class ToolCallCompleted:
    """A tool call is complete, its arguments parsed."""

    tool_call: ToolCall
    index: int = 0

    @property
    def tool_call_id(self) -> str:
        return self.tool_call.id

    @property
    def name(self) -> str:
        return self.tool_call.name

    @property
    def arguments(self) -> Mapping[str, Any]:
        return self.tool_call.arguments


@attrs.frozen
class ToolExecutionStarted:
    """The tool loop started running a tool call's handler."""

    tool_call_id: str
    name: str
    arguments: Mapping[str, Any] = _EMPTY


@attrs.frozen
class ToolExecutionCompleted:
    """A handler returned (``result``) or failed (``error``, a :class:`~allm.errors.ToolError`)."""

    tool_call_id: str
    name: str
    result: Any = None
    error: AllmError | None = None


@attrs.frozen
class ToolResultEncoded:
    """A tool result was encoded as the ``content`` of the tool message the model will read."""

    tool_call_id: str
    content: str
    is_error: bool = False


@attrs.frozen
class AskUserRequested:
    """A handler asked the user a question; the loop stops until the user replies."""

    tool_call_id: str
    tool_name: str
    question: str
    choices: tuple[str, ...] = ()
    options: Mapping[str, Any] = _EMPTY


@attrs.frozen
class ToolHalt:
    """A handler stopped the loop with its own ``reason``; ``result`` is still encoded."""

    tool_call_id: str
    reason: str
    result: Any = None
    content: str | None = None


@attrs.frozen
class MessageCompleted:
    """The model's message is complete.

    ``finish_reason`` is derived (a completed tool call means ``"tool_calls"``);
    ``raw_finish_reason`` is the provider's own string. ``usage`` holds every
    counter reported so far (``None`` counters were not reported).
    """

    message: Message
    finish_reason: str | None = None
    raw_finish_reason: str | None = None
    usage: Usage | None = None
    metadata: Mapping[str, Any] = _EMPTY


@attrs.frozen
class StepCompleted:
    """One turn of the tool loop is complete."""

    step: Step

    @property
    def response(self) -> Response:
        return self.step.response

    @property
    def thread(self) -> Thread:
        return self.step.thread


@attrs.frozen
class ChatCompleted:
    """A chat ended; ``result.halted_reason`` says why."""

    result: ChatResult


@attrs.frozen
class RawChunk:
    """A provider chunk as decoded JSON (only with ``include_raw_chunks=True``).

    A chunk that reports token usage carries it in ``usage``; those always pass
    the stream filters so a fold can collect usage.
    """

    data: Any = None
    usage: Usage | None = None


@attrs.frozen
class Error:
    """A failure after the stream began (mid-stream provider error, timeout, lost connection).

    ``error`` is the typed :class:`~allm.errors.AllmError`. The fold keeps the
    partial output and records ``finish_reason="error"``.
    """

    error: AllmError


Event = Union[
    MessageStarted,
    TextDelta,
    TextCompleted,
    ReasoningDelta,
    ReasoningCompleted,
    ToolCallStarted,
    ToolCallDelta,
    ToolCallCompleted,
    ToolExecutionStarted,
    ToolExecutionCompleted,
    ToolResultEncoded,
    AskUserRequested,
    ToolHalt,
    MessageCompleted,
    StepCompleted,
    ChatCompleted,
    RawChunk,
    Error,
]
