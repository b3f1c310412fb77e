"""The benchmark's loopback HTTP/1.1 server: a raw asyncio protocol in its own process.

Run ``python -m benchmarks.server``: it binds 127.0.0.1 on a free port, prints
``PORT <n>`` on stdout and serves until stdin closes (or it is killed). Keep-alive
and pipelining work; every answer is ready bytes (:mod:`benchmarks.wire`) built once
per shape and written with one call, so the server is never the bottleneck.

The path carries the shape: ``/b/{n_text}/{n_tool}/...`` then the provider's own
path, so every client is pointed at it with an ordinary ``base_url``:

- ``.../chat/completions``: OpenAI Chat Completions (stream when the body says
  ``"stream": true``);
- ``.../messages``: Anthropic Messages (same rule);
- ``...:streamGenerateContent`` / ``...:generateContent``: Gemini.
"""

from __future__ import annotations

import asyncio
import sys
import threading

import orjson

from .wire import BUILDERS

_cache: dict[tuple[str, bool, int, int], bytes] = {}


def response_for(path: str, body: bytes) -> bytes:
    """The ready bytes answering ``POST path`` with ``body``."""
    parts = path.split("/", 4)
    # ["", "b", n_text, n_tool, rest]
    if len(parts) < 5 or parts[1] != "b":
        return _error(404, "path must start with /b/{n_text}/{n_tool}/")
    try:
        n_text, n_tool = int(parts[2]), int(parts[3])
    except ValueError:
        return _error(404, "bad sizes")
    rest = parts[4].split("?", 1)[0]
    if rest.endswith(":streamGenerateContent"):
        provider, stream = "gemini", True
    elif rest.endswith(":generateContent"):
        provider, stream = "gemini", False
    elif rest.endswith("chat/completions") or rest.endswith("messages"):
        provider = "openai" if rest.endswith("chat/completions") else "anthropic"
        try:
            stream = bool(orjson.loads(body).get("stream")) if body else False
        except (orjson.JSONDecodeError, AttributeError):
            return _error(400, "body is not a JSON object")
    else:
        return _error(404, f"unknown endpoint {rest!r}")
    key = (provider, stream, n_text, n_tool)
    data = _cache.get(key)
    if data is None:
        data = _cache[key] = BUILDERS[(provider, stream)](n_text, n_tool)
    return data


def _error(status: int, message: str) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error"}})
    return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


class _Http(asyncio.Protocol):
    __slots__ = ("_buf", "_transport")

    def __init__(self) -> None:
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].decode("latin-1").split("\r\n")
            length = 0
            close = False
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if len(buf) < end + 4 + length:
                break
            body = buf[end + 4 : end + 4 + length]
            buf = buf[end + 4 + length :]
            method, path, _version = head[0].split(" ", 2)
            assert self._transport is not None
            self._transport.write(response_for(path, body) if method == "POST" else _error(405, "POST only"))
            if close:
                self._transport.close()
                break
        self._buf = buf


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    # stdin closing (the parent went away) stops the server.
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
    async with server:
        await stop.wait()


def main() -> None:
    asyncio.run(_serve())


if __name__ == "__main__":
    main()
