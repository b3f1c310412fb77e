"""Resume stored sessions in workers: the same support agent behind Celery and behind arq.

A session is stored in Redis; a task carries only its id, an operation, an engine name and
a key reference. A worker process loads the session, runs the operation, commits each step,
and stops when the session waits for a person: here the agent looks an order up by itself
(an automatic tool), then asks to refund it (``refund`` is ``manual=True``: it needs a
person's approval). The approval arrives as a new task; the worker runs ``refund`` and the
model answers.

Run it: ``python examples/workers_redis_queues.py``. It starts its own ``redis-server``
(Debian's ``redis-server`` package) on a free port and one Celery and one arq worker process,
and needs ``pip install 'allm[celery,arq]'``; no key, no network: the model is a Fake. Without
``redis-server`` it says so and exits 0 (or 1 when ``ALLM_REQUIRE_LIVE=1``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import allm
from allm.providers import Fake
from allm.stores import open_store
from allm.testing import text, tool_call
from allm.workers import Operation, Worker

HERE = Path(__file__).resolve().parent
REDIS = os.environ.get("ALLM_EXAMPLE_REDIS", "redis://127.0.0.1:6379/0")

try:
    import arq
    import celery  # noqa: F401
except ImportError as exc:  # main() says what is missing
    MISSING: str | None = exc.name
else:
    MISSING = None

# ------------------------------------------------------------------ the worker side: agent, engines, keys


def lookup_order(args: dict[str, Any]) -> dict[str, Any]:
    return {"order": args["order"], "total_eur": 42.0, "status": "delivered"}


def refund(args: dict[str, Any], ctx: allm.ToolContext) -> dict[str, Any]:
    return {"refunded_eur": args["amount_eur"], "order": args["order"], "session": ctx.session_id}


LOOKUP = allm.tool(
    "lookup_order", "Look an order up.",
    {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]},
    handler=lookup_order,
)  # fmt: skip
REFUND = allm.tool(
    "refund", "Refund an order (a person approves it).",
    {"type": "object", "properties": {"order": {"type": "string"}, "amount_eur": {"type": "number"}}, "required": ["order", "amount_eur"]},
    handler=refund, manual=True,
)  # fmt: skip


def support_model(request: allm.Request) -> Any:
    """Stands in for a real model: answers by what the thread holds so far."""
    done = [m.name for m in request.messages if m.role == "tool"]
    if not done:
        return tool_call("lookup_order", {"order": "42"}, id="call_lookup")
    if done == ["lookup_order"]:
        return tool_call("refund", {"order": "42", "amount_eur": 42.0}, id="call_refund")
    return text("Refunded 42.00 EUR for order 42.")


def engines(name: str) -> allm.Engine:
    """``name -> Engine``: the worker's engines (a profile loader fits here too)."""
    if name != "support":
        raise KeyError(name)
    return allm.Engine(adapter=Fake(function=support_model), model="fake", tools=[LOOKUP, REFUND])


# The worker's secrets (a vault, a mounted file): task payloads name a tenant, never a key.
TENANT_KEYS = {"acme": "sk-acme-example-not-a-real-key"}


def build_worker() -> Worker:
    """Called once in each worker process, on its first task."""
    return Worker(open_store(REDIS), engines, keys=TENANT_KEYS)


# ------------------------------------------------------------------ Celery: celery -A workers_redis_queues worker


def make_celery(url: str) -> Any:
    from celery import Celery

    from allm.workers.celery import register

    app = Celery("support", broker=url, backend=url)
    app.conf.update(
        broker_transport_options={"visibility_timeout": 3600},  # longer than any task
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
    )
    register(app, build_worker)
    return app


# ------------------------------------------------------------------ arq: arq workers_redis_queues.WorkerSettings


if MISSING is None:
    import allm.workers.arq

    class WorkerSettings:
        functions: ClassVar[list[Any]] = [allm.workers.arq.function(build_worker)]
        redis_settings = arq.connections.RedisSettings.from_dsn(REDIS)
        job_timeout = 600  # longer than any task
        poll_delay = 0.1

    app = make_celery(REDIS)  # what `celery -A workers_redis_queues worker` finds


# ------------------------------------------------------------------ the caller side


