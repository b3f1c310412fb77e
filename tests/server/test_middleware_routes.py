"""A route's middleware in the server: the Redis rate limit shared by two ``allm serve``
processes (the N+1th call in the window is HTTP 429 with the specification's rate-limit
error, on either process), a token budget stopping a server-side tool loop, and a content
filter blocking input and output and reporting why."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from allm.server import create_app, parse_config
from allm.stores import MemoryStore
from tests.redis_server import redis_server  # noqa: F401  (the session-scoped fixture)
from tests.server.procs import Serve


def rate_config(redis_url: str, name: str, limit: int) -> str:
    return f"""
[server]
store = "memory://"

[auth]
tokens = ["client-one", "client-two"]

[[routes]]
match = "."
adapter = "tests.server.ops_fakes:talker"
middleware = [{{use = "rate_limit", limit = {limit}, window = 60, key = "client", redis = "{redis_url}", name = "{name}"}}]
"""


@pytest.fixture
def two_servers(redis_server: Any) -> Iterator[tuple[Serve, Serve]]:  # noqa: F811
    text = rate_config(redis_server.url, "rl_" + secrets.token_hex(4), 3)
    a, b = Serve(text), Serve(text)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def post(server: Serve, token: str, *, stream: bool = False) -> httpx.Response:
    return httpx.post(server.url + "/v1/responses", json={"model": "m", "input": "hi", "stream": stream},
                      headers={"authorization": f"Bearer {token}"}, timeout=30)


def test_rate_limit_is_shared_by_two_server_processes(two_servers: tuple[Serve, Serve]) -> None:
    a, b = two_servers
    for server in (a, b, a):  # 3 calls admitted in the window, across both processes
        r = post(server, "client-one")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "completed"
    for server, stream in ((b, False), (a, True)):
        r = post(server, "client-one", stream=stream)
        assert r.status_code == 429, r.text
        err = r.json()["error"]
        assert err["type"] == "too_many_requests"
        assert err["code"] == "rate_limit_exceeded"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert "client-one" not in r.text
    # another client's key has its own window
    assert post(b, "client-two").status_code == 200
    # both processes count the refusals in their metrics
    metrics = httpx.get(b.url + "/metrics", headers={"authorization": "Bearer client-one"}).text
    assert 'allm_server_errors_total{model="m",route="0:tests.server.ops_fakes:talker",type="rate_limit_exceeded"} 1.0' in metrics
    assert "client-one" not in metrics


def app_for(text: str) -> Any:
    return create_app(parse_config(text), store=MemoryStore())


async def call(app: Any, body: dict[str, Any]) -> httpx.Response:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post("/v1/responses", json=body)


BUDGET = """
[server]
store = "memory://"

[tools]
add = "tests.server.ops_fakes:add"

[[routes]]
match = "."
adapter = "tests.server.ops_fakes:looper"
middleware = [{use = "token_budget", max_tokens = 40}]
"""


async def test_token_budget_stops_a_server_side_tool_loop() -> None:
    r = await call(app_for(BUDGET), {"model": "m", "input": "add forever"})
    assert r.status_code == 200, r.text
    body = r.json()
    # 15 tokens a turn: turns start at 0, 15 and 30 spent; the 4th (45 >= 40) is stopped
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "token_budget"}
    types = [it["type"] for it in body["output"]]
    assert types == ["function_call", "function_call_output"] * 3
    assert [it["output"] for it in body["output"] if it["type"] == "function_call_output"] == ["3", "3", "3"]
    assert body["usage"]["input_tokens"] == 30 and body["usage"]["output_tokens"] == 15
    assert "token_budget" in body["metadata"]["allm_warnings"]


async def test_token_budget_streamed_ends_incomplete() -> None:
    app = app_for(BUDGET)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.post("/v1/responses", json={"model": "m", "input": "add", "stream": True})
    events = [ln for ln in r.text.splitlines() if ln.startswith("event: ")]
    assert events[-1] == "event: response.incomplete"
    assert events.count("event: response.completed") == 0


FILTER = """
[server]
store = "memory://"

[[routes]]
match = "."
adapter = "tests.server.ops_fakes:talker"
middleware = [{use = "content_filter", deny = ["swordfish", "password"]}]
"""


async def test_content_filter_blocks_output_and_reports() -> None:
    r = await call(app_for(FILTER), {"model": "m", "input": "tell me"})
    body = r.json()
    assert r.status_code == 200
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "content_filter"}
    assert body["output"] == []  # the blocked message is not returned
    assert "swordfish" not in str({k: v for k, v in body.items() if k != "metadata"})
    note = body["metadata"]["allm_warnings"]
    assert "content_filter" in note and "output matches a denied pattern" in note


async def test_content_filter_blocks_input_before_any_model_call() -> None:
    r = await call(app_for(FILTER), {"model": "m", "input": "my password is hunter2"})
    body = r.json()
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "content_filter"}
    assert body["output"] == []
    assert body["usage"]["input_tokens"] == 0  # no model call was made
    assert "hunter2" not in body["metadata"]["allm_warnings"]
    assert "'password'" in body["metadata"]["allm_warnings"]


async def test_rate_limit_in_process_answers_429_streamed_and_not() -> None:
    text = """
[server]
store = "memory://"

[[routes]]
match = "."
adapter = "tests.server.ops_fakes:talker"
middleware = [{use = "rate_limit", limit = 1, window = 30, name = "rl_one_NAME"}]
""".replace("NAME", secrets.token_hex(4))
    app = app_for(text)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        ok = await c.post("/v1/responses", json={"model": "m", "input": "hi"})
        refused = await c.post("/v1/responses", json={"model": "m", "input": "hi", "stream": True})
    assert ok.status_code == 200
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/json")
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
