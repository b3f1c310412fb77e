"""Load, run one operation, journal, commit: the one implementation behind every queue adapter.

A task runs as a generator (:class:`_Run`) that *yields effects* (read a record, write one
conditionally, make one model call, run one tool call) and receives their results; it never
performs I/O. :meth:`Worker.run` performs the effects with the sync APIs (Celery, threads),
:meth:`Worker.arun` with the async ones (arq, asyncio). Every decision is in the generator.

The stored record of a session is its journal. Its value is an envelope
``{"allm_worker": 1, "applied": [task ids], "session": <Session envelope>}`` and every step
is one conditional write (``expect=`` the version it was computed from):

1. the task's input (a reply and the model call answering it, submitted results,
   rejections, each approved tool call's result), with the task's id added to ``applied``
   in the write that completes it;
2. then, until the session rests, each model call (made with ``mode="manual"``: one call,
   its tool calls handed back) and each tool call this worker runs, one write each.

A write that finds another version stops the run (another delivery or task got there first;
nothing of this run is stored). A task whose id is in ``applied`` skips its input, so a
redelivered task never applies a reply twice, and never repeats a model call or a tool call
whose result was written. Before a tool call runs, the run takes a claim on it (an
``expect=0`` record under ``<session id>/<version>/<tool_call_id>``) and checks that the
session is still at that version, so two deliveries never run the same call at once; a claim
older than ``claim_timeout`` seconds belonged to a worker that died, and is taken over.
"""

from __future__ import annotations

import inspect
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union

import attrs
import orjson

from .. import Engine, codec, keys
from ..errors import AllmError, EngineError, SessionError, StoreError
from ..types import Tool
from ._values import Outcome, Task

if TYPE_CHECKING:
    from .. import Session
    from ..stores import Record, Store

__all__ = ["EngineFactory", "KeyResolver", "Worker"]

T = TypeVar("T")

NAMESPACE = "worker_sessions"
APPLIED_KEEP = 64
_FORMAT = 1

EngineFactory = Union[Callable[[str], Engine], Mapping[str, Engine]]
"""``name -> Engine``: a function (a profile loader fits) or a mapping of names to engines."""

KeyValue = Union[str, Mapping[str, str], None]
KeyResolver = Union[Callable[[str], Union[KeyValue, Awaitable[KeyValue]]], Mapping[str, Union[str, Mapping[str, str]]]]
"""``key_ref -> keys``: one key for every provider (``"sk-..."``), keys by provider
(``{"openai": "sk-...", "anthropic": "sk-ant-..."}``), or ``None`` (none for that
reference). A function (async in :meth:`Worker.arun`, if you like) or a mapping."""


# ------------------------------------------------------------------------------ the envelope


def encode_record(session: Session, applied: Sequence[str]) -> bytes:
    """The stored bytes of a session record (see the module docstring)."""
    return orjson.dumps({"allm_worker": _FORMAT, "applied": list(applied), "session": codec.to_dict(session)})


def decode_record(value: bytes, session_id: str) -> tuple[Session, list[str]]:
    """``(session, applied task ids)`` of stored bytes. Raises ``StoreError(corrupt)``."""
    from .. import Session

    try:
        data = orjson.loads(value)
        if not isinstance(data, dict) or data.get("allm_worker") != _FORMAT:
            raise ValueError("not a worker session record")
        applied = data.get("applied", [])
        if not isinstance(applied, list) or not all(isinstance(a, str) for a in applied):
            raise ValueError("applied is not a list of task ids")
        session = codec.from_dict(data["session"], Session)
    except (ValueError, KeyError, AllmError) as exc:
        raise StoreError(f"the stored record of session {session_id} cannot be read: {exc}", reason="corrupt") from None
    return session, applied


# ------------------------------------------------------------------------------ effects


@attrs.frozen
class _Call:
    """The one kind of effect: call ``target.<sync>(*args, **kwargs)``; the async shell awaits
    ``target.<async_>(...)`` instead (the store's ``aget``, the session's ``areply``...)."""

    target: Any
    sync: str
    async_: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)


