"""A loopback HTTP/1.1 test server on a raw asyncio socket, run in a background thread.

Bound to 127.0.0.1 only, and bounded in time: each request's handler is cancelled
after ``handler_limit`` seconds (10 by default) and :meth:`LoopbackServer.stop`
cancels everything. Each request is answered by a *handler* chosen per test:
``async def handler(req: Req, w: Writer) -> None``. The writer can send a normal
response, a chunked stream, stall, drip bytes, send garbage, reset the connection,
or close early, so the client's behaviour under each fault can be observed.

The server counts connections (opened, closed, currently open), requests in
progress (``active``), and ``disconnects``: responses the client walked away from
(it closed or reset the connection while the handler was still answering; noticed
at once even when the handler is stalled, so a test can prove that closing a stream
on the client closes the connection). It records every request, including its
headers, so tests can check which key each call carried.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import attrs


@attrs.define
class Req:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Writer:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._w = writer
        self.keep_alive = True

    async def raw(self, data: bytes) -> None:
        self._w.write(data)
        await self._w.drain()

    async def respond(self, status: int, body: bytes, headers: dict[str, str] | None = None, content_type: str = "application/json") -> None:
        head = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        await self.raw(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    async def start_stream(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        head = [f"HTTP/1.1 {status} X", "Content-Type: text/event-stream", "Transfer-Encoding: chunked"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        await self.raw(("\r\n".join(head) + "\r\n\r\n").encode())

    async def chunk(self, data: bytes) -> None:
        if data:
            await self.raw(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    async def end_stream(self) -> None:
        await self.raw(b"0\r\n\r\n")

    async def drip(self, data: bytes, delay: float = 0.0) -> None:
        """Send ``data`` one byte per chunk, ``delay`` seconds apart."""
        for i in range(len(data)):
            await self.chunk(data[i : i + 1])
            await asyncio.sleep(delay)

    def reset(self) -> None:
        """Close with a TCP RST."""
        sock = self._w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.keep_alive = False
        self._w.transport.abort()

    def close(self) -> None:
        self.keep_alive = False
        self._w.close()


Handler = Callable[[Req, Writer], Awaitable[None]]


class LoopbackServer:
    def __init__(self, handler_limit: float = 10.0) -> None:
        self.handler: Handler | None = None
        self.handler_limit = handler_limit
        self.requests: list[Req] = []
        self.opened = 0
        self.closed = 0
        self.active = 0  # requests whose handler is running
        self.max_active = 0  # the most requests answered at once
        self.disconnects = 0  # the client went away while a handler was answering
        self.overtime = 0  # handlers cancelled by handler_limit
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def open_connections(self) -> int:
        return self.opened - self.closed

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._conn, "127.0.0.1", 0, backlog=2048), self._loop)
        self._server = fut.result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._loop.is_closed():  # stopped already
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        w = Writer(writer)
        try:
            while w.keep_alive:
                try:
                    line = await reader.readline()
                except (ConnectionError, asyncio.IncompleteReadError):
                    break
                if not line:
                    break
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(n) if n else b""
                req = Req(method, path, headers, body)
                self.requests.append(req)
                assert self.handler is not None, "no handler set"
                if not await self._answer(req, w, reader):
                    break
        except asyncio.CancelledError:
            pass
        finally:
            self.closed += 1
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, req: Req, w: Writer, reader: asyncio.StreamReader) -> bool:
        """Run the handler; ``False`` when the connection is finished (client gone, fault, overtime)."""
        assert self.handler is not None
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        task = asyncio.ensure_future(self.handler(req, w))
        watch = asyncio.ensure_future(_client_gone(reader))
        try:
            done, _ = await asyncio.wait({task, watch}, timeout=self.handler_limit, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                exc = task.exception()
                if isinstance(exc, (ConnectionError, BrokenPipeError)):
                    self.disconnects += 1
                    return False
                if exc is not None:
                    raise exc
                return w.keep_alive
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            if watch in done:
                self.disconnects += 1
            else:
                self.overtime += 1
            return False
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch
            self.active -= 1


async def _client_gone(reader: asyncio.StreamReader) -> None:
    """Return when the client closes or resets the connection (without consuming its bytes)."""
    while True:
        if reader.at_eof():
            return
        if reader._buffer:  # type: ignore[attr-defined]  # the next request is already here
            await asyncio.sleep(0.02)
            continue
        try:
            await reader._wait_for_data("client_gone")  # type: ignore[attr-defined]
        except (ConnectionError, OSError):
            return
        except RuntimeError:  # someone else is reading: fall back to polling
            await asyncio.sleep(0.02)


@contextlib.contextmanager
def serve(handler: Handler | None = None) -> Iterator[LoopbackServer]:
    server = LoopbackServer().start()
    server.handler = handler
    try:
        yield server
    finally:
        server.stop()


def chat_chunks(texts: list[str], *, usage: bool = True, done: bool = True, model: str = "m") -> list[bytes]:
    """OpenAI Chat Completions SSE events for ``texts``."""
    import orjson

    out = []
    for i, t in enumerate(texts):
        delta: dict[str, Any] = {"content": t}
        if i == 0:
            delta["role"] = "assistant"
        out.append(b"data: " + orjson.dumps({"id": "chatcmpl-1", "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}) + b"\n\n")
    out.append(b"data: " + orjson.dumps({"id": "chatcmpl-1", "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n")
    if usage:
        out.append(b"data: " + orjson.dumps({"id": "chatcmpl-1", "model": model, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": len(texts), "total_tokens": 5 + len(texts)}}) + b"\n\n")
    if done:
        out.append(b"data: [DONE]\n\n")
    return out


def chat_completion(text: str, *, model: str = "m", completion_tokens: int = 1) -> bytes:
    """An OpenAI Chat Completions JSON body (not streamed) answering ``text``."""
    import orjson

    return orjson.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": completion_tokens, "total_tokens": 5 + completion_tokens},
    })


def streamed(req: Req) -> bool:
    """Whether the request body asked for a stream (``"stream": true``)."""
    import orjson

    return bool(orjson.loads(req.body).get("stream"))
