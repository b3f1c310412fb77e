"""Running tool handlers: :func:`run_tools` (sync) and :func:`arun_tools` (async).

Both run the calls of one step concurrently, each within a timeout, and yield a
:class:`~allm.tools.ToolOutcome` per call as it finishes; the decisions about outcomes are
in :mod:`allm.loop`.

- Sync handlers run on a reused, bounded pool of daemon threads (:data:`MAX_WORKERS`; a
  handler abandoned at its timeout does not count against the bound, and its thread ends
  when the handler returns). Under the async driver the awaiting task gets the result
  through the event loop. Under the sync driver, a step's only call with no timeout runs
  in the calling thread (no thread switch; it raises or returns exactly as on the pool).
- Async handlers run on the caller's event loop under the async driver (cancelled at the
  timeout or when the stream is closed). Under the sync driver they run on a pool thread,
  in that thread's own event loop, which is kept for the thread's life (so the handler's
  own async clients are pooled across calls and nothing leaks per call).
- Each handler runs in a copy of the caller's ``contextvars`` context (so
  ``allm.keys.scope`` applies inside handlers).

A handler that raises — ``TimeoutError`` included — gives a ``handler_raised`` error at
once; only the runner's own timeout gives ``timeout``. No wait here is unbounded when a
timeout is set, and a worker always reports back, whatever its handler does.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import contextvars
import functools
import inspect
import os
import queue
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Sequence
from typing import Any, Protocol

from . import telemetry as _tel
from .errors import ToolError
from .tools import ToolJob, ToolOutcome, handler_arity
from .types import ToolCall

__all__ = ["MAX_WORKERS", "ToolOutcomes", "arun_tools", "run_tool", "run_tools"]

#: Threads running sync handlers at once (more calls wait for a free one, within their timeout).
MAX_WORKERS = 64


# ------------------------------------------------------------------------------ outcomes


def _raised(call: ToolCall, exc: BaseException) -> ToolOutcome:
    if isinstance(exc, ToolError):
        return ToolOutcome(call, error=exc)
    err = ToolError(
        f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
        reason="handler_raised",
        metadata={"exception_type": type(exc).__name__, "tool_name": call.name, "tool_call_id": call.id},
    )
    err.__cause__ = exc
    return ToolOutcome(call, error=err)


def _reported(call: ToolCall, ok: bool, value: Any, timeout: float) -> ToolOutcome:
    """The outcome of what a pool worker delivered: ``(True, result)``, or ``(False, exception)``
    (the runner's own :class:`_Expired` is the ``timeout`` error)."""
    if ok:
        return ToolOutcome(call, value)
    if isinstance(value, _Expired):
        return _timed_out(call, timeout)
    return _raised(call, value)


def _timed_out(call: ToolCall, timeout: float) -> ToolOutcome:
    return ToolOutcome(
        call,
        error=ToolError(
            f"{call.name} did not finish within {timeout:g} s",
            reason="timeout",
            metadata={"tool_name": call.name, "tool_call_id": call.id, "timeout": timeout},
        ),
    )


def _args(job: ToolJob) -> tuple[Any, ...]:
    assert job.tool is not None and job.tool.handler is not None
    args = dict(job.call.arguments)
    return (args,) if handler_arity(job.tool.handler) == 1 else (args, job.context)


def _is_async(handler: Any) -> bool:
    try:
        return _is_async_kept(handler)
    except TypeError:  # an unhashable callable object
        return _is_async_now(handler)


def _is_async_now(handler: Any) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    if inspect.isroutine(handler):
        return False
    return inspect.iscoroutinefunction(type(handler).__call__)  # an object with an async __call__


# Kept per handler, as handler_arity is: asked on every call, and inspect's answer takes
# several calls to reach.
_is_async_kept = functools.lru_cache(maxsize=1024)(_is_async_now)


async def _settle(value: Any) -> Any:
    while inspect.isawaitable(value):
        value = await value
    return value


#: Result types that are never awaitable: tested before ``inspect.isawaitable`` (an ABC check).
_PLAIN_RESULTS = frozenset((str, int, float, bool, dict, list, tuple, type(None), bytes))


async def _call_async(handler: Any, args: tuple[Any, ...]) -> Any:
    # ``_settle(handler(*args))``, one coroutine for the usual plain result: run once per tool call.
    value = await handler(*args)
    return value if type(value) in _PLAIN_RESULTS else await _settle(value)


class _Expired(Exception):
    """The runner's own timeout ended an async handler."""


async def _within(coro: Any, timeout: float | None) -> Any:
    if timeout is None:
        return await coro
    return await _by(coro, asyncio.get_running_loop().time() + timeout)


async def _by(awaitable: Any, deadline: float) -> Any:
    """``awaitable``'s result, or :class:`_Expired` once the loop's clock passes ``deadline``
    (a ``TimeoutError`` the awaitable raises itself is passed on as it is)."""
    cm = asyncio.timeout_at(deadline)
    try:
        async with cm:
            return await awaitable
    except TimeoutError:
        if cm.expired():
            raise _Expired from None
        raise


# ------------------------------------------------------------------------------ the thread pool


class _Ticket:
    """One submitted call: ``done`` once its worker finished it; ``abandoned`` once its waiter
    gave up at the timeout (the worker thread then ends instead of taking more work)."""

    __slots__ = ("abandoned", "done")

    def __init__(self) -> None:
        self.done = False
        self.abandoned = False


class _Pool:
    """Daemon worker threads taking submitted calls from one queue.

    ``live`` counts threads that are not abandoned; a new one starts when no thread is idle
    and ``live < MAX_WORKERS`` (past that, calls wait in the queue, within their timeout).
    Each thread keeps its own event loop for async handlers.
    """

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[tuple[Callable[[], Any], contextvars.Context, Callable[[bool, Any], None], _Ticket]] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.idle = 0
        self.live = 0

    def submit(self, fn: Callable[[], Any], deliver: Callable[[bool, Any], None]) -> _Ticket:
        """Run ``fn()`` in the caller's context on a worker; ``deliver(ok, value)`` from there."""
        ticket = _Ticket()
        with self.lock:
            if self.idle > 0:
                self.idle -= 1
            elif self.live < MAX_WORKERS:
                self.live += 1
                threading.Thread(target=self._work, name="allm-tool", daemon=True).start()
        self.queue.put((fn, contextvars.copy_context(), deliver, ticket))
        return ticket

    def abandon(self, ticket: _Ticket) -> None:
        """The waiter gave up on ``ticket``: its thread no longer counts against the bound."""
        with self.lock:
            if not ticket.done and not ticket.abandoned:
                ticket.abandoned = True
                self.live -= 1

    def _work(self) -> None:
        while True:
            fn, ctx, deliver, ticket = self.queue.get()
            try:
                value = ctx.run(fn)
            except BaseException as exc:  # reported to the waiter, whatever it is
                ok, value = False, exc
            else:
                ok = True
            with contextlib.suppress(Exception):
                deliver(ok, value)
            with self.lock:
                ticket.done = True
                if not ticket.abandoned:
                    self.idle += 1
                    continue
            _close_thread_loop()
            return


_pool = _Pool()


def _reset_after_fork() -> None:
    global _pool
    _pool = _Pool()  # the parent's threads do not exist in the child


os.register_at_fork(after_in_child=_reset_after_fork)

_thread_loops = threading.local()


def _run_async_here(coro: Any, timeout: float | None) -> Any:
    """Run ``coro`` in this pool thread's own event loop (kept for the thread's life)."""
    loop = getattr(_thread_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _thread_loops.loop = asyncio.new_event_loop()
    return loop.run_until_complete(_within(coro, timeout))


def _close_thread_loop() -> None:
    loop = getattr(_thread_loops, "loop", None)
    if loop is not None and not loop.is_closed():
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _call_sync(job: ToolJob, timeout: float | None, op: _tel.Op | None = None) -> Callable[[], Any]:
    def call() -> Any:
        assert job.tool is not None and job.tool.handler is not None
        undo = op.activate() if op is not None else None
        try:
            value = job.tool.handler(*_args(job))
            if inspect.isawaitable(value):
                value = _run_async_here(_settle(value), timeout)
        finally:
            if undo is not None:
                undo()
        return value

    return call


# ------------------------------------------------------------------------------ sync runner


def run_tool(job: ToolJob, timeout: float | None = None) -> ToolOutcome:
    """Run one job in the calling thread (an async handler in a private event loop).

    ``timeout`` applies to async handlers only (a sync handler cannot be interrupted in
    its own thread; :func:`run_tools` enforces it from outside).
    """
    if job.error is not None:
        return ToolOutcome(job.call, error=job.error)
    try:
        value = _call_sync(job, timeout)()
    except _Expired:
        assert timeout is not None
        return _timed_out(job.call, timeout)
    except Exception as exc:
        return _raised(job.call, exc)
    return ToolOutcome(job.call, value)


def run_tools(jobs: Sequence[ToolJob], timeout: float | None) -> Generator[ToolOutcome, None, None]:
    """Run ``jobs`` concurrently on the pool; yield outcomes as they finish.

    A single sync handler with no ``timeout`` runs in the calling thread instead (in a copy
    of its context, as on the pool): there is no limit to enforce from outside and nothing
    to overlap with. Jobs that failed before running come first, in order. A job still running after
    ``timeout`` seconds is reported as a ``timeout`` error; its thread is abandoned
    (Python cannot stop a thread) and its eventual result ignored.
    """
    if len(jobs) == 1:
        job = jobs[0]
        if job.error is None and job.tool is not None and not _is_async(job.tool.handler):
            if timeout is None:
                # One sync handler with no time limit: nothing needs another thread (no
                # timeout to enforce from outside, no other call to overlap with), so it runs
                # here, sparing the pool's two thread switches (about 20 µs per call).
                return _inline(job)
            if not _tel.active:
                return _pooled(job, timeout)
    if not _tel.active:
        return _run_jobs(jobs, timeout, None)
    return _observed_jobs(jobs, timeout)


def _pooled(job: ToolJob, timeout: float) -> Generator[ToolOutcome, None, None]:
    # The usual step (one sync call under a timeout) without _run_jobs' bookkeeping for many:
    # the worker hands its result over with one lock, which the caller waits on. The two
    # thread switches remain (a sync handler cannot be stopped in the caller's thread).
    done = _thread.allocate_lock()
    done.acquire()
    got: list[tuple[bool, Any]] = []

    def deliver(ok: bool, value: Any) -> None:
        got.append((ok, value))
        done.release()

    ticket = _pool.submit(_call_sync(job, timeout), deliver)
    if not done.acquire(True, min(timeout, threading.TIMEOUT_MAX)):
        _pool.abandon(ticket)
        yield _timed_out(job.call, timeout)
        return
    yield _reported(job.call, *got[0], timeout)


def _inline(job: ToolJob) -> Generator[ToolOutcome, None, None]:
    op = _tel.start_tool(job) if _tel.active else None
    try:
        try:
            # In a copy of the caller's context, as on the pool; an awaitable result (a sync
            # function returning a coroutine) is settled on a pool thread's own event loop,
            # since this thread may be running one.
            value = contextvars.copy_context().run(_call_handler, job, op)
            if type(value) not in _PLAIN and inspect.isawaitable(value):
                value = _settle_on_pool(value)
        except KeyboardInterrupt:
            raise  # the user's Ctrl-C lands in this thread, not the handler's own
        except BaseException as exc:  # the pool reports whatever a handler raises as its error
            outcome = _raised(job.call, exc)
        else:
            outcome = ToolOutcome(job.call, value)
        yield _tel.tool_done(op, outcome) if op is not None else outcome
    finally:
        if op is not None:
            op.cancel()  # a no-op for a run that ended


# Results that are never awaitable: most handlers return one, and isawaitable's ABC check costs more.
_PLAIN = frozenset({str, int, float, bool, type(None), dict, list, tuple})


def _call_handler(job: ToolJob, op: _tel.Op | None) -> Any:
    assert job.tool is not None and job.tool.handler is not None
    undo = op.activate() if op is not None else None
    try:
        return job.tool.handler(*_args(job))
    finally:
        if undo is not None:
            undo()


def _settle_on_pool(value: Any) -> Any:
    results: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
    _pool.submit(lambda: _run_async_here(_settle(value), None), lambda ok, v: results.put((ok, v)))
    ok, v = results.get()
    if not ok:
        raise v
    return v


def _observed_jobs(jobs: Sequence[ToolJob], timeout: float | None) -> Generator[ToolOutcome, None, None]:
    ops = [_tel.start_tool(job) for job in jobs]
    try:
        yield from _run_jobs(jobs, timeout, ops)
    finally:
        for op in ops:
            if op is not None:
                op.cancel()  # a no-op for a run that ended


def _run_jobs(jobs: Sequence[ToolJob], timeout: float | None, ops: list[_tel.Op | None] | None) -> Generator[ToolOutcome, None, None]:
    results: queue.SimpleQueue[tuple[int, ToolOutcome]] = queue.SimpleQueue()
    running: dict[int, tuple[ToolJob, _Ticket]] = {}
    for i, job in enumerate(jobs):
        if job.error is not None:
            yield _tel.tool_done(ops[i], ToolOutcome(job.call, error=job.error)) if ops else ToolOutcome(job.call, error=job.error)
    start = time.monotonic()
    pool = _pool
    for i, job in enumerate(jobs):
        if job.error is not None:
            continue

        def deliver(ok: bool, value: Any, i: int = i, job: ToolJob = job) -> None:
            results.put((i, _reported(job.call, ok, value, timeout or 0.0)))

        running[i] = (job, pool.submit(_call_sync(job, timeout, ops[i] if ops else None), deliver))
    while running:
        wait = None if timeout is None else max(0.0, start + timeout - time.monotonic())
        try:
            i, outcome = results.get(timeout=wait)
        except queue.Empty:
            assert timeout is not None
            for i in sorted(running):
                job, ticket = running[i]
                pool.abandon(ticket)
                yield _tel.tool_done(ops[i], _timed_out(job.call, timeout)) if ops else _timed_out(job.call, timeout)
            return
        if running.pop(i, None) is not None:
            yield _tel.tool_done(ops[i], outcome) if ops else outcome


# ------------------------------------------------------------------------------ async runner


def _in_pool(fn: Callable[[], Any]) -> tuple[asyncio.Future[Any], _Ticket]:
    """Run ``fn()`` on the pool; a future of its result on the running loop, and its ticket."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def deliver(ok: bool, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, ok, value)

    return fut, _pool.submit(fn, deliver)


async def _arun_one(job: ToolJob, timeout: float | None) -> ToolOutcome:
    if not _tel.active:
        return await _arun_job(job, timeout)
    op = _tel.start_tool(job)
    if op is None:
        return await _arun_job(job, timeout)
    undo = op.activate()  # this task's own context: the handler (and its pool thread) see the run
    try:
        return _tel.tool_done(op, await _arun_job(job, timeout))
    finally:
        undo()
        op.cancel()  # a no-op unless the task was cancelled


class _InContext:
    """Awaits the rest of ``coro``, whose first step yielded ``first``, with each step run in
    ``ctx``: what a task does for the coroutine it runs, without creating one (nor the two
    turns of the event loop that starting it and waking its awaiter take)."""

    __slots__ = ("coro", "ctx", "first")

    def __init__(self, ctx: contextvars.Context, coro: Any, first: Any) -> None:
        self.ctx = ctx
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        run, coro = self.ctx.run, self.coro
        step = self.first
        while True:
            try:
                sent, thrown = (yield step), None
            except GeneratorExit:
                run(coro.close)
                raise
            except BaseException as exc:  # thrown into this await (a cancellation): the coroutine's to handle
                sent, thrown = None, exc
            try:
                step = run(coro.send, sent) if thrown is None else run(coro.throw, thrown)
            except StopIteration as stop:
                return stop.value


async def _arun_job(job: ToolJob, timeout: float | None, here: bool = False) -> ToolOutcome:
    """``here``: in the calling task, in a copy of its context (else in the task's own).

    Run here, the handler's first step runs at once; only if it suspends does the rest run
    under an asyncio timeout, whose deadline counts from before that step. asyncio cancels a
    coroutine only where it suspends, so one that finishes in its first step (a handler that
    awaits nothing) could not have timed out, and needs no timer.
    """
    assert job.tool is not None and job.tool.handler is not None
    handler = job.tool.handler
    ticket: _Ticket | None = None

    async def call() -> Any:
        nonlocal ticket
        fut, ticket = _in_pool(_call_sync(job, None))
        return await _settle(await fut)

    try:
        work = _call_async(handler, _args(job)) if _is_async(handler) else call()
        if not here:
            value = await _within(work, timeout)
        else:  # inline, not a coroutine of its own: this runs once per tool call
            ctx = contextvars.copy_context()
            deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
            try:
                value = ctx.run(work.send, None)
            except StopIteration as stop:
                value = stop.value
            else:
                rest = _InContext(ctx, work, value)
                value = await (rest if deadline is None else _by(rest, deadline))
    except _Expired:
        assert timeout is not None
        if ticket is not None:
            _pool.abandon(ticket)
        return _timed_out(job.call, timeout)
    except Exception as exc:
        return _raised(job.call, exc)
    return ToolOutcome(job.call, value)


class ToolOutcomes(Protocol):
    """What :func:`arun_tools` returns: an async iterator of outcomes, with ``aclose()``."""

    def __aiter__(self) -> AsyncIterator[ToolOutcome]: ...

    def __anext__(self) -> Awaitable[ToolOutcome]: ...

    def aclose(self) -> Awaitable[None]: ...


def arun_tools(jobs: Sequence[ToolJob], timeout: float | None) -> ToolOutcomes:
    """The async twin of :func:`run_tools`: async handlers run as tasks (a step's only call in
    the calling task, in a copy of its context), sync ones on the pool. An async iterator with
    ``aclose()``.

    Closing it (or cancelling its task) cancels the handlers still running.
    """
    if len(jobs) == 1 and jobs[0].error is None and not _tel.active and asyncio.current_task() is not None:
        # The usual step, one call: awaited in this task (cancelled with it, as its own task
        # would be), sparing a task and two turns of the event loop.
        return _One(jobs[0], timeout)
    return _arun_jobs(jobs, timeout)


async def _exhausted() -> ToolOutcome:
    raise StopAsyncIteration


class _One:
    """The outcome of one job run in the calling task, as an async iterator: a plain class, not
    an async generator, which the event loop would track (and untrack) on every step."""

    __slots__ = ("job", "timeout")

    def __init__(self, job: ToolJob, timeout: float | None) -> None:
        self.job: ToolJob | None = job
        self.timeout = timeout

    def __aiter__(self) -> _One:
        return self

    def __anext__(self) -> Awaitable[ToolOutcome]:
        job, self.job = self.job, None
        if job is None:
            return _exhausted()
        return _arun_job(job, self.timeout, here=True)  # its coroutine itself: no layer around it

    async def aclose(self) -> None:
        self.job = None


async def _arun_jobs(jobs: Sequence[ToolJob], timeout: float | None) -> AsyncGenerator[ToolOutcome, None]:
    for job in jobs:
        if job.error is not None:
            yield _tel.tool_done(_tel.start_tool(job), ToolOutcome(job.call, error=job.error)) if _tel.active else ToolOutcome(job.call, error=job.error)
    tasks = [asyncio.ensure_future(_arun_one(job, timeout)) for job in jobs if job.error is None]
    try:
        if len(tasks) == 1:  # the usual step: one call, no need for as_completed's machinery
            yield await tasks[0]
            return
        for fut in asyncio.as_completed(tasks):
            yield await fut
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
