"""How a conversation lives in a store (:mod:`allm.stores`): one record and one log.

Both sit under namespace ``allm.conversations``, key = the conversation id:

- the **log** holds the history, one item per message (``allm.codec`` JSON of the
  :class:`~allm.types.Message`), appended in atomic groups: a user message; a tool-loop
  turn's assistant message with its tool results; an interrupted turn's marked messages.
  So the log is a valid thread after every append. ``import_history(..., replace=True)``
  appends a reset marker and the new history in one append: the history is what follows
  the last marker.
- the **record** holds settings and state (JSON, ``"allm_conversation": 1``):
  ``created_at`` (seconds since the epoch); ``base``, the log index where the current
  history starts; ``session``, the :class:`~allm.Session` without its messages (status,
  pending calls and question, context, metadata); ``engine``, the engine without tool
  handlers and without its ``context`` (``null`` when its adapter cannot be stored); and
  ``options``, the JSON-native loop options given at open (``mode``, ``max_turns``,
  ``tool_timeout``, ``params``). Keys, tool handlers and tool-group contexts are never
  stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson

from .. import Engine, Message, Session, Thread, codec
from ..errors import StoreError, ValidationError

__all__ = [
    "FORMAT",
    "NAMESPACE",
    "RESET",
    "STORED_OPTIONS",
    "Stored",
    "decode_log",
    "decode_record",
    "encode_message",
    "encode_record",
]

NAMESPACE = "allm.conversations"
FORMAT = 1
RESET = b'{"allm_conversation_reset":1}'
STORED_OPTIONS = ("mode", "max_turns", "tool_timeout", "params")


@attrs.frozen
class Stored:
    """A decoded record: the session has no messages (they are in the log)."""

    session: Session
    engine: Engine | None
    options: Mapping[str, Any]
    created_at: float
    base: int


def _exact(data: bytes) -> bytes:
    """``data`` in an allocation of its own size: orjson returns bytes inside a buffer of 4 KiB
    or more, which an in-memory store would keep for every item."""
    return bytes(memoryview(data))


def _engine_dict(engine: Engine | None) -> dict[str, Any] | None:
    if engine is None:
        return None
    bare = attrs.evolve(engine, tools=tuple(attrs.evolve(t, handler=None) for t in engine.tools), context={})
    try:
        data = codec.to_dict(bare)
        orjson.dumps(data)
    except (TypeError, ValueError):
        return None
    return data


def _options(options: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in STORED_OPTIONS:
        if k in options:
            try:
                orjson.dumps(options[k])
            except TypeError:
                continue
            out[k] = options[k]
    return out


def encode_record(
    session: Session, engine: Engine | None, options: Mapping[str, Any], created_at: float, base: int
) -> bytes:
    """The record's bytes. Raises :class:`~allm.errors.ValidationError` when the session's
    context or metadata is not JSON-native."""
    bare = attrs.evolve(session, thread=Thread((), session.thread.metadata))
    try:
        data = orjson.dumps(
            {
                "allm_conversation": FORMAT,
                "created_at": created_at,
                "base": base,
                "session": codec.to_dict(bare),
                "engine": _engine_dict(engine),
                "options": _options(options),
            }
        )
    except TypeError as exc:
        raise ValidationError(
            f"a conversation's context and metadata must be JSON-native: {exc}", reason="invalid_session"
        ) from None
    return _exact(data)


def decode_record(key: str, data: bytes) -> Stored:
    """The record of conversation ``key``. Raises :class:`~allm.errors.StoreError`
    (``corrupt``) for bytes this allm cannot read, :class:`~allm.errors.ValidationError`
    (``invalid_session``) for a record written by a newer allm."""
    try:
        raw = orjson.loads(data)
        version = raw["allm_conversation"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise StoreError(f"conversation {key!r}: its stored record is not readable", reason="corrupt") from None
    if not isinstance(version, int) or version > FORMAT:
        raise ValidationError(
            f"conversation {key!r} was stored in conversation format {version!r}; this allm reads up to {FORMAT}",
            reason="invalid_session",
        )
    try:
        session = codec.from_dict(raw["session"], Session)
        engine = codec.from_dict(raw["engine"], Engine) if raw.get("engine") else None
        return Stored(session, engine, dict(raw.get("options") or {}), float(raw["created_at"]), int(raw["base"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"conversation {key!r}: its stored record is not readable ({exc})", reason="corrupt") from None


def encode_message(message: Message) -> bytes:
    """A log item. Raises :class:`~allm.errors.ValidationError` for metadata that is not JSON-native."""
    try:
        return _exact(codec.dumps(message))
    except TypeError as exc:
        raise ValidationError(f"a message's metadata must be JSON-native: {exc}", reason="invalid_message") from None


def decode_log(key: str, items: Sequence[bytes], offset: int) -> tuple[list[Message], int]:
    """The history in log ``items`` (read from log index ``offset``): the messages after the
    last reset marker, and the log index where they start. Raises
    :class:`~allm.errors.StoreError` (``corrupt``) for an item that is not a message."""
    start = 0
    for i, item in enumerate(items):
        if item == RESET:
            start = i + 1
    out: list[Message] = []
    for i in range(start, len(items)):
        try:
            out.append(codec.loads(items[i], Message))
        except ValidationError as exc:
            raise StoreError(
                f"conversation {key!r}: log item {offset + i} is not a stored message ({exc.message})", reason="corrupt"
            ) from None
    return out, offset + start
