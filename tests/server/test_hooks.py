"""The app's extension seams (:class:`allm.server.Hooks`), each used as another module would."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route as HttpRoute
from starlette.types import ASGIApp, Receive, Scope, Send

import allm
from allm.server import Hooks

from .conftest import FAKE_CONFIG, app_client


def calculator(spec: Mapping[str, Any]) -> Sequence[allm.Tool]:
    """A tool type ``{"type": "calculator"}`` -> one hosted tool, run by the server."""

    def calc_add(args: Mapping[str, Any]) -> int:
        return int(args["a"]) + int(args["b"])

    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}
    return [allm.tool("calc_add", "add", schema, calc_add)]


def as_calc_items(item: Mapping[str, Any]) -> Mapping[str, Any]:
    if item.get("type") == "function_call" and item.get("name") == "calc_add":
        return {**item, "type": "calc_call"}
    return item


def read_calc_call(item: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    return [{**item, "type": "function_call"}]


class Stamp:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-stamp", b"1")]
            await send(message)

        await self.app(scope, receive, stamped)


async def test_every_hook() -> None:
    seen: list[tuple[str, str]] = []
    contexts: list[Any] = []
    started: list[str] = []

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(f"events {len(seen)}\n")

    def options(route: Any, params: Any, headers: Mapping[str, str]) -> Mapping[str, Any]:
        contexts.append(headers.get("traceparent"))
        return {"context": {"traceparent": headers.get("traceparent")}}

    async def on_start(app: Any) -> None:
        started.append("up")

    hooks = Hooks(
        middleware=[Middleware(Stamp)],
        routes=[HttpRoute("/metrics", metrics)],
        observers=[lambda run, ev: seen.append((run.id, ev["type"]))],
        tool_types={"calculator": calculator},
        chat_options=[options],
        item_rewriters=[as_calc_items],
        input_item_types={"calc_call": read_calc_call},
        on_startup=[on_start],
    )
    async with app_client(FAKE_CONFIG, hooks=hooks) as c:
        assert started == ["up"]
        r = await c.post("/v1/responses", json={"model": "fake", "input": "add", "tools": [{"type": "calculator"}]},
                         headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
        assert r.headers["x-stamp"] == "1"
        body = r.json()
        assert [o["type"] for o in body["output"]] == ["calc_call", "function_call_output", "message"]
        assert contexts == ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]
        assert (body["id"], "response.completed") in seen
        assert (await c.get("/metrics")).text == f"events {len(seen)}\n"
        # the rewritten item, sent back as input, is read as the standard one
        call = body["output"][0]
        nxt = await c.post("/v1/responses", json={"model": "echo", "input": [
            {"role": "user", "content": "again"}, call, body["output"][1], {"role": "user", "content": "more"}]})
        assert nxt.status_code == 200, nxt.text
        assert nxt.json()["output"][0]["content"][0]["text"] == "again | more"
        # an unknown tool type is still refused
        bad = await c.post("/v1/responses", json={"model": "fake", "input": "x", "tools": [{"type": "abacus"}]})
        assert bad.status_code == 400




async def test_hooks_named_in_the_config_are_merged() -> None:
    from . import hooks_example

    cfg = FAKE_CONFIG.replace('store = "memory://"', 'store = "memory://"\nhooks = ["tests.server.hooks_example:hooks"]')
    extra: list[str] = []
    async with app_client(cfg, hooks=Hooks(observers=[lambda run, ev: extra.append(ev["type"])])) as c:
        await c.post("/v1/responses", json={"model": "fake", "input": "hi"})
        assert (await c.get("/events-count")).text == str(len(hooks_example.EVENTS))
        assert hooks_example.EVENTS[-1] == "response.completed" and extra == hooks_example.EVENTS[-len(extra):]


def test_a_hooks_factory_must_return_hooks() -> None:
    import pytest

    from allm.server import ConfigError, create_app, parse_config
    from allm.stores import MemoryStore

    cfg = FAKE_CONFIG.replace('store = "memory://"', 'store = "memory://"\nhooks = ["tests.server.hooks_example:not_hooks"]')
    with pytest.raises(ConfigError) as info:
        create_app(parse_config(cfg), store=MemoryStore())
    assert info.value.key == "server.hooks"
