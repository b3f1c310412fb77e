"""uvicorn's httptools protocol with each response's head and first body bytes in one write.

uvicorn writes a response's status line and headers (``http.response.start``) and then each
body message as separate socket writes; on loopback each write is a system call that wakes
the client, the costliest single step of a small response. :class:`HttpProtocol` holds the
head back until the next write of the same connection (the body), which it joins, and never
longer than the current event-loop step: a head with no body written in the same step (a
stream whose first event is not ready yet, a ``HEAD`` answer) goes out alone on the loop's
next turn, so nothing a client sees is delayed. Bytes and their order on the wire are
unchanged; WebSocket upgrades get the plain transport.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HttpProtocol"]

_HEAD = b"HTTP/1.1 "
_CONTINUE = b"HTTP/1.1 100 "


class _HoldingTransport:
    """A transport that keeps a response head until the next write (or the loop's next turn)."""

    __slots__ = ("_flush_handle", "_held", "_loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush_handle: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self.transport.write(held + data)
            return
        if data[:9] == _HEAD and data[:13] != _CONTINUE and not self.transport.is_closing():
            self._held = bytes(data)
            if self._flush_handle is None:
                self._flush_handle = self._loop.call_soon(self._flush)
            return
        self.transport.write(data)

    def _flush(self) -> None:
        self._flush_handle = None
        held, self._held = self._held, None
        if held is not None and not self.transport.is_closing():
            self.transport.write(held)

    def close(self) -> None:
        self._flush()
        self.transport.close()

    def abort(self) -> None:
        self._held = None
        self.transport.abort()

    def write_eof(self) -> None:
        self._flush()
        self.transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing each response's head with its first body bytes."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HoldingTransport(transport, self.loop))  # type: ignore[arg-type]

    def handle_websocket_upgrade(self) -> None:
        t = self.transport
        if isinstance(t, _HoldingTransport):
            t._flush()
            self.transport = t.transport
        super().handle_websocket_upgrade()
