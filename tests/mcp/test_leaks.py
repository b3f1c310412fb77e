"""Header values (bearer tokens) and env values never reach logs, errors, reprs, events or
stored data, on every path an MCP server is used: listing, calls in the tool loop, a refused
token, a server killed mid-call, a stored session and a stored engine."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

import allm
from allm import codec, mcp
from allm.errors import MCPError
from allm.testing import fake_engine, text, tool_call

from .conftest import HttpServer, server_command


def scan(token: str, *texts: str) -> None:
    for t in texts:
        assert token not in t
        assert token[4:] not in t  # the random part alone


def test_no_header_or_env_value_leaks(http_server: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: allm, mcp, httpx, httpcore, anyio
    token = http_server.token
    wrong = "tok-wrong-" + token[4:][::-1]
    env_secret = "tok-env-" + token[4:][:8] + "zz"
    server = http_server.server()
    stdio = mcp.Server.stdio("local", server_command(), env={"WEATHER_API_KEY": env_secret})
    seen: list[str] = []
    with mcp.Client() as client:
        tools = client.tools(server, stdio)
        seen += [repr(server), repr(stdio), repr(tools), repr(client)]
        engine = fake_engine(
            [tool_call("weather__get_weather", {"city": "Paris"}), tool_call("local__add", {"a": 1, "b": 2})],
            [tool_call("weather__sleep", {"seconds": 20})],
            [text("done")],
        )
        killer = threading.Timer(1.5, http_server.process.kill)
        events: list[Any] = []

        def on_start(ev: Any) -> None:
            if isinstance(ev, allm.events.ToolExecutionStarted) and ev.name == "weather__sleep":
                killer.start()

        session = allm.Session.new("Weather?")
        stream = session.stream_continue(engine, tools=tools)
        for ev in stream:
            events.append(ev)
            on_start(ev)
        session, result = stream.finish()
        killer.join()
        assert result.halted_reason == "completed"
        assert result.steps[1].tool_results[0].is_error  # the killed server
        seen += [repr(e) for e in events]
        seen += [str(getattr(e, "error", "")) for e in events]
        seen += [codec.dumps(session).decode(), codec.dumps(fake_engine([text("x")], tools=tools)).decode()]
        refused = mcp.Server.http("weather", http_server.url, headers={"Authorization": f"Bearer {wrong}"})
        with pytest.raises(MCPError) as ei:
            client.list_tools(refused)
        seen += [str(ei.value), repr(ei.value), repr(ei.value.to_dict()), repr(refused)]
    logs = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "HTTP Request: POST" in logs and "Sending client message" in logs  # httpx and the SDK did log
    for secret in (token, wrong, env_secret):
        scan(secret, logs, *seen)
