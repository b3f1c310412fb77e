"""A private ``redis-server`` for tests: Debian's binary on a free loopback port, no
persistence (``--save "" --appendonly no``), working directory in a temporary folder,
stopped at the end. It never connects to or changes a Redis it did not start.

Use the fixture from any test folder's conftest::

    from tests.redis_server import redis_server  # noqa: F401  (a session-scoped fixture)

    def test_x(redis_server):
        url = redis_server.url          # "redis://127.0.0.1:<port>/0"

It skips when ``redis-server`` is not installed, and fails instead when
``ALLM_REQUIRE_LIVE=1`` (CI installs it: see ``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_server", "require_redis_binary"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_redis_binary() -> str:
    """The path of ``redis-server``; skips the test when it is missing, or fails it when
    ``ALLM_REQUIRE_LIVE=1``."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("ALLM_REQUIRE_LIVE") == "1":
            pytest.fail(message + "; ALLM_REQUIRE_LIVE=1 requires it")
        pytest.skip(message)
    return path


class RedisServer:
    """One ``redis-server`` process. ``start()`` waits until it answers ``PING``; ``stop()``
    shuts it down and removes its folder. ``extra`` adds server arguments (``["--requirepass",
    "x"]``)."""

    def __init__(self, binary: str, extra: Sequence[str] = ()) -> None:
        self.binary = binary
        self.extra = list(extra)
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="allm-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError:
            return False
        # "+PONG" without a password; "-NOAUTH" when one is required: both are our server.
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def start(self, timeout: float = 30.0) -> RedisServer:
        for _ in range(5):  # the free port can be taken between our check and the bind
            self.port = _free_port()
            log = self.dir / "redis.log"
            cmd = [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no",
                "--logfile", str(log), *self.extra,
            ]  # fmt: skip
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._ping():
                    return self
                time.sleep(0.02)
            self._kill()
        text = (self.dir / "redis.log").read_text() if (self.dir / "redis.log").exists() else ""
        raise RuntimeError(f"redis-server did not start: {text[-2000:]}")

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole test session (see the module docstring)."""
    server = RedisServer(require_redis_binary()).start()
    try:
        yield server
    finally:
        server.stop()
