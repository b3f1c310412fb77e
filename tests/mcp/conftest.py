"""Fixtures for the MCP tests: the test server (tests/mcp/weather_server.py) over stdio and
over Streamable HTTP on a free loopback port, and a client that must shut down cleanly."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

pytest.importorskip("mcp")

import contextlib

from allm import mcp

SERVER_SCRIPT = Path(__file__).parent / "weather_server.py"
ROOT = Path(__file__).parent.parent.parent


def server_command() -> list[str]:
    return [sys.executable, str(SERVER_SCRIPT)]


@attrs.frozen
class HttpServer:
    process: subprocess.Popen[str]
    url: str
    token: str

    def server(self, label: str = "weather", **kw: object) -> mcp.Server:
        return mcp.Server.http(label, self.url, headers={"Authorization": f"Bearer {self.token}"}, **kw)  # type: ignore[arg-type]


def start_http_server() -> HttpServer:
    """The test server on a free loopback port (it binds port 0 and prints it), with a bearer token."""
    token = "tok-" + secrets.token_hex(16)
    proc = subprocess.Popen(
        [*server_command(), "--http", "--token", token], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"the test MCP server did not start: {line!r}")
    return HttpServer(proc, f"http://127.0.0.1:{int(line.split()[1])}/mcp", token)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    s = start_http_server()
    try:
        yield s
    finally:
        stop(s.process)


@pytest.fixture
def stdio_server() -> mcp.Server:
    return mcp.Server.stdio("weather", server_command())


def mcp_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "allm-mcp" or t.name.startswith("asyncio-waitpid")]


def wait_until(check: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(check())  # type: ignore[operator]


def open_sockets() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return n


@pytest.fixture
def client() -> Iterator[mcp.Client]:
    c = mcp.Client()
    try:
        yield c
    finally:
        c.close()
        assert wait_until(lambda: not mcp_threads()), mcp_threads()
