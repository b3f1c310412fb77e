"""arq glue (``pip install 'allm[arq]'``): one job function that runs :class:`~allm.workers.Task` values.

::

    from arq.connections import RedisSettings
    from allm.workers.arq import function, enqueue

    class WorkerSettings:                     # arq my_module.WorkerSettings
        functions = [function(build_worker)]  # build_worker() -> Worker, once per process
        redis_settings = RedisSettings(host="127.0.0.1", port=6379)
        job_timeout = 600                     # above the longest task

    await enqueue(redis, session_id, Operation.reply("Go on."), engine="support", key_ref="tenant-42")

arq keeps a job in its queue until the job finished; a worker that dies leaves it there, and
another worker runs it when the dead one's in-progress mark expires (``job_timeout`` + 10
seconds). The job id is the task's idempotency key. The function returns
:meth:`Outcome.to_dict`, raises ``arq.Retry`` when the outcome asks for it or on a transient
error (:func:`~allm.workers._core.retry_delay`), and fails on any other error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from arq import Retry
from arq.connections import ArqRedis
from arq.jobs import Job
from arq.worker import Function, func

from ._core import PerProcess, Worker, retry_delay
from ._values import Operation, Task

__all__ = ["FUNCTION_NAME", "enqueue", "function"]

FUNCTION_NAME = "allm_workers_run"


def function(
    worker: Worker | Callable[[], Worker],
    *,
    name: str = FUNCTION_NAME,
    max_tries: int = 30,
    timeout: float | None = None,
) -> Function:
    """The arq job function (put it in ``WorkerSettings.functions``).

    ``worker``: a :class:`Worker`, or a function that builds one (called once per worker
    process, on its first job). ``max_tries``: most tries of one job (conflicts and
    transient errors together). ``timeout``: seconds per job (default: the worker's
    ``job_timeout``).
    """
    get_worker = PerProcess(worker)

    async def run_session(ctx: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
        w = get_worker()
        try:
            outcome = await w.arun(payload, task_id=str(ctx["job_id"]))
        except Exception as exc:
            delay = retry_delay(exc, int(ctx.get("job_try", 1)) - 1)
            if delay is None:
                raise
            raise Retry(defer=delay) from exc
        if outcome.retry_after is not None:
            raise Retry(defer=outcome.retry_after)
        return outcome.to_dict()

    return func(run_session, name=name, max_tries=max_tries, timeout=timeout)


async def enqueue(
    redis: ArqRedis,
    session_id: str,
    operation: Operation | Mapping[str, Any],
    *,
    engine: str = "default",
    key_ref: str | None = None,
    function: str = FUNCTION_NAME,
    **enqueue_options: Any,
) -> Job | None:
    """Enqueue a task: ``redis.enqueue_job(function, payload, **enqueue_options)`` (``_job_id``
    makes the enqueue itself idempotent: arq returns ``None`` for an id it already holds).

    The payload is :meth:`Task.to_dict` (never a key). Raises
    :class:`~allm.errors.ValidationError` for a malformed operation before anything is sent.
    """
    payload = Task(session_id, Operation.from_dict(operation), engine, key_ref).to_dict()
    return await redis.enqueue_job(function, payload, **enqueue_options)
