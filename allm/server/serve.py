"""``allm serve``: run the Open Responses app under uvicorn.

With a config file its routes are served; with none, the embedded default starts the
local SmolLM2 ``llama-server`` (:class:`allm.local.LocalServer`) and routes every model to
it (greedy sampling), with responses stored in SQLite under the data directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from typing import Any

from .config import ConfigError, Route, ServerConfig, load_config

__all__ = ["app_from_env", "http_protocol", "local_config", "serve", "shared_metrics"]

_ENV_CONFIG = "ALLM_SERVE_CONFIG"
_ENV_LOCAL = "ALLM_SERVE_LOCAL_BASE_URL"


#: SmolLM2-135M answers short questions sensibly only with a brief system prompt.
LOCAL_INSTRUCTIONS = "You are a helpful assistant. Be brief."


def local_config(base_url: str) -> ServerConfig:
    """Every model to the local llama-server at ``base_url`` (model ``smollm2``, temperature 0,
    :data:`LOCAL_INSTRUCTIONS` when a request gives none)."""
    return ServerConfig(routes=(Route(match=".*", provider="local", base_url=base_url, model="smollm2",
                                      models=("smollm2",), defaults={"temperature": 0.0},
                                      instructions=LOCAL_INSTRUCTIONS),))


def _config_from_env() -> ServerConfig:
    path = os.environ.get(_ENV_CONFIG)
    if path:
        return load_config(path)
    base = os.environ.get(_ENV_LOCAL)
    if base:
        return local_config(base)
    raise ConfigError(f"neither {_ENV_CONFIG} nor {_ENV_LOCAL} is set")


def app_from_env() -> Any:
    """The app for uvicorn's worker processes (``--workers N``): the config named by the environment."""
    from .app import create_app

    app = create_app(_config_from_env())
    _freeze_heap()
    return app


def serve(config_path: str | None = None, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info") -> int:
    """Serve until interrupted; the exit status. Raises :class:`ConfigError` for a bad config
    (or auth missing on a non-loopback ``host``), :class:`allm.local.LocalServerError` when the
    default local model cannot start."""
    import uvicorn

    from ..local import LocalServer

    local: LocalServer | None = None
    env = {}
    if config_path:
        config = load_config(config_path)
        env[_ENV_CONFIG] = os.path.abspath(config_path)
    else:
        local = LocalServer().start()
        config = local_config(local.base_url)
        env[_ENV_LOCAL] = local.base_url
    config.check_bind(host)
    _log_to_stderr(log_level)
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; exiting through SystemExit
    # lets the finally below stop the local llama-server instead of orphaning it.
    previous = {sig: signal.signal(sig, _exit) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if workers > 1:
            os.environ.update(env)
            with shared_metrics():
                uvicorn.run("allm.server.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                            log_level=log_level, access_log=config.access_log, http=http_protocol())
        else:
            from .app import create_app

            app = create_app(config)
            _freeze_heap()
            uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=config.access_log,
                        http=http_protocol())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if local is not None:
            local.stop()
    return 0


@contextlib.contextmanager
def shared_metrics() -> Iterator[str]:
    """The directory the worker processes started inside keep their Prometheus counts in
    (``PROMETHEUS_MULTIPROC_DIR``, see :mod:`allm.server.metrics`), so any worker's ``/metrics``
    reports them all. The environment's own directory when it names one (left as it is:
    clearing it between runs is its owner's business); else a new temporary directory,
    removed, and the variable unset, on exit."""
    from .metrics import MULTIPROC_ENV

    given = os.environ.get(MULTIPROC_ENV)
    if given:
        yield given
        return
    path = tempfile.mkdtemp(prefix="allm-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def http_protocol() -> Any:
    """The HTTP/1.1 protocol uvicorn serves with: with httptools installed,
    :class:`allm.server._protocol.HttpProtocol` (each response's head and first body bytes in
    one socket write); without it, uvicorn's own choice (``"auto"``)."""
    try:
        from ._protocol import HttpProtocol
    except ImportError:
        return "auto"
    return HttpProtocol


def _freeze_heap() -> None:
    """Move what start-up made (modules, the app, its engines) out of the collector's reach:
    the full collections that run while serving then walk only what requests allocate, which
    keeps their pauses out of the tail latency."""
    import gc

    gc.collect()
    gc.freeze()


def _log_to_stderr(level: str) -> None:
    """The ``allm.server`` log (dropped settings, failed responses) beside uvicorn's."""
    import logging

    logger = logging.getLogger("allm.server")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     allm.server: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level.upper())


def _exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)