_Machine = Generator[_Call, Any, T]


def _conflict(exc: BaseException) -> bool:
    return isinstance(exc, StoreError) and exc.reason == "version_conflict"


def _illegal(s: Session, op: str, why: str = "") -> SessionError:
    legal = ", ".join(s.legal_operations())
    return SessionError(
        f"cannot {op}: the session is {s.status}" + (f" ({why})" if why else "") + f"; legal now: {legal}",
        reason="session_in_error_state" if s.status == "error" else "invalid_status",
        metadata={"status": s.status, "operation": op, "legal": list(s.legal_operations())},
    )


def _answered(session: Session, tool_call_id: str) -> bool:
    return any(m.role == "tool" and m.tool_call_id == tool_call_id for m in session.thread.messages)


class _Run:
    """One run of one task (see the module docstring); drive it with ``main()``."""

    def __init__(self, worker: Worker, task: Task, task_key: str | None, engine: Engine) -> None:
        self.w = worker
        self.task = task
        self.key = task_key
        self.engine = engine
        self.sid = task.session_id
        self.token = uuid.uuid4().hex
        self.version = 0
        self.applied: list[str] = []
        self.mark = True  # the next write completes this task's input (and adds its id to applied)
        self.duplicate = False
        self.retry_after: float | None = None
        self.model_calls = self.tool_calls = self.commits = 0
        self.halted: str | None = None
        self.session: Session

    # -- the run

    def main(self) -> _Machine[Outcome]:
        rec: Record | None = yield self._get(self.w.namespace, self.sid)
        if rec is None:
            raise SessionError(f"no session {self.sid!r} is stored", reason="not_found", metadata={"session_id": self.sid})
        self.session, self.applied = decode_record(rec.value, self.sid)
        self.version = rec.version
        if self.key is not None and self.key in self.applied:
            self.duplicate = True
        elif not (yield from self._apply()):
            return self._outcome(conflict=True)
        ok = yield from self._drive()
        return self._outcome(conflict=not ok)

    def _outcome(self, *, conflict: bool) -> Outcome:
        applied = self.duplicate or not self.mark
        if conflict and not applied and self.retry_after is None:
            self.retry_after = self.w.conflict_retry
        s = self.session
        return Outcome(
            self.sid,
            s.status,
            self.version,
            applied,
            duplicate=self.duplicate,
            conflict=conflict,
            retry_after=self.retry_after if conflict else None,
            model_calls=self.model_calls,
            tool_calls=self.tool_calls,
            commits=self.commits,
            waiting_for=tuple(c.id for c in s.pending_tool_calls if not self._runnable(c.name)),
            halted_reason=self.halted,
        )

    # -- the task's input

    def _apply(self) -> _Machine[bool]:
        op = self.task.operation
        s = self.session
        if op.kind == "reply":
            return (yield from self._model(op.text))
        if op.kind == "continue":
            if s.status == "completed":
                return (yield from self._model(None))
            if s.status == "idle" or (s.status == "awaiting_tools" and self._next_call() is not None):
                return True  # the drive's first write completes it
            raise _illegal(s, "continue", "no tool call pending here can run in this worker" if s.status == "awaiting_tools" else "")
        todo = [i for i in op.tool_call_ids or tuple(op.results) if not _answered(s, i)]
        if todo:
            self._check_pending(op.kind, todo)
        if op.kind == "approve":
            for n, tool_call_id in enumerate(todo):
                self.mark = n == len(todo) - 1  # each result is its own write; the last completes the input
                if not (yield from self._tool(tool_call_id)):
                    self.mark = True
                    return False
            self.mark = False
            return True
        for tool_call_id in todo:
            if op.kind == "reject":
                s = s.reject(tool_call_id, op.reason or "")
            else:
                s = s.submit_tool_result(tool_call_id, op.results[tool_call_id], is_error=tool_call_id in op.errors)
        if not todo:
            self.mark = False
            return True
        return (yield from self._commit(s))

    # -- until the session rests

    def _drive(self) -> _Machine[bool]:
        while True:
            s = self.session
            if s.status == "awaiting_tools":
                call = self._next_call()
                if call is None:
                    return True
                ok = yield from self._tool(call)
            elif s.status == "idle":
                if self.model_calls >= self.w.max_turns:
                    self.halted = "max_turns"
                    return True
                ok = yield from self._model(None)
            else:
                return True
            if not ok:
                return False

    def _check_pending(self, op: str, ids: list[str]) -> None:
        s = self.session
        if s.status != "awaiting_tools":
            raise _illegal(s, op)
        pending = {c.id: c for c in s.pending_tool_calls}
        missing = [i for i in ids if i not in pending]
        if missing:
            raise SessionError(
                f"no pending tool call {missing[0]!r} (pending: {', '.join(pending) or 'none'})",
                reason="unknown_tool_call_id",
                metadata={"tool_call_id": missing[0]},
            )
        if op == "approve":
            for i in ids:
                t = self.engine.tool(pending[i].name)
                if t is None or t.handler is None:
                    raise EngineError(
                        f"this worker's engine has no handler for the tool {pending[i].name!r}",
                        reason="unknown_tool",
                        metadata={"tool_name": pending[i].name, "tool_call_id": i},
                    )

    def _runnable(self, name: str) -> bool:
        t: Tool | None = self.engine.tool(name)
        return t is not None and t.handler is not None and not t.manual

    def _next_call(self) -> str | None:
        return next((c.id for c in self.session.pending_tool_calls if self._runnable(c.name)), None)

    # -- effects

    def _get(self, ns: str, key: str) -> _Call:
        return _Call(self.w.store, "get", "aget", (ns, key))

    def _put(self, ns: str, key: str, value: bytes, expect: int) -> _Call:
        return _Call(self.w.store, "put", "aput", (ns, key, value), {"expect": expect})

    def _delete(self, ns: str, key: str) -> _Call:
        return _Call(self.w.store, "delete", "adelete", (ns, key))

    # -- steps

    def _model(self, text: str | None) -> _Machine[bool]:
        """One model call (``reply`` when ``text`` is set, else ``continue_``; manual mode: its
        tool calls are handed back), then its write."""
        options = {"mode": "manual", **self.w._model_options}
        s = self.session
        if text is not None:
            run = yield _Call(s, "reply", "areply", (self.engine, text), options)
        else:
            run = yield _Call(s, "continue_", "acontinue", (self.engine,), options)
        self.model_calls += 1
        return (yield from self._commit(run[0]))

    def _tool(self, tool_call_id: str) -> _Machine[bool]:
        ns = self.w.claims_namespace
        claim = f"{self.sid}/{self.version}/{tool_call_id}"
        if not (yield from self._claim(ns, claim)):
            return False
        new: Session = yield _Call(self.session, "approve", "aapprove", (self.engine, tool_call_id), self.w._tool_options)
        self.tool_calls += 1
        ok = yield from self._commit(new)
        with suppress(StoreError):  # a claim left behind names a version that is gone: never read again
            yield self._delete(ns, claim)
        return ok

    def _claim(self, ns: str, claim: str) -> _Machine[bool]:
        now = self.w.clock()
        body = orjson.dumps({"token": self.token, "task": self.key, "at": now, "pid": os.getpid()})
        try:
            yield self._put(ns, claim, body, 0)
        except StoreError as exc:
            if not _conflict(exc):
                raise
            held: Record | None = yield self._get(ns, claim)
            if held is None:
                return False  # released meanwhile: its holder committed, so this version is gone
            try:
                at = float(orjson.loads(held.value)["at"])
            except (ValueError, KeyError, TypeError):
                at = 0.0
            age = now - at
            if age < self.w.claim_timeout:
                self.retry_after = max(self.w.claim_timeout - age, 0.0) + 0.1
                return False
            try:  # its holder died: take it over (one taker wins)
                yield self._put(ns, claim, body, held.version)
            except StoreError as exc2:
                if not _conflict(exc2):
                    raise
                return False
        rec: Record | None = yield self._get(self.w.namespace, self.sid)
        if rec is None or rec.version != self.version:
            with suppress(StoreError):
                yield self._delete(ns, claim)
            return False
        return True

    def _commit(self, new: Session) -> _Machine[bool]:
        applied = self.applied
        if self.mark and self.key is not None and self.key not in applied:
            applied = [*applied, self.key][-APPLIED_KEEP:]
        try:
            version: int = yield self._put(self.w.namespace, self.sid, encode_record(new, applied), self.version)
        except StoreError as exc:
            if not _conflict(exc):
                raise
            return False
        self.session, self.version, self.applied, self.mark = new, version, applied, False
        self.commits += 1
        return True


