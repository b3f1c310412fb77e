"""A hooks factory a server config names (``[server] hooks = ["tests.server.hooks_example:hooks"]``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from allm.server import Hooks, ServerConfig

EVENTS: list[str] = []


def hooks(config: ServerConfig) -> Hooks:
    async def count(request: Request) -> Response:
        return PlainTextResponse(str(len(EVENTS)))

    def observe(run: Any, event: Any) -> None:
        EVENTS.append(event["type"])

    return Hooks(routes=[Route("/events-count", count)], observers=[observe])


def not_hooks(config: ServerConfig) -> str:
    return "nope"
