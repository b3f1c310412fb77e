"""A worker process that resumes a stored session awaiting approval of an MCP tool
(run by tests/mcp/test_sessions.py).

Usage: python tests/mcp/resume_worker.py SERVER_JSON SESSION_JSON OUT_JSON

It is given only the stored session's bytes and the MCP server's configuration (label and
command, or label and URL; a bearer token, if any, comes from this process's environment,
``WEATHER_TOKEN``, never from stored data). It binds the session's MCP tools again,
approves the pending calls (each runs on the real server), continues the turn on a Fake
model and writes the resulting session.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson

import allm
from allm import mcp
from allm.errors import MCPError
from allm.testing import fake_engine


def main() -> None:
    server_path, session_path, out_path = sys.argv[1:4]
    config = orjson.loads(Path(server_path).read_bytes())
    servers: list[mcp.Server] = []
    if "command" in config:
        servers.append(mcp.Server.stdio(config["label"], config["command"], require_approval="always"))
    elif "url" in config:
        token = os.environ["WEATHER_TOKEN"]
        servers.append(
            mcp.Server.http(config["label"], config["url"], headers={"Authorization": f"Bearer {token}"}, require_approval="always")
        )
    session = allm.Session.from_json(Path(session_path).read_bytes())
    assert session.status == "awaiting_tools", session.status
    engine = fake_engine(["The weather in Tokyo: 24 °C, cloudy."])
    with mcp.Client() as client:
        try:
            tools = client.bind(session, *servers)
        except MCPError as exc:
            print(orjson.dumps(exc.to_dict()).decode())
            sys.exit(3)
        for call in session.pending_tool_calls:
            session = session.approve(engine, call.id, tools=tools)
        session, result = session.continue_(engine, tools=tools)
    Path(out_path).write_bytes(session.to_json())
    print(f"{os.getpid()} {result.halted_reason}")


if __name__ == "__main__":
    main()
