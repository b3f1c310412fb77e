"""The server's operational parts, plugged into :func:`allm.server.create_app` through its
:class:`~allm.server.app.Hooks` and two service seams: Prometheus metrics and SERVER spans
(:mod:`allm.server.metrics`), the per-call ``context`` a route's middleware counts by
(:mod:`allm.server.stops`) and the ``mcp`` tool type (:mod:`allm.server.mcp_items`, when the
``mcp`` extra is installed)."""

from __future__ import annotations

import importlib.util
from typing import Any

import attrs
from starlette.middleware import Middleware

from .config import ServerConfig

__all__ = ["install", "with_extras"]


def with_extras(config: ServerConfig, hooks: Any) -> Any:
    """``hooks`` with the metrics middleware (innermost of the hooks' middleware, so a
    caller's own middleware wraps it; ``GET /metrics`` unless the hooks route it themselves),
    the call context and, with the ``mcp`` extra and no
    ``mcp`` translator of the caller's, the ``mcp`` tool type (its client closed on shutdown)."""
    from .metrics import ServerMetrics, instrument_app, route_labeller
    from .stops import call_context

    own = any(getattr(r, "path", None) == "/metrics" for r in hooks.routes)  # a /metrics of the caller's wins
    metrics = ServerMetrics(route_of=route_labeller(config))
    changes: dict[str, Any] = {
        "middleware": (*hooks.middleware, Middleware(instrument_app, config=config, metrics=metrics, serve=not own)),
        "observers": (*hooks.observers, metrics.observe_socket),  # WebSocket turns: not seen by the middleware
        "chat_options": (call_context, *hooks.chat_options),
    }
    if "mcp" not in hooks.tool_types and (config.mcp or importlib.util.find_spec("mcp") is not None):
        from .mcp_items import McpTools, servers_from_config

        tools = McpTools(servers_from_config(config.mcp))
        changes["tool_types"] = {**hooks.tool_types, "mcp": tools.translate}
        changes["on_shutdown"] = (*hooks.on_shutdown, tools.aclose)
    return attrs.evolve(hooks, **changes)


def install(service: Any, hooks: Any) -> None:
    """Give ``service`` the ``mcp`` tool type's input step and event mapper (when
    :func:`with_extras` added it)."""
    from .mcp_items import McpTools

    owner = getattr(hooks.tool_types.get("mcp"), "__self__", None)
    if isinstance(owner, McpTools):
        service.prepare_input.append(owner.prepare)
        service.mapper_factory = owner.mapper
