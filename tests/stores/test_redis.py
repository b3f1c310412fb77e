"""RedisStore beyond the shared interface: its key layout, failures (server gone, refused
password, keys written by something else), URLs, event loops, and that it never scans the
keyspace. Each test that stops or configures a server starts its own."""

from __future__ import annotations

import asyncio
import gc
import socket
import subprocess
from collections.abc import Iterator

import pytest
import redis

from allm.errors import StoreError
from allm.stores import RedisStore, open_store
from tests.redis_server import RedisServer, require_redis_binary
from tests.stores.conftest import run_python

PASSWORD = "s3cret-pass-9f7a1c"


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    server = RedisServer(require_redis_binary()).start()
    yield server
    server.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def _raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def test_layout_is_documented_one(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix="layout:")
    store.put("ns:x", "k", b"v")
    store.append("ns:x", "k", [b"1"])
    raw = _raw(redis_server.url)
    rec = raw.hgetall("layout:4:ns:x:r:k")
    assert rec[b"v"] == b"v" and rec[b"n"] == b"1" and float(rec[b"t"]) == store.get("ns:x", "k").updated_at
    assert raw.lrange("layout:4:ns:x:l:k", 0, -1) == [b"1"]
    assert raw.zrange("layout:4:ns:x:k", 0, -1) == [b"k"]
    assert raw.zscore("layout:4:ns:x:t", "k") == store.get("ns:x", "k").updated_at
    assert store.prune("ns:x", max_count=0) == ["k"]
    assert sorted(raw.keys("layout:*")) == []  # the indexes empty out (Redis drops empty sets)
    store.close()
    raw.close()


def test_never_scans_the_keyspace(own_server: RedisServer) -> None:
    store = RedisStore(own_server.url)
    for i in range(50):
        store.put("ns", f"k{i:02}", b"v")
        store.append("ns", f"k{i:02}", [b"e"])
    assert len(store.keys("ns")) == 50 and store.keys("ns", prefix="k4") == [f"k4{i}" for i in range(10)]
    assert len(store.prune("ns", max_count=10)) == 40
    store.delete("ns", "k45")
    raw = _raw(own_server.url)
    stats = raw.info("commandstats")
    assert not [name for name in stats if name.split("_", 1)[1] in ("keys", "scan")], stats
    assert "cmdstat_zrangebylex" in stats and "cmdstat_evalsha" in stats
    raw.close()
    store.close()


def test_prefixes_share_nothing(redis_server: RedisServer) -> None:
    one = RedisStore(redis_server.url, prefix="one:")
    two = open_store(redis_server.url + "?prefix=two:")
    assert isinstance(two, RedisStore) and two.prefix == "two:"
    one.put("ns", "k", b"1")
    assert two.get("ns", "k") is None and two.keys("ns") == []
    assert two.prune("ns", max_count=0) == [] and one.keys("ns") == ["k"]
    one.close()
    two.close()


async def test_unavailable_server() -> None:
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    store = RedisStore(url, connect_timeout=2)
    with pytest.raises(StoreError) as exc:
        store.put("ns", "k", b"v")
    assert exc.value.reason == "unavailable" and "127.0.0.1" in str(exc.value)
    for call in (store.aget("ns", "k"), store.aput("ns", "k", b"v"), store.akeys("ns"), store.aread("ns", "k")):
        with pytest.raises(StoreError) as exc:
            await call
        assert exc.value.reason == "unavailable"
    await store.aclose()


