"""The two shells of the conversation manager: :class:`Conversations` (sync) and
:class:`AsyncConversations`. Every operation is :class:`~allm.conversations.core.Core`'s;
a shell only says where it runs (see :mod:`allm.conversations` for why)."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import weakref
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar, Unpack

from .. import Engine, Message, Session
from ..errors import ConversationError
from ..profiles import Profiles
from ..stores import Store
from .core import ConversationInfo, Core, OpenOptions, ReopenOptions, SendOptions
from .events import TurnEnded
from .history import HistoryInfo
from .subscription import DEFAULT_CAPACITY, AsyncSubscription, Sink, Subscription

__all__ = ["AsyncConversations", "Conversations"]

T = TypeVar("T")


class _Manager:
    """What both shells hold: the core, and its store."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        engine: Engine | None = None,
        handlers: Sequence[object] = (),
        capacity: int = DEFAULT_CAPACITY,
        profiles: Profiles | None = None,
    ) -> None:
        self._core = Core(store, engine=engine, handlers=handlers, capacity=capacity, profiles=profiles)
        self._start()

    def _start(self) -> None:
        """Where a shell sets up what it runs on (nothing for the async one)."""

    @property
    def store(self) -> Store:
        return self._core.store

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._core.live)} live, store={type(self._core.store).__name__})"


