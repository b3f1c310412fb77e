"""Every store (memory, SQLite, Redis) against the interface of ``allm.stores.base``, each
method through its sync form and its async twin."""

from __future__ import annotations

import pytest

from allm.errors import StoreError
from allm.stores import Record, Store
from tests.stores.conftest import Api, Backend, Clock

NS = "sessions"


async def test_is_a_store(api: Api) -> None:
    assert isinstance(api.store, Store)


async def test_get_absent_is_none(api: Api) -> None:
    assert await api.get(NS, "nobody") is None


async def test_put_get_versions_and_time(api: Api, clock: Clock) -> None:
    assert await api.put(NS, "a", b"one") == 1
    assert await api.get(NS, "a") == Record(b"one", 1, clock.now)
    clock.now += 5.5
    assert await api.put(NS, "a", b"two") == 2
    assert await api.get(NS, "a") == Record(b"two", 2, clock.now)


async def test_values_are_bytes_exactly(api: Api) -> None:
    every_byte = bytes(range(256)) * 3
    big = bytes(range(256)) * 4096  # 1 MiB
    await api.put(NS, "all", every_byte)
    await api.put(NS, "empty", b"")
    await api.put(NS, "big", big)
    await api.put(NS, "ba", bytearray(b"\x00\xff"))
    await api.put(NS, "mv", memoryview(b"view"))
    assert (await api.get(NS, "all")).value == every_byte
    assert (await api.get(NS, "empty")).value == b""
    assert (await api.get(NS, "big")).value == big
    got = await api.get(NS, "ba")
    assert type(got.value) is bytes and got.value == b"\x00\xff"
    assert (await api.get(NS, "mv")).value == b"view"


async def test_create_only(api: Api) -> None:
    assert await api.put(NS, "k", b"first", expect=0) == 1
    with pytest.raises(StoreError) as exc:
        await api.put(NS, "k", b"second", expect=0)
    assert exc.value.reason == "version_conflict"
    assert "expected version 0, found 1" in str(exc.value) and "k" in str(exc.value)
    assert (await api.get(NS, "k")).value == b"first"
    assert (await api.get(NS, "k")).version == 1


async def test_expected_version(api: Api) -> None:
    await api.put(NS, "k", b"v1")
    assert await api.put(NS, "k", b"v2", expect=1) == 2
    for wrong in (1, 3, 0):
        with pytest.raises(StoreError) as exc:
            await api.put(NS, "k", b"lost", expect=wrong)
        assert exc.value.reason == "version_conflict"
        assert f"expected version {wrong}, found 2" in str(exc.value)
    assert await api.get(NS, "k") == Record(b"v2", 2, (await api.get(NS, "k")).updated_at)
    with pytest.raises(StoreError) as exc:
        await api.put(NS, "absent", b"x", expect=1)
    assert exc.value.reason == "version_conflict" and "found 0" in str(exc.value)
    assert await api.get(NS, "absent") is None


async def test_unconditional_put_after_conditional(api: Api) -> None:
    await api.put(NS, "k", b"a", expect=0)
    assert await api.put(NS, "k", b"b") == 2
    assert await api.put(NS, "k", b"c", expect=None) == 3


async def test_namespaces_and_separators_do_not_collide(api: Api) -> None:
    pairs = [("a", "b:c"), ("a:b", "c"), ("a:r", "b"), ("a", "r:b"), ("1:a", "x"), ("a", "1:a:r:x"), ("", ""), ("", "a")]
    for i, (ns, key) in enumerate(pairs):
        await api.put(ns, key, str(i).encode())
        await api.append(ns, key, [str(i).encode()])
    for i, (ns, key) in enumerate(pairs):
        assert (await api.get(ns, key)).value == str(i).encode()
        assert await api.read(ns, key) == [str(i).encode()]
    assert await api.keys("a") == sorted(["b:c", "r:b", "1:a:r:x"])
    assert await api.keys("") == ["", "a"]


async def test_unicode_names(api: Api) -> None:
    names = ["é", "日本", "\U0001f600", "a\x00b", "\uffff", "\U0010ffff", "\U0010ffffz"]
    for k in names:
        await api.put("ünï", k, k.encode())
    assert await api.keys("ünï") == sorted(names)
    assert await api.keys("ünï", prefix="\U0010ffff") == ["\U0010ffff", "\U0010ffffz"]
    assert await api.keys("ünï", prefix="a") == ["a\x00b"]
    for k in names:
        assert (await api.get("ünï", k)).value == k.encode()


