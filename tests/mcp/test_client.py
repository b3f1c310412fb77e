"""allm.mcp against a real MCP server (FastMCP, tests/mcp/weather_server.py) over stdio and
Streamable HTTP: listing, filters, calls and their results, the tool loop (sync and async),
timeouts, a server killed mid-call and the reconnect, and a clean shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest

import allm
from allm import mcp
from allm.errors import MCPError
from allm.events import ToolExecutionCompleted
from allm.testing import fake_engine, text, tool_call

from .conftest import HttpServer, mcp_threads, open_sockets, server_command, stop, wait_until

TRANSPORTS = ["stdio", "http"]


@pytest.fixture(params=TRANSPORTS)
def server(request: pytest.FixtureRequest) -> mcp.Server:
    if request.param == "stdio":
        return mcp.Server.stdio("weather", server_command())
    http: HttpServer = request.getfixturevalue("http_server")
    return http.server()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------------------ listing and tools


def test_lists_the_servers_tools_with_their_schemas(client: mcp.Client, server: mcp.Server) -> None:
    infos = {i.name: i for i in client.list_tools(server)}
    assert {"get_weather", "add", "pid", "sleep", "chart", "forecast", "refuse", "dotted.name"} <= set(infos)
    w = infos["get_weather"]
    assert w.server_label == "weather" and w.description == "Get the current weather for a city."
    assert w.input_schema["type"] == "object" and w.input_schema["required"] == ["city"]
    assert w.input_schema["properties"]["city"]["type"] == "string"
    assert w.qualified_name == "weather__get_weather" and not w.requires_approval


def test_tools_are_allm_tools_named_by_label_and_tool(client: mcp.Client, server: mcp.Server) -> None:
    tools = {t.name: t for t in client.tools(server)}
    t = tools["weather__get_weather"]
    assert isinstance(t, allm.Tool) and t.handler is not None and not t.manual
    assert t.metadata == {"mcp": {"server_label": "weather", "name": "get_weather"}}
    assert t.schema["properties"]["city"]["type"] == "string"
    # A name providers refuse is made safe, and still unique.
    dotted = [n for n in tools if n.startswith("weather__dotted_name_")]
    assert len(dotted) == 1 and tools[dotted[0]].metadata["mcp"]["name"] == "dotted.name"


def test_allowed_tools_filter_listing_tools_and_calls(client: mcp.Client, http_server: HttpServer) -> None:
    server = http_server.server(allowed_tools=["add", "get_weather"])
    assert sorted(i.name for i in client.list_tools(server)) == ["add", "get_weather"]
    assert sorted(t.name for t in client.tools(server)) == ["weather__add", "weather__get_weather"]
    with pytest.raises(MCPError) as ei:
        client.call_tool(server, "pid")
    assert ei.value.reason == "tool_not_allowed" and ei.value.metadata["server_label"] == "weather"


def test_require_approval_makes_manual_tools(client: mcp.Client, stdio_server: mcp.Server) -> None:
    always = attrs.evolve(stdio_server, require_approval="always")
    assert all(t.manual for t in client.tools(always))
    some = attrs.evolve(stdio_server, require_approval={"always": {"tool_names": ["add"]}, "never": ["get_weather", "pid"]})
    infos = {i.name: i.requires_approval for i in client.list_tools(some)}
    # Listed under never: no approval; listed under always, or in neither list: approval.
    assert infos["get_weather"] is False and infos["pid"] is False
    assert infos["add"] is True and infos["sleep"] is True
    assert {t.name: t.manual for t in client.tools(some)}["weather__get_weather"] is False


# ------------------------------------------------------------------------------ results


def test_text_and_structured_content(client: mcp.Client, server: mcp.Server) -> None:
    r = client.call_tool(server, "get_weather", {"city": "Paris"})
    assert not r.is_error and r.structured_content == {"city": "Paris", "temperature_c": 18, "sky": "sunny"}
    assert orjson.loads(r.text) == r.structured_content
    r = client.call_tool(server, "add", {"a": 2, "b": 40})
    assert r.text == "42" and r.structured_content == {"result": 42}


def test_structured_content_alone_is_what_the_model_reads(client: mcp.Client, server: mcp.Server) -> None:
    r = client.call_tool(server, "forecast", {"city": "Oslo"})
    assert r.content == () and r.structured_content == {"city": "Oslo", "days": [18, 19, 21]}
    assert orjson.loads(r.text) == {"city": "Oslo", "days": [18, 19, 21]}


def test_images_resources_and_links(client: mcp.Client, server: mcp.Server) -> None:
    from tests.mcp.weather_server import PIXEL

    r = client.call_tool(server, "chart", {"city": "Paris"})
    text_part, image, resource, link = r.content
    assert text_part == allm.TextPart("Weather chart for Paris")
    assert isinstance(image, allm.ImagePart) and image.image.data == PIXEL and image.image.mime_type == "image/png"
    assert r.images == (image,)
    assert resource == mcp.Resource("weather://Paris/week.csv", "text/csv", text="day,t\nmon,18\n")
    assert link == mcp.ResourceLink("weather://Paris/month", "month", None, "text/csv")
    assert r.text.splitlines() == [
        "Weather chart for Paris",
        f"[image: image/png, {len(PIXEL)} bytes]",
        "[resource: weather://Paris/week.csv]",
        "day,t",
        "mon,18",
        "",
        "[resource link: month <weather://Paris/month>]",
    ]


def test_is_error_results_are_returned_not_raised(client: mcp.Client, server: mcp.Server) -> None:
    r = client.call_tool(server, "refuse", {"reason": "the sky is closed"})
    assert r.is_error and r.text == "the sky is closed"
    r = client.call_tool(server, "get_weather", {"city": "Atlantis"})
    assert r.is_error and "no weather for 'Atlantis'" in r.text


def test_unknown_tool_is_reported_by_the_server(client: mcp.Client, server: mcp.Server) -> None:
    r = client.call_tool(server, "no_such_tool", {})
    assert r.is_error and "Unknown tool" in r.text


# ------------------------------------------------------------------------------ the tool loop


def weather_engine(*scripts: Any) -> allm.Engine:
    return fake_engine(*scripts)


def test_chat_calls_mcp_tools_and_the_model_reads_results(client: mcp.Client, server: mcp.Server) -> None:
    tools = client.tools(server)
    eng = fake_engine(
        [
            tool_call("weather__get_weather", {"city": "Paris"}, id="c1"),
            tool_call("weather__chart", {"city": "Paris"}, id="c2"),
            tool_call("weather__refuse", {"reason": "no"}, id="c3"),
        ],
        [text("18 °C and sunny.")],
    )
    events = list(allm.stream(eng, "Weather in Paris?", tools=tools))
    result = allm.ChatCollector(allm.Thread((allm.user("Weather in Paris?"),))).fold(events)
    assert result.halted_reason == "completed" and result.final_response.output_text == "18 °C and sunny."
    weather, chart, refused = result.steps[0].tool_results
    assert orjson.loads(weather.text) == {"city": "Paris", "temperature_c": 18, "sky": "sunny"} and not weather.is_error
    assert chart.text.startswith("Weather chart for Paris\n[image: image/png,") and not chart.is_error
    assert refused.is_error and orjson.loads(refused.text) == {"error": "handler_raised: no"}
    # The thread holds plain text; the handler's value carries the whole MCP result.
    assert all(type(m.content) is str for m in result.thread.messages)
    done = {e.tool_call_id: e for e in events if isinstance(e, ToolExecutionCompleted)}
    value = done["c2"].result
    assert isinstance(value, mcp.ToolOutput) and value == chart.text
    assert value.result.images and value.result.images[0].image.data.startswith(b"\x89PNG")
    assert done["c3"].error is not None and done["c3"].error.metadata["is_error"] is True


async def test_achat_on_the_callers_loop(client: mcp.Client, server: mcp.Server) -> None:
    tools = await client.atools(server)
    eng = fake_engine(
        [tool_call("weather__add", {"a": 1, "b": 2}), tool_call("weather__add", {"a": 3, "b": 4})],
        [text("3 and 7")],
    )
    result = await allm.achat(eng, "add", tools=tools)
    assert [m.text for m in result.steps[0].tool_results] == ["3", "7"]
    assert result.final_response.output_text == "3 and 7"
    assert (await client.acall_tool(server, "add", {"a": 5, "b": 5})).text == "10"


def test_calls_of_one_turn_run_at_once(client: mcp.Client, stdio_server: mcp.Server) -> None:
    tools = client.tools(stdio_server)
    # Three calls that each wait (up to 60 s) until all three run on the server at once.
    eng = fake_engine([tool_call("weather__meet", {"key": "turn", "n": 3}, id=f"c{i}") for i in range(3)], [text("ok")])
    result = allm.chat(eng, "meet", tools=tools, tool_timeout=120)
    assert [m.text for m in result.steps[0].tool_results] == ["met"] * 3


def test_chat_from_many_threads_and_loops_shares_one_connection(client: mcp.Client, stdio_server: mcp.Server) -> None:
    tools = client.tools(stdio_server)
    pids: list[str] = []

    def run() -> None:
        eng = fake_engine([tool_call("weather__pid", {})], [text("ok")])
        pids.append(allm.chat(eng, "pid", tools=tools).steps[0].tool_results[0].text)

    async def arun() -> None:
        eng = fake_engine([tool_call("weather__pid", {})], [text("ok")])
        pids.append((await allm.achat(eng, "pid", tools=tools)).steps[0].tool_results[0].text)

    threads = [threading.Thread(target=run) for _ in range(4)] + [
        threading.Thread(target=asyncio.run, args=(arun(),)) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(pids) == 8 and len(set(pids)) == 1


# ------------------------------------------------------------------------------ time limits and failures


def test_a_call_past_the_servers_timeout_is_a_timeout_tool_error(client: mcp.Client, server: mcp.Server) -> None:
    slow = attrs.evolve(server, timeout=0.5)
    with pytest.raises(MCPError) as ei:
        client.call_tool(slow, "sleep", {"seconds": 10})
    assert ei.value.reason == "timeout" and ei.value.metadata["timeout"] == 0.5
    eng = fake_engine([tool_call("weather__sleep", {"seconds": 10})], [text("too slow")])
    result = allm.chat(eng, "sleep", tools=client.tools(slow))
    msg = result.steps[0].tool_results[0]
    assert msg.is_error and orjson.loads(msg.text)["error"].startswith("timeout: the call to sleep on the MCP server")
    # The connection is still good.
    assert client.call_tool(server, "add", {"a": 1, "b": 1}).text == "2"


def test_the_loops_tool_timeout_cancels_the_call(client: mcp.Client, stdio_server: mcp.Server) -> None:
    eng = fake_engine([tool_call("weather__sleep", {"seconds": 30})], [text("ok")])
    t0 = time.monotonic()
    result = allm.chat(eng, "sleep", tools=client.tools(stdio_server), tool_timeout=0.5)
    assert time.monotonic() - t0 < 20
    assert result.steps[0].tool_results[0].is_error
    assert client.call_tool(stdio_server, "add", {"a": 1, "b": 2}).text == "3"


async def test_cancelling_achat_cancels_the_mcp_call(client: mcp.Client, stdio_server: mcp.Server) -> None:
    tools = await client.atools(stdio_server)
    eng = fake_engine([tool_call("weather__sleep", {"seconds": 30})], [text("ok")])
    task = asyncio.ensure_future(allm.achat(eng, "sleep", tools=tools))
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Nothing of the cancelled call is left waiting on the client's loop.
    for _ in range(100):
        pending = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_tasks(), client._loop))
        if not [t for t in pending if "call_tool" in repr(t)]:
            break
    assert not [t for t in pending if "call_tool" in repr(t)]
    assert (await client.acall_tool(stdio_server, "add", {"a": 2, "b": 2})).text == "4"


async def _tasks() -> set[asyncio.Task[Any]]:
    await asyncio.sleep(0.2)
    return asyncio.all_tasks()


def kill_when_running(marker: Path, kill: Any) -> threading.Thread:
    """Kill the server once its ``sleep`` call has started (it creates ``marker``)."""

    def run() -> None:
        assert wait_until(marker.exists, 60)
        kill()

    t = threading.Thread(target=run)
    t.start()
    return t


def test_killed_stdio_server_gives_a_tool_error_then_reconnects(
    client: mcp.Client, stdio_server: mcp.Server, tmp_path: Path
) -> None:
    pid = int(client.call_tool(stdio_server, "pid").text)
    tools = client.tools(stdio_server)
    marker = tmp_path / "running"
    killer = kill_when_running(marker, lambda: os.kill(pid, signal.SIGKILL))
    eng = fake_engine(
        [tool_call("weather__sleep", {"seconds": 120, "marker": str(marker)})], [tool_call("weather__pid", {})], [text("ok")]
    )
    t0 = time.monotonic()
    result = allm.chat(eng, "sleep", tools=tools, tool_timeout=None)
    killer.join()
    assert time.monotonic() - t0 < 100  # the kill ended the call, not its 120 s
    lost, new_pid = result.steps[0].tool_results[0], result.steps[1].tool_results[0]
    assert lost.is_error
    assert orjson.loads(lost.text)["error"].startswith("handler_raised: the connection to the MCP server 'weather' was lost")
    # The next call started the server again.
    assert not new_pid.is_error and int(new_pid.text) != pid
    assert wait_until(lambda: not alive(pid))


def test_listing_after_the_server_died_starts_it_again(client: mcp.Client, stdio_server: mcp.Server) -> None:
    pid = int(client.call_tool(stdio_server, "pid").text)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not client.connected(stdio_server))
    assert "weather__get_weather" in [t.name for t in client.tools(stdio_server)]
    assert int(client.call_tool(stdio_server, "pid").text) != pid


def test_server_exiting_mid_call_then_reconnect(client: mcp.Client, stdio_server: mcp.Server) -> None:
    pid = int(client.call_tool(stdio_server, "pid").text)
    with pytest.raises(MCPError) as ei:
        client.call_tool(stdio_server, "crash")
    assert ei.value.reason == "connection_lost" and ei.value.metadata["server_label"] == "weather"
    assert int(client.call_tool(stdio_server, "pid").text) != pid


def test_server_that_died_between_calls_is_started_again(client: mcp.Client, stdio_server: mcp.Server) -> None:
    pid = int(client.call_tool(stdio_server, "pid").text)
    assert client.connected(stdio_server)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not client.connected(stdio_server))  # the end of its output was seen
    # The death was seen before the request was sent: it goes to a new server, no error.
    assert int(client.call_tool(stdio_server, "pid").text) != pid
    assert client.connected(stdio_server)


def test_killed_http_server_gives_a_tool_error_then_reconnects(
    client: mcp.Client, http_server: HttpServer, tmp_path: Path
) -> None:
    from .conftest import start_http_server

    server = attrs.evolve(http_server.server(), timeout=None)
    tools = client.tools(server)
    marker = tmp_path / "running"
    killer = kill_when_running(marker, http_server.process.kill)
    eng = fake_engine(
        [tool_call("weather__sleep", {"seconds": 120, "marker": str(marker)})],
        [tool_call("weather__add", {"a": 1, "b": 1})],
        [text("ok")],
    )
    t0 = time.monotonic()
    result = allm.chat(eng, "sleep", tools=tools, tool_timeout=None)
    killer.join()
    assert time.monotonic() - t0 < 100  # the kill (seen by a ping) ended the call, not its 120 s
    lost, after = result.steps[0].tool_results[0], result.steps[1].tool_results[0]
    assert lost.is_error and "was lost during the call to sleep" in lost.text
    # Nothing listens on the port any more: the reconnect fails with a clear error.
    assert after.is_error and "cannot use the MCP server 'weather'" in orjson.loads(after.text)["error"]
    # A server back at another URL: a new configuration connects.
    again = start_http_server()
    try:
        assert client.call_tool(again.server(), "add", {"a": 2, "b": 2}).text == "4"
    finally:
        stop(again.process)


def test_connect_failures_are_typed(client: mcp.Client, http_server: HttpServer) -> None:
    with pytest.raises(MCPError) as ei:
        client.list_tools(mcp.Server.stdio("missing", ["/nonexistent/mcp-server"]))
    assert ei.value.reason == "server_unavailable" and ei.value.metadata["server_label"] == "missing"
    with pytest.raises(MCPError) as ei:
        client.list_tools(mcp.Server.stdio("exits", [server_command()[0], "-c", "pass"]))
    assert ei.value.reason == "server_unavailable"
    wrong = mcp.Server.http("weather", http_server.url, headers={"Authorization": "Bearer wrong-token-0123456789"})
    with pytest.raises(MCPError) as ei:
        client.list_tools(wrong)
    assert ei.value.reason == "authentication_failed" and ei.value.metadata["status"] == 401
    assert "wrong-token" not in str(ei.value) and "wrong-token" not in repr(ei.value.metadata)
    with pytest.raises(MCPError) as ei:
        client.list_tools(mcp.Server.http("nobody", "http://127.0.0.1:9/mcp"))
    assert ei.value.reason == "server_unavailable"


def test_protocol_errors_are_typed(client: mcp.Client, server: mcp.Server) -> None:
    import sys

    broken = mcp.Server.stdio("broken", [sys.executable, str(Path(__file__).parent / "broken_server.py")])
    (listed,) = client.list_tools(broken)
    assert listed.name == "listy" and listed.input_schema == {"type": "array"}
    with pytest.raises(MCPError) as ei:
        client.tools(broken)  # allm offers object schemas only: providers send arguments as an object
    assert ei.value.reason == "protocol_error" and ei.value.metadata["tool_name"] == "listy"
    with pytest.raises(MCPError) as ei:
        client.call_tool(broken, "listy", {})
    assert ei.value.reason == "protocol_error" and ei.value.metadata["code"] == -32602
    assert "no such arguments for listy" in str(ei.value)
    with pytest.raises(MCPError) as ei:
        client.call_tool(server, "broken_image")
    assert ei.value.reason == "protocol_error" and "not base64" in str(ei.value)
    # In the loop, the model reads it as a tool error.
    eng = fake_engine([tool_call("weather__broken_image", {})], [text("no image")])
    msg = allm.chat(eng, "image", tools=client.tools(server)).steps[0].tool_results[0]
    assert msg.is_error and "not base64" in msg.text


def test_a_server_that_never_answers_times_out_at_connect(client: mcp.Client) -> None:
    silent = mcp.Server.stdio("silent", [server_command()[0], "-c", "import time; time.sleep(60)"], connect_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(MCPError) as ei:
        client.list_tools(silent)
    assert ei.value.reason == "timeout" and ei.value.metadata["phase"] == "connect"
    assert time.monotonic() - t0 < 15


def test_tools_refuses_two_servers_with_one_label(client: mcp.Client, stdio_server: mcp.Server, http_server: HttpServer) -> None:
    with pytest.raises(MCPError) as ei:
        client.tools(stdio_server, http_server.server())
    assert ei.value.reason == "invalid_server" and ei.value.metadata["server_label"] == "weather"


# ------------------------------------------------------------------------------ shutdown


def test_close_stops_servers_threads_and_sockets(http_server: HttpServer) -> None:
    before = open_sockets()
    c = mcp.Client()
    stdio = mcp.Server.stdio("weather", server_command())
    pid = int(c.call_tool(stdio, "pid").text)
    assert c.call_tool(http_server.server("remote"), "add", {"a": 1, "b": 1}).text == "2"
    assert alive(pid) and mcp_threads()
    c.close()
    c.close()  # idempotent
    assert wait_until(lambda: not alive(pid))
    assert wait_until(lambda: not mcp_threads()), mcp_threads()
    assert wait_until(lambda: open_sockets() <= before), (open_sockets(), before)
    with pytest.raises(MCPError) as ei:
        c.call_tool(stdio, "pid")
    assert ei.value.reason == "closed"


def test_closing_ends_calls_in_flight(stdio_server: mcp.Server) -> None:
    c = mcp.Client()
    c.call_tool(stdio_server, "pid")
    errors: list[BaseException] = []

    def call() -> None:
        try:
            c.call_tool(stdio_server, "sleep", {"seconds": 120})
        except BaseException as exc:
            errors.append(exc)

    async def acall() -> None:
        try:
            await c.acall_tool(stdio_server, "sleep", {"seconds": 120})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call), threading.Thread(target=asyncio.run, args=(acall(),))]
    for t in threads:
        t.start()
    time.sleep(1.0)  # the calls are on their way (either way they must end below)
    c.close()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert len(errors) == 2 and all(isinstance(e, MCPError) for e in errors), errors
    assert {e.reason for e in errors} <= {"closed", "connection_lost"}  # type: ignore[attr-defined]
    assert wait_until(lambda: not mcp_threads())


async def test_async_context_manager_and_disconnect(stdio_server: mcp.Server) -> None:
    async with mcp.Client() as c:
        pid = int((await c.acall_tool(stdio_server, "pid")).text)
        await c.adisconnect(stdio_server)
        assert wait_until(lambda: not alive(pid))
        assert int((await c.acall_tool(stdio_server, "pid")).text) != pid
    assert wait_until(lambda: not mcp_threads())


def test_a_forgotten_client_is_closed_when_collected() -> None:
    import gc

    c = mcp.Client()
    pid = int(c.call_tool(mcp.Server.stdio("weather", server_command()), "pid").text)
    del c
    gc.collect()
    assert wait_until(lambda: not alive(pid))
    assert wait_until(lambda: not mcp_threads())


def test_interpreter_exit_stops_servers(tmp_path: Any) -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from allm import mcp\n"
        f"c = mcp.Client()\n"
        f"print(c.call_tool(mcp.Server.stdio('weather', {server_command()!r}), 'pid').text, flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.strip())
    assert wait_until(lambda: not alive(pid))
