"""1,000 stored sessions resumed by 4 real worker processes, one of them killed with ``kill -9``.

For Celery (Redis broker, ``--pool=solo``: one task at a time per process) and for arq
(asyncio, ``max_jobs=4`` per process). Each session waits for the approval of a manual
``pay`` call; its task (``approve``) runs ``pay``, a model call that asks for ``lookup``,
``lookup``, and a model call that answers: 2 model calls (Fake, 5 ms each), 2 tool calls and
4 commits per session. Counters shared by every process (Redis hashes) count each model call
and each handler run.

Checked afterwards: every session completed, at version 5 with exactly the expected thread
(each step committed once); every tool call ran, and only tool calls or model calls in flight
on the killed worker ran twice (at most one per task it was running: one for Celery's solo
worker, at most ``max_jobs`` for arq's); no key anywhere in Redis (broker messages, results,
store) or in the workers' logs. Throughput is printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

from allm.stores import open_store
from allm.workers import Operation, Worker
from tests.workers.conftest import PY, Fleet, worker_env
from tests.workers.leaks import redis_bytes
from tests.workers.scenario import awaiting_session, expected_roles, roles

N = 1000
WORKERS = 4
MODEL_DELAY = 0.005
TENANTS = 5


def db_url(base: str, db: int) -> str:
    """The test server's database ``db`` (the worker tests use 10 to 15, each its own, flushed first)."""
    return base.rsplit("/", 1)[0] + f"/{db}"


def prepare(url: str, tmp_path: Path) -> tuple[Worker, redis.Redis, dict[str, str], Path]:
    r = redis.Redis.from_url(url)
    r.flushdb()
    keys = {f"tenant-{t}": "sk-test-" + secrets.token_urlsafe(24) for t in range(TENANTS)}
    keys_file = tmp_path / "keys.json"
    keys_file.write_bytes(orjson.dumps(keys))
    worker = Worker(open_store(url), {})
    for i in range(N):
        worker.create(awaiting_session(i))
    return worker, r, keys, keys_file


def wait_done(
    worker: Worker, r: redis.Redis, kill: Callable[[], None], sweep: Callable[[], None] | None, t0: float, deadline: float
) -> list[tuple[float, int]]:
    """Wait until every session completed; ``kill`` once 30% made their last model call.

    Progress is read cheaply from the model-call counter (a session's last model call is
    its ``s<i>:5`` field), then the store is checked session by session. ``sweep``, when
    given, runs every second after the kill (the broker's recovery of a dead worker's
    messages). Times are seconds since ``t0`` (the first enqueue).
    """
    timeline: list[tuple[float, int]] = []
    killed = False
    left = {f"ses_test_{i:05d}" for i in range(N)}
    while left:
        now = time.monotonic() - t0
        answered = max(r.hlen("test:model") - N, 0)
        if answered >= N - 10:
            for sid in list(left):
                if worker.load(sid)[0].status == "completed":
                    left.discard(sid)
            answered = N - len(left)
        timeline.append((now, answered))
        if not killed and answered >= N * 3 // 10:
            kill()
            killed = True
            timeline.append((now, -1))
        if killed and sweep is not None:
            sweep()
        if now > deadline:
            stuck = {sid: worker.load(sid) for sid in sorted(left)[:5]}
            claims = worker.store.keys(worker.claims_namespace)
            broker = {k.decode(): r.type(k).decode() for k in r.scan_iter() if not k.startswith((b"allm:", b"test:", b"celery-task-meta"))}
            raise AssertionError(
                f"{len(left)} sessions not completed after {deadline} s: "
                f"{ {k: (s.status, v) for k, (s, v) in stuck.items()} }; claims {claims}; broker keys {broker}; "
                f"unacked {r.hlen('unacked')}; queue {r.llen('celery')}"
            )
        time.sleep(0.5 if answered >= N - 10 else 0.1)
    return timeline