async def test_keys_sorted_prefixed_and_only_records(api: Api) -> None:
    for k in ["b", "a", "ab", "abc", "b1", "c"]:
        await api.put(NS, k, b"")
    await api.put("other", "a-other", b"")
    await api.append(NS, "log-only", [b"x"])
    assert await api.keys(NS) == ["a", "ab", "abc", "b", "b1", "c"]
    assert await api.keys(NS, prefix="a") == ["a", "ab", "abc"]
    assert await api.keys(NS, prefix="ab") == ["ab", "abc"]
    assert await api.keys(NS, prefix="b") == ["b", "b1"]
    assert await api.keys(NS, prefix="z") == []
    assert await api.keys("empty") == []
    assert await api.keys("other") == ["a-other"]


async def test_delete(api: Api) -> None:
    await api.put(NS, "rec", b"x")
    await api.append(NS, "log", [b"1"])
    await api.put(NS, "both", b"x")
    await api.append(NS, "both", [b"1", b"2"])
    assert await api.delete(NS, "missing") is False
    for k in ("rec", "log", "both"):
        assert await api.delete(NS, k) is True
        assert await api.get(NS, k) is None
        assert await api.length(NS, k) == 0
        assert await api.read(NS, k) == []
        assert await api.delete(NS, k) is False
    assert await api.keys(NS) == []
    assert await api.put(NS, "both", b"new", expect=0) == 1
    assert await api.append(NS, "both", [b"again"]) == 1
    assert await api.read(NS, "both") == [b"again"]


async def test_logs(api: Api) -> None:
    assert await api.length(NS, "l") == 0
    assert await api.read(NS, "l") == []
    assert await api.append(NS, "l", [b"a"]) == 1
    assert await api.append(NS, "l", [b"b", b"c", b""]) == 4
    assert await api.append(NS, "l", []) == 4
    assert await api.append(NS, "l", (bytearray(b"e"), memoryview(b"f"))) == 6
    assert await api.length(NS, "l") == 6
    assert await api.read(NS, "l") == [b"a", b"b", b"c", b"", b"e", b"f"]
    assert await api.get(NS, "l") is None  # a log is not a record
    assert await api.append(NS, "empty", []) == 0
    assert await api.length(NS, "empty") == 0


RANGES = [
    (0, None), (0, 3), (2, 5), (4, 4), (5, 2), (6, None), (7, None), (100, 200), (0, 100),
    (-1, None), (-3, None), (-3, -1), (-100, None), (-100, 2), (1, -1), (0, -6), (0, -100),
    (-2, 0), (3, -3), (-6, 6), (2, None), (0, 0),
]  # fmt: skip


@pytest.mark.parametrize(("start", "stop"), RANGES)
async def test_read_ranges_follow_slicing(api: Api, start: int, stop: int | None) -> None:
    items = [bytes([i]) * (i + 1) for i in range(6)]
    await api.append(NS, "l", items)
    assert await api.read(NS, "l", start, stop) == items[start:stop]


async def test_read_default_stop(api: Api) -> None:
    await api.append(NS, "l", [b"0", b"1", b"2"])
    assert await api.read(NS, "l", 1) == [b"1", b"2"]
    assert await api.read(NS, "l", start=2) == [b"2"]


async def test_prune_by_age(api: Api, clock: Clock) -> None:
    for k in ("old", "mid", "new"):
        await api.put(NS, k, b"")
        await api.append(NS, k, [b"item"])
        clock.now += 100
    await api.put("other", "old", b"")  # another namespace is left alone
    # written at t0, t0+100, t0+200; now t0+300.
    assert await api.prune(NS, max_age=1000) == []
    assert await api.prune(NS, max_age=150) == ["mid", "old"]
    assert await api.keys(NS) == ["new"]
    assert await api.read(NS, "old") == [] and await api.read(NS, "mid") == []
    assert await api.read(NS, "new") == [b"item"]
    assert await api.keys("other") == ["old"]
    assert await api.prune(NS, max_age=100) == []  # exactly 100 s old is kept
    clock.now += 0.5
    assert await api.prune(NS, max_age=100) == ["new"]