async def test_server_going_away_then_back(own_server: RedisServer) -> None:
    store = RedisStore(own_server.url, connect_timeout=2)
    store.put("ns", "k", b"v")
    assert await store.aget("ns", "k") is not None
    port = own_server.port
    own_server.stop()
    for sync_call in (lambda: store.get("ns", "k"), lambda: store.append("ns", "k", [b"x"])):
        with pytest.raises(StoreError) as exc:
            sync_call()
        assert exc.value.reason == "unavailable"
    with pytest.raises(StoreError) as exc:
        await store.aput("ns", "k", b"w")
    assert exc.value.reason == "unavailable"
    # A server back on the same port (empty: no persistence): the same store reconnects.
    again = RedisServer(own_server.binary)
    again.port = port
    cmd = [again.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(again.dir)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        for _ in range(500):
            if again._ping():
                break
            await asyncio.sleep(0.02)
        assert store.get("ns", "k") is None
        assert store.put("ns", "k", b"new") == 1
        assert (await store.aget("ns", "k")).value == b"new"
    finally:
        await store.aclose()
        proc.terminate()
        proc.wait(10)
        again.stop()


async def test_password_is_used_and_never_shown() -> None:
    server = RedisServer(require_redis_binary(), ["--requirepass", PASSWORD]).start()
    try:
        good = open_store(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0")
        good.put("ns", "k", b"v")
        assert good.get("ns", "k").value == b"v"
        assert PASSWORD not in repr(good)
        good.close()
        for url in (f"redis://:wrong-{PASSWORD}@127.0.0.1:{server.port}/0", f"redis://127.0.0.1:{server.port}/0"):
            bad = open_store(url)
            assert PASSWORD not in repr(bad)
            with pytest.raises(StoreError) as exc:
                bad.put("ns", "k", b"v")
            assert exc.value.reason == "unavailable"
            assert PASSWORD not in str(exc.value) and PASSWORD not in repr(exc.value)
            with pytest.raises(StoreError) as exc:
                await bad.aget("ns", "k")
            assert exc.value.reason == "unavailable" and PASSWORD not in str(exc.value)
            await bad.aclose()
    finally:
        server.stop()


def test_keys_written_by_something_else_are_corrupt(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix="alien:")
    raw = _raw(redis_server.url)
    raw.set("alien:2:ns:r:str", b"plain string")
    raw.hset("alien:2:ns:r:bad", mapping={"v": b"x", "n": b"not a number", "t": b"1"})
    raw.set("alien:2:ns:l:str", b"plain string")
    for call in (lambda: store.get("ns", "str"), lambda: store.put("ns", "str", b"v"),
                 lambda: store.get("ns", "bad"), lambda: store.append("ns", "str", [b"x"])):  # fmt: skip
        with pytest.raises(StoreError) as exc:
            call()
        assert exc.value.reason == "corrupt"
    raw.close()
    store.close()


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("redis://127.0.0.1:notaport/0", "malformed"),
        ("redis://127.0.0.1:99999/0", "malformed"),
        ("redis://127.0.0.1:0/0", "port 0"),
        ("redis://127.0.0.1:6379/zero", "number"),
        ("redis://127.0.0.1:6379/0?colour=blue", "unknown option 'colour'"),
        ("redis:///0", "no host"),
        (f"redis://:{PASSWORD}@127.0.0.1:6379/x", "number"),
        ("redis://127.0.0.1:6379/0?socket_timeout=soon", "socket_timeout"),
    ],
)
def test_invalid_urls(url: str, needle: str) -> None:
    with pytest.raises(StoreError) as exc:
        open_store(url)
    assert exc.value.reason == "invalid_url" and needle in str(exc.value)
    assert PASSWORD not in str(exc.value)
    with pytest.raises(StoreError):
        RedisStore(url)


def test_url_options_reach_redis_py(redis_server: RedisServer) -> None:
    store = open_store(redis_server.url + "?socket_timeout=7&client_name=allm-test")
    assert isinstance(store, RedisStore)
    store.put("ns", "k", b"v")
    kwargs = store._sync.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 7.0 and kwargs["client_name"] == "allm-test"
    store.close()


# The first loop ends without aclose(): its connections are dropped (their sockets close when
# collected, with a ResourceWarning), as the RedisStore docstring says.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_async_twins_across_event_loops(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix="loops:")

    async def bump() -> int:
        record = await store.aget("ns", "n")
        return await store.aput("ns", "n", b"x", expect=record.version if record else 0)

    assert asyncio.run(bump()) == 1
    assert asyncio.run(bump()) == 2  # a second loop gets its own connections
    store.close()
    gc.collect()


async def test_sync_close_inside_a_loop(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix="close:")
    await store.aput("ns", "k", b"v")
    store.close()  # schedules this loop's client to close
    with pytest.raises(StoreError) as exc:
        await store.aget("ns", "k")
    assert exc.value.reason == "closed"
    await store.aclose()  # waits for it


def test_missing_redis_package_says_how_to_install() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import allm.stores\n"
        "try:\n    allm.stores.open_store('redis://127.0.0.1:6379/0')\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = run_python("-c", code)
    assert "pip install 'allm[redis]'" in out.stdout, out.stderr