# ------------------------------------------------------------------------------ the worker


def _options(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class Worker:
    """What a worker process needs to run tasks: a store, engines, keys and its options.

    - ``store``: any :class:`~allm.stores.Store` (shared by every worker: Redis, SQLite for
      one machine, memory for tests). Sessions live in ``namespace``, tool claims in
      ``namespace + ".claims"``.
    - ``engines``: ``name -> Engine`` (a function, e.g. a profile loader, or a mapping). The
      engine carries the tools with their handlers; ``tools`` adds or replaces some.
    - ``keys``: ``key_ref -> keys`` (see :data:`KeyResolver`). The keys apply to the task's
      model calls through :func:`allm.keys.scope`; without a ``key_ref`` (or for providers the
      resolver does not name) the rest of allm's key chain applies (``allm.keys.put``,
      ``configure``, the environment).
    - ``max_turns``: most model calls one run makes (default 8); the session then rests
      ``idle`` and the outcome says ``halted_reason="max_turns"``.
    - ``params`` (request fields: ``{"temperature": 0, "max_tokens": 512}``), ``context``
      (for handlers), ``tool_timeout`` (seconds per tool call), ``result_encoder``,
      ``retry``, ``timeouts``: as in :meth:`allm.Session.reply` / :meth:`~allm.Session.approve`.
      None of them is stored.
    - ``claim_timeout``: seconds after which a claim on a tool call is taken to be a dead
      worker's (default ``tool_timeout + 30``, or 300 without a tool timeout).
    - ``conflict_retry``: seconds a queue waits before running again a task whose input lost a
      write race (default 0.5).

    Holds functions and a store: it is process configuration, not a value; build one per
    worker process.
    """

    def __init__(
        self,
        store: Store,
        engines: EngineFactory,
        *,
        keys: KeyResolver | None = None,
        namespace: str = NAMESPACE,
        max_turns: int = 8,
        tools: Sequence[Tool] = (),
        params: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        tool_timeout: float | None = 30.0,
        result_encoder: Any = None,
        retry: Any = None,
        timeouts: Any = None,
        claim_timeout: float | None = None,
        conflict_retry: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
            raise ValueError(f"max_turns must be a positive int, not {max_turns!r}")
        if not namespace:
            raise ValueError("namespace must be a non-empty string")
        self.store = store
        self.engines = engines
        self.keys = keys
        self.namespace = namespace
        self.claims_namespace = namespace + ".claims"
        self.max_turns = max_turns
        self.tools = tuple(tools)
        self.tool_timeout = tool_timeout
        self.claim_timeout = claim_timeout if claim_timeout is not None else (tool_timeout or 270.0) + 30.0
        self.conflict_retry = conflict_retry
        self.clock = clock
        self._model_options = _options({"params": params, "context": context, "retry": retry, "timeouts": timeouts})
        if self.tools:
            self._model_options["tools"] = self.tools
        self._tool_options = _options({"context": context, "result_encoder": result_encoder})
        self._tool_options["tool_timeout"] = tool_timeout
        if self.tools:
            self._tool_options["tools"] = self.tools

    def __repr__(self) -> str:
        return f"Worker(store={self.store!r}, namespace={self.namespace!r})"

    # -- sessions in the store

    def create(self, session: Session) -> int:
        """Store a new session (create-only: ``expect=0``); its version (1).

        Raises :class:`~allm.errors.StoreError` (``version_conflict``) when a session with
        that id is already stored.
        """
        return self.store.put(self.namespace, session.id, encode_record(session, ()), expect=0)

    async def acreate(self, session: Session) -> int:
        """The async twin of :meth:`create`."""
        return await self.store.aput(self.namespace, session.id, encode_record(session, ()), expect=0)

    def load(self, session_id: str) -> tuple[Session, int]:
        """``(session, version)`` of a stored session. Raises :class:`~allm.errors.SessionError`
        (``not_found``) and :class:`~allm.errors.StoreError` (``corrupt``)."""
        return self._loaded(self.store.get(self.namespace, session_id), session_id)

    async def aload(self, session_id: str) -> tuple[Session, int]:
        """The async twin of :meth:`load`."""
        return self._loaded(await self.store.aget(self.namespace, session_id), session_id)

    @staticmethod
    def _loaded(rec: Record | None, session_id: str) -> tuple[Session, int]:
        if rec is None:
            raise SessionError(f"no session {session_id!r} is stored", reason="not_found", metadata={"session_id": session_id})
        return decode_record(rec.value, session_id)[0], rec.version

    # -- running tasks

    def run(self, task: Task | Mapping[str, Any], *, task_id: str | None = None) -> Outcome:
        """Run one task to its end with the sync APIs: load the session, apply the operation,
        drive the session until it rests (completed, awaiting the user, awaiting tool calls
        this worker does not run, error), committing each step.

        ``task_id``: the queue's id of the task, the same on every delivery (Celery's
        ``request.id``, arq's ``job_id``); with it a redelivered task does not apply its input
        twice. Without it every run applies it.

        Returns an :class:`Outcome`. Raises :class:`~allm.errors.ValidationError` for a
        malformed task, :class:`~allm.errors.SessionError` for an operation the session's
        status does not allow (``invalid_status``...) or an id that is not stored
        (``not_found``), :class:`~allm.errors.EngineError` for an unknown engine name or key
        reference, and what the model call raises before its first event (the steps
        committed before it stay committed).
        """
        task = Task.from_dict(task)
        engine = self._engine(task.engine)
        resolved = self._resolve(task.key_ref)
        if inspect.isawaitable(resolved):
            close = getattr(resolved, "close", None)
            if close is not None:
                close()
            raise EngineError(
                "the key resolver is async: use Worker.arun (arq) or a sync resolver", reason="missing_key"
            )
        with _scope(resolved, task.key_ref):
            machine = _Run(self, task, task_id, engine).main()
            return _perform_sync(machine)

    async def arun(self, task: Task | Mapping[str, Any], *, task_id: str | None = None) -> Outcome:
        """The async twin of :meth:`run` (the same steps, with ``aget``/``aput``, ``areply``,
        ``acontinue`` and ``aapprove``)."""
        task = Task.from_dict(task)
        engine = self._engine(task.engine)
        resolved = self._resolve(task.key_ref)
        if inspect.isawaitable(resolved):
            resolved = await resolved
        with _scope(resolved, task.key_ref):
            machine = _Run(self, task, task_id, engine).main()
            return await _perform_async(machine)

    def _engine(self, name: str) -> Engine:
        try:
            engine = self.engines[name] if isinstance(self.engines, Mapping) else self.engines(name)
        except KeyError:
            known = f" (known: {', '.join(sorted(self.engines))})" if isinstance(self.engines, Mapping) else ""
            raise EngineError(f"no engine named {name!r}{known}", reason="invalid_engine") from None
        if not isinstance(engine, Engine):
            raise EngineError(
                f"the engine factory returned {type(engine).__name__} for {name!r}, not an allm.Engine",
                reason="invalid_engine",
            )
        return engine.with_tools(*self.tools) if self.tools else engine

    def _resolve(self, key_ref: str | None) -> KeyValue | Awaitable[KeyValue]:
        if key_ref is None:
            return None
        resolver = self.keys
        if resolver is None:
            raise EngineError(
                f"the task names the key reference {key_ref!r} but this worker has no key resolver (Worker(keys=...))",
                reason="missing_key",
                metadata={"key_ref": key_ref},
            )
        if isinstance(resolver, Mapping):
            return resolver.get(key_ref)
        return resolver(key_ref)

    def prune_claims(self, max_age: float) -> list[str]:
        """Delete tool claims older than ``max_age`` seconds (left by workers that died after
        committing); the claim keys deleted."""
        return self.store.prune(self.claims_namespace, max_age=max_age)


def _scope(resolved: KeyValue, key_ref: str | None) -> AbstractContextManager[None]:
    if key_ref is None:
        return nullcontext()
    if isinstance(resolved, str) and resolved:
        return keys.scope(resolved)
    if isinstance(resolved, Mapping) and resolved:
        return keys.scope(**{str(p): str(k) for p, k in resolved.items()})
    raise EngineError(
        f"the key resolver has no keys for the key reference {key_ref!r}",
        reason="missing_key",
        metadata={"key_ref": key_ref},
    )


# ------------------------------------------------------------------------------ the two shells


class _Driver(Generic[T]):
    """Steps a machine: iterate it for its effects, hand back each one's result with ``ok`` or
    its error with ``failed``; ``outcome`` is the machine's return value once iteration ends."""

    def __init__(self, machine: _Machine[T]) -> None:
        self.machine = machine
        self.sent: tuple[Any, Exception | None] = (None, None)
        self.outcome: T

    def __iter__(self) -> Iterator[_Call]:
        while True:
            value, error = self.sent
            try:
                yield self.machine.throw(error) if error is not None else self.machine.send(value)
            except StopIteration as stop:
                self.outcome = stop.value
                return

    def ok(self, value: Any) -> None:
        self.sent = (value, None)

    def failed(self, error: Exception) -> None:
        self.sent = (None, error)


def _perform_sync(machine: _Machine[T]) -> T:
    driver = _Driver(machine)
    for call in driver:
        try:
            driver.ok(getattr(call.target, call.sync)(*call.args, **call.kwargs))
        except Exception as exc:
            driver.failed(exc)
    return driver.outcome


async def _perform_async(machine: _Machine[T]) -> T:
    driver = _Driver(machine)
    for call in driver:
        try:
            driver.ok(await getattr(call.target, call.async_)(*call.args, **call.kwargs))
        except Exception as exc:
            driver.failed(exc)
    return driver.outcome


# ------------------------------------------------------------------------------ shared by the queue adapters


class PerProcess:
    """A :class:`Worker`, or a function that builds one, built at most once per process
    (a forked worker process builds its own, so store connections are never shared)."""

    def __init__(self, worker: Worker | Callable[[], Worker]) -> None:
        self._source = worker
        self._built: tuple[int, Worker] | None = None

    def __call__(self) -> Worker:
        if isinstance(self._source, Worker):
            return self._source
        pid = os.getpid()
        if self._built is None or self._built[0] != pid:
            w = self._source()
            if not isinstance(w, Worker):
                raise TypeError(f"the worker factory returned {type(w).__name__}, not an allm.workers.Worker")
            self._built = (pid, w)
        return self._built[1]


def retry_delay(exc: BaseException, attempt: int) -> float | None:
    """Seconds before a queue runs a task again after ``exc``, or ``None`` (do not retry).

    Retried: allm errors that are transient (``rate_limited``, ``provider_unavailable``,
    ``timeout``, ``network_error``) and an unreachable store (``StoreError(unavailable)``),
    after the provider's ``retry_after`` or 1, 2, 4... seconds (at most 60) by ``attempt``
    (0 for the first retry).
    """
    if not isinstance(exc, AllmError):
        return None
    if not (exc.retryable or (isinstance(exc, StoreError) and exc.reason == "unavailable")):
        return None
    if exc.retry_after is not None:
        return float(min(exc.retry_after, 600.0))
    return float(min(2 ** max(attempt, 0), 60))
