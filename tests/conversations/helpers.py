"""Shared helpers for the conversation manager's tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import allm
from allm.conversations import MessageAdded, Subscription, TurnEnded, Update
from allm.providers import Fake
from allm.testing import delay, text

WAIT = 10.0  # seconds any single wait may take (a factor of 10 over what it needs)


def last_user_text(request: allm.Request) -> str:
    return next(m.text for m in reversed(request.messages) if m.role == "user")


def echo_engine(pause: float = 0.0, **fields: Any) -> allm.Engine:
    """An engine whose every answer is ``echo: <the last user text>`` (after ``pause`` seconds)."""

    def answer(request: allm.Request) -> list[Any]:
        reply = [text("echo: "), text(last_user_text(request))]
        return [delay(pause), *reply] if pause else reply

    return allm.Engine(adapter=Fake(function=answer), model="fake", **fields)


def until_turn_ended(sub: Subscription, timeout: float = WAIT) -> list[Update]:
    """Updates up to and including the next TurnEnded."""
    out: list[Update] = []
    while True:
        u = sub.get(timeout=timeout)
        out.append(u)
        if isinstance(u, TurnEnded):
            return out


def added(updates: Sequence[Update]) -> list[tuple[int, str, str]]:
    """(index, role, text) of each MessageAdded."""
    return [(u.index, u.message.role, u.message.text) for u in updates if isinstance(u, MessageAdded)]


def roles(messages: Sequence[allm.Message]) -> list[str]:
    return [m.role for m in messages]


class Recorder:
    """An event handler that records every callback it receives, in order."""

    def __init__(self, name: str = "rec", log: list[tuple[Any, ...]] | None = None) -> None:
        self.name = name
        self.calls: list[tuple[Any, ...]] = log if log is not None else []

    def on_message(self, conversation_id: str, message: allm.Message) -> None:
        self.calls.append((self.name, "on_message", conversation_id, message.role, message.text))

    def on_error(self, conversation_id: str, error: Exception) -> None:
        self.calls.append((self.name, "on_error", conversation_id, type(error).__name__, getattr(error, "reason", None)))

    def on_tool_call(self, conversation_id: str, name: str, arguments: Any) -> None:
        self.calls.append((self.name, "on_tool_call", conversation_id, name, dict(arguments)))

    def on_tool_result(self, conversation_id: str, name: str, result: Any, error: Any) -> None:
        self.calls.append((self.name, "on_tool_result", conversation_id, name, result, error))
