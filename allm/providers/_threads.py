"""The request checks every adapter makes before it encodes, the Fake included.

What no provider accepts is refused here, once, with the same
:class:`~allm.errors.ValidationError` whichever adapter is used, so a test written
against the Fake fails where a real provider would:

- an image in a system message (``invalid_image``; no provider has images there);
- a ``tool`` message without ``tool_call_id`` (``invalid_message``);
- a ``tool`` message whose ``tool_call_id`` answers no tool call of an earlier
  assistant message in the thread (``invalid_thread``; OpenAI, Anthropic and Gemini all
  refuse a tool result without its call);
- ``tool_choice`` naming a tool the request does not offer, or ``"required"`` with no
  tools at all (``invalid_request``).

Checks that depend on one provider (Anthropic's image types, Gemini's inline-only
images, images in an assistant message) stay in that adapter. An assistant message
with neither text nor tool calls is *not* refused: a model may answer with nothing,
and that answer stays in the thread (Anthropic and the Responses API skip it, Gemini
drops it with a warning, Chat Completions sends empty content).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ValidationError
from ..types import ImagePart, Message, Request

__all__ = ["check_request", "check_thread", "check_tool_choice"]


def check_thread(messages: Sequence[Message]) -> None:
    """Raise :class:`~allm.errors.ValidationError` for a thread no provider accepts (see the
    module docstring); the message names the offending ``messages[i]``."""
    calls: set[str] = set()
    for i, m in enumerate(messages):
        role = m.role
        if role == "assistant":
            for tc in m.tool_calls:
                calls.add(tc.id)
        elif role == "tool":
            if not m.tool_call_id:
                raise ValidationError(f"messages[{i}]: a tool message needs tool_call_id", reason="invalid_message")
            if m.tool_call_id not in calls:
                raise ValidationError(
                    f"messages[{i}]: the tool result for {m.tool_call_id!r} answers no tool call of an earlier "
                    "assistant message (every provider refuses a tool result without its call)",
                    reason="invalid_thread",
                )
        elif role == "system" and type(m.content) is not str:
            for j, p in enumerate(m.content):
                if type(p) is ImagePart:
                    raise ValidationError(
                        f"messages[{i}].content[{j}]: images are not allowed in a system message", reason="invalid_image"
                    )


def check_tool_choice(request: Request) -> None:
    """Raise :class:`~allm.errors.ValidationError` (``invalid_request``) when ``tool_choice``
    names a tool the request does not offer, or is ``"required"`` with no tools."""
    choice = request.tool_choice
    if choice is None or choice in ("auto", "none"):
        return
    names = [t.name for t in request.tools]
    if choice == "required":
        if not names:
            raise ValidationError('tool_choice="required" needs at least one tool', reason="invalid_request")
        return
    if choice not in names:
        offered = ", ".join(names) if names else "none"
        raise ValidationError(
            f"tool_choice names {choice!r}, which is not among the tools offered ({offered})", reason="invalid_request"
        )


def check_request(request: Request) -> None:
    """:func:`check_thread` on the messages, then :func:`check_tool_choice`."""
    check_thread(request.messages)
    check_tool_choice(request)