def verify(worker: Worker, r: redis.Redis, keys: dict[str, str], fleet: Fleet, in_flight: int) -> dict[str, Any]:
    for i in range(N):
        session, version = worker.load(f"ses_test_{i:05d}")
        assert session.status == "completed" and version == 5, (i, session.status, version)
        assert roles(session) == expected_roles(), i
        assert session.messages[-1].text == f"done s{i}"
    model = {k.decode(): int(v) for k, v in r.hgetall("test:model").items()}
    assert set(model) == {f"s{i}:{n}" for i in range(N) for n in (3, 5)}
    extra_model = sum(model.values()) - 2 * N
    assert all(v <= 2 for v in model.values())  # a step repeats at most once
    tools = {k.decode(): int(v) for k, v in r.hgetall("test:tool").items()}
    assert set(tools) == {f"{t}-s{i}" for i in range(N) for t in ("pay", "lookup")}
    extra_tools = sum(tools.values()) - 2 * N
    # only what was in flight on the killed worker repeats: one step per task it was running
    assert 0 <= extra_model + extra_tools <= in_flight, (extra_model, extra_tools)
    assert len(worker.store.keys(worker.claims_namespace)) <= in_flight
    resolved = {k.decode(): int(v) for k, v in r.hgetall("test:keyref").items()}
    assert set(resolved) == set(keys) and sum(resolved.values()) >= N
    # no key in Redis (broker messages, results, store) or in the workers' logs
    secrets_ = [k.encode() for k in keys.values()]
    scanned = 0
    for name, blob in redis_bytes(r):
        assert not any(s in name + blob for s in secrets_), name
        scanned += 1
    assert scanned > N
    for log in fleet.logs:
        text = log.read_bytes()
        assert not any(s in text for s in secrets_), log
    # task runs beyond one per task: the dead worker's task run again, and retries after conflicts
    return {"extra_model_calls": extra_model, "extra_tool_runs": extra_tools, "task_reruns": sum(resolved.values()) - N}


def rate(points: list[tuple[float, int]], lo: float, hi: float) -> float:
    """Sessions per second between the moments ``lo`` and ``hi`` (fractions of N) were reached."""
    a = next((t, d) for t, d in points if d >= lo * N)
    b = next((t, d) for t, d in points if d >= hi * N)
    return (b[1] - a[1]) / max(b[0] - a[0], 1e-9)


def report(name: str, timeline: list[tuple[float, int]], figures: dict[str, Any]) -> None:
    kill_at = next(t for t, d in timeline if d == -1)
    points = [(t, d) for t, d in timeline if d >= 0]
    print(
        f"\n{name}: {N} sessions, {WORKERS} workers: {rate(points, 0.05, 0.3):.0f} sessions/s (5% to 30%); "
        f"one killed at {kill_at:.1f} s; then {WORKERS - 1} workers: {rate(points, 0.35, 0.95):.0f} sessions/s "
        f"(35% to 95%); all {N} completed at {points[-1][0]:.1f} s, the dead worker's task redelivered; {figures}"
    )