class AsyncConversations(_Manager):
    """Named, persistent, observable, interruptible conversations, for asyncio code.

    ``store``: where histories and state live (an :mod:`allm.stores` store; default a new
    :class:`~allm.stores.MemoryStore`). ``engine``: the default engine of conversations
    opened without one. ``handlers``: event handlers of every conversation (before each
    conversation's own). ``capacity``: how many updates a subscriber may fall behind
    before it is detached. ``profiles``: an :class:`allm.profiles.Profiles` registry, so
    ``open(card="name")`` opens a conversation with one of its character cards.

    Use it from one event loop: its turns are tasks on that loop. ``async with`` shuts it
    down at the end (running turns are interrupted, subscriptions end). Every method
    raises :class:`~allm.errors.ConversationError` (``closed``) after shutdown. See
    ``guides/conversations.md``.
    """

    async def open(self, id: str | None = None, **kwargs: Unpack[OpenOptions]) -> ConversationInfo:
        """Start a new conversation ``id`` (default: a new ``conv_...`` id) and store it.

        - ``engine`` or ``card`` (a character card: its engine, and its system prompt put
          first unless ``messages`` starts with a system message); default: the manager's.
          ``card`` is a card name of the manager's ``profiles`` (or its
          :class:`~allm.profiles.Card`), a resolved :class:`~allm.profiles.Profile`
          (``profiles.resolve(card=..., temperature=...)``: explicit settings over the
          model's), or any object with ``engine`` and ``system`` attributes. A profile
          card that names tools offers those of ``tools`` (by name) and no others.
        - ``messages``: the initial history (stored; handed to handlers' ``on_message``
          only with ``persist_initial=True``, for a new conversation rather than one
          restored from elsewhere).
        - ``tools``: :class:`~allm.Tool` values and :class:`ToolGroup` values (tools with
          their own context), added to the engine's.
        - ``handlers``: event handlers (see :mod:`allm.conversations.handlers`).
        - ``context`` / ``metadata``: the session's JSON-native mappings (stored).
        - ``options``: loop options for every turn (``max_turns``, ``tool_timeout``,
          ``mode``, ``params``...; :class:`~allm.ChatOptions` plus ``params``). The
          JSON-native ``mode``, ``max_turns``, ``tool_timeout`` and ``params`` are stored;
          the others (``api_key`` too) are held in memory only.

        Raises :class:`~allm.errors.ConversationError` (``already_exists`` when the id is
        live or stored), :class:`~allm.errors.ValidationError` (a bad id, message, tool or
        handler; a non-JSON context; ``invalid_request``: a card name without ``profiles``),
        :class:`~allm.profiles.ProfileError` (``unknown_name``: no such card, or a card tool
        not in ``tools``), :class:`~allm.errors.EngineError` (``invalid_engine``: no engine), :class:`~allm.errors.StoreError`, ``TypeError`` (an unknown option).
        """
        return await self._core.open(id, **kwargs)

    async def reopen(self, id: str, **kwargs: Unpack[ReopenOptions]) -> ConversationInfo:
        """Make the stored conversation ``id`` live again (after a restart, say).

        Its history is the store's log; its state the record, made to agree with the
        history's end (unanswered tool calls mean ``awaiting_tools``). The engine is
        ``engine``, else ``card``'s, else the stored one (no handlers, no context: pass
        ``tools`` for handlers), else the manager's. ``options`` go over the stored ones.

        Raises :class:`~allm.errors.ConversationError` (``unknown_conversation`` when
        nothing is stored, ``already_exists`` when it is live), :class:`~allm.errors.StoreError`
        (``corrupt``...), :class:`~allm.errors.EngineError` (``invalid_engine``).
        """
        return await self._core.reopen(id, **kwargs)

    async def ensure(self, id: str, **kwargs: Unpack[OpenOptions]) -> ConversationInfo:
        """The live conversation ``id`` as it is (a no-op), else the stored one reopened, else
        a new one opened with ``kwargs`` (those of :meth:`open`)."""
        return await self._core.ensure(id, **kwargs)

    def get(self, id: str) -> ConversationInfo | None:
        """The live conversation ``id``, or ``None``. Raises
        :class:`~allm.errors.ValidationError` (``invalid_request``) for a malformed id."""
        return self._core.get(id)

    async def find(self, id: str, **kwargs: Unpack[ReopenOptions]) -> ConversationInfo | None:
        """The live conversation ``id``, else the stored one reopened (``kwargs`` of
        :meth:`reopen`), else ``None``. Raises :class:`~allm.errors.ValidationError`
        (``invalid_request``) for a malformed id, and what :meth:`reopen` raises."""
        return await self._core.find(id, **kwargs)

    def list(self) -> list[ConversationInfo]:
        """Every live conversation: id, ``idle`` or ``busy``, message count."""
        return self._core.infos()

    def session(self, id: str) -> Session:
        """The conversation's :class:`~allm.Session` value (its thread is the stored history)."""
        return self._core.session(id)

    async def close(self, id: str, *, delete: bool = False) -> None:
        """Release the live conversation (its subscriptions end); it stays stored unless
        ``delete=True``. Raises :class:`~allm.errors.ConversationError`
        (``unknown_conversation``, ``busy``)."""
        await self._core.close(id, delete=delete)

    async def send(self, id: str, message: str | Message | Any, **options: Unpack[SendOptions]) -> int:
        """Store the user ``message`` (text, parts or a user Message) and start the turn;
        returns its history index at once, while the tool loop runs in the background.

        ``options`` are this turn's (over the conversation's; never stored), e.g.
        ``api_key=`` or ``params={"temperature": 0}``. Raises
        :class:`~allm.errors.ConversationError` (``busy`` naming the id: nothing is stored
        or queued; ``unknown_conversation``), :class:`~allm.errors.SessionError` (the
        session cannot take a message now, e.g. ``awaiting_tools``),
        :class:`~allm.errors.EngineError` (no key...), :class:`~allm.errors.StoreError`.
        """
        return await self._core.send(id, message, **options)

    async def submit_tool_results(self, id: str, results: Mapping[str, Any], **options: Unpack[SendOptions]) -> int:
        """Answer the pending tool calls of a conversation ``awaiting_tools`` (manual tools):
        ``{tool_call_id: result}``, each encoded like a handler's result. The tool messages
        are stored; when no call is left pending, the turn that lets the model read them
        starts (in the background, as with :meth:`send`). Returns the history index of the
        first result. Raises :class:`~allm.errors.SessionError` (``invalid_status``,
        ``unknown_tool_call_id``: nothing is stored) and what :meth:`send` raises.
        """
        return await self._core.submit_tool_results(id, results, **options)

    async def talk(
        self, id: str, message: str | Message | Any, *, timeout: float | None = None, **options: Unpack[SendOptions]
    ) -> Message:
        """:meth:`send`, then wait for the turn: the last assistant message it added.

        Raises what :meth:`send` raises; the turn's error (an :class:`~allm.errors.AllmError`)
        if it failed; :class:`~allm.errors.ConversationError` ``interrupted``, or
        ``timeout`` after ``timeout`` seconds (the turn goes on; :meth:`interrupt` stops it).
        """
        return await self._core.talk(id, message, timeout, **options)

    async def wait(self, id: str, *, timeout: float | None = None) -> TurnEnded | None:
        """The end of the running turn (waiting for it), else of the last one (``None``
        before any). Raises :class:`~allm.errors.ConversationError` (``timeout``,
        ``unknown_conversation``)."""
        return await self._core.wait(id, timeout)

    def subscribe(self, id: str, *, since: int | None = None, capacity: int | None = None) -> AsyncSubscription:
        """An async iterator of the conversation's updates from now on: allm's events and
        :mod:`allm.conversations.events`. ``since=n`` first replays the stored messages
        from index ``n`` (as ``MessageAdded(replayed=True)``), with nothing missed or
        repeated between them and the live updates.

        Raises :class:`~allm.errors.ConversationError` (``unknown_conversation``) and
        :class:`~allm.errors.ValidationError` (``since`` out of range).
        """
        loop = asyncio.get_running_loop()
        sink: Sink[asyncio.Queue[object]] = Sink(id, capacity or self._core.capacity, asyncio.Queue())
        sink._detach = _detacher(loop, self._core, sink)
        self._core.subscribe(id, sink, since)
        return AsyncSubscription(sink)

    async def interrupt(self, id: str) -> bool:
        """Cancel the running turn and wait until its history is consistent; ``False`` when
        no turn was running. The model call's HTTP response is closed and running async tool
        handlers are cancelled (a sync handler's thread cannot be stopped; its result is
        dropped). What the interrupted step produced is kept and marked
        ``metadata["interrupted"] = True``: the partial text of a cut model call, or a
        finished call's tool calls with each call's result, or an interrupted error result
        for calls that had not returned. Raises :class:`~allm.errors.ConversationError`
        (``unknown_conversation``)."""
        return await self._core.interrupt(id)

    async def messages(self, id: str) -> tuple[Message, ...]:
        """The history of ``id``, live or stored. Raises :class:`~allm.errors.ConversationError`
        (``unknown_conversation``)."""
        return await self._core.messages(id)

    async def export_history(
        self, id: str, path: str | os.PathLike[str], format: str = "allm", *, strict: bool = False
    ) -> HistoryInfo:
        """Write the history of ``id`` (live or stored) to ``path`` as a gzip JSON history
        file with a format version (:func:`allm.formats.export_history`, atomically).

        ``format``: one of :data:`allm.formats.FORMATS`: ``allm`` (lossless; the default),
        ``openai_chat``, ``openai_responses``, ``anthropic``, ``gemini``. Returns
        :class:`HistoryInfo`: ``size_bytes``, ``message_count``, and ``warnings`` for what
        the format could not keep (also stored in the file). Raises ``OSError``,
        :class:`~allm.errors.ConversationError` (``unknown_conversation``),
        :class:`~allm.formats.FormatError` (``unknown_format``; ``unrepresentable`` when
        ``strict`` and something would be lost, before anything is written).
        """
        return await self._core.export_history(id, path, format, strict=strict)

    async def import_history(
        self,
        path: str | os.PathLike[str],
        id: str,
        format: str | None = None,
        *,
        replace: bool = False,
        strict: bool = False,
        **kwargs: Unpack[OpenOptions],
    ) -> HistoryInfo:
        """Load a history file into conversation ``id``: a new conversation (``kwargs`` of
        :meth:`open`), or, with ``replace=True``, the history of an existing one (stored
        in one append; its subscriptions end).

        The file is read by :func:`allm.formats.import_history`: one written by
        :meth:`export_history` or ``allm.formats`` in any format (``format``, when given,
        must agree), or a bare provider-shaped JSON file (a recorded request body, gzip or
        not) in ``format``: ``openai_chat``, ``openai_responses``, ``anthropic``,
        ``gemini``, ``allm``. Tool calls, tool results, images and reasoning are mapped;
        what could not be kept is in :attr:`HistoryInfo.warnings`.

        Raises :class:`~allm.formats.FormatError` (``invalid_file``: unreadable, not gzip
        or JSON, another format than ``format``; ``unknown_format``;
        ``unsupported_version``; ``invalid_payload``; ``unrepresentable`` when
        ``strict``), :class:`~allm.errors.ConversationError` (``already_exists`` without
        ``replace``, ``busy``). Nothing changes when it raises.
        """
        return await self._core.import_history(path, id, format, replace=replace, strict=strict, **kwargs)

    async def shutdown(self) -> None:
        """Interrupt running turns, end every subscription, release every conversation
        (all stay stored). The store is the caller's: it is not closed."""
        await self._core.shutdown()

    async def __aenter__(self) -> AsyncConversations:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        await self.shutdown()


