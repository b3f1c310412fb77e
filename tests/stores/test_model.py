"""Each store, driven by hypothesis through random sequences of operations (sync and async,
with a clock that moves in whole seconds), answers exactly as a plain model of the interface."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from allm.errors import StoreError
from allm.stores import MemoryStore, Record
from tests.stores.conftest import Clock

NAMESPACES = st.sampled_from(["a", "b:c"])
KEYS = st.sampled_from(["x", "y", "xy", "z:1", "é", ""])
PREFIXES = st.sampled_from(["", "x", "xy", "y", "z", "é", "q"])
VALUES = st.binary(max_size=12)
INDEX = st.none() | st.integers(-8, 8)


class Model:
    """The interface's semantics in a few lines."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.records: dict[tuple[str, str], Record] = {}
        self.logs: dict[tuple[str, str], list[bytes]] = {}

    def put(self, ns: str, key: str, value: bytes, expect: int | None) -> int | str:
        have = self.records[(ns, key)].version if (ns, key) in self.records else 0
        if expect is not None and expect != have:
            return "version_conflict"
        self.records[(ns, key)] = Record(value, have + 1, self.clock())
        return have + 1

    def delete(self, ns: str, key: str) -> bool:
        had = self.records.pop((ns, key), None) is not None
        return self.logs.pop((ns, key), None) is not None or had

    def keys(self, ns: str, prefix: str) -> list[str]:
        return sorted(k for n, k in self.records if n == ns and k.startswith(prefix))

    def append(self, ns: str, key: str, items: list[bytes]) -> int:
        if items:
            self.logs.setdefault((ns, key), []).extend(items)
        return len(self.logs.get((ns, key), []))

    def prune(self, ns: str, max_age: int | None, max_count: int | None) -> list[str]:
        newest_first = sorted(((r.updated_at, k) for (n, k), r in self.records.items() if n == ns), reverse=True)
        drop = [
            k
            for i, (at, k) in enumerate(newest_first)
            if (max_age is not None and at < self.clock() - max_age) or (max_count is not None and i >= max_count)
        ]
        for k in drop:
            self.delete(ns, k)
        return sorted(drop)


def machine(open_store: Callable[[Clock], tuple[Any, Callable[[], None]]]) -> type[RuleBasedStateMachine]:
    class StoreMachine(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            self.clock = Clock()
            self.model = Model(self.clock)
            self.store, self.cleanup = open_store(self.clock)
            self.loop = asyncio.new_event_loop()

        def call(self, use_async: bool, name: str, *args: Any, **kwargs: Any) -> Any:
            if use_async:
                return self.loop.run_until_complete(getattr(self.store, "a" + name)(*args, **kwargs))
            return getattr(self.store, name)(*args, **kwargs)

        @rule(seconds=st.sampled_from([0, 0, 1, 2, 5]))
        def tick(self, seconds: int) -> None:
            self.clock.now += seconds

        @rule(use_async=st.booleans(), ns=NAMESPACES, key=KEYS, value=VALUES, how=st.sampled_from(
            ["any", "create", "current", "next", "stale"]))  # fmt: skip
        def put(self, use_async: bool, ns: str, key: str, value: bytes, how: str) -> None:
            record = self.model.records.get((ns, key))
            have = record.version if record else 0
            expect = {"any": None, "create": 0, "current": have, "next": have + 1, "stale": max(have - 1, 0)}[how]
            want = self.model.put(ns, key, value, expect)
            try:
                got: int | str = self.call(use_async, "put", ns, key, value, expect=expect)
            except StoreError as exc:
                got = exc.reason
            assert got == want

        @rule(use_async=st.booleans(), ns=NAMESPACES, key=KEYS)
        def get(self, use_async: bool, ns: str, key: str) -> None:
            assert self.call(use_async, "get", ns, key) == self.model.records.get((ns, key))

        @rule(use_async=st.booleans(), ns=NAMESPACES, key=KEYS)
        def delete(self, use_async: bool, ns: str, key: str) -> None:
            assert self.call(use_async, "delete", ns, key) == self.model.delete(ns, key)

        @rule(use_async=st.booleans(), ns=NAMESPACES, prefix=PREFIXES)
        def keys(self, use_async: bool, ns: str, prefix: str) -> None:
            assert self.call(use_async, "keys", ns, prefix=prefix) == self.model.keys(ns, prefix)

        @rule(use_async=st.booleans(), ns=NAMESPACES, key=KEYS, items=st.lists(VALUES, max_size=4))
        def append(self, use_async: bool, ns: str, key: str, items: list[bytes]) -> None:
            assert self.call(use_async, "append", ns, key, items) == self.model.append(ns, key, items)

        @rule(use_async=st.booleans(), ns=NAMESPACES, key=KEYS, start=st.integers(-8, 8), stop=INDEX)
        def read(self, use_async: bool, ns: str, key: str, start: int, stop: int | None) -> None:
            want = self.model.logs.get((ns, key), [])[start:stop]
            assert self.call(use_async, "read", ns, key, start, stop) == want

        @precondition(lambda self: bool(self.model.logs))
        @rule(use_async=st.booleans(), data=st.data(), start=st.integers(-8, 8), stop=INDEX)
        def read_a_log(self, use_async: bool, data: st.DataObject, start: int, stop: int | None) -> None:
            ns, key = data.draw(st.sampled_from(sorted(self.model.logs)))
            want = self.model.logs[(ns, key)][start:stop]
            assert self.call(use_async, "read", ns, key, start, stop) == want

        @rule(use_async=st.booleans(), ns=NAMESPACES, key=KEYS)
        def length(self, use_async: bool, ns: str, key: str) -> None:
            assert self.call(use_async, "length", ns, key) == len(self.model.logs.get((ns, key), []))

        @rule(use_async=st.booleans(), ns=NAMESPACES, max_age=st.none() | st.sampled_from([0, 1, 3, 1000]),
              max_count=st.none() | st.integers(0, 4))  # fmt: skip
        def prune(self, use_async: bool, ns: str, max_age: int | None, max_count: int | None) -> None:
            want = self.model.prune(ns, max_age, max_count)
            assert self.call(use_async, "prune", ns, max_age=max_age, max_count=max_count) == want

        def teardown(self) -> None:
            if hasattr(self, "store"):
                self.loop.run_until_complete(self.store.aclose())
                self.loop.close()
                self.cleanup()

    return StoreMachine


SETTINGS = settings(
    max_examples=100, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_memory_store_matches_the_model() -> None:
    run_state_machine_as_test(machine(lambda clock: (MemoryStore(clock=clock), lambda: None)), settings=SETTINGS)


def test_sqlite_store_matches_the_model() -> None:
    from allm.stores import SQLiteStore

    def open_store(clock: Clock) -> tuple[Any, Callable[[], None]]:
        folder = tempfile.mkdtemp(prefix="allm-model-")
        return SQLiteStore(f"{folder}/m.db", clock=clock), lambda: shutil.rmtree(folder, ignore_errors=True)

    run_state_machine_as_test(machine(open_store), settings=SETTINGS)


def test_redis_store_matches_the_model(request: pytest.FixtureRequest) -> None:
    from allm.stores import RedisStore

    url = request.getfixturevalue("redis_server").url

    def open_store(clock: Clock) -> tuple[Any, Callable[[], None]]:
        return RedisStore(url, prefix=f"m{uuid.uuid4().hex[:10]}:", clock=clock), lambda: None

    run_state_machine_as_test(machine(open_store), settings=SETTINGS)
