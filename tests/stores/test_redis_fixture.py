"""The Redis fixture: skips without redis-server, fails instead under ALLM_REQUIRE_LIVE=1, and
runs a private server that goes away when stopped."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.redis_server import RedisServer, require_redis_binary


def test_missing_binary_skips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("ALLM_REQUIRE_LIVE", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_redis_binary()


def test_missing_binary_fails_when_live_is_required(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("ALLM_REQUIRE_LIVE", "1")
    with pytest.raises(pytest.fail.Exception, match="ALLM_REQUIRE_LIVE=1"):
        require_redis_binary()


def test_private_server_without_persistence() -> None:
    server = RedisServer(require_redis_binary()).start()
    try:
        assert server.port != 6379
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"CONFIG GET save\r\nCONFIG GET appendonly\r\nCONFIG GET dir\r\n")
            reply = b""
            while reply.count(b"\r\n") < 15:
                reply += s.recv(4096)
        assert b"$4\r\nsave\r\n$0\r\n\r\n" in reply  # save ""
        assert b"appendonly\r\n$2\r\nno" in reply
        assert str(server.dir).encode() in reply
    finally:
        server.stop()
    assert not server.dir.exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass
