"""Sessions with MCP tools: a session awaiting approval of an MCP tool is stored, then resumed
in another process given only the stored bytes and the server configuration; a missing server
or tool is a typed error naming it; header values never reach stored data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest

import allm
from allm import codec, mcp
from allm.errors import MCPError
from allm.testing import fake_engine, tool_call

from .conftest import HttpServer, server_command

HERE = Path(__file__).parent


def start_session(client: mcp.Client, server: mcp.Server) -> allm.Session:
    tools = client.tools(attrs.evolve(server, require_approval={"always": ["get_weather"]}))
    assert {t.name: t.manual for t in tools}["weather__get_weather"] is True
    engine = fake_engine([tool_call("weather__get_weather", {"city": "Tokyo"}, id="call_w1")])
    session, result = allm.Session.start(engine, "Weather in Tokyo?", tools=tools)
    assert result.halted_reason == "manual_tool_calls" and session.status == "awaiting_tools"
    assert [c.name for c in session.pending_tool_calls] == ["weather__get_weather"]
    return session


def resume_elsewhere(tmp_path: Path, config: dict[str, Any], stored: bytes, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "server.json").write_bytes(orjson.dumps(config))
    (tmp_path / "session.json").write_bytes(stored)
    return subprocess.run(
        [sys.executable, str(HERE / "resume_worker.py"), str(tmp_path / "server.json"), str(tmp_path / "session.json"), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def check_resumed(tmp_path: Path, proc: subprocess.CompletedProcess[str], before: allm.Session) -> None:
    assert proc.returncode == 0, proc.stderr + proc.stdout
    worker_pid, halted = proc.stdout.split()
    assert halted == "completed" and int(worker_pid) != os.getpid()
    out = allm.Session.from_json((tmp_path / "out.json").read_bytes())
    assert out.id == before.id and out.status == "completed"
    assert out.thread.messages[: len(before.thread)] == before.thread.messages
    tool_msg, final = out.thread.messages[len(before.thread) :]
    # The approved call ran on the real server, from the worker.
    assert tool_msg.tool_call_id == "call_w1" and tool_msg.name == "weather__get_weather" and not tool_msg.is_error
    assert orjson.loads(tool_msg.text) == {"city": "Tokyo", "temperature_c": 24, "sky": "cloudy"}
    assert final.text == "The weather in Tokyo: 24 °C, cloudy."


def test_stdio_session_awaiting_approval_resumes_in_another_process(tmp_path: Path) -> None:
    server = mcp.Server.stdio("weather", server_command())
    with mcp.Client() as client:
        session = start_session(client, server)
    stored = codec.dumps(session)
    proc = resume_elsewhere(tmp_path, {"label": "weather", "command": server_command()}, stored)
    check_resumed(tmp_path, proc, session)


def test_http_session_resumes_with_headers_from_the_workers_environment(tmp_path: Path, http_server: HttpServer) -> None:
    with mcp.Client() as client:
        session = start_session(client, http_server.server())
    stored = codec.dumps(session)
    assert http_server.token.encode() not in stored
    proc = resume_elsewhere(tmp_path, {"label": "weather", "url": http_server.url}, stored, {"WEATHER_TOKEN": http_server.token})
    check_resumed(tmp_path, proc, session)
    assert http_server.token not in proc.stdout + proc.stderr


def test_a_session_whose_server_is_missing_fails_naming_it(tmp_path: Path) -> None:
    server = mcp.Server.stdio("weather", server_command())
    with mcp.Client() as client:
        session = start_session(client, server)
        with pytest.raises(MCPError) as ei:
            client.bind(session)
        assert ei.value.reason == "unknown_server"
        assert ei.value.metadata["server_labels"] == ["weather"]
        assert ei.value.metadata["tool_names"] == ["weather__get_weather"]
        assert "'weather'" in str(ei.value)
        other = mcp.Server.stdio("maps", server_command())
        with pytest.raises(MCPError) as ei:
            client.bind(session, other)
        assert ei.value.reason == "unknown_server" and ei.value.metadata["server_label"] == "weather"
    # In another process too: the worker reports the typed error.
    proc = resume_elsewhere(tmp_path, {"label": "maps", "command": server_command()}, codec.dumps(session))
    assert proc.returncode == 3, proc.stderr
    err = allm.AllmError.from_dict(orjson.loads(proc.stdout))
    assert isinstance(err, MCPError) and err.reason == "unknown_server" and err.metadata["server_labels"] == ["weather"]


def test_a_pending_call_to_a_tool_no_longer_offered_is_an_error() -> None:
    server = mcp.Server.stdio("weather", server_command())
    with mcp.Client() as client:
        session = start_session(client, server)
        with pytest.raises(MCPError) as ei:
            client.bind(session, attrs.evolve(server, allowed_tools=("add",)))
        assert ei.value.reason == "unknown_tool" and ei.value.metadata["tool_call_id"] == "call_w1"


async def test_abind_and_aapprove() -> None:
    server = mcp.Server.stdio("weather", server_command())
    async with mcp.Client() as client:
        session = await asyncio_start(client, server)
        tools = await client.abind(session, server)
        session = await session.aapprove(fake_engine(), session.pending_tool_calls[0].id, tools=tools)
        assert session.status == "idle"
        assert orjson.loads(session.thread.messages[-1].text)["temperature_c"] == 24


async def asyncio_start(client: mcp.Client, server: mcp.Server) -> allm.Session:
    tools = await client.atools(attrs.evolve(server, require_approval="always"))
    engine = fake_engine([tool_call("weather__get_weather", {"city": "Tokyo"}, id="call_w1")])
    session, _ = await allm.Session.astart(engine, "Weather in Tokyo?", tools=tools)
    return session


def test_bind_accepts_threads_and_messages_and_leaves_your_own_tools_alone() -> None:
    server = mcp.Server.stdio("weather", server_command())
    own = allm.tool("notes__lookup", "Your own tool, with __ in its name.", handler=lambda args: "found")
    thread = allm.Thread(
        (
            allm.user("hi"),
            allm.assistant("", [allm.ToolCall("c1", "notes__lookup", {}), allm.ToolCall("c2", "weather__add", {"a": 1, "b": 2})]),
        )
    )
    with mcp.Client() as client:
        with pytest.raises(MCPError) as ei:
            client.bind(thread, server)  # "notes" could be a server: say which tools are your own
        assert ei.value.metadata["server_labels"] == ["notes"]
        with pytest.raises(MCPError) as ei:
            client.bind(thread, tools=[own])
        assert ei.value.metadata["server_labels"] == ["weather"] and ei.value.metadata["tool_names"] == ["weather__add"]
        bound = client.bind(thread.messages, server, tools=[own])
        assert bound[0] is own and {t.name for t in bound} >= {"notes__lookup", "weather__add"}
        with pytest.raises(TypeError):
            client.bind(42, server)
