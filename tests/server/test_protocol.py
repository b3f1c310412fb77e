"""The server's HTTP protocol: a response head goes out with the first body bytes in one write,
or alone on the loop's next turn; bytes and their order never change."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

pytest.importorskip("httptools")

from allm.server._protocol import _HoldingTransport
from allm.server.serve import http_protocol


class Wire:
    """A transport that records each write as one system call would send it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


async def test_head_and_body_in_one_write() -> None:
    wire = Wire()
    t = _HoldingTransport(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(HEAD)
    assert wire.writes == []
    t.write(b"ok")
    assert wire.writes == [HEAD + b"ok"]
    t.write(b"more")
    assert wire.writes == [HEAD + b"ok", b"more"]
    await asyncio.sleep(0)
    assert wire.writes == [HEAD + b"ok", b"more"]  # nothing left to flush


async def test_a_head_alone_goes_out_on_the_next_turn() -> None:
    wire = Wire()
    t = _HoldingTransport(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await asyncio.sleep(0)
    assert wire.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    t.write(b"5\r\nhello\r\n")
    assert wire.writes[-1] == b"5\r\nhello\r\n"


async def test_close_sends_what_is_held_and_abort_drops_it() -> None:
    wire = Wire()
    t = _HoldingTransport(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(HEAD)
    t.close()
    assert wire.writes == [HEAD] and wire.closed
    wire2 = Wire()
    t2 = _HoldingTransport(wire2, asyncio.get_running_loop())  # type: ignore[arg-type]
    t2.write(HEAD)
    t2.abort()
    await asyncio.sleep(0)
    assert wire2.writes == [] and wire2.aborted


async def test_100_continue_and_other_bytes_are_not_held() -> None:
    wire = Wire()
    t = _HoldingTransport(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    t.write(b"data")
    assert wire.writes == [b"HTTP/1.1 100 Continue\r\n\r\n", b"data"]
    assert t.get_extra_info("peername") == ("127.0.0.1", 1)  # everything else is the transport's


def test_the_server_serves_with_it() -> None:
    from allm.server._protocol import HttpProtocol

    assert http_protocol() is HttpProtocol


async def test_responses_through_uvicorn_with_the_protocol() -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    async def plain(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def chunks(request: Any) -> StreamingResponse:
        async def gen() -> Any:
            await asyncio.sleep(1.0)
            yield b"a"
            yield b"b"

        return StreamingResponse(gen())

    app = Starlette(routes=[Route("/plain", plain), Route("/chunks", chunks), Route("/head", plain, methods=["HEAD"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=http_protocol(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):  # one keep-alive connection
                r = await client.get("/plain")
                assert r.status_code == 200 and r.text == "hello" and r.headers["content-length"] == "5"
            t0 = asyncio.get_running_loop().time()
            async with client.stream("GET", "/chunks") as s:
                # the head arrives on its own, well before the first chunk is ready
                assert s.status_code == 200 and asyncio.get_running_loop().time() - t0 < 0.7
                assert b"".join([c async for c in s.aiter_bytes()]) == b"ab"
            h = await client.head("/head")
            assert h.status_code == 200 and h.content == b""
    finally:
        server.should_exit = True
        await task
