"""Resumable conversations: the :class:`Session` value and its operations.

A session is plain data (a frozen ``attrs`` value): an id, the thread, a status
and what it is waiting for. It holds no engine, key, client or function, so it
can be stored (JSON via :mod:`allm.codec` or ``pickle``) and resumed in another
process by any engine with the same tools (handlers are found by tool name)::

    session, result = Session.start(engine, "Book me a table for two.")
    if session.status == "awaiting_tools":          # a manual=True tool was called
        store(session.to_json())
    ...
    session = Session.from_json(load())
    for call in session.pending_tool_calls:
        session = session.approve(engine, call.id)   # run its handler, submit the result
    session, result = session.continue_(engine)

Operations take the engine first and return ``(new_session, result)``; the
session they are called on is unchanged. Statuses and legal operations:

==================  ===========================================================
status              legal operations
==================  ===========================================================
``idle``            reply, continue_, step (and their stream / async forms)
``completed``       the same as ``idle`` (a finished turn; the talk may go on)
``awaiting_user``   reply (answers ``pending_question``)
``awaiting_tools``  submit_tool_result(s), approve, reject
``error``           recover (back to ``idle``, to retry the failed call)
==================  ===========================================================

Any other operation raises :class:`~allm.errors.SessionError` with reason
``invalid_status`` (or ``session_in_error_state``) and a message naming the status
and the legal operations; an unknown tool call id raises ``unknown_tool_call_id``.

``metadata`` is the caller's, except two keys the session manages: ``"error"``
(the :class:`~allm.errors.AllmError` while the status is ``error``) and
``"ask_user"`` (``{"choices": [...], "options": {...}}`` of the pending question).

``pipeline`` names middleware (:mod:`allm.middleware`) that every operation runs, in any
process: they are made from the factories registered under those names there (an
unregistered name raises :class:`~allm.errors.EngineError` ``unknown_middleware``). A run a
middleware stopped settles ``completed``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, TypedDict, TypeVar, Unpack

import attrs

from .api import GenerateOptions
from .driver import _astart, _start
from .engine import Engine, merge_tools
from .errors import EngineError, SessionError, ToolError, ValidationError
from .events import Event
from .fold import ChatCollector, SessionReducer, StepCollector
from .ids import new_session_id
from .loop import LoopOptions, question_message
from .middleware._pipeline import as_pipeline, check_name
from .runner import arun_tools, run_tools
from .streams import AsyncEventStream, EventStream
from .tools import (
    ASK_USER_PLACEHOLDER,
    RESERVED_HALT_REASONS,
    AskUser,
    Halt,
    ResultEncoder,
    ToolContext,
    ToolJob,
    ToolOutcome,
    as_encoder,
    validate_arguments,
)
from .types import ChatResult, Message, Part, Request, Step, Thread, ToolCall, user

__all__ = [
    "AsyncSessionStream",
    "Session",
    "SessionReducer",
    "SessionStream",
    "Status",
]

Status = Literal["idle", "awaiting_user", "awaiting_tools", "completed", "error"]
_STATUSES = ("idle", "awaiting_user", "awaiting_tools", "completed", "error")

_LEGAL: dict[str, tuple[str, ...]] = {
    "idle": ("reply", "continue_", "step"),
    "completed": ("reply", "continue_", "step"),
    "awaiting_user": ("reply",),
    "awaiting_tools": ("submit_tool_result", "submit_tool_results", "approve", "reject"),
    "error": ("recover",),
}

R = TypeVar("R", ChatResult, Step)


class _RunOptions(LoopOptions, GenerateOptions, total=False):
    params: Mapping[str, Any] | None


class SessionOptions(_RunOptions, total=False):
    """The loop's options (:class:`~allm.loop.LoopOptions`) and each model call's
    (:class:`~allm.api.GenerateOptions`), plus:

    - ``context``: this call's context for handlers, over ``session.context`` and
      ``engine.context`` (not stored). The session's id is the handlers' ``session_id``.
    - ``params``: :class:`~allm.types.Request` fields for every model call of this
      operation (``{"temperature": 0, "max_tokens": 200, "options": {...}}``); not stored.
    """

    context: Mapping[str, Any] | None


class ApproveOptions(TypedDict, total=False):
    """Keyword options of :meth:`Session.approve`: ``tools`` (handlers to look in besides the
    engine's), ``context`` (for the handler), ``tool_timeout`` (seconds, default 30; ``None``:
    no limit), ``result_encoder``."""

    tools: Sequence[Any]
    context: Mapping[str, Any] | None
    tool_timeout: float | None
    result_encoder: ResultEncoder | None


class StartOptions(_RunOptions, total=False):
    """:class:`SessionOptions` for a new session: ``params`` as there, and the new
    session's own ``id``, ``context``, ``metadata`` and ``pipeline`` (see :meth:`Session.new`)."""

    id: str | None
    context: Mapping[str, Any] | None
    metadata: Mapping[str, Any] | None
    pipeline: Sequence[str]


