"""Tools from an MCP server in the tool loop, over stdio and over Streamable HTTP, and a
session that waits for approval of an MCP tool, is stored, and resumes.

It starts the small FastMCP server in tests/mcp/weather_server.py itself: once as a
subprocess speaking MCP on stdin/stdout, once on a free loopback port with a bearer token.
The model is a Fake, so the run is exact and needs no key.

Run it: ``python examples/mcp_weather.py`` (needs ``pip install 'allm[mcp]'``).
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import allm
from allm import codec, mcp
from allm.testing import fake_engine, text, tool_call

ROOT = Path(__file__).resolve().parent.parent
SERVER = [sys.executable, str(ROOT / "tests" / "mcp" / "weather_server.py")]


def over_stdio() -> None:
    weather = mcp.Server.stdio("weather", SERVER, allowed_tools=["get_weather", "chart"])
    with mcp.Client() as client:
        tools = client.tools(weather)
        print("tools:", [t.name for t in tools])
        engine = fake_engine(
            [tool_call("weather__get_weather", {"city": "Paris"}), tool_call("weather__chart", {"city": "Paris"})],
            [text("Paris: 18 °C and sunny; the chart is attached.")],
        )
        result = allm.chat(engine, "Weather in Paris, with a chart?", tools=tools)
    weather_msg, chart_msg = result.steps[0].tool_results
    print("get_weather ->", weather_msg.text.replace("\n", " "))
    print("chart       ->", chart_msg.text.splitlines()[:2])
    assert '"temperature_c": 18' in weather_msg.text
    assert chart_msg.text.startswith("Weather chart for Paris\n[image: image/png,")
    assert result.final_response.output_text == "Paris: 18 °C and sunny; the chart is attached."


def over_http() -> None:
    token = "tok-" + secrets.token_hex(16)
    proc = subprocess.Popen([*SERVER, "--http", "--token", token], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        remote = mcp.Server.http("weather", f"http://127.0.0.1:{port}/mcp", headers={"Authorization": f"Bearer {token}"})
        print("server:", remote)  # the token shows as '***'
        assert token not in repr(remote)
        with mcp.Client() as client:
            engine = fake_engine([tool_call("weather__add", {"a": 20, "b": 22})], [text("20 + 22 = 42")])
            result = allm.chat(engine, "What is 20 + 22?", tools=client.tools(remote))
        print("add ->", result.steps[0].tool_results[0].text)
        assert result.steps[0].tool_results[0].text == "42"
    finally:
        proc.terminate()
        proc.wait(10)


def approval_across_a_store() -> None:
    guarded = mcp.Server.stdio("weather", SERVER, require_approval="always")
    with mcp.Client() as client:
        engine = fake_engine([tool_call("weather__get_weather", {"city": "Tokyo"})])
        session, _ = allm.Session.start(engine, "Weather in Tokyo?", tools=client.tools(guarded))
    assert session.status == "awaiting_tools"
    stored = codec.dumps(session)
    print("stored:", len(stored), "bytes; pending:", [c.name for c in session.pending_tool_calls])

    # Later (any process): the stored bytes and the server configuration are enough.
    session = codec.loads(stored, allm.Session)
    engine = fake_engine(["Tokyo: 24 °C and cloudy."])
    with mcp.Client() as client:
        tools = client.bind(session, guarded)
        session = session.approve(engine, session.pending_tool_calls[0].id, tools=tools)
        session, result = session.continue_(engine, tools=tools)
    print("resumed ->", result.final_response.output_text)
    assert session.status == "completed" and '"sky": "cloudy"' in session.thread.messages[-2].text


if __name__ == "__main__":
    over_stdio()
    over_http()
    approval_across_a_store()
