"""A loopback HTTP/1.1 test server on a raw asyncio socket, run in a background thread.

Bound to 127.0.0.1 only. Each request is answered by a *handler* chosen per test:
``async def handler(req: Req, w: Writer) -> None``. The writer can send a normal
response, a chunked stream, stall, drip bytes, reset the connection, or close
early, so the client's behaviour under each fault can be observed. The server counts
connections (opened, closed, currently open) and records every request (including
its headers, so tests can check which key each call carried).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
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
    def __init__(self) -> None:
        self.handler: Handler | None = None
        self.requests: list[Req] = []
        self.opened = 0
        self.closed = 0
        self.disconnects = 0  # client went away while a handler was writing
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
        fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._conn, "127.0.0.1", 0), self._loop)
        self._server = fut.result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        import time

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
                try:
                    await self.handler(req, w)
                except (ConnectionError, BrokenPipeError):
                    self.disconnects += 1
                    break
        except asyncio.CancelledError:
            pass
        finally:
            self.closed += 1
            with contextlib.suppress(Exception):
                writer.close()


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