_NEW = ("id", "context", "metadata", "pipeline")
UserInput = str | Message | Part | Sequence[Part]
StartInput = str | Message | Sequence[Message] | Thread


def _check_status(_i: Any, _a: Any, v: Any) -> None:
    if v not in _STATUSES:
        raise ValueError(f"status must be one of {', '.join(_STATUSES)}, not {v!r}")


def _empty() -> dict[str, Any]:
    return {}


def _tuple(v: Iterable[ToolCall] | None) -> tuple[ToolCall, ...]:
    return tuple(v) if v is not None else ()


def _names(v: Iterable[str] | None) -> tuple[str, ...]:
    names = () if v is None else (v,) if isinstance(v, str) else tuple(v)
    if isinstance(v, str) or any(not isinstance(n, str) for n in names):
        raise TypeError("a session's pipeline is a sequence of registered middleware names (allm.middleware.register)")
    return tuple(check_name(n) for n in names)


@attrs.frozen
class Session:
    """A resumable conversation (see the module docstring).

    - ``id``: a stable id (``ses_...``), handed to tool handlers as ``ctx.session_id``.
    - ``thread``: the conversation so far.
    - ``status``: ``idle``, ``awaiting_user``, ``awaiting_tools``, ``completed`` or ``error``.
    - ``pending_tool_calls``: calls handed back unrun, each owed a tool result.
    - ``pending_question`` / ``pending_tool_call_id``: what a handler asked the user,
      and which call asked.
    - ``context``: the caller's JSON-native mapping handed to handlers
      (over ``engine.context``; a call's ``context=`` wins over it).
    - ``metadata``: the caller's JSON-native mapping (plus ``error`` / ``ask_user``).
    - ``pipeline``: names of registered middleware run by every operation (stored; see
      :mod:`allm.middleware`), after the engine's and before an operation's ``middleware=``.
    """

    id: str = attrs.field(factory=new_session_id)
    thread: Thread = attrs.field(factory=Thread)
    status: Status = attrs.field(default="idle", validator=_check_status)
    pending_tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=_tuple)
    pending_question: str | None = None
    pending_tool_call_id: str | None = None
    context: Mapping[str, Any] = attrs.field(factory=_empty)
    metadata: Mapping[str, Any] = attrs.field(factory=_empty)
    pipeline: tuple[str, ...] = attrs.field(default=(), converter=_names)

    # -- reading

    @property
    def messages(self) -> tuple[Message, ...]:
        return self.thread.messages

    @property
    def error(self) -> Any:
        """The error of a session in the ``error`` status, else ``None``."""
        return self.metadata.get("error") if self.status == "error" else None

    def legal_operations(self) -> tuple[str, ...]:
        """The operations this session's status allows now."""
        return _LEGAL[self.status]

    def _check(self, op: str) -> None:
        legal = _LEGAL[self.status]
        if op in legal:
            return
        meta = {"status": self.status, "operation": op, "legal": list(legal)}
        if self.status == "error":
            raise SessionError(
                f"cannot {op}: the session is in the error state ({self.metadata.get('error')}); "
                "legal now: recover (then continue_ to retry)",
                reason="session_in_error_state",
                metadata=meta,
            )
        raise SessionError(
            f"cannot {op}: the session is {self.status}; legal now: {', '.join(legal)}",
            reason="invalid_status",
            metadata=meta,
        )

    # -- editing the thread (pure)

    def add_user(self, content: str | Part | Sequence[str | Part]) -> Session:
        """A new session whose thread ends with a user message (see :meth:`Thread.add_user`).
        Only the thread changes: to answer the model, use :meth:`reply`."""
        return attrs.evolve(self, thread=self.thread.add_user(content))

    def add_system(self, content: str) -> Session:
        """A new session whose thread ends with a system message."""
        return attrs.evolve(self, thread=self.thread.add_system(content))

    def add_assistant(self, content: str | Part | Sequence[str | Part] = "", tool_calls: Iterable[ToolCall] = ()) -> Session:
        """A new session whose thread ends with an assistant message (text and/or tool calls)."""
        return attrs.evolve(self, thread=self.thread.add_assistant(content, tool_calls))

    def add_tool_result(self, tool_call_id: str, content: str, *, name: str | None = None, is_error: bool = False) -> Session:
        """A new session whose thread ends with the answer to ``tool_call_id``. To answer a
        *pending* call, use :meth:`submit_tool_result`, which also settles the status."""
        return attrs.evolve(self, thread=self.thread.add_tool_result(tool_call_id, content, name=name, is_error=is_error))

    # -- storing

    def to_json(self) -> bytes:
        """The versioned JSON form (:func:`allm.codec.dumps`). Holds no key and no function."""
        from . import codec

        return codec.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> Session:
        """A session stored by :meth:`to_json`. Raises :class:`~allm.errors.ValidationError`."""
        from . import codec

        return codec.loads(data, cls)

    # -- preparing a run

    def _options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in options.items() if k != "params"}
        out["context"] = {**self.context, **(options.get("context") or {})}
        out["session_id"] = self.id
        if self.pipeline:
            out["middleware"] = as_pipeline(self.pipeline) + options.get("middleware")
        return out

    @staticmethod
    def _input(thread: Thread, options: Mapping[str, Any]) -> tuple[Thread, Request]:
        params = dict(options.get("params") or {})
        if "messages" in params:
            raise TypeError("params are request fields other than messages: the session owns the thread")
        return thread, Request(messages=thread.messages, **params)

    def _reply_thread(self, message: UserInput) -> Thread:
        if isinstance(message, Message):
            if message.role != "user":
                raise ValidationError(
                    f"a reply is a user message, not a {message.role} message", reason="invalid_message"
                )
            msg = message
        else:
            msg = user(message)
        return self.thread.add(msg)

    def _cleared(self) -> Session:
        meta = {k: v for k, v in self.metadata.items() if k not in ("ask_user", "error", "halt")}
        return attrs.evolve(
            self, pending_question=None, pending_tool_call_id=None, pending_tool_calls=(), metadata=meta
        )

    # -- folding

    def settle(self, result: ChatResult | Step) -> Session:
        """The session after ``result`` of a run that started from this one (pure).

        - ``error`` / ``tool_error`` -> ``error`` (``metadata["error"]``);
        - calls handed back -> ``awaiting_tools``; a pending question -> ``awaiting_user``;
        - a step whose tools ran (the model has yet to read them) -> ``idle``;
        - ``cancelled`` before any turn completed -> this session unchanged (the turn is
          dropped, including a reply's user message); after a turn -> as that turn;
        - anything else -> ``completed``.
        """
        if isinstance(result, ChatResult):
            if result.halted_reason == "cancelled":
                if not result.steps:
                    return self
                return self.settle(result.steps[-1])
            thread = result.thread
            halted: str | None = result.halted_reason
            pending = result.pending_tool_calls
            question = result.pending_question
            question_id = result.pending_tool_call_id
            meta = result.metadata
        else:
            if result.halted_reason == "cancelled":
                return self
            thread = result.thread
            halted = result.halted_reason
            pending = result.pending_tool_calls
            meta = result.metadata
            question = meta.get("pending_question")
            question_id = meta.get("pending_tool_call_id")
        s = self._cleared()
        metadata = dict(s.metadata)
        if halted in ("error", "tool_error"):
            status: Status = "error"
            metadata["error"] = meta.get("error")
            pending = ()
            question = question_id = None
        elif pending:
            status = "awaiting_tools"
        elif question is not None:
            status = "awaiting_user"
        elif halted is None:
            status = "idle"
        else:
            status = "completed"
        if question is not None and "ask_user" in meta:
            metadata["ask_user"] = meta["ask_user"]
        return attrs.evolve(
            s,
            thread=thread,
            status=status,
            pending_tool_calls=tuple(pending),
            pending_question=question,
            pending_tool_call_id=question_id,
            metadata=metadata,
        )

    # -- one implementation of every run (plain, streaming, async)

    @classmethod
    def _run_new(cls, engine: Engine, input: StartInput, options: Mapping[str, Any], asynchronous: bool) -> Any:
        """A ``start``: the new session (its own ``id``, ``context``, ``metadata`` taken out of
        ``options``), then ``continue_`` with the rest of the options."""
        session = cls.new(input, **{k: v for k, v in options.items() if k in _NEW})
        run = {k: v for k, v in options.items() if k not in _NEW}
        return session._run(engine, "continue_", run, asynchronous=asynchronous)

    def _run(
        self,
        engine: Engine,
        op: str,
        options: Mapping[str, Any],
        *,
        single_step: bool = False,
        asynchronous: bool = False,
        message: UserInput | None = None,
    ) -> Any:
        """The stream of ``op``: the loop on this session's thread (after ``message``, a reply),
        folded into ``(new session, result)`` by a :class:`~allm.fold.SessionReducer`."""
        self._check(op)
        thread = self.thread if message is None else self._reply_thread(message)
        start, opts = self._input(thread, options), self._options(options)
        collector: Any = StepCollector(thread) if single_step else ChatCollector(thread)
        reducer = SessionReducer(self, collector)
        if asynchronous:
            return AsyncSessionStream(_astart(engine, start, opts, single_step), reducer)
        return SessionStream(_start(engine, start, opts, single_step), reducer)

    # -- streaming operations

    @classmethod
    def stream_start(cls, engine: Engine, input: StartInput, **options: Unpack[StartOptions]) -> SessionStream[ChatResult]:
        """:meth:`start`, streaming: iterate the events, then ``finish()`` for ``(session, result)``."""
        return cls._run_new(engine, input, options, False)  # type: ignore[no-any-return]

    def stream_reply(
        self, engine: Engine, message: UserInput, **options: Unpack[SessionOptions]
    ) -> SessionStream[ChatResult]:
        """:meth:`reply`, streaming."""
        return self._run(engine, "reply", options, message=message)  # type: ignore[no-any-return]

    def stream_continue(self, engine: Engine, **options: Unpack[SessionOptions]) -> SessionStream[ChatResult]:
        """:meth:`continue_`, streaming."""
        return self._run(engine, "continue_", options)  # type: ignore[no-any-return]

    def stream_step(self, engine: Engine, **options: Unpack[SessionOptions]) -> SessionStream[Step]:
        """:meth:`step`, streaming."""
        return self._run(engine, "step", options, single_step=True)  # type: ignore[no-any-return]

    # -- operations

    @classmethod
    def new(
        cls,
        input: StartInput = (),
        *,
        id: str | None = None,
        context: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        pipeline: Sequence[str] = (),
    ) -> Session:
        """An ``idle`` session on ``input`` (a prompt, a message, messages or a thread); no call is made."""
        if isinstance(input, Thread):
            thread = input
        elif isinstance(input, str):
            thread = Thread((user(input),))
        elif isinstance(input, Message):
            thread = Thread((input,))
        else:
            msgs = tuple(input)
            for m in msgs:
                if not isinstance(m, Message):
                    raise TypeError(f"a session starts from Message values, got {type(m).__name__}")
            thread = Thread(msgs)
        return cls(
            id=id or new_session_id(),
            thread=thread,
            context=dict(context) if context else {},
            metadata=dict(metadata) if metadata else {},
            pipeline=pipeline,
        )

    @classmethod
    def start(cls, engine: Engine, input: StartInput, **options: Unpack[StartOptions]) -> tuple[Session, ChatResult]:
        """A new session on ``input``, then the tool loop: ``(session, result)``.

        ``options`` are :class:`~allm.driver.ChatOptions` (``mode``, ``max_turns``,
        ``tools``...); none of them is stored. Raises what :func:`allm.chat` raises;
        an error after the first event gives a session in the ``error`` status.
        """
        return cls.stream_start(engine, input, **options).finish()

    def reply(self, engine: Engine, message: UserInput, **options: Unpack[SessionOptions]) -> tuple[Session, ChatResult]:
        """Append the user's ``message`` (text, parts or a user Message) and run the loop.

        Legal when ``idle``, ``completed`` or ``awaiting_user`` (the message answers
        the pending question). Raises :class:`~allm.errors.SessionError` otherwise.
        """
        return self.stream_reply(engine, message, **options).finish()

    def continue_(self, engine: Engine, **options: Unpack[SessionOptions]) -> tuple[Session, ChatResult]:
        """Run the loop on the thread as it is (after tool results were submitted, or
        after :meth:`recover`). Legal when ``idle`` or ``completed``."""
        return self.stream_continue(engine, **options).finish()

    def step(self, engine: Engine, **options: Unpack[SessionOptions]) -> tuple[Session, Step]:
        """One turn of the loop: ``(session, step)``. A turn whose tools ran and whose
        results the model has not read yet leaves the session ``idle``."""
        return self.stream_step(engine, **options).finish()

    # -- tool results (pure)

    def _pending_call(self, op: str, tool_call_id: str) -> ToolCall:
        self._check(op)
        for c in self.pending_tool_calls:
            if c.id == tool_call_id:
                return c
        ids = ", ".join(c.id for c in self.pending_tool_calls) or "none"
        raise SessionError(
            f"no pending tool call {tool_call_id!r} (pending: {ids})",
            reason="unknown_tool_call_id",
            metadata={"tool_call_id": tool_call_id},
        )

    def _submitted(self, call: ToolCall, content: str, is_error: bool, signal: AskUser | Halt | None = None) -> Session:
        s = self
        if signal is not None and s.pending_question is None and "halt" not in s.metadata:
            # As in the loop, the first call of a turn that asks or halts decides.
            if isinstance(signal, AskUser):
                ask = {"choices": list(signal.choices), "options": dict(signal.options)}
                s = attrs.evolve(
                    s, pending_question=signal.question, pending_tool_call_id=call.id, metadata={**s.metadata, "ask_user": ask}
                )
            else:
                s = attrs.evolve(s, metadata={**s.metadata, "halt": signal.reason})
        thread = s.thread.add(Message("tool", content, tool_call_id=call.id, name=call.name, is_error=is_error))
        i = s.pending_tool_calls.index(call)  # the one answered, even if another shares its id
        pending = s.pending_tool_calls[:i] + s.pending_tool_calls[i + 1 :]
        if pending:
            return attrs.evolve(s, thread=thread, pending_tool_calls=pending)
        if s.pending_question is not None:
            ask = s.metadata.get("ask_user") or {}
            thread = thread.add(question_message(s.pending_question, s.pending_tool_call_id, ask.get("choices", ())))
            return attrs.evolve(s, thread=thread, pending_tool_calls=(), status="awaiting_user")
        if "halt" in s.metadata:
            meta = {k: v for k, v in s.metadata.items() if k != "halt"}
            return attrs.evolve(s, thread=thread, pending_tool_calls=(), status="completed", metadata=meta)
        return attrs.evolve(s, thread=thread, pending_tool_calls=(), status="idle")

    def _answered(self, call: ToolCall, result: Any, is_error: bool, encoder: ResultEncoder) -> Session:
        if isinstance(result, AskUser):
            return self._submitted(call, ASK_USER_PLACEHOLDER, is_error, result)
        if isinstance(result, Halt):
            if not isinstance(result.reason, str) or not result.reason or result.reason in RESERVED_HALT_REASONS:
                raise ToolError(
                    f"{call.name} returned Halt({result.reason!r}); that reason is reserved for the loop "
                    f"({', '.join(sorted(RESERVED_HALT_REASONS))})",
                    reason="invalid_return",
                    metadata={"tool_name": call.name, "tool_call_id": call.id},
                )
            return self._submitted(call, encoder.encode_result(result.result, call), is_error, result)
        return self._submitted(call, encoder.encode_result(result, call), is_error)

    def submit_tool_result(
        self,
        tool_call_id: str,
        result: Any,
        *,
        is_error: bool = False,
        encoder: ResultEncoder | None = None,
    ) -> Session:
        """Answer the pending call ``tool_call_id`` with ``result``: a new session.

        ``result`` is encoded like a handler's (a string as is, else JSON), and as in
        the loop an :class:`~allm.tools.AskUser` asks the user (the model reads
        ``"<awaiting user response>"``) and a :class:`~allm.tools.Halt` ends the turn
        (its ``result`` is the call's result). When no call is left pending the status
        becomes ``idle`` (``continue_`` next), ``awaiting_user`` if a question was
        asked, or ``completed`` after a ``Halt``. Pure: no model call. Raises
        :class:`~allm.errors.SessionError` (``invalid_status`` unless
        ``awaiting_tools``; ``unknown_tool_call_id``) and
        :class:`~allm.errors.ToolError` (``invalid_return``) for a ``Halt`` whose
        reason the loop reserves.
        """
        call = self._pending_call("submit_tool_result", tool_call_id)
        return self._answered(call, result, is_error, as_encoder(encoder))

    def submit_tool_results(
        self, results: Mapping[str, Any] | Iterable[tuple[str, Any]], *, encoder: ResultEncoder | None = None
    ) -> Session:
        """Several :meth:`submit_tool_result` in order (``{tool_call_id: result}`` or pairs).

        All or nothing: the first error raises and no result is applied.
        """
        self._check("submit_tool_results")
        items = list(results.items()) if isinstance(results, Mapping) else list(results)
        s = self
        for tool_call_id, result in items:
            s = s.submit_tool_result(tool_call_id, result, encoder=encoder)
        return s

    def reject(self, tool_call_id: str, reason: str = "The user declined this tool call.") -> Session:
        """Answer the pending call with an error the model reads: ``{"error": reason}``."""
        import orjson

        call = self._pending_call("reject", tool_call_id)
        return self._submitted(call, orjson.dumps({"error": reason}).decode(), True)

    def _approval_job(self, engine: Engine, tool_call_id: str, options: Mapping[str, Any]) -> ToolJob:
        call = self._pending_call("approve", tool_call_id)
        tools = merge_tools(engine.tools, options.get("tools") or ())
        found = next((t for t in tools if t.name == call.name), None)
        if found is None or found.handler is None:
            raise EngineError(
                f"the engine has no handler for the tool {call.name!r}",
                reason="unknown_tool",
                metadata={"tool_name": call.name, "tool_call_id": call.id},
            )
        ctx = ToolContext(
            call,
            {**engine.context, **self.context, **(options.get("context") or {})},
            self.id,
            None,
            engine,
        )
        return ToolJob(call, found, ctx, validate_arguments(found, call))

    def _approved(self, outcome: ToolOutcome, encoder: ResultEncoder) -> Session:
        call = outcome.call
        error = outcome.error
        if error is None:
            try:
                return self._answered(call, outcome.value, False, encoder)
            except ToolError as exc:
                error = exc
            except Exception as exc:
                error = ToolError(f"the result of {call.name} could not be encoded: {exc}", reason="encoding_failed")
        return self._submitted(call, encoder.encode_error(error, call), True)

    def approve(self, engine: Engine, tool_call_id: str, **options: Unpack[ApproveOptions]) -> Session:
        """Run the pending call's handler (found by tool name on ``engine`` or in
        ``tools``) and submit its result (see :meth:`submit_tool_result`: a handler's
        ``AskUser`` or ``Halt`` acts as in the loop); a handler error is submitted as a
        tool error.

        Raises :class:`~allm.errors.SessionError` like :meth:`submit_tool_result`,
        and :class:`~allm.errors.EngineError` (``unknown_tool``) when no handler
        has the call's name.
        """
        job = self._approval_job(engine, tool_call_id, options)
        gen = run_tools([job], options.get("tool_timeout", 30.0))
        try:
            outcome = next(gen)
        finally:
            gen.close()
        return self._approved(outcome, as_encoder(options.get("result_encoder")))

    async def aapprove(self, engine: Engine, tool_call_id: str, **options: Unpack[ApproveOptions]) -> Session:
        """The async twin of :meth:`approve`."""
        job = self._approval_job(engine, tool_call_id, options)
        gen = arun_tools([job], options.get("tool_timeout", 30.0))
        try:
            outcome = await gen.__anext__()
        finally:
            await gen.aclose()
        return self._approved(outcome, as_encoder(options.get("result_encoder")))

    def recover(self) -> Session:
        """Leave the ``error`` status: the same thread, ``idle``, without ``metadata["error"]``.

        The thread is the one before the failed model call (the failed output is
        not in it), so :meth:`continue_` retries that call.
        """
        if self.status != "error":
            raise SessionError(
                f"cannot recover: the session is {self.status}, not error; legal now: {', '.join(self.legal_operations())}",
                reason="invalid_status",
                metadata={"status": self.status, "operation": "recover", "legal": list(self.legal_operations())},
            )
        return attrs.evolve(self._cleared(), status="idle")

    # -- async operations

    @classmethod
    def astream_start(cls, engine: Engine, input: StartInput, **options: Unpack[StartOptions]) -> AsyncSessionStream[ChatResult]:
        """The async twin of :meth:`stream_start`."""
        return cls._run_new(engine, input, options, True)  # type: ignore[no-any-return]

    def astream_reply(
        self, engine: Engine, message: UserInput, **options: Unpack[SessionOptions]
    ) -> AsyncSessionStream[ChatResult]:
        """The async twin of :meth:`stream_reply`."""
        return self._run(engine, "reply", options, asynchronous=True, message=message)  # type: ignore[no-any-return]

    def astream_continue(self, engine: Engine, **options: Unpack[SessionOptions]) -> AsyncSessionStream[ChatResult]:
        """The async twin of :meth:`stream_continue`."""
        return self._run(engine, "continue_", options, asynchronous=True)  # type: ignore[no-any-return]

    def astream_step(self, engine: Engine, **options: Unpack[SessionOptions]) -> AsyncSessionStream[Step]:
        """The async twin of :meth:`stream_step`."""
        return self._run(engine, "step", options, single_step=True, asynchronous=True)  # type: ignore[no-any-return]

    @classmethod
    async def astart(cls, engine: Engine, input: StartInput, **options: Unpack[StartOptions]) -> tuple[Session, ChatResult]:
        """The async twin of :meth:`start`."""
        return await cls.astream_start(engine, input, **options).finish()

    async def areply(
        self, engine: Engine, message: UserInput, **options: Unpack[SessionOptions]
    ) -> tuple[Session, ChatResult]:
        """The async twin of :meth:`reply`."""
        return await self.astream_reply(engine, message, **options).finish()

    async def acontinue(self, engine: Engine, **options: Unpack[SessionOptions]) -> tuple[Session, ChatResult]:
        """The async twin of :meth:`continue_`."""
        return await self.astream_continue(engine, **options).finish()

    async def astep(self, engine: Engine, **options: Unpack[SessionOptions]) -> tuple[Session, Step]:
        """The async twin of :meth:`step`."""
        return await self.astream_step(engine, **options).finish()


