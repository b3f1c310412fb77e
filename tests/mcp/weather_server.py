"""A real MCP server (the ``mcp`` SDK's FastMCP) for allm's MCP tests, guide and example.

Run it over stdio (``python weather_server.py``) or over Streamable HTTP
(``python weather_server.py --http [--token T]``): the HTTP form binds a free loopback
port, prints ``PORT <n>`` on stdout once it listens, and serves ``/mcp``. With
``--token``, every HTTP request must carry ``Authorization: Bearer <token>`` (401 otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import socket
import sys
from typing import Any

from mcp.server.fastmcp import FastMCP
from mcp.types import CallToolResult, EmbeddedResource, ImageContent, ResourceLink, TextContent, TextResourceContents

WEATHER = {
    "Paris": {"temperature_c": 18, "sky": "sunny"},
    "London": {"temperature_c": 12, "sky": "rain"},
    "Tokyo": {"temperature_c": 24, "sky": "cloudy"},
}
# A 1x1 red PNG.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)

server = FastMCP("weather", log_level="WARNING")


@server.tool()
def get_weather(city: str) -> dict[str, Any]:
    """Get the current weather for a city."""
    if city not in WEATHER:
        raise ValueError(f"no weather for {city!r}; known cities: {', '.join(sorted(WEATHER))}")
    return {"city": city, **WEATHER[city]}


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def pid() -> int:
    """The process id of this server (tests tell a restarted server by it)."""
    return os.getpid()


@server.tool()
async def sleep(seconds: float, marker: str | None = None) -> str:
    """Wait ``seconds``, then say so. With ``marker``, first create that file (tests wait for
    it to know the call is running on the server)."""
    if marker:
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
    await asyncio.sleep(seconds)
    return f"slept {seconds:g} s"


_meetings: dict[str, list[asyncio.Event | int]] = {}


@server.tool()
async def meet(key: str, n: int) -> str:
    """Return "met" once ``n`` calls with this ``key`` are running at the same time (within
    60 s; else "alone"): calls made one after another never meet."""
    event, count = _meetings.setdefault(key, [asyncio.Event(), 0])
    assert isinstance(event, asyncio.Event) and isinstance(count, int)
    _meetings[key][1] = count + 1
    if count + 1 >= n:
        event.set()
    try:
        await asyncio.wait_for(event.wait(), 60)
    except TimeoutError:
        return "alone"
    return "met"


@server.tool()
def crash() -> str:
    """Exit the server process in the middle of the call."""
    sys.stdout.flush()
    os._exit(3)


@server.tool()
def chart(city: str) -> CallToolResult:
    """A chart of the week's weather: a caption, an image, an embedded resource and a link."""
    return CallToolResult(
        content=[
            TextContent(type="text", text=f"Weather chart for {city}"),
            ImageContent(type="image", data=base64.b64encode(PIXEL).decode(), mimeType="image/png"),
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(uri=f"weather://{city}/week.csv", mimeType="text/csv", text="day,t\nmon,18\n"),
            ),
            ResourceLink(type="resource_link", uri=f"weather://{city}/month", name="month", mimeType="text/csv"),
        ]
    )


@server.tool()
def forecast(city: str) -> CallToolResult:
    """Structured content only: the forecast as data, no text block."""
    return CallToolResult(content=[], structuredContent={"city": city, "days": [18, 19, 21]})


@server.tool()
def refuse(reason: str) -> CallToolResult:
    """A tool that reports an error result (isError) with the given text."""
    return CallToolResult(content=[TextContent(type="text", text=reason)], isError=True)


@server.tool()
def broken_image() -> CallToolResult:
    """An image block whose data is not base64."""
    return CallToolResult(content=[ImageContent(type="image", data="not base64!", mimeType="image/png")])


@server.tool(name="dotted.name")
def dotted() -> str:
    """A tool whose name has a character providers refuse in function names."""
    return "dotted ok"


class _QuietSessionEnd(logging.Filter):
    """Drops the SDK server's traceback for a GET stream whose session the client ended (a
    ``DELETE``, as the SDK's own client sends on close): the stream's memory channel is closed
    under it and it logs ``ClosedResourceError`` as an error. Any other error still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage() == "Error in standalone SSE writer" and type(exc).__name__ == "ClosedResourceError")


def _serve_http(token: str | None) -> None:
    import uvicorn

    logging.getLogger("mcp.server.streamable_http").addFilter(_QuietSessionEnd())
    from starlette.types import ASGIApp, Receive, Scope, Send

    app: ASGIApp = server.streamable_http_app()
    if token is not None:
        inner = app
        expected = f"Bearer {token}".encode()

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
                await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
            await inner(scope, receive, send)

        app = guarded
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--http", action="store_true", help="serve Streamable HTTP on a free loopback port")
    p.add_argument("--token", help="require this bearer token (HTTP only)")
    args = p.parse_args()
    if args.http:
        _serve_http(args.token)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
