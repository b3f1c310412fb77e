"""open_store: each scheme, the URLs it refuses, and that importing allm.stores loads
neither sqlite3 nor redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from allm.errors import StoreError
from allm.stores import MemoryStore, RedisStore, SQLiteStore, open_store
from tests.redis_server import RedisServer
from tests.stores.conftest import run_python


def test_each_scheme(tmp_path: Path, redis_server: RedisServer) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store("MEMORY://"), MemoryStore)
    sqlite = open_store(f"sqlite://{tmp_path}/s.db")
    assert isinstance(sqlite, SQLiteStore)
    redis = open_store(redis_server.url)
    assert isinstance(redis, RedisStore) and redis.prefix == "allm:"
    for store in (sqlite, redis):
        store.put("open", "k", b"v")
        assert store.get("open", "k").value == b"v"
        store.delete("open", "k")
        store.close()


def test_rediss_url_is_accepted_without_connecting() -> None:
    store = open_store("rediss://user:pw-123456@cache.example:6380/2?ssl_cert_reqs=none")
    assert isinstance(store, RedisStore)
    assert repr(store) == "RedisStore('rediss://user:***@cache.example:6380/2?ssl_cert_reqs=none', prefix='allm:')"
    store.close()


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("postgres://db/x", "unknown store scheme 'postgres'"),
        ("nothing", "not a store URL"),
        ("://x", "not a store URL"),
        ("", "not a store URL"),
        ("memory://somewhere", "memory:// takes no host"),
        ("sqlite://", "no database file"),
        ("sqlite://?synchronous=full", "no database file"),
        ("sqlite://:memory:", "use memory://"),
        ("sqlite:///tmp/x.db?journal=delete", "unknown SQLite option 'journal'"),
        ("sqlite:///tmp/x.db?synchronous=off", "normal or full"),
        ("sqlite:///tmp/x.db?timeout=soon", "number of seconds"),
        ("sqlite:///tmp/x.db?timeout", "unknown SQLite option 'timeout'"),
        ("redis://host:port/0", "malformed"),
        ("ftp://user:hunter2-secret@host/x", "unknown store scheme 'ftp'"),
    ],
)
def test_refused_urls(url: str, needle: str) -> None:
    with pytest.raises(StoreError) as exc:
        open_store(url)
    assert exc.value.reason == "invalid_url"
    assert needle in str(exc.value)
    assert "hunter2" not in str(exc.value)


def test_not_a_string() -> None:
    with pytest.raises(TypeError):
        open_store(Path("/tmp/x.db"))  # type: ignore[arg-type]


def test_import_is_lazy() -> None:
    code = (
        "import sys, allm, allm.stores\n"
        "from allm.stores import open_store, MemoryStore\n"
        "open_store('memory://')\n"
        "assert 'sqlite3' not in sys.modules and 'redis' not in sys.modules, 'eager'\n"
        "from allm.stores import SQLiteStore\n"
        "assert 'sqlite3' in sys.modules and 'redis' not in sys.modules\n"
        "import allm.stores as s; s.RedisStore\n"
        "assert 'redis' in sys.modules\n"
        "try:\n    s.NoSuchStore\nexcept AttributeError:\n    print('ok')\n"
    )
    out = run_python("-c", code)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