async def test_prune_by_count_keeps_newest(api: Api, clock: Clock) -> None:
    for i, k in enumerate(["e", "d", "c", "b", "a"]):
        clock.now = 1000.0 + i
        await api.put(NS, k, b"")
        await api.append(NS, k, [b"x"])
    clock.now = 2000.0
    await api.put(NS, "e", b"rewritten")  # now the newest
    assert await api.prune(NS, max_count=10) == []
    assert await api.prune(NS, max_count=3) == ["c", "d"]
    assert await api.keys(NS) == ["a", "b", "e"]
    assert await api.length(NS, "c") == 0 and await api.length(NS, "a") == 1
    assert await api.prune(NS, max_count=0) == ["a", "b", "e"]
    assert await api.keys(NS) == []


async def test_prune_count_ties_keep_greatest_key(api: Api) -> None:
    for k in ["k1", "k3", "k2", "k0"]:
        await api.put(NS, k, b"")  # the clock does not move: all the same age
    assert await api.prune(NS, max_count=2) == ["k0", "k1"]
    assert await api.keys(NS) == ["k2", "k3"]


async def test_prune_by_age_and_count(api: Api, clock: Clock) -> None:
    for i in range(6):
        clock.now = 1000.0 + 10 * i
        await api.put(NS, f"k{i}", b"")
    clock.now = 1055.0  # ages 55, 45, 35, 25, 15, 5
    assert await api.prune(NS, max_age=30, max_count=2) == ["k0", "k1", "k2", "k3"]
    assert await api.prune(NS, max_age=1, max_count=5) == ["k4", "k5"]
    assert await api.prune(NS) == []


async def test_prune_leaves_logs_without_records(api: Api) -> None:
    await api.append(NS, "events", [b"1"])
    assert await api.prune(NS, max_count=0) == []
    assert await api.read(NS, "events") == [b"1"]


async def test_bad_arguments(api: Api) -> None:
    with pytest.raises(TypeError):
        await api.put(NS, "k", "text")
    with pytest.raises(TypeError):
        await api.put(NS, "k", 5)
    with pytest.raises(TypeError):
        await api.put(NS, 5, b"")
    with pytest.raises(TypeError):
        await api.get(None, "k")
    with pytest.raises(TypeError):
        await api.append(NS, "k", b"not a list")
    with pytest.raises(TypeError):
        await api.append(NS, "k", ["text"])
    with pytest.raises(ValueError):
        await api.put(NS, "k", b"", expect=-1)
    with pytest.raises(TypeError):
        await api.put(NS, "k", b"", expect="1")
    with pytest.raises(ValueError):
        await api.prune(NS, max_count=-1)
    with pytest.raises(ValueError):
        await api.prune(NS, max_age=-1.0)
    assert await api.get(NS, "k") is None and await api.length(NS, "k") == 0  # nothing written


async def test_closed_store(api: Api) -> None:
    await api.put(NS, "k", b"v")
    await api.close()
    await api.close()  # closing twice is fine
    calls = [
        api.get(NS, "k"), api.put(NS, "k", b"x"), api.put(NS, "k", b"x", expect=1), api.delete(NS, "k"),
        api.keys(NS), api.append(NS, "k", [b"x"]), api.read(NS, "k"), api.read(NS, "k", -1),
        api.length(NS, "k"), api.prune(NS, max_count=0),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(StoreError) as exc:
            await call
        assert exc.value.reason == "closed"


async def test_other_instance_sees_writes(shared_backend: Backend) -> None:
    one, two = shared_backend.open(), shared_backend.open()
    one.put(NS, "k", b"v")
    one.append(NS, "k", [b"e"])
    assert two.get(NS, "k").value == b"v"
    assert two.read(NS, "k") == [b"e"]
    two.put(NS, "k", b"w", expect=1)
    with pytest.raises(StoreError):
        one.put(NS, "k", b"x", expect=1)
    one.close()
    assert two.keys(NS) == ["k"]  # closing one instance leaves the other working
    assert await two.aget(NS, "k") == two.get(NS, "k")
    await two.aclose()


async def test_reopen_keeps_data(shared_backend: Backend) -> None:
    s = shared_backend.open()
    s.put(NS, "k", b"v")
    s.append(NS, "k", [b"1", b"2"])
    s.close()
    again = shared_backend.open()
    assert again.get(NS, "k").value == b"v"
    assert again.read(NS, "k") == [b"1", b"2"]
