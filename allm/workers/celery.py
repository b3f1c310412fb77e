"""Celery glue (``pip install 'allm[celery]'``): one task that runs :class:`~allm.workers.Task` values.

::

    from celery import Celery
    from allm.workers import Worker
    from allm.workers.celery import register, enqueue

    app = Celery("agents", broker="redis://127.0.0.1:6379/0")
    app.conf.broker_transport_options = {"visibility_timeout": 3600}   # above the longest task
    app.conf.worker_prefetch_multiplier = 1
    run_session = register(app, build_worker)        # build_worker() -> Worker, once per process

    enqueue(run_session, session_id, Operation.approve(call_id), engine="support", key_ref="tenant-42")

The task is registered with ``acks_late=True`` (a message is acknowledged after the task
ran, so a worker that dies mid-task leaves it to be delivered again) and
``reject_on_worker_lost=True`` (a prefork child that dies gives its message back at once).
Its Celery id is the task's idempotency key. It returns :meth:`Outcome.to_dict`, retries
itself (``Task.retry``) when the outcome asks for it or on a transient error
(:func:`~allm.workers._core.retry_delay`), and fails on any other error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery  # type: ignore[import-untyped]
from celery import Task as CeleryTask
from celery.result import AsyncResult  # type: ignore[import-untyped]

from ._core import PerProcess, Worker, retry_delay
from ._values import Operation, Task

__all__ = ["TASK_NAME", "enqueue", "register"]

TASK_NAME = "allm.workers.run"


def register(
    app: Celery,
    worker: Worker | Callable[[], Worker],
    *,
    name: str = TASK_NAME,
    max_retries: int = 30,
    **task_options: Any,
) -> CeleryTask:
    """Register the task on ``app`` under ``name`` and return it.

    ``worker``: a :class:`Worker`, or a function that builds one (called once per worker
    process, on its first task). ``max_retries``: most retries of one task (conflicts and
    transient errors together). ``task_options`` go to ``app.task`` (``acks_late`` and
    ``reject_on_worker_lost`` default to ``True``).
    """
    get_worker = PerProcess(worker)
    options: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True, **task_options}

    @app.task(name=name, bind=True, max_retries=max_retries, **options)  # type: ignore[untyped-decorator]
    def run_session(self: CeleryTask, payload: Mapping[str, Any]) -> dict[str, Any]:
        w = get_worker()
        try:
            outcome = w.run(payload, task_id=self.request.id)
        except Exception as exc:
            delay = retry_delay(exc, self.request.retries)
            if delay is None:
                raise
            raise self.retry(exc=exc, countdown=delay) from exc
        if outcome.retry_after is not None:
            raise self.retry(countdown=outcome.retry_after)
        return outcome.to_dict()

    return run_session


def enqueue(
    task: CeleryTask,
    session_id: str,
    operation: Operation | Mapping[str, Any],
    *,
    engine: str = "default",
    key_ref: str | None = None,
    **apply_async_options: Any,
) -> AsyncResult:
    """Send a task: ``task.apply_async(args=(payload,), **apply_async_options)``.

    The payload is :meth:`Task.to_dict`: the session id, the operation, the engine name and
    the key reference (a name; never a key). Raises
    :class:`~allm.errors.ValidationError` for a malformed operation before anything is sent.
    """
    payload = Task(session_id, Operation.from_dict(operation), engine, key_ref).to_dict()
    return task.apply_async(args=(payload,), **apply_async_options)
