"""The conversation manager's logic, written once, run on one asyncio event loop.

:class:`Core` holds every live conversation and performs every operation as a coroutine
on the loop it runs on; :class:`~allm.conversations.Conversations` (sync) and
:class:`~allm.conversations.AsyncConversations` are thin shells around it (see
:mod:`allm.conversations` for why it is a loop). Only the loop's thread touches this
state, so a check and the change it guards (``busy``) never race.

A turn is a :class:`~allm.Session` operation (``astream_reply``) consumed event by event
by a task. The conversation's history is what the store's log holds: each message is
appended (in atomic groups that keep the log a valid thread) before its ``MessageAdded``
is published, and ``Session`` values are folded from the events as they pass (the
session stays the pure value it is; this module only decides when to store and tell).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict, Unpack, cast

import attrs

from .. import ChatOptions, Engine, Message, Session, Thread, Tool, ToolCall, user
from ..errors import ConversationError, EngineError, StoreError, ValidationError
from ..events import (
    ChatCompleted,
    Event,
    StepCompleted,
    ToolExecutionCompleted,
    ToolExecutionStarted,
    ToolHalt,
    ToolResultEncoded,
)
from ..formats import import_history as read_history_file
from ..profiles import Card, Profile, Profiles
from ..stores import MemoryStore, Store
from . import storage
from .events import HandlerFailed, MessageAdded, Outcome, TurnEnded, TurnStarted, Update
from .groups import ToolGroup, bind_tools
from .handlers import CALLBACKS, dispatch
from .history import HistoryInfo, write_history
from .subscription import Sink

__all__ = ["ConversationInfo", "Core", "OpenOptions", "ReopenOptions", "SendOptions", "new_conversation_id"]

SessionStatus = Literal["idle", "awaiting_user", "awaiting_tools", "completed", "error"]

_ID = re.compile(r"[^\s\x00-\x1f\x7f]{1,200}")
_OPTIONS = (frozenset(ChatOptions.__optional_keys__) | {"params"}) - {
    "session_id",
    "structured_finalize",
    "structured_finalize_nudge",
}


class ReopenOptions(TypedDict, total=False):
    """Keyword arguments of ``reopen`` and ``find`` (see :meth:`allm.AsyncConversations.reopen`)."""

    engine: Engine | None
    card: Any
    tools: Sequence[Tool | ToolGroup]
    handlers: Sequence[object]
    options: Mapping[str, Any] | None


class OpenOptions(ReopenOptions, total=False):
    """Keyword arguments of ``open``, ``ensure`` and ``import_history`` (see
    :meth:`allm.AsyncConversations.open`)."""

    messages: Sequence[Message]
    persist_initial: bool
    context: Mapping[str, Any] | None
    metadata: Mapping[str, Any] | None


class SendOptions(ChatOptions, total=False):
    """Options of a turn: :class:`~allm.ChatOptions` (but ``session_id`` and the
    ``structured_finalize`` pair) plus ``params``, request fields for every model call
    (``{"temperature": 0, "max_tokens": 200}``)."""

    params: Mapping[str, Any] | None

INTERRUPTED_RESULT = '{"error": "interrupted: the tool call was cancelled before it returned"}'


def new_conversation_id() -> str:
    """``conv_`` and 16 URL-safe characters from 12 random bytes."""
    return "conv_" + base64.urlsafe_b64encode(os.urandom(12)).decode("ascii")


@attrs.frozen
class ConversationInfo:
    """A live conversation at a glance: ``id``, ``status`` (``idle`` or ``busy``: a turn,
    an open or an import is running), ``message_count`` (messages in its history) and
    ``session_status`` (its :class:`~allm.Session`'s: ``idle``, ``completed``,
    ``awaiting_user``, ``awaiting_tools``)."""

    id: str
    status: Literal["idle", "busy"]
    message_count: int
    session_status: str


class _Live:
    """One live conversation (touched only on the manager's loop)."""

    __slots__ = (
        "base",
        "busy",
        "created_at",
        "done",
        "engine",
        "handlers",
        "history",
        "in_stream",
        "interrupting",
        "last",
        "options",
        "record",
        "session",
        "sinks",
        "task",
        "version",
    )

    def __init__(self, session: Session, engine: Engine, handlers: tuple[object, ...], options: dict[str, Any]) -> None:
        self.session = session
        self.engine = engine
        self.handlers = handlers
        self.options = options
        self.history: list[Message] = list(session.thread.messages)
        self.created_at = time.time()
        self.base = 0
        self.version = 0
        self.record = b""
        self.busy = False
        self.task: asyncio.Task[None] | None = None
        self.done: asyncio.Future[TurnEnded] | None = None
        self.in_stream = False
        self.interrupting = False
        self.last: TurnEnded | None = None
        self.sinks: list[Sink[Any]] = []

    @property
    def id(self) -> str:
        return self.session.id

    def info(self) -> ConversationInfo:
        return ConversationInfo(self.id, "busy" if self.busy else "idle", len(self.history), self.session.status)


class _Partial:
    """What the unfinished step of a turn has produced (for an interrupt)."""

    __slots__ = ("call_seen", "results")

    def __init__(self) -> None:
        self.call_seen = False
        self.results: dict[str, tuple[str, bool]] = {}

    def reset(self) -> None:
        self.call_seen = False
        self.results = {}

    def marked(self, final: Any) -> list[Message]:
        """The interrupted step's messages, marked ``metadata["interrupted"] = True``.

        A finished model call that asked for tools keeps its assistant message and gets a
        result for every call: the one its tool returned, or an interrupted error. A
        model call cut mid-stream keeps its text (reasoning and partial tool calls are
        dropped), or nothing when it had no text yet.
        """
        if not self.call_seen or final is None:
            return []
        msg: Message = final.message
        if final.finish_reason not in (None, "error") and msg.tool_calls:
            out = [attrs.evolve(msg, metadata={**msg.metadata, "interrupted": True})]
            for call in msg.tool_calls:
                if call.id in self.results:
                    content, is_error = self.results[call.id]
                    out.append(Message("tool", content, tool_call_id=call.id, name=call.name, is_error=is_error))
                else:
                    out.append(
                        Message(
                            "tool",
                            INTERRUPTED_RESULT,
                            tool_call_id=call.id,
                            name=call.name,
                            is_error=True,
                            metadata={"interrupted": True},
                        )
                    )
            return out
        text = msg.text
        return [Message("assistant", text, metadata={"interrupted": True})] if text else []


def _unanswered(history: Sequence[Message]) -> tuple[ToolCall, ...]:
    """Tool calls of the last assistant message that no tool message after it answers."""
    answered: set[str] = set()
    for m in reversed(history):
        if m.role == "tool":
            if m.tool_call_id is not None:
                answered.add(m.tool_call_id)
            continue
        if m.role == "assistant" and m.tool_calls:
            return tuple(c for c in m.tool_calls if c.id not in answered)
        return ()
    return ()


def _without_pending(session: Session, status: SessionStatus) -> Session:
    meta = {k: v for k, v in session.metadata.items() if k not in ("ask_user", "error")}
    return attrs.evolve(
        session, status=status, pending_tool_calls=(), pending_question=None, pending_tool_call_id=None, metadata=meta
    )


def derive(session: Session, history: Sequence[Message]) -> Session:
    """``session`` on ``history``, its status made to agree with the history's end:
    unanswered tool calls -> ``awaiting_tools``; a handler's question last ->
    ``awaiting_user``; else ``idle`` / ``completed`` (``idle`` when it was anything else)."""
    session = attrs.evolve(session, thread=Thread(tuple(history), session.thread.metadata))
    unanswered = _unanswered(history)
    if unanswered:
        if session.status == "awaiting_tools" and tuple(session.pending_tool_calls) == unanswered:
            return session
        return attrs.evolve(_without_pending(session, "awaiting_tools"), pending_tool_calls=unanswered)
    last = history[-1] if history else None
    if last is not None and last.role == "assistant" and last.metadata.get("ask_user"):
        if session.status == "awaiting_user" and session.pending_question == last.text:
            return session
        bare = _without_pending(session, "awaiting_user")
        ask = {"choices": list(last.metadata.get("choices", ())), "options": {}}
        return attrs.evolve(
            bare,
            pending_question=last.text,
            pending_tool_call_id=last.metadata.get("tool_call_id"),
            metadata={**bare.metadata, "ask_user": ask},
        )
    if session.status in ("idle", "completed") and not session.pending_tool_calls and session.pending_question is None:
        return session
    return _without_pending(session, "idle")


def _check_id(id: Any) -> str:
    if not isinstance(id, str) or not _ID.fullmatch(id):
        raise ValidationError(
            f"a conversation id is 1 to 200 characters without spaces or control characters, not {id!r}",
            reason="invalid_request",
        )
    return id


def _check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(options or {})
    unknown = set(out) - _OPTIONS
    if unknown:
        raise TypeError(f"unknown conversation option(s) {sorted(unknown)}; see allm.ChatOptions (plus params)")
    return out


def _check_handlers(handlers: Sequence[object]) -> tuple[object, ...]:
    out = tuple(handlers)
    for i, h in enumerate(out):
        if not any(callable(getattr(h, c, None)) for c in CALLBACKS):
            raise ValidationError(
                f"handlers[{i}] ({type(h).__name__}) has none of {', '.join(CALLBACKS)}", reason="invalid_request"
            )
    return out


def _check_messages(messages: Sequence[Message]) -> tuple[Message, ...]:
    out = tuple(messages)
    for i, m in enumerate(out):
        if not isinstance(m, Message):
            raise ValidationError(f"messages[{i}] is a {type(m).__name__}, not an allm Message", reason="invalid_message")
    return out


def _card(card: Any, profiles: Profiles | None, tools: tuple[Tool, ...]) -> tuple[Engine, str | None]:
    """The engine (with ``tools``) and system prompt of a character card.

    ``card``: a card name or :class:`~allm.profiles.Card` of ``profiles`` (resolved with
    :meth:`~allm.profiles.Profiles.resolve`), a :class:`~allm.profiles.Profile` (its engine
    offers the card's tools, picked by name from ``tools``; all of them when it names
    none), or any object with ``engine`` (an Engine, or a method returning one) and
    ``system`` attributes (``tools`` are added to its engine's).
    """
    if isinstance(card, (str, Card)):
        name = card if isinstance(card, str) else card.name
        if profiles is None:
            raise ValidationError(
                f"card={name!r} names a card, but the manager has no profiles: pass profiles= to the manager",
                reason="invalid_request",
            )
        card = profiles.resolve(card=name)
    if isinstance(card, Profile):
        return card.engine(tools=tools), card.system or None
    engine = getattr(card, "engine", None)
    if callable(engine) and not isinstance(engine, Engine):
        engine = engine()
    if not isinstance(engine, Engine):
        raise ValidationError(
            f"card= takes a character card with an engine; {type(card).__name__} has none", reason="invalid_request"
        )
    system = getattr(card, "system", None)
    return engine.with_tools(*tools), system if isinstance(system, str) and system else None


def _reopen_options(kw: OpenOptions) -> ReopenOptions:
    """The arguments of ``open`` that ``reopen`` takes too."""
    return cast(ReopenOptions, {k: v for k, v in kw.items() if k in ReopenOptions.__optional_keys__})


def _error(reason: str, id: str, message: str) -> ConversationError:
    return ConversationError(message, reason=reason, metadata={"conversation_id": id})


class Core:
    """Every live conversation of one manager, and every operation on them (coroutines
    to run on one event loop). See :class:`~allm.conversations.AsyncConversations` for
    what each operation does; its methods are these."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        engine: Engine | None = None,
        handlers: Sequence[object] = (),
        capacity: int = 10_000,
        profiles: Profiles | None = None,
    ) -> None:
        if profiles is not None and not isinstance(profiles, Profiles):
            raise ValidationError(f"profiles= takes allm.profiles.Profiles, not {type(profiles).__name__}", reason="invalid_request")
        self.store: Store = store if store is not None else MemoryStore()
        self.engine = engine
        self.profiles = profiles
        self.handlers = _check_handlers(handlers)
        self.capacity = capacity
        self.live: dict[str, _Live] = {}
        self.opening: set[str] = set()
        self.closed = False

    # -- lookup

    def _check_open(self) -> None:
        if self.closed:
            raise ConversationError("the conversation manager is shut down", reason="closed")

    def _get(self, id: str) -> _Live:
        self._check_open()
        live = self.live.get(id)
        if live is None:
            raise _error("unknown_conversation", id, f"no live conversation {id!r}")
        return live

    def _idle(self, id: str, doing: str) -> _Live:
        live = self._get(id)
        if live.busy:
            raise _error("busy", id, f"conversation {id!r} is busy: cannot {doing} while a turn is running")
        return live

    def get(self, id: str) -> ConversationInfo | None:
        self._check_open()
        live = self.live.get(_check_id(id))
        return live.info() if live is not None else None

    def infos(self) -> list[ConversationInfo]:
        self._check_open()
        return [live.info() for live in self.live.values()]

    def session(self, id: str) -> Session:
        live = self._get(id)
        return attrs.evolve(live.session, thread=Thread(tuple(live.history), live.session.thread.metadata))

    # -- creating

    def _engine(
        self, id: str, engine: Engine | None, card: Any, stored: Engine | None, tools: tuple[Tool, ...]
    ) -> tuple[Engine, str | None]:
        """The conversation's engine, with ``tools``, and the card's system prompt."""
        if engine is not None and card is not None:
            raise ValidationError("open takes engine= or card=, not both", reason="invalid_request")
        if card is not None:
            return _card(card, self.profiles, tools)
        chosen = engine or stored or self.engine
        if chosen is None:
            raise EngineError(
                f"conversation {id!r} has no engine: pass engine= or card=, or give the manager a default engine",
                reason="invalid_engine",
                metadata={"conversation_id": id},
            )
        return chosen.with_tools(*tools), None

    def _reserve(self, id: str) -> None:
        """Claim ``id`` while it is being opened (no other operation sees it until then)."""
        self._check_open()
        if id in self.live or id in self.opening:
            raise _error("already_exists", id, f"conversation {id!r} is already live")
        self.opening.add(id)

    async def _save(self, live: _Live) -> None:
        """Write the record if it changed, replacing the version this manager last wrote."""
        data = storage.encode_record(live.session, live.engine, live.options, live.created_at, live.base)
        if data == live.record:
            return
        live.version = await self.store.aput(storage.NAMESPACE, live.id, data, expect=live.version)
        live.record = data

    async def open(
        self,
        id: str | None = None,
        *,
        engine: Engine | None = None,
        card: Any = None,
        messages: Sequence[Message] = (),
        tools: Sequence[Tool | ToolGroup] = (),
        handlers: Sequence[object] = (),
        persist_initial: bool = False,
        context: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> ConversationInfo:
        id = _check_id(id if id is not None else new_conversation_id())
        chosen, system = self._engine(id, engine, card, None, bind_tools(tools))
        msgs = _check_messages(messages)
        if system is not None and not (msgs and msgs[0].role == "system"):
            msgs = (Message("system", system), *msgs)
        session = derive(Session.new(msgs, id=id, context=context, metadata=metadata), msgs)
        live = _Live(
            session,
            chosen,
            self.handlers + _check_handlers(handlers),
            _check_options(options),
        )
        items = [storage.encode_message(m) for m in msgs]
        self._reserve(id)
        try:
            try:
                await self._save(live)  # version 0: creates only
            except StoreError as exc:
                if exc.reason == "version_conflict":
                    raise _error("already_exists", id, f"conversation {id!r} is already stored") from None
                raise
            if items:
                await self.store.aappend(storage.NAMESPACE, id, items)
            if persist_initial:
                for m in msgs:
                    await self._dispatch(live, "on_message", (id, m))
            self._check_open()
            self.live[id] = live
        finally:
            self.opening.discard(id)
        return live.info()

    async def _load(self, id: str) -> tuple[storage.Stored, list[Message], int, int, bytes] | None:
        """The stored record, history, history base, record version and record bytes of
        ``id``, or ``None``."""
        record = await self.store.aget(storage.NAMESPACE, id)
        if record is None:
            return None
        stored = storage.decode_record(id, record.value)
        items = await self.store.aread(storage.NAMESPACE, id, stored.base)
        history, base = storage.decode_log(id, items, stored.base)
        return stored, history, base, record.version, record.value

    async def reopen(
        self,
        id: str,
        *,
        engine: Engine | None = None,
        card: Any = None,
        tools: Sequence[Tool | ToolGroup] = (),
        handlers: Sequence[object] = (),
        options: Mapping[str, Any] | None = None,
    ) -> ConversationInfo:
        _check_id(id)
        hs = self.handlers + _check_handlers(handlers)
        opts = _check_options(options)
        bound = bind_tools(tools)
        self._reserve(id)
        try:
            loaded = await self._load(id)
            if loaded is None:
                raise _error("unknown_conversation", id, f"no stored conversation {id!r}")
            stored, history, base, version, raw = loaded
            chosen, _ = self._engine(id, engine, card, stored.engine, bound)
            session = derive(attrs.evolve(stored.session, id=id), history)
            live = _Live(session, chosen, hs, {**stored.options, **opts})
            live.created_at = stored.created_at
            live.version = version
            live.record = raw
            live.base = base
            await self._save(live)
            self._check_open()
            self.live[id] = live
        finally:
            self.opening.discard(id)
        return live.info()

    async def ensure(self, id: str, **kw: Unpack[OpenOptions]) -> ConversationInfo:
        self._check_open()
        live = self.live.get(_check_id(id))
        if live is not None:
            return live.info()
        if await self.store.aget(storage.NAMESPACE, id) is not None:
            keep = _reopen_options(kw)
            return await self.reopen(id, **keep)
        return await self.open(id, **kw)

    async def find(self, id: str, **kw: Unpack[ReopenOptions]) -> ConversationInfo | None:
        self._check_open()
        live = self.live.get(_check_id(id))
        if live is not None:
            return live.info()
        if await self.store.aget(storage.NAMESPACE, id) is None:
            return None
        return await self.reopen(id, **kw)

    async def close(self, id: str, *, delete: bool = False) -> None:
        live = self._idle(id, "close")
        del self.live[id]
        for sink in live.sinks:
            sink.end()
        live.sinks.clear()
        if delete:
            await self.store.adelete(storage.NAMESPACE, id)

    # -- observing

    def subscribe(self, id: str, sink: Sink[Any], since: int | None = None) -> None:
        live = self._get(id)
        if since is not None:
            if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= len(live.history):
                raise ValidationError(
                    f"since must be a message index from 0 to {len(live.history)}, not {since!r}",
                    reason="invalid_request",
                )
            for i in range(since, len(live.history)):
                if not sink.put(MessageAdded(id, i, live.history[i], replayed=True)):
                    sink.lagged()
                    return
        sink.next_index = max(sink.next_index, len(live.history))
        live.sinks.append(sink)

    def unsubscribe(self, sink: Sink[Any]) -> None:
        live = self.live.get(sink.conversation_id)
        if live is not None and sink in live.sinks:
            live.sinks.remove(sink)

    def _publish(self, live: _Live, item: Update) -> None:
        dropped = [sink for sink in live.sinks if not sink.put(item)]
        for sink in dropped:
            live.sinks.remove(sink)
            sink.lagged()

    async def _dispatch(self, live: _Live, callback: str, args: tuple[Any, ...]) -> None:
        if not live.handlers:
            return

        def report(handler: object, cb: str, exc: BaseException) -> None:
            self._publish(live, HandlerFailed(live.id, type(handler).__name__, cb, exc))

        await dispatch(live.handlers, callback, args, report)

    async def _commit(self, live: _Live, messages: Sequence[Message]) -> None:
        """Store ``messages`` (one atomic append), then publish and hand each to the handlers."""
        if not messages:
            return
        items = [storage.encode_message(m) for m in messages]
        await self.store.aappend(storage.NAMESPACE, live.id, items)
        start = len(live.history)
        live.history.extend(messages)
        for i, m in enumerate(messages):
            self._publish(live, MessageAdded(live.id, start + i, m))
            await self._dispatch(live, "on_message", (live.id, m))

    # -- turns

    async def send(self, id: str, message: Any, **options: Any) -> int:
        index, _ = await self._send(id, message, options)
        return index

    async def _send(self, id: str, message: Any, options: Mapping[str, Any]) -> tuple[int, asyncio.Future[TurnEnded]]:
        live = self._idle(id, "send")
        if isinstance(message, Message):
            if message.role != "user":
                raise ValidationError(f"send takes a user message, not a {message.role} message", reason="invalid_message")
            msg = message
        else:
            msg = user(message)
        opts = {**live.options, **_check_options(options)}
        stream = live.session.astream_reply(live.engine, msg, **opts)
        index, done = await self._begin(live, [msg], stream)
        assert done is not None
        return index, done

    async def submit_tool_results(self, id: str, results: Mapping[str, Any], **options: Any) -> int:
        live = self._idle(id, "submit tool results")
        session = self.session(id).submit_tool_results(results)
        stream = None
        if session.status == "idle":
            opts = {**live.options, **_check_options(options)}
            stream = session.astream_continue(live.engine, **opts)
        index, _ = await self._begin(live, session.thread.messages[len(live.history) :], stream, session)
        return index

    async def _begin(
        self, live: _Live, messages: Sequence[Message], stream: Any, session: Session | None = None
    ) -> tuple[int, asyncio.Future[TurnEnded] | None]:
        """Store ``messages`` (and ``session``, the state they lead to), then run the turn
        ``stream`` if there is one: ``(index of the first message, the turn's end)``."""
        live.busy = True
        loop = asyncio.get_running_loop()
        done: asyncio.Future[TurnEnded] | None = loop.create_future() if stream is not None else None
        live.done = done
        live.interrupting = False
        try:
            await self._commit(live, messages)
            if session is not None:
                live.session = derive(session, live.history)
                await self._save(live)
        except BaseException as exc:
            live.busy = False
            live.done = None
            if stream is not None:
                await stream.aclose()
            if done is not None:
                error = exc if isinstance(exc, Exception) else None
                done.set_result(TurnEnded(live.id, "error", "error", live.session.status, len(live.history), error))
            raise
        index = len(live.history) - len(messages)
        if stream is None:
            live.busy = False
            return index, None
        self._publish(live, TurnStarted(live.id, index))
        live.task = loop.create_task(self._run(live, stream, index), name=f"allm-conversation-{live.id}")
        return index, done

    async def _event(self, live: _Live, ev: Event, partial: _Partial) -> None:
        if isinstance(ev, StepCompleted):
            await self._commit(live, ev.step.thread.messages[len(live.history) :])
            partial.reset()
            self._publish(live, ev)
            return
        if not isinstance(ev, ChatCompleted):
            partial.call_seen = True
        self._publish(live, ev)
        if isinstance(ev, ToolExecutionStarted):
            await self._dispatch(live, "on_tool_call", (live.id, ev.name, ev.arguments))
        elif isinstance(ev, ToolExecutionCompleted):
            await self._dispatch(live, "on_tool_result", (live.id, ev.name, ev.result, ev.error))
        elif isinstance(ev, ToolResultEncoded):
            partial.results[ev.tool_call_id] = (ev.content, ev.is_error)
        elif isinstance(ev, ToolHalt) and ev.content is not None:
            partial.results[ev.tool_call_id] = (ev.content, False)

    async def _run(self, live: _Live, stream: Any, start: int) -> None:
        partial = _Partial()
        error: Exception | None = None
        interrupted = False
        try:
            while True:
                if live.interrupting:
                    interrupted = True
                    break
                live.in_stream = True
                try:
                    ev = await stream.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    live.in_stream = False
                await self._event(live, ev, partial)
        except asyncio.CancelledError:
            interrupted = True
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception as exc:
            error = exc
        try:
            await stream.aclose()
        except Exception as exc:
            error = error or exc
        await self._settle(live, stream, partial, start, interrupted, error)

    async def _settle(
        self, live: _Live, stream: Any, partial: _Partial, start: int, interrupted: bool, error: Exception | None
    ) -> None:
        halted: str | None
        outcome: Outcome
        if interrupted:
            outcome, halted = "interrupted", "cancelled"
            try:
                await self._commit(live, partial.marked(stream.reducer.collector.result().final_response))
            except Exception as exc:
                error = exc
            session = derive(live.session, live.history)
        elif error is not None:
            outcome, halted = "error", "error"
            session = derive(live.session, live.history)
        else:
            session, result = stream.reducer.finalize()
            halted = result.halted_reason
            outcome = "completed"
            try:
                await self._commit(live, session.thread.messages[len(live.history) :])
            except Exception as exc:
                error, outcome = exc, "error"
            if session.status == "error":
                error, outcome = session.error, "error"
                session = session.recover()
            session = derive(session, live.history)
        live.session = session
        try:
            await self._save(live)
        except Exception as exc:
            error = error or exc
            outcome = "error" if outcome == "completed" else outcome
        if error is not None:
            await self._dispatch(live, "on_error", (live.id, error))
        reply = next((m for m in reversed(live.history[start + 1 :]) if m.role == "assistant"), None)
        ended = TurnEnded(live.id, outcome, halted, session.status, len(live.history), error, reply)
        live.busy = False
        live.task = None
        live.interrupting = False
        live.last = ended
        done, live.done = live.done, None
        self._publish(live, ended)
        if done is not None and not done.done():
            done.set_result(ended)

    async def wait(self, id: str, timeout: float | None = None) -> TurnEnded | None:
        live = self._get(id)
        if live.done is None:
            return live.last
        return await self._wait(id, live.done, timeout)

    @staticmethod
    async def _wait(id: str, done: asyncio.Future[TurnEnded], timeout: float | None) -> TurnEnded:
        try:
            return await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            raise ConversationError(
                f"conversation {id!r}: the turn did not end within {timeout} s (it goes on)",
                reason="timeout",
                metadata={"conversation_id": id, "timeout": timeout},
            ) from None

    async def talk(self, id: str, message: Any, timeout: float | None = None, **options: Any) -> Message:
        _, done = await self._send(id, message, options)
        ended = await self._wait(id, done, timeout)
        if ended.outcome == "interrupted":
            raise _error("interrupted", id, f"conversation {id!r}: the turn was interrupted")
        if ended.error is not None:
            raise ended.error
        if ended.reply is None:
            raise _error("unknown", id, f"conversation {id!r}: the turn added no assistant message")
        return ended.reply

    async def interrupt(self, id: str) -> bool:
        return await self._interrupt(self._get(id))

    @staticmethod
    async def _interrupt(live: _Live) -> bool:
        done = live.done
        if done is None:
            return False
        if not live.interrupting:
            live.interrupting = True
            if live.in_stream and live.task is not None:
                live.task.cancel()
        await asyncio.shield(done)
        return True

    # -- history

    async def messages(self, id: str) -> tuple[Message, ...]:
        self._check_open()
        live = self.live.get(id)
        if live is not None:
            return tuple(live.history)
        loaded = await self._load(_check_id(id))
        if loaded is None:
            raise _error("unknown_conversation", id, f"no conversation {id!r}, live or stored")
        return tuple(loaded[1])

    async def export_history(
        self, id: str, path: str | os.PathLike[str], format: str = "allm", *, strict: bool = False
    ) -> HistoryInfo:
        messages = await self.messages(id)
        return await asyncio.to_thread(write_history, path, id, messages, format, strict=strict)

    async def import_history(
        self,
        path: str | os.PathLike[str],
        id: str,
        format: str | None = None,
        *,
        replace: bool = False,
        strict: bool = False,
        **kw: Unpack[OpenOptions],
    ) -> HistoryInfo:
        _check_id(id)
        self._check_open()
        read = await asyncio.to_thread(read_history_file, path, format, strict=strict)
        msgs = list(read.thread.messages)
        size = os.path.getsize(path)
        info = HistoryInfo(os.fspath(path), size, len(msgs), id, read.format, tuple(read.warnings))
        live = self.live.get(id)
        if live is None and await self.store.aget(storage.NAMESPACE, id) is not None:
            if not replace:
                raise _error("already_exists", id, f"conversation {id!r} is stored; import with replace=True")
            keep = _reopen_options(kw)
            await self.reopen(id, **keep)
            live = self.live[id]
        if live is None:
            await self.open(id, **cast(OpenOptions, {**kw, "messages": msgs}))
            return info
        live = self._idle(id, "import a history")
        if not replace:
            raise _error("already_exists", id, f"conversation {id!r} is live; import with replace=True")
        live.busy = True
        try:
            items = [storage.encode_message(m) for m in msgs]
            length = await self.store.alength(storage.NAMESPACE, id)
            await self.store.aappend(storage.NAMESPACE, id, [storage.RESET, *items])
            live.history = list(msgs)
            live.session = derive(live.session, live.history)
            live.base = length + 1
            await self._save(live)
        finally:
            live.busy = False
        for sink in live.sinks:
            sink.end()
        live.sinks.clear()
        return info

    # -- shutting down

    async def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        await asyncio.gather(*(self._interrupt(live) for live in self.live.values()), return_exceptions=True)
        for live in self.live.values():
            for sink in live.sinks:
                sink.end()
            live.sinks.clear()
        self.live.clear()
