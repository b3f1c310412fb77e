"""Fixtures for the server's tests: an in-process app client and a real ``allm serve`` process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from allm.local import LocalServer, LocalServerError, free_port
from allm.server import ServerConfig, create_app, parse_config
from allm.stores import MemoryStore

ROOT = Path(__file__).resolve().parents[2]
RIG = ROOT.parent / "shared" / "conformance" / "openresponses" / "run"
if not RIG.exists():  # a worktree sits one level deeper than the main checkout
    for parent in ROOT.parents:
        if (parent / "shared" / "conformance" / "openresponses" / "run").exists():
            RIG = parent / "shared" / "conformance" / "openresponses" / "run"
            break

FAKE_CONFIG = """
[server]
store = "memory://"

[tools]
add = "tests.server.tools:add"

[[routes]]
match = "^thinker"
adapter = "tests.server.fakes:thinker"
models = ["thinker"]

[[routes]]
match = "^echo"
adapter = "tests.server.fakes:echo"

[[routes]]
match = "^hosted"
adapter = "tests.server.fakes:suite"
tools = ["add"]

[[routes]]
match = "."
adapter = "tests.server.fakes:suite"
tools = []
models = ["fake"]
"""


@contextlib.asynccontextmanager
async def app_client(config: ServerConfig | str, **kw: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in process (lifespan run)."""
    cfg = parse_config(config) if isinstance(config, str) else config
    app = create_app(cfg, store=kw.pop("store", None) or MemoryStore(), **kw)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(FAKE_CONFIG) as c:
        yield c


class ServeProcess:
    """``python -m allm serve`` on a free loopback port."""

    def __init__(self, config_path: Path | None, *, env: dict[str, str] | None = None, startup: float = 60.0,
                 extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "allm", "serve", "--port", str(self.port), *extra]
        if config_path is not None:
            args += ["--config", str(config_path)]
        self.log = config_path.with_suffix(".log") if config_path else Path(os.devnull)
        self._log = open(self.log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + startup
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"allm serve exited with {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"allm serve did not start: {self.tail()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self) -> str:
        try:
            return self.log.read_bytes()[-3000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A real ``allm serve`` process routed to the scripted Fakes of :data:`FAKE_CONFIG`."""
    path = tmp_path_factory.mktemp("serve") / "server.toml"
    path.write_text(FAKE_CONFIG)
    server = ServeProcess(path)
    try:
        yield server
    finally:
        server.stop()


def need_local_model() -> None:
    """Skip unless the local llama-server and SmolLM2 are installed (``allm serve`` with no
    config starts them); with ``ALLM_REQUIRE_LIVE=1`` their absence fails instead."""
    try:
        LocalServer()
    except LocalServerError as exc:
        if os.environ.get("ALLM_REQUIRE_LIVE") == "1":
            raise
        pytest.skip(f"local llama-server unavailable: {exc}")