# ------------------------------------------------------------------------------ streams of session operations


def settle(base: Session, result: ChatResult | Step) -> Session:
    """:meth:`Session.settle` as a function."""
    return base.settle(result)


class _Folded(Generic[R]):
    """Events of a session operation and the :class:`~allm.fold.SessionReducer` folding them."""

    __slots__ = ("events", "reducer")
    reducer: SessionReducer[R]

    def __init__(self, events: Any, reducer: SessionReducer[R]) -> None:
        self.events = events
        self.reducer = reducer


class SessionStream(_Folded[R]):
    """The events of a session operation; ``finish()`` gives ``(new_session, result)``.

    Iterate it for events (each one is folded as it passes). ``finish()`` consumes
    whatever is left and folds; call ``close()`` first to stop early (the HTTP
    response is closed and the fold gives ``halted_reason="cancelled"``).
    """

    __slots__ = ()
    events: EventStream

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        ev = next(self.events)
        self.reducer.apply(ev)
        return ev

    def close(self) -> None:
        self.events.close()

    def finish(self) -> tuple[Session, R]:
        """Run to the end (nothing more after ``close()``) and fold."""
        try:
            for _ in self:
                pass
        finally:
            self.events.close()
        return self.reducer.finalize()

    def __enter__(self) -> SessionStream[R]:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncSessionStream(_Folded[R]):
    """The async twin of :class:`SessionStream`: ``async for``, ``await aclose()``, ``await finish()``."""

    __slots__ = ()
    events: AsyncEventStream

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        ev = await self.events.__anext__()
        self.reducer.apply(ev)
        return ev

    async def aclose(self) -> None:
        await self.events.aclose()

    async def finish(self) -> tuple[Session, R]:
        """Run to the end (nothing more after ``aclose()``) and fold."""
        try:
            async for _ in self:
                pass
        finally:
            await self.events.aclose()
        return self.reducer.finalize()

    async def __aenter__(self) -> AsyncSessionStream[R]:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


def _register_stored() -> None:
    from . import codec

    # A stored session keeps its id (a new one made up on load would be another session).
    codec.register(Session, required=("id",), reason="invalid_session")


_register_stored()
