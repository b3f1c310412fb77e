"""Live conversations: named, persistent, observable, interruptible.

A conversation is a :class:`~allm.Session` value plus a store plus a task. The manager
(:class:`Conversations`, or :class:`AsyncConversations` for asyncio code) owns the task
(``idle`` / ``busy``; interrupt = cancel it), the store owns durability (every message is
appended to the store before its event is published, so a crash loses nothing a caller
or subscriber was told about), and event handlers only observe::

    with allm.Conversations(store=MemoryStore(), engine=engine) as convs:
        convs.open("support-42", messages=[allm.system("Be brief.")])
        reply = convs.talk("support-42", "What's 2+2?")           # runs tools by itself
        convs.send("support-42", "And times 10?")                 # returns at once
        for update in convs.subscribe("support-42", since=0):     # history, then live events
            ...

Why one event loop: a conversation outlives the call that started it, so something
must run its turn while the caller does other things, and ``interrupt`` must be able to
stop it anywhere (closing the HTTP response, cancelling running tools). An asyncio task
does both for the price of a coroutine (a thousand idle or busy conversations cost a
thousand small objects, not a thousand threads), and task cancellation is exactly the
interrupt allm's async streams already honour. So the logic is written once, as
coroutines (:mod:`allm.conversations.core`), and both shells perform it:
:class:`AsyncConversations` on the caller's loop, :class:`Conversations` on a loop in
a background thread, each sync method submitting one coroutine and waiting for it. A
pure state machine driven by two shells (as the tool loop is) would have needed a thread
per running turn in the sync shell and a second way to cancel one; the manager has no
decisions worth separating from their I/O beyond what ``Session`` and the tool loop
already decide.

See ``guides/conversations.md``.
"""

from __future__ import annotations

from .core import ConversationInfo, SendOptions
from .events import ConversationEvent, HandlerFailed, MessageAdded, Outcome, TurnEnded, TurnStarted, Update
from .groups import ToolGroup
from .handlers import EventHandler
from .history import HistoryInfo
from .manager import AsyncConversations, Conversations
from .subscription import AsyncSubscription, Subscription

__all__ = [
    "AsyncConversations",
    "AsyncSubscription",
    "ConversationEvent",
    "ConversationInfo",
    "Conversations",
    "EventHandler",
    "HandlerFailed",
    "HistoryInfo",
    "MessageAdded",
    "Outcome",
    "SendOptions",
    "Subscription",
    "ToolGroup",
    "TurnEnded",
    "TurnStarted",
    "Update",
]
