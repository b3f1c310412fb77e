"""What a conversation publishes besides allm's own events (:mod:`allm.events`).

A subscriber (:meth:`allm.Conversations.subscribe`) receives, in order, every event of
every turn (``MessageStarted``, ``TextDelta``, ``ToolExecutionStarted``, ``StepCompleted``...)
interleaved with these:

- :class:`TurnStarted` when ``send`` accepted a message (after its :class:`MessageAdded`);
- :class:`MessageAdded` for each message of the history, published only after the message
  is stored (a subscriber never sees a message a crash could lose);
- :class:`TurnEnded` when the turn is over (completed, interrupted or failed);
- :class:`HandlerFailed` when an event handler raised (the conversation went on).

All are frozen ``attrs`` values.
"""

from __future__ import annotations

from typing import Literal, Union

import attrs

from .. import Message
from ..events import Event

__all__ = ["ConversationEvent", "HandlerFailed", "MessageAdded", "Outcome", "TurnEnded", "TurnStarted", "Update"]

Outcome = Literal["completed", "interrupted", "error"]


@attrs.frozen
class MessageAdded:
    """``message`` is stored at position ``index`` (0-based) of the conversation's history.

    ``replayed`` is ``True`` for the messages a late subscriber asked to catch up on
    (``subscribe(id, since=n)``), ``False`` for a message added now.
    """

    conversation_id: str
    index: int
    message: Message
    replayed: bool = False


@attrs.frozen
class TurnStarted:
    """A turn began with the user message at ``index``; the conversation is ``busy``."""

    conversation_id: str
    index: int


@attrs.frozen
class TurnEnded:
    """A turn is over and the conversation is ``idle`` again.

    - ``outcome``: ``completed`` (the tool loop halted on its own: see ``halted_reason``),
      ``interrupted`` (:meth:`~allm.Conversations.interrupt`) or ``error``.
    - ``halted_reason``: the loop's (``completed``, ``max_turns``, ``ask_user``,
      ``manual_tool_calls``, a handler's ``Halt`` reason...), ``cancelled`` when
      interrupted, ``error`` on failure.
    - ``status``: the conversation's :class:`~allm.Session` status now (``completed``,
      ``idle``, ``awaiting_user``, ``awaiting_tools``).
    - ``error``: what failed (an :class:`~allm.errors.AllmError` for provider, tool and
      store failures), else ``None``.
    - ``message_count``: messages in the history now.
    - ``reply``: the last assistant message this turn added, if any.
    """

    conversation_id: str
    outcome: Outcome
    halted_reason: str | None
    status: str
    message_count: int
    error: Exception | None = attrs.field(default=None, eq=False)
    reply: Message | None = None


@attrs.frozen
class HandlerFailed:
    """An event handler's ``callback`` (``on_message``...) raised ``error``; the other
    handlers and the conversation went on. ``handler`` is the handler's type name."""

    conversation_id: str
    handler: str
    callback: str
    error: BaseException = attrs.field(eq=False)


ConversationEvent = Union[MessageAdded, TurnStarted, TurnEnded, HandlerFailed]
Update = Union[Event, ConversationEvent]
"""What a subscription yields: an allm event or a conversation event."""
