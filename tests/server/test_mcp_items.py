"""The Open Responses ``mcp`` tool type in the server, against the real test MCP server
(tests/mcp/weather_server.py, the mcp SDK's FastMCP) over Streamable HTTP and stdio: the
streamed items and events, the approval flow over two requests, the errors, and header
values never shown or stored."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

pytest.importorskip("mcp")

from allm.server import create_app, parse_config
from allm.stores import MemoryStore
from tests.mcp.conftest import SERVER_SCRIPT, HttpServer, start_http_server, stop

CONFIG = """
[server]
store = "memory://"

[[routes]]
match = "."
adapter = "tests.server.ops_fakes:weather_caller"
"""

STDIO_CONFIG = CONFIG + f"""
[mcp.weather]
command = [{sys.executable!r}, {str(SERVER_SCRIPT)!r}]
allowed_tools = ["get_weather", "add"]
""".replace("'", '"')


@pytest.fixture
def mcp_http() -> Iterator[HttpServer]:
    s = start_http_server()
    try:
        yield s
    finally:
        stop(s.process)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(parse_config(CONFIG), store=MemoryStore())
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60
    ) as c:
        yield c


def mcp_tool(server: HttpServer, **kw: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "weather", "server_url": server.url,
            "headers": {"Authorization": f"Bearer {server.token}"}, **kw}


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if len(lines) == 2 and lines[0].startswith("event: "):
            ev = orjson.loads(lines[1][len("data: "):])
            assert ev["type"] == lines[0][len("event: "):]
            events.append(ev)
    return events


async def test_streamed_request_with_mcp_items_over_streamable_http(
    client: httpx.AsyncClient, mcp_http: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"model": "m", "input": "Weather in Paris?", "stream": True,
            "tools": [mcp_tool(mcp_http, allowed_tools=["get_weather", "add"])]}
    r = await client.post("/v1/responses", json=body)
    assert r.status_code == 200, r.text
    events = parse_sse(r.text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    listed = types.index("response.mcp_list_tools.completed")
    assert types[listed - 2: listed + 2] == ["response.output_item.added", "response.mcp_list_tools.in_progress",
                                             "response.mcp_list_tools.completed", "response.output_item.done"]
    for t in ("response.mcp_call.in_progress", "response.mcp_call_arguments.done", "response.mcp_call.completed"):
        assert t in types
    assert types.index("response.mcp_call.completed") < types.index("response.output_text.delta")
    final = events[-1]["response"]
    out = final["output"]
    assert [it["type"] for it in out] == ["mcp_list_tools", "mcp_call", "message"]
    assert out[0]["server_label"] == "weather"
    assert sorted(t["name"] for t in out[0]["tools"]) == ["add", "get_weather"]
    assert out[0]["tools"][0]["input_schema"]["type"] == "object"
    call = out[1]
    assert call["server_label"] == "weather" and call["name"] == "get_weather"
    assert orjson.loads(call["arguments"]) == {"city": "Paris"}
    assert call["status"] == "completed" and call["error"] is None
    assert "sunny" in call["output"]
    assert "sunny" in out[2]["content"][0]["text"]
    # the header value is shown as *** and never stored or logged
    assert final["tools"][0]["headers"] == {"Authorization": "***"}
    stored = await client.get(f"/v1/responses/{final['id']}")
    replay = await client.get(f"/v1/responses/{final['id']}", params={"stream": "true"})
    for text in (r.text, stored.text, replay.text, caplog.text):
        assert mcp_http.token not in text


async def test_configured_stdio_server_by_label() -> None:
    app = create_app(parse_config(STDIO_CONFIG), store=MemoryStore())
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60
    ) as c:
        r = await c.post("/v1/responses", json={"model": "m", "input": "Weather?",
                                                "tools": [{"type": "mcp", "server_label": "weather"}]})
    assert r.status_code == 200, r.text
    out = r.json()["output"]
    assert [it["type"] for it in out] == ["mcp_list_tools", "mcp_call", "message"]
    assert sorted(t["name"] for t in out[0]["tools"]) == ["add", "get_weather"]
    assert "sunny" in out[1]["output"]


async def test_approval_flow_over_two_requests(client: httpx.AsyncClient, mcp_http: HttpServer) -> None:
    tools = [mcp_tool(mcp_http, require_approval="always")]
    first = await client.post("/v1/responses", json={"model": "m", "input": "Weather in Paris?", "tools": tools})
    assert first.status_code == 200, first.text
    one = first.json()
    assert one["status"] == "completed"
    assert [it["type"] for it in one["output"]] == ["mcp_list_tools", "mcp_approval_request"]
    request = one["output"][1]
    assert request["server_label"] == "weather" and request["name"] == "get_weather"
    assert orjson.loads(request["arguments"]) == {"city": "Paris"}

    second = await client.post("/v1/responses", json={
        "model": "m", "previous_response_id": one["id"], "tools": tools, "stream": True,
        "input": [{"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}]})
    assert second.status_code == 200, second.text
    events = parse_sse(second.text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    out = events[-1]["response"]["output"]
    assert [it["type"] for it in out] == ["mcp_list_tools", "mcp_call", "message"]
    assert out[1]["approval_request_id"] == request["id"]
    assert out[1]["status"] == "completed" and "sunny" in out[1]["output"]
    assert "sunny" in out[2]["content"][0]["text"]
    assert "response.mcp_call.completed" in [e["type"] for e in events]

    # an approval without the mcp tool it needs
    alone = await client.post("/v1/responses", json={
        "model": "m", "previous_response_id": one["id"],
        "input": [{"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}]})
    assert alone.status_code == 400 and "needs the mcp tool 'weather'" in alone.json()["error"]["message"]

    # the same request cannot be answered twice
    again = await client.post("/v1/responses", json={
        "model": "m", "previous_response_id": events[-1]["response"]["id"], "tools": tools,
        "input": [{"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}]})
    assert again.status_code == 400
    assert again.json()["error"]["param"] == "input[0].approval_request_id"


async def test_refused_approval_tells_the_model(client: httpx.AsyncClient, mcp_http: HttpServer) -> None:
    tools = [mcp_tool(mcp_http, require_approval={"always": {"tool_names": ["get_weather"]}})]
    one = (await client.post("/v1/responses", json={"model": "m", "input": "Weather?", "tools": tools})).json()
    rid = one["output"][-1]["id"]
    r = await client.post("/v1/responses", json={
        "model": "m", "previous_response_id": one["id"], "tools": tools,
        "input": [{"type": "mcp_approval_response", "approval_request_id": rid, "approve": False, "reason": "no"}]})
    out = r.json()["output"]
    assert out[1]["type"] == "mcp_call" and out[1]["status"] == "failed"
    assert out[1]["error"] == "the user did not approve this call" and out[1]["output"] is None
    assert "did not approve" in out[2]["content"][0]["text"]


async def test_errors(client: httpx.AsyncClient, mcp_http: HttpServer) -> None:
    r = await client.post("/v1/responses", json={"model": "m", "input": "x",
                                                 "tools": [{"type": "mcp", "server_label": "nowhere"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools[0].server_url"
    r = await client.post("/v1/responses", json={"model": "m", "input": "x", "tools": [{"type": "mcp"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools[0].server_label"
    r = await client.post("/v1/responses", json={"model": "m", "input": "x",
                                                 "tools": [mcp_tool(mcp_http, require_approval="sometimes")]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools[0].require_approval"
    r = await client.post("/v1/responses", json={"model": "m", "input": "x",
                                                 "tools": [mcp_tool(mcp_http, allowed_tools="get_weather")]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools[0].allowed_tools"
    r = await client.post("/v1/responses", json={"model": "m", "input": [
        {"type": "mcp_approval_response", "approval_request_id": "mcpr_call_x", "approve": True}]})
    assert r.status_code == 400 and "no pending" in r.json()["error"]["message"]
    r = await client.post("/v1/responses", json={"model": "m", "input": [
        {"type": "mcp_approval_response", "approval_request_id": "nope", "approve": True}]})
    assert r.status_code == 400
    for bad, param in (({"headers": {"X-N": 1}}, "tools[0].headers"), ({"server_url": 7}, "tools[0].server_url"),
                       ({"server_label": "bad__label"}, "tools[0]")):
        r = await client.post("/v1/responses", json={"model": "m", "input": "x", "tools": [{**mcp_tool(mcp_http), **bad}]})
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["param"] == param
    wrong = {**mcp_tool(mcp_http), "headers": {"Authorization": "Bearer wrong-token-123"}}
    r = await client.post("/v1/responses", json={"model": "m", "input": "x", "tools": [wrong]})
    assert r.status_code == 424, r.text
    assert r.json()["error"]["code"] == "mcp_list_tools_failed"
    assert "wrong-token-123" not in r.text


def test_config_errors_name_the_key() -> None:
    from allm.server import ConfigError

    with pytest.raises(ConfigError, match=r"mcp\.weather"):
        parse_config(CONFIG + '\n[mcp.weather]\nallowed_tools = ["x"]\n')
    with pytest.raises(ConfigError, match=r"mcp\.bad__label"):
        parse_config(CONFIG + '\n[mcp.bad__label]\nurl = "http://127.0.0.1:1/mcp"\n')
    with pytest.raises(ConfigError, match=r"mcp\.weather: must be a table"):
        parse_config(CONFIG + '\n[mcp]\nweather = 1\n')
    with pytest.raises(ConfigError, match=r"mcp\.weather\.colour"):
        parse_config(CONFIG + '\n[mcp.weather]\nurl = "http://127.0.0.1:1/mcp"\ncolour = 1\n')
    cfg = parse_config(CONFIG + '\n[mcp.weather]\nurl = "http://127.0.0.1:1/mcp"\nheaders = {Authorization = "Bearer s3cr3t"}\n')
    assert "s3cr3t" not in repr(cfg)
