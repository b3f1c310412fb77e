"""The :class:`Client`: one background event loop that owns every MCP session, with sync and
async ways in."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import subprocess
import sys
import threading
import weakref
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TextIO, TypeVar, cast

import allm

from ..errors import AllmError, MCPError, ToolError, scrub
from ..types import Thread, Tool, ToolCall
from ._sdk import (
    ClientSession,
    SdkError,
    StdioServerParameters,
    anyio,
    create_mcp_http_client,
    mt,
    stdio_client,
    streamable_http_client,
)
from .config import Server
from .names import parse_name
from .results import CallResult, ToolInfo, ToolOutput, info_from_sdk, result_from_sdk

__all__ = ["Client"]

T = TypeVar("T")


# ------------------------------------------------------------------------------ errors


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for e in exc.exceptions:
            out.extend(_leaves(e))
        return out
    return [exc]


def _connect_error(exc: BaseException, server: Server) -> MCPError:
    """A typed error for a server that could not be started, reached or initialised."""
    if isinstance(exc, MCPError):
        return exc
    leaves = [e for e in _leaves(exc) if not isinstance(e, asyncio.CancelledError)] or [exc]
    where = f"command {server.command[0]!r}" if server.command else f"URL {server.url}"
    meta: dict[str, Any] = {"server_label": server.label, "transport": server.transport}
    reason = "server_unavailable"
    detail = "; ".join(f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__ for e in leaves)
    for e in leaves:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int):
            meta["status"] = status
            if status in (401, 403):
                reason = "authentication_failed"
        if isinstance(e, SdkError) and e.error.code == mt.CONNECTION_CLOSED:
            detail = "the server closed the connection before the MCP handshake finished"
    err = MCPError(f"cannot use the MCP server {server.label!r} ({where}): {detail}", reason=reason, metadata=meta)
    return cast(MCPError, scrub(err, *server._secrets()))


def _tool_error(exc: MCPError, call_name: str) -> ToolError:
    err = ToolError(
        exc.message,
        reason="timeout" if exc.reason == "timeout" else "handler_raised",
        metadata={**exc.metadata, "tool_name": call_name, "mcp_reason": exc.reason},
    )
    err.__cause__ = exc
    return err


# ------------------------------------------------------------------------------ connections


class _Connection:
    """One MCP session, owned by a task on the client's loop (the SDK's transports are
    context managers that must be entered and left in one task)."""

    def __init__(self, server: Server, errlog: Any) -> None:
        self.server = server
        self.errlog = errlog
        self.session: ClientSession | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A failure nobody awaited (a handshake abandoned at its timeout) is not worth a warning.
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.stop = asyncio.Event()
        self.lost = asyncio.Event()
        self.task = asyncio.create_task(self._hold(), name=f"allm-mcp-{server.label}")

    @property
    def alive(self) -> bool:
        return self.ready.done() and self.ready.exception() is None and not self.lost.is_set()

    async def _hold(self) -> None:
        s = self.server
        try:
            async with contextlib.AsyncExitStack() as stack:
                if s.command is not None:
                    params = StdioServerParameters(
                        command=s.command[0], args=list(s.command[1:]), env=dict(s.env) if s.env else None, cwd=s.cwd
                    )
                    read, write = await stack.enter_async_context(stdio_client(params, errlog=self.errlog))
                else:
                    assert s.url is not None
                    http = await stack.enter_async_context(create_mcp_http_client(headers=dict(s.headers or {})))
                    read, write, _ = await stack.enter_async_context(streamable_http_client(s.url, http_client=http))
                tg = await stack.enter_async_context(anyio.create_task_group())
                # The session reads through this pump, so the end of the server's output
                # (a stdio server that exited) is seen at once, not at the next call.
                pump_send, pump_recv = anyio.create_memory_object_stream[Any](0)

                async def pump() -> None:
                    async with pump_send:
                        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                            async for message in read:
                                await pump_send.send(message)
                    self.lost.set()
                    self.stop.set()

                tg.start_soon(pump)
                session = await stack.enter_async_context(
                    ClientSession(pump_recv, write, client_info=mt.Implementation(name="allm", version=allm.__version__))
                )
                await session.initialize()
                self.session = session
                self.ready.set_result(None)
                await self.stop.wait()
                tg.cancel_scope.cancel()
        except BaseException as exc:
            if not self.ready.done():
                self.ready.set_exception(_connect_error(exc, s))
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self.session = None
            self.lost.set()
            if not self.ready.done():
                self.ready.set_exception(_connect_error(ConnectionError("the connection closed"), s))

    async def close(self, grace: float) -> None:
        self.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except (TimeoutError, asyncio.CancelledError):
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


async def _heartbeat(session: ClientSession, interval: float) -> None:
    """Ping every ``interval`` seconds. A ping that fails to reach the server ends the
    connection (the transport's task group fails); a slow answer is not a failure."""
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(session.send_ping(), interval)


def _default_errlog() -> Any:
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return subprocess.DEVNULL
    return sys.stderr


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread, conns: dict[Any, _Connection]) -> None:
    """Close every connection, stop the loop and join its thread (also run at interpreter exit)."""
    if loop.is_closed():
        return
    if thread.is_alive():

        async def close_all() -> None:
            items = list(conns.values())
            conns.clear()
            await asyncio.gather(*(c.close(_CLOSE_GRACE) for c in items), return_exceptions=True)
            # Calls still waiting end now (their callers get MCPError "closed"), so no caller
            # waits on a loop that has stopped.
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), loop).result(_CLOSE_GRACE * 3)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_CLOSE_GRACE * 3)
    if not thread.is_alive():
        loop.close()