def test_celery_1000_sessions_4_workers_one_killed(redis_server: Any, tmp_path: Path, fleet_factory: list[Fleet]) -> None:
    from allm.workers.celery import enqueue, register
    from tests.workers.celery_app import make_app

    url = db_url(redis_server.url, 10)
    worker, r, keys, keys_file = prepare(url, tmp_path)
    fleet = Fleet(worker_env(url, keys_file, MODEL_DELAY))
    fleet_factory.append(fleet)
    cmd = [PY, "-m", "celery", "-A", "tests.workers.celery_app", "worker", "--pool=solo", "--loglevel=INFO",
           "--without-mingle", "--without-gossip", "--without-heartbeat"]  # fmt: skip
    fleet.start([[*cmd, "-n", f"w{i}@allm-test"] for i in range(WORKERS)])
    fleet.wait_for_log("ready.")

    producer = make_app(url)
    task = register(producer, lambda: worker)  # the producer only sends: the factory is never called here
    t_start = time.monotonic()
    for i in range(N):
        enqueue(task, f"ses_test_{i:05d}", Operation.approve(f"pay-s{i}"), engine="agent", key_ref=f"tenant-{i % TENANTS}")

    def sweep() -> None:
        # What kombu's Redis transport does in every worker every 100 s (kombu 5.6; every
        # unacked_restore_interval x unacked_restore_throttle s in 5.7): put back the messages
        # that were delivered more than visibility_timeout seconds ago and never acknowledged.
        with producer.connection_for_write() as conn:
            conn.default_channel.qos.restore_visible(num=1000, interval=1)

    timeline = wait_done(worker, r, lambda: fleet.kill(0), sweep, t_start, 180.0)
    figures = verify(worker, r, keys, fleet, in_flight=1)
    report("celery", timeline, figures)
    producer.close()


def test_arq_1000_sessions_4_workers_one_killed(redis_server: Any, tmp_path: Path, fleet_factory: list[Fleet]) -> None:
    from arq import create_pool
    from arq.connections import RedisSettings

    from allm.workers.arq import enqueue
    from tests.workers.arq_app import MAX_JOBS

    url = db_url(redis_server.url, 11)
    worker, r, keys, keys_file = prepare(url, tmp_path)
    fleet = Fleet(worker_env(url, keys_file, MODEL_DELAY))
    fleet_factory.append(fleet)
    fleet.start([[PY, "-m", "arq", "tests.workers.arq_app.WorkerSettings"] for _ in range(WORKERS)])
    fleet.wait_for_log("Starting worker")

    async def send() -> None:
        pool = await create_pool(RedisSettings.from_dsn(url))
        try:
            for i in range(N):
                job = await enqueue(
                    pool, f"ses_test_{i:05d}", Operation.approve(f"pay-s{i}"), engine="agent", key_ref=f"tenant-{i % TENANTS}"
                )
                assert job is not None
        finally:
            await pool.aclose()

    t_start = time.monotonic()
    asyncio.run(send())
    timeline = wait_done(worker, r, lambda: fleet.kill(0), None, t_start, 180.0)
    figures = verify(worker, r, keys, fleet, in_flight=MAX_JOBS)
    report("arq", timeline, figures)


# ------------------------------------------------------------------------------ every task delivered twice at once

TWICE = 100


def prepare_twice(url: str, tmp_path: Path) -> tuple[Worker, redis.Redis, Path]:
    r = redis.Redis.from_url(url)
    r.flushdb()
    keys_file = tmp_path / "keys.json"
    keys_file.write_bytes(orjson.dumps({"tenant-0": "sk-test-" + secrets.token_urlsafe(24)}))
    worker = Worker(open_store(url), {})
    for i in range(TWICE):
        worker.create(awaiting_session(i))
    return worker, r, keys_file


def check_twice(worker: Worker, r: redis.Redis) -> int:
    deadline = time.monotonic() + 120
    left = {f"ses_test_{i:05d}" for i in range(TWICE)}
    while left and time.monotonic() < deadline:
        for sid in list(left):
            if worker.load(sid)[0].status == "completed":
                left.discard(sid)
        time.sleep(0.5)
    assert not left, sorted(left)[:5]
    time.sleep(1.0)  # let the losing deliveries finish their retries
    for i in range(TWICE):
        session, version = worker.load(f"ses_test_{i:05d}")
        assert version == 5 and roles(session) == expected_roles(), (i, version)  # each step committed once
    tools = {k.decode(): int(v) for k, v in r.hgetall("test:tool").items()}
    assert tools == {f"{t}-s{i}": 1 for i in range(TWICE) for t in ("pay", "lookup")}  # each tool ran once
    model = {k.decode(): int(v) for k, v in r.hgetall("test:model").items()}
    assert set(model) == {f"s{i}:{n}" for i in range(TWICE) for n in (3, 5)}
    return sum(model.values()) - 2 * TWICE  # model calls a losing delivery made and did not commit