def start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "skipped: redis-server is not installed (apt-get install redis-server)"
        print(message)
        sys.exit(1 if os.environ.get("ALLM_REQUIRE_LIVE") == "1" else 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="allm-example-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0", folder
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def start_worker(cmd: list[str], url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ALLM_EXAMPLE_REDIS": url, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    return subprocess.Popen([sys.executable, "-m", *cmd], cwd=HERE, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def celery_result(app: Any, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        meta = app.backend.get_task_meta(task_id)
        if meta["status"] == "SUCCESS":
            return meta["result"]  # type: ignore[no-any-return]
        assert meta["status"] in ("PENDING", "RETRY", "STARTED"), meta
        time.sleep(0.1)
    raise TimeoutError(task_id)


def with_celery(url: str, sessions: Worker) -> allm.Session:
    from allm.workers.celery import TASK_NAME, enqueue

    producer = make_celery(url)
    task = producer.tasks[TASK_NAME]
    sessions.create(allm.Session.new("Please refund order 42.", id="ses_celery"))

    sent = enqueue(task, "ses_celery", Operation.continue_(), engine="support", key_ref="acme")
    outcome = celery_result(producer, sent.id)
    print("celery: the agent ran lookup_order and stopped:", outcome["status"], "waiting for", outcome["waiting_for"])
    assert outcome["status"] == "awaiting_tools" and outcome["waiting_for"] == ["call_refund"]

    session, _ = sessions.load("ses_celery")  # what a person sees before approving
    call = session.pending_tool_calls[0]
    assert (call.name, call.arguments["amount_eur"]) == ("refund", 42.0)
    sent = enqueue(task, "ses_celery", Operation.approve(call.id), engine="support", key_ref="acme")
    outcome = celery_result(producer, sent.id)
    print("celery: approved; the agent refunded and answered:", outcome["status"])
    producer.close()
    return sessions.load("ses_celery")[0]


async def with_arq(url: str, sessions: Worker) -> allm.Session:
    from arq import create_pool
    from arq.connections import RedisSettings

    from allm.workers.arq import enqueue

    pool = await create_pool(RedisSettings.from_dsn(url))
    try:
        await sessions.acreate(allm.Session.new("Please refund order 42.", id="ses_arq"))
        job = await enqueue(pool, "ses_arq", Operation.continue_(), engine="support", key_ref="acme")
        assert job is not None
        outcome = await job.result(timeout=60)
        print("arq: the agent ran lookup_order and stopped:", outcome["status"], "waiting for", outcome["waiting_for"])
        assert outcome["waiting_for"] == ["call_refund"]
        job = await enqueue(pool, "ses_arq", Operation.approve("call_refund"), engine="support", key_ref="acme")
        assert job is not None
        outcome = await job.result(timeout=60)
        print("arq: approved; the agent refunded and answered:", outcome["status"])
    finally:
        await pool.aclose()
    return (await sessions.aload("ses_arq"))[0]


def check(session: allm.Session) -> None:
    assert session.status == "completed", session.status
    assert session.messages[-1].text == "Refunded 42.00 EUR for order 42."
    refund_result = next(m for m in session.messages if m.role == "tool" and m.name == "refund")
    assert '"refunded_eur":42.0' in refund_result.text and session.id in refund_result.text


def count_keys(url: str) -> int:
    """How many Redis entries hold a tenant key (the broker's payloads carry references only)."""
    import redis

    r = redis.Redis.from_url(url)
    readers = {
        b"string": lambda n: [r.get(n) or b""],
        b"hash": lambda n: [b for kv in r.hgetall(n).items() for b in kv],
        b"list": lambda n: r.lrange(n, 0, -1),
        b"zset": lambda n: r.zrange(n, 0, -1),
        b"set": lambda n: list(r.smembers(n)),
    }
    secrets = [k.encode() for k in TENANT_KEYS.values()]
    found = sum(
        any(s in name + b"".join(readers[r.type(name)](name)) for s in secrets) for name in r.scan_iter()
    )
    assert found == 0
    return found


def main() -> None:
    if MISSING is not None:
        print(f"skipped: {MISSING} is not installed (pip install 'allm[celery,arq]')")
        sys.exit(1 if os.environ.get("ALLM_REQUIRE_LIVE") == "1" else 0)
    redis_proc, url, folder = start_redis()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers.append(start_worker(["celery", "-A", "workers_redis_queues", "worker", "--pool=solo", "--loglevel=WARNING",
                                     "--without-mingle", "--without-gossip"], url))  # fmt: skip
        workers.append(start_worker(["arq", "workers_redis_queues.WorkerSettings"], url))
        sessions = Worker(open_store(url), {})  # the caller's side: it stores and reads sessions only
        check(with_celery(url, sessions))
        check(asyncio.run(with_arq(url, sessions)))
        print("both sessions completed; keys anywhere in Redis (broker, results, store):", count_keys(url))
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGTERM)
        for w in workers:
            try:
                w.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(w.pid, signal.SIGKILL)
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
