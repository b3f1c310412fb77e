"""Upstream faults through the server: a loopback Chat Completions upstream that answers
429/500, stalls, resets mid-stream; a client that walks away mid-stream. Each ends with a
specification-shaped error or a ``response.failed`` event, never a hang or a bare 500."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.loopback import LoopbackServer, Req, Writer, chat_chunks, chat_completion, serve, streamed

from .conftest import ServeProcess, app_client
from .test_app import parse_sse


def config(upstream: str, *, extra: str = "") -> str:
    return f"""
[server]
store = "memory://"

[[routes]]
match = "."
provider = "compatible"
base_url = "{upstream}/v1"
api_key_env = "SERVER_TEST_UPSTREAM_KEY"
key_header = "x-upstream-key"
retry = {{max_attempts = 1}}
timeouts = {{first_event = 1.0, idle = 1.0}}
{extra}
"""


@pytest.fixture
def upstream() -> Iterator[LoopbackServer]:
    with serve() as server:
        yield server


async def wait_done(c: httpx.AsyncClient, rid: str) -> dict[str, Any]:
    """A background response, once ended: its stream followed to the end, then read back."""
    events, done = parse_sse((await c.get(f"/v1/responses/{rid}", params={"stream": "true"})).content)
    assert done and events[-1]["type"] in ("response.completed", "response.failed", "response.incomplete")
    body: dict[str, Any] = (await c.get(f"/v1/responses/{rid}")).json()
    return body


async def post(c: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await c.post("/v1/responses", json={"model": "m", "input": "hi", **body})


async def test_a_healthy_upstream_streams_through(upstream: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVER_TEST_UPSTREAM_KEY", "sk-upstream-env-key-0001")

    async def ok(req: Req, w: Writer) -> None:
        if not streamed(req):
            await w.respond(200, chat_completion("Hello", completion_tokens=2))
            return
        await w.start_stream()
        for c in chat_chunks(["Hel", "lo"]):
            await w.chunk(c)
        await w.end_stream()

    upstream.handler = ok
    async with app_client(config(upstream.url)) as c:
        r = await post(c, stream=True)
        events, done = parse_sse(r.content)
        assert done and events[-1]["type"] == "response.completed"
        assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hello"
        assert events[-1]["response"]["usage"]["input_tokens"] == 5
        assert upstream.requests[-1].headers["authorization"] == "Bearer sk-upstream-env-key-0001"
        assert orjson.loads(upstream.requests[-1].body)["stream"] is True
        # the caller's own key, from the route's key_header, wins; it is never echoed or stored.
        # Not streamed to the client: the upstream is asked for one JSON body.
        r = await c.post("/v1/responses", json={"model": "m", "input": "hi"}, headers={"x-upstream-key": "sk-caller-key-000002"})
        assert r.status_code == 200
        assert not orjson.loads(upstream.requests[-1].body).get("stream")
        assert r.json()["output"][0]["content"][0]["text"] == "Hello" and r.json()["usage"]["output_tokens"] == 2
        assert upstream.requests[-1].headers["authorization"] == "Bearer sk-caller-key-000002"
        assert b"sk-caller" not in r.content
        service = c.app.state.responses  # type: ignore[attr-defined]
        rid = r.json()["id"]
        assert b"sk-caller" not in service.store.get("responses", rid).value
        assert not any(b"sk-" in item for item in service.store.read("responses", rid))
        # in the background, the upstream streams (GET ?stream=true can follow the response)
        r2 = await c.post("/v1/responses", json={"model": "m", "input": "hi", "background": True})
        assert r2.status_code == 200
        final = await wait_done(c, r2.json()["id"])
        assert final["status"] == "completed" and orjson.loads(upstream.requests[-1].body)["stream"] is True


@pytest.mark.parametrize(("status", "want_status", "want_code"), [
    (429, 429, "rate_limit_exceeded"),
    (500, 502, "upstream_error"),
    (503, 502, "upstream_error"),
])
async def test_upstream_error_status_before_any_event(upstream: LoopbackServer, status: int, want_status: int, want_code: str) -> None:
    async def fail(req: Req, w: Writer) -> None:
        await w.respond(status, orjson.dumps({"error": {"message": "nope", "type": "x"}}), headers={"retry-after": "2"})

    upstream.handler = fail
    async with app_client(config(upstream.url)) as c:
        for stream in (False, True):
            r = await post(c, stream=stream)
            assert r.status_code == want_status, r.text
            err = r.json()["error"]
            assert err["code"] == want_code and set(err) == {"message", "type", "param", "code"}
            if status == 429:
                assert err["type"] == "too_many_requests" and r.headers["retry-after"] == "2"


async def test_upstream_refused_connection_is_502() -> None:
    from allm.local import free_port

    async with app_client(config(f"http://127.0.0.1:{free_port()}")) as c:
        r = await post(c)
        assert r.status_code == 502 and r.json()["error"]["type"] == "server_error"


async def test_upstream_stall_before_first_event_is_a_timeout(upstream: LoopbackServer) -> None:
    async def stall(req: Req, w: Writer) -> None:
        await asyncio.sleep(30)

    upstream.handler = stall
    async with app_client(config(upstream.url)) as c:
        t0 = time.monotonic()
        r = await post(c)
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        assert time.monotonic() - t0 < 5


async def test_upstream_stall_mid_stream_is_response_failed(upstream: LoopbackServer) -> None:
    async def stall_mid(req: Req, w: Writer) -> None:
        if not streamed(req):
            body = chat_completion("partial")
            await w.raw(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                        + body[:10])
            await asyncio.sleep(30)
            return
        await w.start_stream()
        await w.chunk(chat_chunks(["partial"])[0])
        await asyncio.sleep(30)

    upstream.handler = stall_mid
    async with app_client(config(upstream.url)) as c:
        t0 = time.monotonic()
        r = await post(c, stream=True)
        events, done = parse_sse(r.content)
        assert time.monotonic() - t0 < 5
        types = [e["type"] for e in events]
        assert types[-2:] == ["error", "response.failed"] and done
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        final = events[-1]["response"]
        assert final["status"] == "failed" and final["error"]["code"] == "upstream_timeout"
        assert final["output"][0]["content"][0]["text"] == "partial"  # the partial output is kept
        # in the background: the response ends failed, stored, with its partial output
        r = await post(c, background=True)
        final = await wait_done(c, r.json()["id"])
        assert final["status"] == "failed" and final["error"]["code"] == "upstream_timeout"
        assert final["output"][0]["content"][0]["text"] == "partial"
        # not streamed: the upstream's one JSON body stalls half sent, a spec-shaped 504
        r = await post(c)
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        assert time.monotonic() - t0 < 10


async def test_upstream_reset_mid_stream_is_response_failed(upstream: LoopbackServer) -> None:
    async def reset(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.chunk(chat_chunks(["partial"])[0])
        await asyncio.sleep(0.05)
        w.reset()

    upstream.handler = reset
    async with app_client(config(upstream.url)) as c:
        r = await post(c, stream=True)
        events, done = parse_sse(r.content)
        assert done and events[-1]["type"] == "response.failed"
        assert events[-2]["type"] == "error" and events[-2]["error"]["code"] == "upstream_error"
        r = await post(c)
        assert r.status_code == 502


async def test_upstream_error_event_mid_stream(upstream: LoopbackServer) -> None:
    async def garbage(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.chunk(chat_chunks(["ok"])[0])
        await w.chunk(b"data: {not json}\n\n")
        await w.end_stream()

    upstream.handler = garbage
    async with app_client(config(upstream.url)) as c:
        events, done = parse_sse((await post(c, stream=True)).content)
        assert done and events[-1]["type"] == "response.failed"


def test_disconnect_mid_stream_closes_upstream_within_one_second(tmp_path: Any, upstream: LoopbackServer) -> None:
    """A real server process: the client closes its stream; the upstream connection closes and
    the stored response is marked incomplete."""
    if True:
        async def slow(req: Req, w: Writer) -> None:
            await w.start_stream()
            chunks = chat_chunks([f"w{i} " for i in range(200)], done=True)
            for ch in chunks:
                await w.chunk(ch)
                await asyncio.sleep(0.05)
            await w.end_stream()

        upstream.handler = slow
        path = tmp_path / "server.toml"
        # Generous deadlines: on a loaded machine a 1 s idle deadline can end the upstream
        # call before the client walks away, which is not what this test is about.
        path.write_text(config(upstream.url).replace("first_event = 1.0, idle = 1.0", "first_event = 30.0, idle = 30.0"))
        server = ServeProcess(path)
        try:
            with httpx.Client(base_url=server.url, timeout=10) as c:
                rid = None
                with c.stream("POST", "/v1/responses", json={"model": "m", "input": "hi", "stream": True}) as r:
                    # The line iterator is held: leaving a `for` over a temporary generator closes it
                    # at once, and with it the connection, so the server could see the client go
                    # before the check below runs.
                    lines = r.iter_lines()
                    for line in lines:
                        if line.startswith("data: ") and rid is None:
                            rid = orjson.loads(line[6:])["response"]["id"]
                        if "output_text.delta" in line:
                            break
                    assert upstream.open_connections == 1 and upstream.active == 1, (upstream.opened, upstream.closed, upstream.active, upstream.disconnects, upstream.overtime, server.tail()[-1500:], [(q.method, q.path) for q in upstream.requests])
                    t0 = time.monotonic()
                # the client's connection is closed here
                assert upstream.wait_for(lambda: upstream.disconnects == 1 and upstream.active == 0, timeout=1.0)
                assert time.monotonic() - t0 < 1.0
                assert upstream.wait_for(lambda: upstream.open_connections == 0, timeout=1.0)
                end = time.monotonic() + 5
                stored: dict[str, Any] = {}
                while time.monotonic() < end:
                    stored = c.get(f"/v1/responses/{rid}").json()
                    if stored.get("status") != "in_progress":
                        break
                    time.sleep(0.05)
                assert stored["status"] == "incomplete"
                assert stored["incomplete_details"] == {"reason": "client_disconnected"}
                assert stored["output"][0]["content"][0]["text"].startswith("w0 ")
        finally:
            server.stop()



def test_disconnect_cancels_a_running_hosted_tool(tmp_path: Any) -> None:
    marker = tmp_path / "cancelled"
    path = tmp_path / "server.toml"
    path.write_text("""
[server]
store = "memory://"

[tools]
wait_forever = "tests.server.tools:wait_forever"

[[routes]]
match = "."
adapter = "tests.server.fakes:suite"
""")
    server = ServeProcess(path, env={"SERVER_TEST_CANCELLED": str(marker)})
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            rid = None
            with c.stream("POST", "/v1/responses", json={"model": "m", "input": "go", "stream": True}) as r:
                for line in r.iter_lines():
                    if line.startswith("data: ") and rid is None:
                        rid = orjson.loads(line[6:])["response"]["id"]
                    if "response.output_item.done" in line:  # the function_call is complete; the tool runs
                        break
            end = time.monotonic() + 2
            while not marker.exists() and time.monotonic() < end:
                time.sleep(0.02)
            assert marker.read_text() == "a"  # the example argument auto() makes for a string
            stored = c.get(f"/v1/responses/{rid}").json()
            assert stored["status"] == "incomplete"
    finally:
        server.stop()
