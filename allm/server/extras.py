"""The server's operational parts, plugged into :func:`allm.server.create_app` through its
:class:`~allm.server.app.Hooks`: Prometheus metrics and SERVER spans
(:mod:`allm.server.metrics`), the per-call ``context`` a route's middleware counts by
(:mod:`allm.server.stops`) and the ``mcp`` tool type (:mod:`allm.server.mcp_items`, when the
``mcp`` extra is installed)."""

from __future__ import annotations

from typing import Any

import attrs
from starlette.middleware import Middleware

from .config import ServerConfig

__all__ = ["with_extras"]


def with_extras(config: ServerConfig, hooks: Any) -> Any:
    """``hooks`` with the metrics middleware (innermost of the hooks' middleware, so a
    caller's own middleware wraps it) and the call context added."""
    from .metrics import instrument_app
    from .stops import call_context

    return attrs.evolve(
        hooks,
        middleware=(*hooks.middleware, Middleware(instrument_app, config=config)),
        chat_options=(call_context, *hooks.chat_options),
    )