_CLOSE_GRACE = 10.0  # seconds a connection gets to close (stdio servers: 2 s, then SIGTERM, then SIGKILL)


class Client:
    """Connections to MCP servers, shared by sync and async callers.

    One daemon thread (``allm-mcp``) runs an event loop that owns every MCP session; sync
    methods wait on it and async methods (``a...``) await it from any event loop. A
    connection opens on first use of a server and is kept for later calls; servers with the
    same label, command or URL, headers, env and cwd share one (so two tenants' tokens never
    do), whatever their filters and time limits. Use it as a context
    manager, or call :meth:`close` (:meth:`aclose`): that ends every session, stops stdio
    servers (stdin closed, then SIGTERM, then SIGKILL) and the thread. A client that is
    garbage-collected or still open at interpreter exit is closed then.

    - ``errlog``: where stdio servers' stderr goes (a file with a descriptor; default
      ``sys.stderr``, or nowhere when it has no descriptor).
    - ``ping_interval``: seconds between MCP pings while a call to a Streamable HTTP server
      is waiting, so a server that died mid-call is noticed (a stdio server's exit is seen at once).
    """

    def __init__(self, *, errlog: TextIO | None = None, ping_interval: float = 1.0) -> None:
        if isinstance(ping_interval, bool) or not isinstance(ping_interval, (int, float)) or not ping_interval > 0:
            raise ValueError("ping_interval must be a positive number of seconds")
        self._errlog = errlog if errlog is not None else _default_errlog()
        self._ping_interval = float(ping_interval)
        self._conns: dict[Any, _Connection] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="allm-mcp", daemon=True)
        self._closed = False
        self._lock = threading.Lock()
        self._thread.start()
        self._finalizer = weakref.finalize(self, _stop_loop, self._loop, self._thread, self._conns)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._conns)} connection(s)"
        return f"<allm.mcp.Client {state}>"

    # -- plumbing

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._closed:
                coro.close()
                raise self._closed_error()
            return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync allm.mcp.Client method was called on the client's own loop; use the a... form")
        fut = self._submit(coro)
        try:
            return fut.result()
        except concurrent.futures.CancelledError:
            if self._closed:
                raise self._closed_error() from None
            raise
        except BaseException:
            fut.cancel()
            raise

    async def _arun(self, coro: Coroutine[Any, Any, T]) -> T:
        if asyncio.get_running_loop() is self._loop:
            return await coro
        try:
            return await asyncio.wrap_future(self._submit(coro))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and (task is None or not task.cancelling()):
                raise self._closed_error() from None  # the client closed under the call
            raise

    @staticmethod
    def _closed_error() -> MCPError:
        return MCPError("the MCP client is closed", reason="closed")

    async def _connection(self, server: Server) -> _Connection:
        key = server._key()
        conn = self._conns.get(key)
        if conn is None or (conn.ready.done() and not conn.alive):
            if conn is not None:
                self._conns.pop(key, None)
                await conn.close(_CLOSE_GRACE)  # already ended, or ending: quick
            conn = _Connection(server, self._errlog)
            self._conns[key] = conn
        try:
            await asyncio.wait_for(asyncio.shield(conn.ready), server.connect_timeout)
        except TimeoutError:
            self._conns.pop(key, None)
            await conn.close(1.0)
            raise MCPError(
                f"the MCP server {server.label!r} did not finish the MCP handshake within {server.connect_timeout:g} s",
                reason="timeout",
                metadata={"server_label": server.label, "phase": "connect"},
            ) from None
        except MCPError:
            if self._conns.get(key) is conn:
                self._conns.pop(key, None)
            raise
        return conn

    async def _list(self, server: Server) -> tuple[ToolInfo, ...]:
        for attempt in (1, 2):  # listing is safe to repeat on a new connection
            conn = await self._connection(server)
            session = conn.session
            if session is None:  # lost between the handshake and now
                continue
            tools: list[mt.Tool] = []
            cursor: str | None = None
            try:
                while True:
                    params = mt.PaginatedRequestParams(cursor=cursor) if cursor else None
                    page = await asyncio.wait_for(session.list_tools(params=params), server.connect_timeout)
                    tools.extend(page.tools)
                    cursor = page.nextCursor
                    if not cursor:
                        break
            except TimeoutError:
                raise MCPError(
                    f"the MCP server {server.label!r} did not list its tools within {server.connect_timeout:g} s",
                    reason="timeout",
                    metadata={"server_label": server.label, "phase": "tools/list"},
                ) from None
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                conn.lost.set()
                continue
            except SdkError as exc:
                if exc.error.code == mt.CONNECTION_CLOSED:
                    conn.lost.set()
                    if attempt == 1:
                        continue
                raise self._sdk_error(exc, server, "tools/list") from None
            return tuple(info_from_sdk(t, server) for t in tools if server.allows(t.name))
        raise MCPError(
            f"the MCP server {server.label!r} closed the connection while listing its tools",
            reason="connection_lost",
            metadata={"server_label": server.label},
        )

    @staticmethod
    def _sdk_error(exc: SdkError, server: Server, what: str) -> MCPError:
        meta = {"server_label": server.label, "code": exc.error.code}
        if exc.error.code == mt.CONNECTION_CLOSED:
            return MCPError(
                f"the MCP server {server.label!r} went away during {what}", reason="connection_lost", metadata=meta
            )
        return cast(
            MCPError,
            scrub(
                MCPError(
                    f"the MCP server {server.label!r} refused {what}: {exc.error.message}",
                    reason="protocol_error",
                    metadata=meta,
                ),
                *server._secrets(),
            ),
        )

    async def _call(self, server: Server, name: str, arguments: Mapping[str, Any] | None) -> CallResult:
        meta = {"server_label": server.label, "tool_name": name}
        if not server.allows(name):
            raise MCPError(
                f"the tool {name!r} of the MCP server {server.label!r} is not in its allowed_tools",
                reason="tool_not_allowed",
                metadata=meta,
            )
        for attempt in (1, 2):
            conn = await self._connection(server)
            session = conn.session
            if session is None:  # lost between the handshake and now
                continue
            call = asyncio.ensure_future(session.call_tool(name, dict(arguments or {})))
            lost = asyncio.ensure_future(conn.lost.wait())
            # Over HTTP, the SDK does not report a response stream that broke (a server that
            # died mid-call); a failed ping does end the connection, so ping while waiting.
            beat = asyncio.ensure_future(_heartbeat(session, self._ping_interval)) if conn.server.url else None
            try:
                done, _ = await asyncio.wait({call, lost}, timeout=server.timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
                if beat is not None:
                    beat.cancel()
                if not call.done():
                    call.cancel()
                    with contextlib.suppress(BaseException):
                        await call
            if call in done:
                try:
                    res = call.result()
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    # The request was never handed to the transport: the connection had
                    # closed before it. Safe to send once more on a new connection.
                    conn.lost.set()
                    if attempt == 1:
                        continue
                    raise MCPError(
                        f"the MCP server {server.label!r} closed the connection", reason="connection_lost", metadata=meta
                    ) from None
                except SdkError as exc:
                    if exc.error.code == mt.CONNECTION_CLOSED:
                        conn.lost.set()
                    raise self._sdk_error(exc, server, f"the call to {name}") from None
                except RuntimeError as exc:  # the SDK's check of structured content against outputSchema
                    raise MCPError(
                        f"the MCP server {server.label!r} returned an invalid result for {name}: {exc}",
                        reason="protocol_error",
                        metadata=meta,
                    ) from None
                return result_from_sdk(res, server, name)
            if lost in done:
                raise MCPError(
                    f"the connection to the MCP server {server.label!r} was lost during the call to {name} "
                    "(the tool may or may not have run)",
                    reason="connection_lost",
                    metadata=meta,
                )
            raise MCPError(
                f"the call to {name} on the MCP server {server.label!r} did not finish within {server.timeout:g} s",
                reason="timeout",
                metadata={**meta, "timeout": server.timeout},
            )
        raise MCPError(  # pragma: no cover - the loop returns or raises
            f"the MCP server {server.label!r} closed the connection", reason="connection_lost", metadata=meta
        )

    def _tool(self, server: Server, info: ToolInfo) -> Tool:
        client = self
        exposed = info.qualified_name

        async def call_mcp_tool(args: dict[str, Any]) -> ToolOutput:
            try:
                result = await client.acall_tool(server, info.name, args)
            except MCPError as exc:
                raise _tool_error(exc, exposed) from exc
            if result.is_error:
                raise ToolError(
                    result.text or f"{info.name} reported an error",
                    reason="handler_raised",
                    metadata={"server_label": server.label, "tool_name": exposed, "is_error": True},
                )
            return ToolOutput(result)

        call_mcp_tool.__name__ = call_mcp_tool.__qualname__ = exposed
        try:
            return allm.tool(
                exposed,
                info.description,
                info.input_schema,
                handler=call_mcp_tool,
                manual=info.requires_approval,
                metadata={"mcp": {"server_label": server.label, "name": info.name}},
            )
        except AllmError as exc:
            raise MCPError(
                f"the MCP server {server.label!r} lists the tool {info.name!r} with a schema allm cannot offer: {exc.message}",
                reason="protocol_error",
                metadata={"server_label": server.label, "tool_name": info.name},
            ) from None

    async def _tools(self, servers: Sequence[Server]) -> list[Tool]:
        labels = [s.label for s in servers]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise MCPError(
                f"two MCP servers share the label {dup[0]!r}; labels name tools, so each must be unique",
                reason="invalid_server",
                metadata={"server_label": dup[0]},
            )
        listed = await asyncio.gather(*(self._list(s) for s in servers))
        return [self._tool(s, info) for s, infos in zip(servers, listed, strict=True) for info in infos]

    # -- public, sync

    def list_tools(self, server: Server) -> tuple[ToolInfo, ...]:
        """The tools ``server`` lists (all pages), after ``allowed_tools``; connects first if needed.

        Raises :class:`~allm.errors.MCPError`: ``server_unavailable``, ``authentication_failed``,
        ``timeout`` (``connect_timeout``), ``protocol_error``, ``closed``.
        """
        return self._run(self._list(server))

    def call_tool(self, server: Server, name: str, arguments: Mapping[str, Any] | None = None) -> CallResult:
        """Call the tool ``name`` (the server's name for it) with ``arguments``; at most
        ``server.timeout`` seconds.

        A result with ``isError`` is returned (``is_error=True``), not raised. Raises
        :class:`~allm.errors.MCPError`: ``tool_not_allowed``, ``connection_lost`` (the server
        went away during the call: not retried, as the tool may have run), ``timeout``,
        ``protocol_error``, and what :meth:`list_tools` raises when connecting. A connection
        found closed before the request was sent is opened again and the request sent once.
        """
        return self._run(self._call(server, name, arguments))

    def tools(self, *servers: Server) -> list[Tool]:
        """allm tools for every allowed tool of ``servers``: ``<label>__<tool>``, the
        server's description and input schema, ``manual=True`` where approval is required,
        ``metadata={"mcp": {"server_label": ..., "name": ...}}``, and an async handler that
        calls the server (see :class:`ToolOutput` for what it returns and the module docstring
        for errors). Lists each server now; raises what :meth:`list_tools` raises, and
        :class:`~allm.errors.MCPError` (``invalid_server``) for two servers with one label.
        """
        return self._run(self._tools(servers))

    def bind(self, stored: Any, *servers: Server, tools: Sequence[Tool] = ()) -> list[Tool]:
        """``tools`` and the tools of ``servers`` (as :meth:`tools`), checked against a stored
        conversation: pass the result as ``tools=`` to ``approve`` and ``continue_``.

        ``stored`` is a :class:`~allm.Session`, a :class:`~allm.types.Thread`, a
        :class:`~allm.types.ChatResult` or a sequence of messages. Every tool call it holds
        (pending calls included) whose name has the form ``<label>__<tool>`` and is not the
        name of one of ``tools`` (your own tools, which may have ``__`` in their names too)
        must name a label among ``servers``: else :class:`~allm.errors.MCPError`
        (``unknown_server``; ``metadata["server_labels"]`` lists the missing labels,
        ``metadata["tool_names"]`` the calls' names). Each pending call to an MCP tool must
        name a tool its server still offers: else ``unknown_tool``.
        """
        self._check_labels(stored, servers, tools)
        bound = [*tools, *self.tools(*servers)]
        _check_pending(stored, bound)
        return bound

    def connected(self, server: Server) -> bool:
        """Whether a live connection to ``server`` is open now (no I/O; a server that died is
        seen as gone once its end was noticed)."""
        conn = self._conns.get(server._key())
        return conn is not None and conn.alive

    def disconnect(self, server: Server) -> None:
        """Close the connection to ``server`` if there is one (stops a stdio server)."""
        self._run(self._disconnect(server))

    def close(self) -> None:
        """Close every connection, stop stdio servers, stop the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()

    # -- public, async

    async def alist_tools(self, server: Server) -> tuple[ToolInfo, ...]:
        """The async twin of :meth:`list_tools`."""
        return await self._arun(self._list(server))

    async def acall_tool(self, server: Server, name: str, arguments: Mapping[str, Any] | None = None) -> CallResult:
        """The async twin of :meth:`call_tool`; cancelling it cancels the call."""
        return await self._arun(self._call(server, name, arguments))

    async def atools(self, *servers: Server) -> list[Tool]:
        """The async twin of :meth:`tools`."""
        return await self._arun(self._tools(servers))

    async def abind(self, stored: Any, *servers: Server, tools: Sequence[Tool] = ()) -> list[Tool]:
        """The async twin of :meth:`bind`."""
        self._check_labels(stored, servers, tools)
        bound = [*tools, *(await self.atools(*servers))]
        _check_pending(stored, bound)
        return bound

    async def adisconnect(self, server: Server) -> None:
        """The async twin of :meth:`disconnect`."""
        await self._arun(self._disconnect(server))

    async def aclose(self) -> None:
        """The async twin of :meth:`close` (the wait runs in a worker thread)."""
        await asyncio.to_thread(self.close)

    async def _disconnect(self, server: Server) -> None:
        conn = self._conns.pop(server._key(), None)
        if conn is not None:
            await conn.close(_CLOSE_GRACE)

    @staticmethod
    def _check_labels(stored: Any, servers: Sequence[Server], tools: Sequence[Tool]) -> None:
        given = {s.label for s in servers}
        own = {t.name for t in tools}
        missing: dict[str, list[str]] = {}
        for call in _calls(stored):
            parsed = parse_name(call.name)
            if parsed is not None and parsed[0] not in given and call.name not in own:
                missing.setdefault(parsed[0], []).append(call.name)
        if missing:
            labels = sorted(missing)
            raise MCPError(
                f"the stored conversation calls tools of the MCP server(s) {', '.join(map(repr, labels))}, "
                "which the servers given do not include",
                reason="unknown_server",
                metadata={
                    "server_label": labels[0],
                    "server_labels": labels,
                    "tool_names": sorted({n for v in missing.values() for n in v}),
                },
            )

    # -- context managers

    def __enter__(self) -> Client:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


def _messages(stored: Any) -> tuple[Any, ...]:
    thread = getattr(stored, "thread", stored)
    if isinstance(thread, Thread):
        return thread.messages
    if isinstance(thread, Iterable) and not isinstance(thread, (str, bytes, Mapping)):
        return tuple(thread)
    raise TypeError(f"expected a Session, Thread, ChatResult or messages, not {type(stored).__name__}")


def _pending(stored: Any) -> tuple[ToolCall, ...]:
    return tuple(getattr(stored, "pending_tool_calls", ()) or ())


def _calls(stored: Any) -> list[ToolCall]:
    calls = [c for m in _messages(stored) for c in getattr(m, "tool_calls", ())]
    return calls + list(_pending(stored))


def _check_pending(stored: Any, tools: Sequence[Tool]) -> None:
    offered = {t.name for t in tools}
    for call in _pending(stored):
        parsed = parse_name(call.name)
        if parsed is not None and call.name not in offered:
            raise MCPError(
                f"the pending call {call.id} names {call.name}, which the MCP server {parsed[0]!r} no longer offers "
                "(not listed, or left out by allowed_tools)",
                reason="unknown_tool",
                metadata={"server_label": parsed[0], "tool_name": call.name, "tool_call_id": call.id},
            )
