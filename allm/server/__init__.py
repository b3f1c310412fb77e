"""``allm serve``: an Open Responses server on allm's engine (the ``server`` extra).

::

    from allm.server import ServerConfig, Route, create_app

    app = create_app(ServerConfig(routes=(Route(match=".", provider="fake"),), store="memory://"))
    # uvicorn.run(app) -- or: allm serve --config server.toml

- :mod:`allm.server.config`: the TOML configuration (:func:`load_config`, :class:`ServerConfig`,
  :class:`Route`, :class:`ConfigError`).
- :mod:`allm.server.translate`: the pure mapping (input items -> Thread, allm events ->
  Open Responses events, the response object, errors).
- :mod:`allm.server.service`: routes, running responses, the store.
- :mod:`allm.server.app`: :func:`create_app` (Starlette) and its :class:`Hooks`.

See ``guides/server.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from .config import ConfigError, Route, ServerConfig, load_config, parse_config

if TYPE_CHECKING:
    from .app import Hooks, create_app
    from .service import Responses, Run

__getattr__, __dir__ = lazy_attributes(
    __name__, globals(), {"Hooks": ".app", "create_app": ".app", "Responses": ".service", "Run": ".service"}
)

__all__ = ["ConfigError", "Hooks", "Responses", "Route", "Run", "ServerConfig", "create_app", "load_config", "parse_config"]