def test_celery_every_task_delivered_twice_at_once(redis_server: Any, tmp_path: Path, fleet_factory: list[Fleet]) -> None:
    """The same message twice (one Celery task id): one delivery commits each step, the other
    finds a version conflict or a fresh claim, retries, and finds the task applied."""
    from allm.workers.celery import enqueue, register
    from tests.workers.celery_app import make_app

    url = db_url(redis_server.url, 12)
    worker, r, keys_file = prepare_twice(url, tmp_path)
    fleet = Fleet(worker_env(url, keys_file, MODEL_DELAY))
    fleet_factory.append(fleet)
    cmd = [PY, "-m", "celery", "-A", "tests.workers.celery_app", "worker", "--pool=solo", "--loglevel=INFO",
           "--without-mingle", "--without-gossip", "--without-heartbeat"]  # fmt: skip
    fleet.start([[*cmd, "-n", f"w{i}@allm-twice"] for i in range(2)])
    fleet.wait_for_log("ready.")
    producer = make_app(url)
    task = register(producer, lambda: worker)
    for i in range(TWICE):
        for _ in range(2):
            enqueue(task, f"ses_test_{i:05d}", Operation.approve(f"pay-s{i}"), engine="agent", key_ref="tenant-0",
                    task_id=f"approve-{i}")  # fmt: skip
    wasted = check_twice(worker, r)
    # a losing delivery retries (after the claim it met could expire) and then finds its task
    # applied; the result stored last for a task id is either delivery's: the one that finished
    # the session, or the one that lost a race (it stopped at the conflict without writing)
    deadline = time.monotonic() + 60
    while True:
        metas = [producer.backend.get_task_meta(f"approve-{i}") for i in range(TWICE)]
        if all(m["status"] == "SUCCESS" for m in metas) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert all(m["status"] == "SUCCESS" for m in metas), [m["status"] for m in metas]
    assert all(m["result"]["status"] == "completed" or m["result"]["conflict"] for m in metas), metas[:3]
    print(f"\ncelery, {TWICE} tasks each delivered twice: tools ran once each; {wasted} uncommitted model calls")
    producer.close()


def test_arq_every_approval_sent_twice(redis_server: Any, tmp_path: Path, fleet_factory: list[Fleet]) -> None:
    """Two jobs for one approval (a double click): the tool runs once, each step is committed once."""
    from arq import create_pool
    from arq.connections import RedisSettings

    from allm.workers.arq import enqueue

    url = db_url(redis_server.url, 13)
    worker, r, keys_file = prepare_twice(url, tmp_path)
    fleet = Fleet(worker_env(url, keys_file, MODEL_DELAY))
    fleet_factory.append(fleet)
    fleet.start([[PY, "-m", "arq", "tests.workers.arq_app.WorkerSettings"] for _ in range(2)])
    fleet.wait_for_log("Starting worker")

    async def send() -> None:
        pool = await create_pool(RedisSettings.from_dsn(url))
        try:
            for i in range(TWICE):
                for click in ("a", "b"):
                    job = await enqueue(pool, f"ses_test_{i:05d}", Operation.approve(f"pay-s{i}"), engine="agent",
                                        key_ref="tenant-0", _job_id=f"approve-{i}-{click}")  # fmt: skip
                    assert job is not None
            again = await enqueue(pool, "ses_test_00000", Operation.approve("pay-s0"), engine="agent", _job_id="approve-0-a")
            assert again is None  # arq refuses a job id it holds: the enqueue itself is idempotent
        finally:
            await pool.aclose()

    asyncio.run(send())
    wasted = check_twice(worker, r)
    print(f"\narq, {TWICE} approvals each sent twice: tools ran once each; {wasted} uncommitted model calls")
