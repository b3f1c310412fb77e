"""Conditional increments on one key from 8 threads and from 4 processes: every applied write
is counted in the result, every refused one is reported as a conflict, no update is lost."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading

import pytest

from allm.errors import StoreError
from tests.stores.conftest import Backend
from tests.stores.workers import KEY, NS, free_running, in_lockstep, process_main

THREADS = 8
PROCESSES = 4


def _check_counter(store: object, applied: int) -> None:
    record = store.get(NS, KEY)  # type: ignore[attr-defined]
    assert int(record.value) == applied
    assert record.version == applied + 1  # the create was version 1


def test_threads(backend: Backend) -> None:
    store = backend.open()  # one store object shared by every thread
    store.put(NS, KEY, b"0", expect=0)
    barrier = threading.Barrier(THREADS)
    results: list[tuple[tuple[int, int], tuple[int, int]]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append((in_lockstep(store, 10, barrier), free_running(store, 60)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    lock_applied = sum(r[0][0] for r in results)
    lock_conflicts = sum(r[0][1] for r in results)
    assert (lock_applied, lock_conflicts) == (10, 10 * (THREADS - 1))  # one winner per round
    free_applied = sum(r[1][0] for r in results)
    assert free_applied + sum(r[1][1] for r in results) == THREADS * 60
    assert free_applied >= 1
    _check_counter(store, lock_applied + free_applied)


def test_processes(shared_backend: Backend) -> None:
    first = shared_backend.open()
    first.put(NS, KEY, b"0", expect=0)
    target = str(shared_backend.path) if shared_backend.kind == "sqlite" else shared_backend.redis_url
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=process_main, args=(shared_backend.kind, target, shared_backend.prefix, 60, 10, barrier, out))
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lock_applied = sum(r[0][0] for r in results)
    assert (lock_applied, sum(r[0][1] for r in results)) == (10, 10 * (PROCESSES - 1))
    free_applied = sum(r[1][0] for r in results)
    assert free_applied + sum(r[1][1] for r in results) == PROCESSES * 60
    _check_counter(first, lock_applied + free_applied)


async def test_async_tasks(backend: Backend) -> None:
    store = backend.open()
    await store.aput(NS, KEY, b"0", expect=0)
    ready = asyncio.Event()

    async def bump(times: int) -> tuple[int, int]:
        await ready.wait()
        applied = 0
        for _ in range(times):
            record = await store.aget(NS, KEY)
            try:
                await store.aput(NS, KEY, str(int(record.value) + 1).encode(), expect=record.version)
                applied += 1
            except StoreError as exc:
                assert exc.reason == "version_conflict"
        return applied, times - applied

    tasks = [asyncio.create_task(bump(25)) for _ in range(THREADS)]
    ready.set()
    results = await asyncio.gather(*tasks)
    applied = sum(a for a, _ in results)
    assert applied + sum(c for _, c in results) == THREADS * 25
    _check_counter(store, applied)
    if backend.kind == "redis":  # the tasks interleave on the network: some must have lost a race
        assert applied < THREADS * 25
    await store.aclose()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_appends_from_threads_lose_nothing(request: pytest.FixtureRequest, kind: str) -> None:
    from tests.stores.conftest import make_backend

    backend = make_backend(request, kind)
    try:
        store = backend.open()
        lengths: list[int] = []

        def run(t: int) -> None:
            for i in range(50):
                lengths.append(store.append(NS, "log", [f"{t}:{i}".encode(), b"pair"]))

        threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        items = store.read(NS, "log")
        assert len(items) == THREADS * 50 * 2 == store.length(NS, "log")
        assert sorted(lengths) == list(range(2, THREADS * 100 + 1, 2))  # each append atomic, in order
        for i in range(0, len(items), 2):
            assert items[i + 1] == b"pair"
        for t in range(THREADS):  # each thread's items in its order
            mine = [x for x in items if x.startswith(f"{t}:".encode())]
            assert mine == [f"{t}:{i}".encode() for i in range(50)]
    finally:
        backend.close()
