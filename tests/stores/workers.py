"""Code the concurrency and durability tests run in other threads and processes."""

from __future__ import annotations

import sys
from typing import Any

from allm.errors import StoreError

NS = "counters"
KEY = "n"


def open_store(kind: str, target: str, prefix: str) -> Any:
    """A store over shared data: an SQLite file, or a Redis URL and key prefix."""
    if kind == "sqlite":
        from allm.stores import SQLiteStore

        return SQLiteStore(target)
    if kind == "redis":
        from allm.stores import RedisStore

        return RedisStore(target, prefix=prefix)
    raise ValueError(kind)


def increment(store: Any) -> bool:
    """One read-modify-write of the counter under ``expect=``: whether it was applied."""
    record = store.get(NS, KEY)
    try:
        store.put(NS, KEY, str(int(record.value) + 1).encode(), expect=record.version)
    except StoreError as exc:
        if exc.reason != "version_conflict":
            raise
        return False
    return True


def free_running(store: Any, attempts: int) -> tuple[int, int]:
    """``attempts`` increments as fast as they go: (applied, conflicts)."""
    applied = sum(increment(store) for _ in range(attempts))
    return applied, attempts - applied


def in_lockstep(store: Any, rounds: int, barrier: Any) -> tuple[int, int]:
    """Rounds in which every worker reads the same version, then all write at once."""
    applied = 0
    for _ in range(rounds):
        record = store.get(NS, KEY)
        barrier.wait()
        try:
            store.put(NS, KEY, str(int(record.value) + 1).encode(), expect=record.version)
            applied += 1
        except StoreError as exc:
            if exc.reason != "version_conflict":
                raise
        barrier.wait()
    return applied, rounds - applied


def process_main(kind: str, target: str, prefix: str, attempts: int, rounds: int, barrier: Any, out: Any) -> None:
    """A worker process: lockstep rounds, then free-running increments; puts its counts on ``out``."""
    store = open_store(kind, target, prefix)
    try:
        lock = in_lockstep(store, rounds, barrier)
        free = free_running(store, attempts)
        out.put((lock, free))
    finally:
        store.close()


def durability_writer(path: str, synchronous: str) -> None:
    """Writes records and log items forever, printing ``i`` after the writes of step ``i``
    returned (the test kills this process with SIGKILL)."""
    from allm.stores import SQLiteStore

    store = SQLiteStore(path, synchronous=synchronous)
    i = 0
    while True:
        store.put("durable", f"k{i}", f"value {i}".encode())
        store.append("durable", "log", [f"item {i}".encode()])
        print(i, flush=True)
        i += 1


if __name__ == "__main__":
    durability_writer(sys.argv[1], sys.argv[2])
