"""Telemetry hooks: start, stop, exception and retry records for every call allm makes.

Attach a handler (any callable taking a :class:`Record`) and allm hands it a record when
each operation starts and ends, and when a call is retried::

    import allm
    from allm import telemetry

    seen = []
    telemetry.add_handler(seen.append)          # every call of the process
    with telemetry.scope(seen.append):          # or only calls made inside this block
        allm.generate(engine, "Hi")

Operations (:attr:`Record.kind`): ``generate`` and ``stream`` (one model call: through
:func:`allm.generate` / :func:`allm.stream_generate`, or one turn of the tool loop),
``chat`` and ``step`` (the tool loop: :func:`allm.chat` / :func:`allm.stream`,
:func:`allm.step` / :func:`allm.stream_step`, sync and async), ``tool`` (one tool
handler run by the loop), ``embed``, ``list_models``, ``count_tokens`` and ``image``.

Phases (:attr:`Record.phase`): ``start``; then one of ``stop`` (it ended; a stream closed
before its end is a ``stop`` with ``cancelled=True``) or ``exception`` (it failed: an
error raised, a stream that ended with an ``Error`` event, a tool whose handler raised
or timed out); and, between them, a ``retry`` record for each failed attempt that is
retried. Records of one operation share :attr:`Record.id`; :attr:`Record.parent_id` is
the enclosing operation's (a chat's model calls and tool runs, a call made inside a
tool handler).

Cost: with no handler attached each call checks one module flag (:data:`active`) and
nothing else happens, per call or per event. A handler runs in the thread (and, for
async calls, the task) making the call; one that raises is logged on the
``allm.telemetry`` logger and never breaks the call.

While a handler listens, a chat's (or step's) driver runs in a context of its own, copied
from the caller's when the chat's first event is asked for (as an asyncio task's is from its
creator's): in it the chat is the current operation, and the caller's code between two
events is outside the chat. (Context variables the caller sets after that first event, such
as a new :func:`allm.keys.scope`, are not seen by the chat's later turns: enter them around
the whole iteration.)

A handler may also have an ``activate(record) -> undo`` method: allm calls it with a
tool's ``start`` record in the context the tool handler runs in (its pool thread or its
task) and calls ``undo()`` when the handler returns, so that what the handler does
(its own spans, nested allm calls) is seen as inside the tool run
(:mod:`allm.otel` uses this to make the ``execute_tool`` span current).

Records hold no key. Their ``request``, ``output``, ``tool_arguments``, ``tool_result``
and ``error`` fields point at the call's content (not shown in their repr): a handler
decides whether to record it (the OpenTelemetry handler does only when content capture
is on; :class:`LogHandler` never does).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import attrs

from .errors import AllmError
from .events import Error, MessageCompleted, MessageStarted, RawChunk
from .types import Message, Request, Usage

if TYPE_CHECKING:
    import logging

    from ._records import Record
    from .engine import Engine
    from .plan import Plan
    from .policy import RetryInfo
    from .tools import ToolJob, ToolOutcome

__all__ = [
    "KINDS",
    "PHASES",
    "Handler",
    "LogHandler",
    "Record",
    "active",
    "add_handler",
    "handlers",
    "remove_handler",
    "scope",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The operations that emit records.
KINDS = ("generate", "stream", "chat", "step", "tool", "embed", "list_models", "count_tokens", "image")
#: The phases of a record.
PHASES = ("start", "stop", "exception", "retry")

#: The GenAI operation name (OpenTelemetry ``gen_ai.operation.name``) of each kind.
OPERATIONS = {
    "generate": "chat",
    "stream": "chat",
    "chat": "invoke_agent",
    "step": "invoke_agent",
    "tool": "execute_tool",
    "embed": "embeddings",
    "list_models": "list_models",
    "count_tokens": "count_tokens",
    "image": "generate_content",
}


class Handler(Protocol):
    """What receives records: a callable ``(record) -> None`` (an optional
    ``activate(record) -> undo`` method: see the module docstring)."""

    def __call__(self, record: Record, /) -> None: ...


def __getattr__(name: str) -> Any:
    # The record class is built on first use: ``import allm`` stays as fast with telemetry off.
    if name == "Record":
        from ._records import Record

        return Record
    raise AttributeError(f"module 'allm.telemetry' has no attribute {name!r}")


# ------------------------------------------------------------------------------ registration

#: ``True`` while any handler is attached (globally or in a :func:`scope`). The one check
#: every call makes; read it as ``telemetry.active`` (it changes).
active = False

_global: tuple[Handler, ...] = ()
_scoped: contextvars.ContextVar[tuple[Handler, ...]] = contextvars.ContextVar("allm_telemetry_handlers", default=())
_scopes = 0
_lock = threading.Lock()
_ids = itertools.count(1)


def _refresh() -> None:
    global active
    active = bool(_global) or _scopes > 0


def add_handler(handler: Handler) -> Handler:
    """Attach ``handler`` to every call of the process; returns it. Adding it twice is a no-op."""
    global _global
    if not callable(handler):
        raise TypeError(f"a telemetry handler must be callable, not {type(handler).__name__}")
    with _lock:
        if handler not in _global:
            _global = (*_global, handler)
        _refresh()
    return handler


def remove_handler(handler: Handler) -> None:
    """Detach ``handler`` (no-op if it is not attached)."""
    global _global
    with _lock:
        _global = tuple(h for h in _global if h is not handler)
        _refresh()


def handlers() -> tuple[Handler, ...]:
    """The handlers that see a call made here: the global ones, then this context's scopes'."""
    return _global + _scoped.get()


@contextlib.contextmanager
def scope(*added: Handler) -> Iterator[None]:
    """Attach ``added`` only to the calls made inside this block (this context: the thread,
    or the task and the tasks and tool handlers it starts)."""
    global _scopes
    for h in added:
        if not callable(h):
            raise TypeError(f"a telemetry handler must be callable, not {type(h).__name__}")
    token = _scoped.set(_scoped.get() + added)
    with _lock:
        _scopes += 1
        _refresh()
    try:
        yield
    finally:
        _scoped.reset(token)
        with _lock:
            _scopes -= 1
            _refresh()


# ------------------------------------------------------------------------------ logging

_logger_ready = False


def logger(name: str = "allm") -> logging.Logger:
    """The ``allm.*`` logger ``name``. The ``allm`` logger has a ``NullHandler``: nothing is
    printed unless the application configures logging. (``logging`` is imported on first use.)"""
    global _logger_ready
    import logging

    if not _logger_ready:
        root = logging.getLogger("allm")
        if not any(isinstance(h, logging.NullHandler) for h in root.handlers):
            root.addHandler(logging.NullHandler())
        _logger_ready = True
    return logging.getLogger(name)


# ------------------------------------------------------------------------------ live operations

#: The operation whose code is running (a chat while its driver runs, a tool inside its handler,
#: a plain exchange during its call): the parent of operations started there.
_current: contextvars.ContextVar[Op | None] = contextvars.ContextVar("allm_telemetry_operation", default=None)

_now = time.perf_counter
_wall = time.time


class Op:
    """One live operation: emits its records. Internal to allm's hooks.

    ``base`` holds the fields every record of the operation carries (``kind``, ``id``,
    ``parent_id``, ``operation``, the call's facts); each record is ``base`` plus its phase's
    fields, one dict made into a :class:`Record` without copying field by field."""

    __slots__ = (
        "_hs",
        "attempts",
        "base",
        "done",
        "first",
        "id",
        "kind",
        "loop",
        "parent",
        "started",
        "t0",
        "watch",
    )

    def __init__(self, kind: str, hs: tuple[Handler, ...], parent: Op | None, base: dict[str, Any]) -> None:
        self.kind = kind
        self._hs = hs
        self.id = base["id"] = next(_ids)
        self.parent = parent
        base["kind"] = kind
        if "operation" not in base:
            base["operation"] = OPERATIONS[kind]
        if parent is not None:
            base["parent_id"] = parent.id
            if base.get("session_id") is None:
                sid = parent.base.get("session_id")
                if sid is not None:
                    base["session_id"] = sid
        self.base: dict[str, Any] = base
        self.t0 = 0.0
        self.first: float | None = None
        self.attempts = 1
        self.done = False
        self.loop: Any = None
        self.watch: _Watch | None = None
        self.started: Record | None = None

    def _send(self, phase: str, d: dict[str, Any]) -> Record:
        # ``d`` is the record's own dict (a copy of ``base`` plus the phase's fields, taken as
        # is): one dict per record, no field copied twice.
        d["phase"] = phase
        d["time"] = _wall()
        rec: Record = _new(_Record)  # _records.make, inlined: a record per phase of every operation
        _set(rec, "__dict__", d)
        for h in self._hs:
            try:
                h(rec)
            except Exception as exc:  # a handler never breaks the call
                _handler_failed(h, rec, exc)
        return rec

    def start(self) -> None:
        self.t0 = _now()
        self.started = self._send("start", self.base.copy())

    def _ended(self, fields: dict[str, Any] | None) -> dict[str, Any] | None:
        """The end record's dict (``None`` if the operation already ended)."""
        if self.done:
            return None
        self.done = True
        d = self.base.copy()
        d["duration"] = _now() - self.t0
        d["attempts"] = self.attempts
        if self.first is not None:
            d["time_to_first_event"] = self.first - self.t0
        if fields:
            d.update(fields)
        return d

    def stop(self, fields: dict[str, Any] | None = None) -> None:
        d = self._ended(fields)
        if d is not None:
            self._send("stop", d)

    def fail(self, error: BaseException, fields: dict[str, Any] | None = None) -> None:
        d = self._ended(fields)
        if d is not None:
            _error_fields(error, d)
            self._send("exception", d)

    def cancel(self, fields: dict[str, Any] | None = None) -> None:
        d = self._ended(fields)
        if d is not None:
            d["cancelled"] = True
            self._send("stop", d)

    def retried(self, info: RetryInfo) -> None:
        self.attempts = info.attempt + 1
        d = _error_fields(info.error, self.base.copy())
        d["attempt"] = info.attempt
        d["retry_delay"] = info.delay
        self._send("retry", d)

    def activate(self) -> Callable[[], None]:
        """Make this the current operation in this context, and let handlers do the same."""
        token = _current.set(self)
        acts = _activators(self._hs)
        if not acts:  # the usual case (no handler makes anything current): only this to undo

            def reset() -> None:
                try:  # noqa: SIM105  (not contextlib.suppress: three calls more after every tool run)
                    _current.reset(token)
                except ValueError:  # undone in another context
                    pass

            return reset
        undos: list[Callable[[], None]] = []
        rec = self.started
        if rec is None:
            d = self.base.copy()
            d["phase"] = "start"
            rec = _make(d)
        for h, act in acts:
            try:
                undo = act(rec)
            except Exception:
                logger("allm.telemetry").error("telemetry handler %r failed to activate", h, exc_info=True)
                continue
            if undo is not None:
                undos.append(undo)

        def undo_all() -> None:
            for u in reversed(undos):
                try:
                    u()
                except Exception:
                    logger("allm.telemetry").error("telemetry handler failed to deactivate", exc_info=True)
            try:  # noqa: SIM105  (not contextlib.suppress: three calls more after every tool run)
                _current.reset(token)
            except ValueError:  # undone in another context
                pass

        return undo_all


_last_activators: tuple[Any, list[Any]] = ((), [])


def _activators(hs: tuple[Handler, ...]) -> list[tuple[Handler, Callable[[Record], Any]]]:
    """The handlers of ``hs`` that have an ``activate`` method (kept for the last ``hs`` seen:
    an operation's handlers are usually the very tuple of the global ones)."""
    global _last_activators
    last = _last_activators
    if last[0] is hs:
        return last[1]
    acts = [(h, act) for h in hs if (act := getattr(h, "activate", None)) is not None]
    _last_activators = (hs, acts)
    return acts


def _handler_failed(h: Handler, record: Record, exc: Exception) -> None:
    logger("allm.telemetry").error(
        "telemetry handler %r failed on a %s %s record: %s",
        h,
        record.kind,
        record.phase,
        type(exc).__name__,
        exc_info=exc,
        extra={"allm_kind": record.kind, "allm_phase": record.phase, "allm_id": record.id},
    )


def _error_fields(error: BaseException, d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with ``error``'s fields."""
    d["error_reason"] = error.reason if isinstance(error, AllmError) else type(error).__name__
    d["error_type"] = type(error).__name__
    d["error"] = error
    return d


_make: Any = None  # allm._records.make, Record and Lazy, imported with the first operation observed
_Record: Any = None
_Lazy: Any = None
_new = object.__new__
_set = object.__setattr__


def _load_records() -> None:
    global _make, _Record, _Lazy
    from ._records import Lazy, Record, make

    _make, _Record, _Lazy = make, Record, Lazy


def _start_op(kind: str, base: dict[str, Any], parent: Op | None) -> Op | None:
    """A new operation inside ``parent`` (``None`` with no handler here)."""
    hs = _global + _scoped.get()
    if not hs:
        return None
    if _make is None:
        _load_records()
    return Op(kind, hs, parent, base)


@contextlib.contextmanager
def _being(op: Op | None) -> Iterator[None]:
    if op is None:
        yield
        return
    token = _current.set(op)
    try:
        yield
    finally:
        _current.reset(token)


# ------------------------------------------------------------------------------ facts of a call


_servers: dict[str, tuple[str | None, int | None]] = {}


def _server(url: str) -> tuple[str | None, int | None]:
    """``(host, port)`` of ``url`` (kept per scheme and authority: calls repeat their hosts)."""
    start = url.find("//") + 2
    end = len(url)
    for c in "/?#":
        i = url.find(c, start)
        if 0 <= i < end:
            end = i
    head = url[:end]  # scheme and authority only: never a query (it may carry a key)
    known = _servers.get(head)
    if known is not None:
        return known
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(head)
        port = parts.port
    except ValueError:
        return None, None
    if port is None and parts.scheme in ("http", "https"):
        port = 443 if parts.scheme == "https" else 80
    if len(_servers) < 1024 and "@" not in head:  # credentials in a URL are not kept
        _servers[head] = (parts.hostname, port)
    return parts.hostname, port


def planned(plan: Plan) -> None:
    """Hook of :func:`allm.plan.plan_call` (while :data:`active`): the current plain exchange
    (``embed``, ``list_models``...) sees the plan's retries and learns the host it calls. (A
    model call is given its plan by :func:`open_model_call`.)"""
    op = _current.get()
    if op is None or op.kind in ("chat", "step", "tool", "generate", "stream"):
        return
    _planned(op, plan)


def _planned(op: Op, plan: Plan) -> None:
    user = plan.on_retry
    if user is None:
        plan.on_retry = op.retried  # the usual case: no closure made per call
    else:

        def on_retry(info: RetryInfo) -> None:
            op.retried(info)
            user(info)

        plan.on_retry = on_retry
    base = op.base
    if base.get("provider") is None:
        base["provider"] = plan.provider
    call = plan.call
    if call is not None and "server_address" not in base:
        base["server_address"], base["server_port"] = _server(call.url)
        if base.get("model") is None and call.model:
            base["model"] = call.model


def _provider(engine: Any) -> str | None:
    adapter = getattr(engine, "adapter", None)
    provider = getattr(adapter, "provider", None)
    return provider if isinstance(provider, str) else None


# ------------------------------------------------------------------------------ model calls


#: The events whose facts a model call's records carry (every other event passes untouched).
_WATCHED = frozenset({MessageStarted, MessageCompleted, RawChunk, Error})


class _Watch:
    """What a stream's events tell about the call (only while a handler listens)."""

    __slots__ = ("chunks", "error", "finish", "id", "model", "output")

    def __init__(self) -> None:
        self.chunks: list[Usage] = []  # usage reported so far, folded at the end (not per event)
        self.id: str | None = None
        self.model: str | None = None
        self.finish: str | None = None
        self.output: Message | None = None
        self.error: AllmError | None = None

    def see(self, ev: Any) -> None:
        t = type(ev)
        if t is MessageCompleted:
            self.finish = ev.finish_reason
            self.output = ev.message
            if ev.usage is not None:
                self.chunks = [ev.usage]  # replaces what came before, as Collector does
        elif t is MessageStarted:
            self.id = ev.id
            self.model = ev.model
        elif t is RawChunk:
            if ev.usage is not None:
                self.chunks.append(ev.usage)  # merged once, at the end
        elif t is Error and self.error is None:
            self.error = ev.error

    def fields(self) -> dict[str, Any]:
        chunks = self.chunks
        if len(chunks) > 1:  # each counter from the latest chunk that reported it (Usage.merge, folded)
            chunks[:] = [_latest(chunks)]
        return {
            "response_id": self.id,
            "response_model": self.model,
            "usage": chunks[0] if chunks else None,
            "finish_reason": self.finish,
            "output": self.output,
        }


_USAGE_FIELDS = tuple(f.name for f in attrs.fields(Usage))


def _latest(chunks: list[Usage]) -> Usage:
    """The fold of ``chunks`` by :meth:`Usage.merge`, read backwards: one pass at most."""
    found: dict[str, Any] = {}
    missing = list(_USAGE_FIELDS)
    for u in reversed(chunks):
        for name in missing:
            v = getattr(u, name)
            if v is not None:
                found[name] = v
        if len(found) == len(_USAGE_FIELDS):
            break
        missing = [n for n in missing if n not in found]
    return Usage(**found)


def open_model_call(
    engine: Engine,
    request: Any,
    options: Mapping[str, Any],
    resolved: bool,
    kind: str,
    request_id: str | None,
    prepare: Callable[..., Plan],
    resolve: Callable[[Engine, Any], Request],
) -> tuple[Plan, Op | None]:
    """Hook of :func:`allm.api.open_stream` (while :data:`active`): plan the call as the
    operation it is (its retries and host are seen), not started yet."""
    req = request if resolved and isinstance(request, Request) else resolve(engine, request)
    parent = _current.get()
    if request_id is None and parent is not None and parent.loop is not None:
        request_id = parent.loop.collector.request_id
    if request_id is None:
        from .ids import new_request_id

        request_id = new_request_id()
    op = _start_op(
        kind,
        {
            "request_id": request_id,
            "session_id": parent.base.get("session_id") if parent is not None and parent.loop is not None else None,
            "provider": _provider(engine),
            "model": req.model,
            "request": req,
        },
        parent,
    )
    plan = prepare(engine, req, resolved=True, **options)
    if op is not None:
        _planned(op, plan)
        op.base["stream"] = plan.call.stream if plan.call is not None else True  # a local adapter plays events
    return plan, op


def observe(op: Op, events: Iterator[Any]) -> Iterator[Any]:
    """A model call's events, as they pass: ``start`` at the first ``next()``, the first
    event's time, ``stop``/``exception`` at the end, ``cancelled`` if closed early. Per
    event: one type check (text and tool-argument deltas are passed on untouched)."""
    w = op.watch = _Watch()
    see = w.see
    tp, watched = type, _WATCHED  # locals: the per-event loop reads no globals
    op.start()
    try:
        for ev in events:
            op.first = _now()
            if tp(ev) in watched:
                see(ev)
            yield ev
            break
        for ev in events:
            if tp(ev) in watched:
                see(ev)
            yield ev
    except GeneratorExit:
        _close_events(events)  # the response is closed before the call is recorded as over
        op.cancel(w.fields())
        raise
    except BaseException as exc:
        op.fail(exc, w.fields())
        raise
    else:
        _ran_out(op, w)
    finally:
        _close_events(events)


def _collected(c: Any) -> dict[str, Any]:
    """The end fields of a model call folded by the ``Collector`` ``c`` (what :class:`_Watch`
    gathers from a stream nobody folds: the same events, read once, by the fold)."""
    done = c.completed
    return {
        "response_id": c.id,
        "response_model": c.model,
        "usage": c.usage,
        "finish_reason": done.finish_reason if done is not None else None,
        "output": done.message if done is not None else None,
    }


def _folded(op: Op, c: Any) -> None:
    fields = _collected(c)
    if c.error is not None:
        op.fail(c.error.error, fields)
    else:
        op.stop(fields)


def fold(op: Op | None, events: Iterator[Any], collector: Any) -> None:
    """Hook of :func:`allm.generate` (while :data:`active`): ``events`` (the shell's) folded
    into ``collector`` (a :class:`~allm.fold.Collector`), as the operation ``op``. The
    collector sees every event already, so the call's facts are read from it at the end:
    no layer is added per event (unlike :func:`observe`)."""
    apply = collector.apply
    if op is None:
        try:
            for ev in events:
                apply(ev)
        finally:
            _close_events(events)
        return
    op.start()
    try:
        for ev in events:
            op.first = _now()
            apply(ev)
            break
        for ev in events:
            apply(ev)
    except BaseException as exc:
        _close_events(events)  # the response is closed before the call is recorded as over
        op.fail(exc, _collected(collector))
        raise
    finally:
        _close_events(events)
    _folded(op, collector)


async def afold(op: Op | None, events: AsyncIterator[Any], collector: Any) -> None:
    """The async twin of :func:`fold` (cancellation of the task is ``cancelled``)."""
    import asyncio

    apply = collector.apply
    if op is None:
        try:
            async for ev in events:
                apply(ev)
        finally:
            await _aclose_events(events)
        return
    op.start()
    try:
        async for ev in events:
            if op.first is None:
                op.first = _now()
            apply(ev)
    except asyncio.CancelledError:
        await _aclose_events(events)
        op.cancel(_collected(collector))
        raise
    except BaseException as exc:
        await _aclose_events(events)
        op.fail(exc, _collected(collector))
        raise
    finally:
        await _aclose_events(events)
    _folded(op, collector)


def _close_events(events: Any) -> None:
    close = getattr(events, "close", None)
    if close is not None:
        close()


async def _aclose_events(events: Any) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


def _ran_out(op: Op, w: _Watch) -> None:
    """The stream ended by itself: a stop, or an exception when it ended with an ``Error`` event."""
    if w.error is not None:
        op.fail(w.error, w.fields())
    else:
        op.stop(w.fields())


async def aobserve(op: Op, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The async twin of :func:`observe` (cancellation of the task is ``cancelled``)."""
    import asyncio

    w = op.watch = _Watch()
    see = w.see
    op.start()
    try:
        async for ev in events:
            if op.first is None:
                op.first = _now()
            if type(ev) in _WATCHED:
                see(ev)
            yield ev
    except (GeneratorExit, asyncio.CancelledError):
        await _aclose_events(events)
        op.cancel(w.fields())
        raise
    except BaseException as exc:
        op.fail(exc, w.fields())
        raise
    else:
        _ran_out(op, w)
    finally:
        await _aclose_events(events)


# ------------------------------------------------------------------------------ the tool loop


def _loop_fields(loop: Any) -> dict[str, Any]:
    result = loop.result
    fields: dict[str, Any] = {}
    # the sum of the steps' usage, as Usage.__add__ folds it (a counter stays None only if no
    # step reported it), counter by counter: one Usage built, not one per step
    totals: dict[str, int] = {}
    seen = False
    for s in loop.steps:
        u = s.response.usage
        if u is None:
            continue
        seen = True
        for name in _USAGE_FIELDS:
            v = getattr(u, name)
            if v is not None:
                totals[name] = totals.get(name, 0) + v
    fields["usage"] = Usage(**totals) if seen else None
    if result is not None:
        fields["finish_reason"] = result.halted_reason
        resp = getattr(result, "final_response", None) or getattr(result, "response", None)
        if resp is not None:
            fields["output"] = resp.message
            fields["response_model"] = resp.model
            fields["response_id"] = resp.id
    return fields


def _chat_op(loop: Any, single_step: bool) -> Op | None:
    if not (_global or _scoped.get()):
        return None
    if _Lazy is None:
        _load_records()
    request, thread = loop.request, loop.thread  # values: what the chat starts from
    op = _start_op(
        "step" if single_step else "chat",
        {
            "session_id": loop.session_id,
            "provider": _provider(loop.engine),
            "model": request.model,
            # the request as sent first, built only if a handler reads it
            "request": _Lazy(lambda: attrs.evolve(request, messages=thread.messages)),
        },
        _current.get(),
    )
    if op is not None:
        op.loop = loop
    return op


def observe_chat(loop: Any, single_step: bool, start: Callable[[], Iterator[Any]]) -> Iterator[Any]:
    """Hook of the sync driver (while :data:`active`): the chat (or step) as an operation,
    current while its driver runs, so its model calls and tool runs are its children.
    ``start()`` makes the driver's generator (opening the first call: pre-flight errors raise)."""
    op = _chat_op(loop, single_step)
    with _being(op):
        gen = start()
    if op is None:
        return gen
    return _chat_events(op, gen)


def _chat_events(op: Op, gen: Iterator[Any]) -> Iterator[Any]:
    # The driver runs in a context of its own where the chat is current (one ``Context.run``
    # per event, rather than setting and resetting the variable around each): the caller's
    # code between events never sees the chat as current.
    ctx = contextvars.copy_context()
    ctx.run(_current.set, op)
    run = ctx.run
    step = gen.__next__
    op.start()
    loop = op.loop
    try:
        try:
            ev = run(step)
        except StopIteration:
            pass
        else:
            op.first = _now()
            yield ev
            while True:
                try:
                    ev = run(step)
                except StopIteration:
                    break
                yield ev
    except GeneratorExit:
        _close(ctx, gen)  # its calls end inside it
        op.cancel(_loop_fields(loop))
        raise
    except BaseException as exc:
        _close(ctx, gen)
        op.fail(exc, _loop_fields(loop))
        raise
    else:
        _end_chat(op, loop)
    finally:
        _close(ctx, gen)


def _close(ctx: contextvars.Context, gen: Any) -> None:
    close = getattr(gen, "close", None)
    if close is not None:
        ctx.run(close)


def _end_chat(op: Op, loop: Any) -> None:
    fields = _loop_fields(loop)
    err = _loop_error(loop) if fields.get("finish_reason") == "error" else None
    if err is not None:
        op.fail(err, fields)
    else:
        op.stop(fields)


def _loop_error(loop: Any) -> BaseException | None:
    result = loop.result
    resp = getattr(result, "final_response", None) or getattr(result, "response", None)
    for meta in (result.metadata, resp.metadata if resp is not None else {}):
        err = meta.get("error")
        if isinstance(err, BaseException):
            return err
    return None


def aobserve_chat(loop: Any, single_step: bool, start: Callable[[], AsyncIterator[Any]]) -> AsyncIterator[Any]:
    """The async twin of :func:`observe_chat`."""
    op = _chat_op(loop, single_step)
    with _being(op):
        gen = start()
    if op is None:
        return gen
    return _achat_events(op, gen)


async def _achat_events(op: Op, gen: AsyncIterator[Any]) -> AsyncIterator[Any]:
    import asyncio

    op.start()
    loop = op.loop
    step = gen.__anext__
    try:
        while True:
            token = _current.set(op)
            try:
                ev = await step()
            except StopAsyncIteration:
                break
            finally:
                _current.reset(token)
            if op.first is None:
                op.first = _now()
            yield ev
    except (GeneratorExit, asyncio.CancelledError):
        await _aclose(op, gen)
        op.cancel(_loop_fields(loop))
        raise
    except BaseException as exc:
        await _aclose(op, gen)
        op.fail(exc, _loop_fields(loop))
        raise
    else:
        _end_chat(op, loop)
    finally:
        await _aclose(op, gen)


async def _aclose(op: Op, gen: Any) -> None:
    aclose = getattr(gen, "aclose", None)
    if aclose is not None:
        token = _current.set(op)
        try:
            await aclose()
        finally:
            _current.reset(token)


# ------------------------------------------------------------------------------ tools


def start_tool(job: ToolJob) -> Op | None:
    """Hook of the runners (while :data:`active`): one tool run, started now."""
    parent = _current.get()
    call = job.call
    context = job.context
    op = _start_op(
        "tool",
        {
            "request_id": context.request_id,
            "session_id": context.session_id,
            "provider": parent.base.get("provider") if parent is not None else None,
            "tool_name": call.name,
            "tool_call_id": call.id,
            "tool_arguments": call.arguments,
        },
        parent,
    )
    if op is not None:
        op.start()
    return op


def tool_done(op: Op | None, outcome: ToolOutcome) -> ToolOutcome:
    """Hook of the runners: the tool run ended with ``outcome`` (returned as is)."""
    if op is not None:
        if outcome.error is not None:
            op.fail(outcome.error)
        else:
            op.stop({"tool_result": outcome.value})
    return outcome


# ------------------------------------------------------------------------------ plain exchanges


def _exchange_fields(kind: str, value: Any) -> dict[str, Any] | None:
    if kind == "embed":
        return {"usage": value.usage, "response_model": value.model}
    if kind == "count_tokens":
        return {"usage": Usage(input_tokens=value)}
    if kind == "image":
        return {"usage": getattr(value, "usage", None), "response_model": getattr(value, "model", None)}
    return None


def _exchange_op(kind: str, operation: str | None, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Op | None:
    engine = args[0] if args else kwargs.get("engine")
    model = kwargs.get("model")
    base: dict[str, Any] = {"provider": _provider(engine)}
    if kind == "image":
        base["image_operation"] = operation
        subject = args[1] if len(args) > 1 else None
        model = model or getattr(subject, "model", None)
    elif kind == "count_tokens":
        req = args[1] if len(args) > 1 else kwargs.get("request")
        model = getattr(req, "model", None) if isinstance(req, Request) else None
        if isinstance(req, Request):
            base["request"] = req
    base["model"] = model or getattr(engine, "model", None)
    return _start_op(kind, base, _current.get())


@contextlib.contextmanager
def _running(op: Op) -> Iterator[None]:
    """``op`` started and current for the block; an exception fails it."""
    op.start()
    token = _current.set(op)
    try:
        yield
    except BaseException as exc:
        op.fail(exc)
        raise
    finally:
        _current.reset(token)


def exchange(kind: str, operation: str | None = None) -> Callable[[F], F]:
    """Decorator of a plain exchange (``embed``, ``list_models``, ``count_tokens``, image
    calls with their ``operation``; sync or async, the engine first): one operation per call
    while :data:`active`, current while it runs (so its plans' retries are its own)."""
    import functools
    import inspect

    def wrap(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                if not active:
                    return await fn(*args, **kwargs)
                op = _exchange_op(kind, operation, args, kwargs)
                if op is None:
                    return await fn(*args, **kwargs)
                with _running(op):
                    value = await fn(*args, **kwargs)
                op.stop(_exchange_fields(kind, value))
                return value

            return cast(F, awrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not active:
                return fn(*args, **kwargs)
            op = _exchange_op(kind, operation, args, kwargs)
            if op is None:
                return fn(*args, **kwargs)
            with _running(op):
                value = fn(*args, **kwargs)
            op.stop(_exchange_fields(kind, value))
            return value

        return cast(F, wrapper)

    return wrap


# ------------------------------------------------------------------------------ logging handler


def _log_fields(record: Record) -> dict[str, Any]:
    u = record.usage
    out: dict[str, Any] = {
        "allm_kind": record.kind,
        "allm_phase": record.phase,
        "allm_id": record.id,
        "allm_parent_id": record.parent_id,
        "allm_operation": record.operation,
        "allm_request_id": record.request_id,
        "allm_session_id": record.session_id,
        "allm_provider": record.provider,
        "allm_model": record.model,
        "allm_response_model": record.response_model,
        "allm_response_id": record.response_id,
        "allm_server_address": record.server_address,
        "allm_duration_s": record.duration,
        "allm_time_to_first_event_s": record.time_to_first_event,
        "allm_attempts": record.attempts,
        "allm_input_tokens": u.input_tokens if u is not None else None,
        "allm_output_tokens": u.output_tokens if u is not None else None,
        "allm_finish_reason": record.finish_reason,
        "allm_cancelled": record.cancelled,
        "allm_error_reason": record.error_reason,
        "allm_error_type": record.error_type,
        "allm_attempt": record.attempt,
        "allm_retry_delay_s": record.retry_delay,
        "allm_tool_name": record.tool_name,
        "allm_tool_call_id": record.tool_call_id,
    }
    return out


class LogHandler:
    """A handler that writes each record as one log line on the ``allm.<kind>`` logger
    (``allm.generate``, ``allm.chat``, ``allm.tool``...), with the record's fields as
    ``extra=`` attributes named ``allm_*`` (``allm_duration_s``, ``allm_input_tokens``,
    ``allm_error_reason``...), for structured formatters.

    Levels: ``start`` DEBUG, ``stop`` INFO, ``retry`` and ``exception`` WARNING. Lines
    carry ids, names, times, token counts and reasons, never content or error messages
    (they may quote the prompt) and never a key.
    """

    def __init__(self, *, start_level: int = 10, stop_level: int = 20, problem_level: int = 30) -> None:
        self.levels = {"start": start_level, "stop": stop_level, "retry": problem_level, "exception": problem_level}

    def __call__(self, record: Record) -> None:
        log = logger("allm." + record.kind)
        level = self.levels[record.phase]
        if not log.isEnabledFor(level):
            return
        what = record.tool_name if record.kind == "tool" else record.model
        parts = [f"{record.kind} {what or ''}".rstrip(), record.phase]
        if record.duration is not None:
            parts.append(f"{record.duration * 1000:.1f} ms")
        u = record.usage
        if u is not None and (u.input_tokens is not None or u.output_tokens is not None):
            parts.append(f"tokens in={u.input_tokens} out={u.output_tokens}")
        if record.finish_reason:
            parts.append(f"finish={record.finish_reason}")
        if record.cancelled:
            parts.append("cancelled")
        if record.error_reason:
            parts.append(f"error={record.error_reason}")
        if record.phase == "retry":
            parts.append(f"attempt={record.attempt} delay={record.retry_delay:.3g} s")
        log.log(level, "%s", " ".join(parts), extra=_log_fields(record))