def _stop_loop(loop: asyncio.AbstractEventLoop) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)


def _detacher(loop: asyncio.AbstractEventLoop, core: Core, sink: Sink[Any]) -> Any:
    def detach() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(core.unsubscribe, sink)

    return detach


class Conversations(_Manager):
    """The sync twin of :class:`AsyncConversations`: the same operations, blocking.

    It owns an event loop in a background thread (``allm-conversations``) where every
    turn runs, so ``send`` returns at once and conversations go on while the caller does
    other things. Methods called from that thread (an ``async`` handler or tool) raise
    ``RuntimeError``: use :class:`AsyncConversations` there. ``with`` (or
    :meth:`shutdown`) stops the thread. The caller's context variables (such as
    :func:`allm.keys.scope`) reach the turns it starts.
    """

    def _start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="allm-conversations", daemon=True)
        self._thread.start()
        self._lock = threading.Lock()
        self._down = False
        weakref.finalize(self, _stop_loop, self._loop)  # a manager dropped without shutdown()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync Conversations method was called on its own event loop; use AsyncConversations")
        with self._lock:
            if self._down:
                coro.close()
                raise ConversationError("the conversation manager is shut down", reason="closed")
            fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result()

    def _now(self, fn: Any, *args: Any) -> Any:
        async def call() -> Any:
            return fn(*args)

        return self._call(call())

    def open(self, id: str | None = None, **kwargs: Unpack[OpenOptions]) -> ConversationInfo:
        """See :meth:`AsyncConversations.open`."""
        return self._call(self._core.open(id, **kwargs))

    def reopen(self, id: str, **kwargs: Unpack[ReopenOptions]) -> ConversationInfo:
        """See :meth:`AsyncConversations.reopen`."""
        return self._call(self._core.reopen(id, **kwargs))

    def ensure(self, id: str, **kwargs: Unpack[OpenOptions]) -> ConversationInfo:
        """See :meth:`AsyncConversations.ensure`."""
        return self._call(self._core.ensure(id, **kwargs))

    def get(self, id: str) -> ConversationInfo | None:
        """See :meth:`AsyncConversations.get`."""
        result: ConversationInfo | None = self._now(self._core.get, id)
        return result

    def find(self, id: str, **kwargs: Unpack[ReopenOptions]) -> ConversationInfo | None:
        """See :meth:`AsyncConversations.find`."""
        return self._call(self._core.find(id, **kwargs))

    def list(self) -> list[ConversationInfo]:
        """See :meth:`AsyncConversations.list`."""
        result: list[ConversationInfo] = self._now(self._core.infos)
        return result

    def session(self, id: str) -> Session:
        """See :meth:`AsyncConversations.session`."""
        result: Session = self._now(self._core.session, id)
        return result

    def close(self, id: str, *, delete: bool = False) -> None:
        """See :meth:`AsyncConversations.close`."""
        self._call(self._core.close(id, delete=delete))

    def send(self, id: str, message: str | Message | Any, **options: Unpack[SendOptions]) -> int:
        """See :meth:`AsyncConversations.send`."""
        return self._call(self._core.send(id, message, **options))

    def submit_tool_results(self, id: str, results: Mapping[str, Any], **options: Unpack[SendOptions]) -> int:
        """See :meth:`AsyncConversations.submit_tool_results`."""
        return self._call(self._core.submit_tool_results(id, results, **options))

    def talk(
        self, id: str, message: str | Message | Any, *, timeout: float | None = None, **options: Unpack[SendOptions]
    ) -> Message:
        """See :meth:`AsyncConversations.talk`."""
        return self._call(self._core.talk(id, message, timeout, **options))

    def wait(self, id: str, *, timeout: float | None = None) -> TurnEnded | None:
        """See :meth:`AsyncConversations.wait`."""
        return self._call(self._core.wait(id, timeout))

    def subscribe(self, id: str, *, since: int | None = None, capacity: int | None = None) -> Subscription:
        """A blocking iterator of the conversation's updates; see :meth:`AsyncConversations.subscribe`."""
        sink: Sink[queue.SimpleQueue[object]] = Sink(id, capacity or self._core.capacity, queue.SimpleQueue())
        sink._detach = _detacher(self._loop, self._core, sink)
        self._now(self._core.subscribe, id, sink, since)
        return Subscription(sink)

    def interrupt(self, id: str) -> bool:
        """See :meth:`AsyncConversations.interrupt`."""
        return self._call(self._core.interrupt(id))

    def messages(self, id: str) -> tuple[Message, ...]:
        """See :meth:`AsyncConversations.messages`."""
        return self._call(self._core.messages(id))

    def export_history(
        self, id: str, path: str | os.PathLike[str], format: str = "allm", *, strict: bool = False
    ) -> HistoryInfo:
        """See :meth:`AsyncConversations.export_history`."""
        return self._call(self._core.export_history(id, path, format, strict=strict))

    def import_history(
        self,
        path: str | os.PathLike[str],
        id: str,
        format: str | None = None,
        *,
        replace: bool = False,
        strict: bool = False,
        **kwargs: Unpack[OpenOptions],
    ) -> HistoryInfo:
        """See :meth:`AsyncConversations.import_history`."""
        return self._call(self._core.import_history(path, id, format, replace=replace, strict=strict, **kwargs))

    def shutdown(self) -> None:
        """See :meth:`AsyncConversations.shutdown`; also stops the background thread."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("shutdown() was called on the manager's own event loop")
        with self._lock:
            if self._down:
                return
            self._down = True

        async def stop() -> None:
            await self._core.shutdown()
            await self._loop.shutdown_default_executor()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Conversations:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.shutdown()
