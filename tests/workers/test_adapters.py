"""The queue adapters' own decisions, without a broker: what each does with an outcome and
with each kind of error, the per-process worker, the enqueue checks; and the task values'
JSON round trip (hypothesis)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import allm
from allm.errors import AdapterError, SessionError, StoreError, ToolError, ValidationError
from allm.stores import MemoryStore
from allm.workers import Operation, Task, Worker
from allm.workers._core import PerProcess, retry_delay
from tests.workers.scenario import awaiting_session, build_engine


def worker_with_session() -> Worker:
    worker = Worker(MemoryStore(), {"default": build_engine()})
    worker.create(awaiting_session(0))
    return worker


def payload(op: Operation, sid: str = "ses_test_00000") -> dict[str, Any]:
    return Task(sid, op).to_dict()


def test_retry_delay_retries_transient_errors_only() -> None:
    assert retry_delay(AdapterError("slow down", reason="rate_limited", retry_after=7.5), 0) == 7.5
    assert retry_delay(AdapterError("busy", reason="provider_unavailable"), 0) == 1.0
    assert retry_delay(AdapterError("busy", reason="timeout"), 3) == 8.0
    assert retry_delay(StoreError("down", reason="unavailable"), 10) == 60.0
    assert retry_delay(AdapterError("x", reason="rate_limited", retry_after=9999), 0) == 600.0
    for permanent in (
        SessionError("no", reason="invalid_status"),
        StoreError("bad bytes", reason="corrupt"),
        AdapterError("bad key", reason="authentication_failed"),
        ToolError("x"),
        ValueError("not ours"),
    ):
        assert retry_delay(permanent, 0) is None


def test_celery_task_returns_the_outcome_and_fails_on_misuse() -> None:
    from celery import Celery

    from allm.workers.celery import enqueue, register

    app = Celery("t", broker="memory://", backend="cache+memory://")
    worker = worker_with_session()
    task = register(app, worker)
    assert task.acks_late and task.reject_on_worker_lost and task.name == "allm.workers.run"
    result = task.apply(args=(payload(Operation.approve("pay-s0")),), task_id="celery-1")
    assert result.successful() and result.get()["status"] == "completed"
    again = task.apply(args=(payload(Operation.approve("pay-s0")),), task_id="celery-1")
    assert again.get()["duplicate"] is True
    failed = task.apply(args=(payload(Operation.reply("hi"), "ses_nope"),), task_id="celery-2")
    assert failed.failed() and isinstance(failed.result, SessionError) and failed.result.reason == "not_found"
    with pytest.raises(ValidationError):
        enqueue(task, "ses_test_00000", {"op": "approve"})  # refused before anything is sent


def test_celery_task_retries_when_the_outcome_or_a_transient_error_asks() -> None:
    from celery import Celery
    from celery.exceptions import Retry

    from allm.workers.celery import register

    calls: list[str] = []

    class Flaky(Worker):
        def run(self, task: Any, *, task_id: str | None = None) -> Any:
            calls.append(str(task_id))
            if len(calls) == 1:
                raise AdapterError("busy", reason="provider_unavailable", retry_after=0.25)
            return super().run(task, task_id=task_id)

    flaky = Flaky(MemoryStore(), {"default": build_engine()}, claim_timeout=30)
    flaky.create(awaiting_session(0))
    app = Celery("t", broker="memory://", backend="cache+memory://")
    app.conf.task_eager_propagates = True
    task = register(app, flaky)
    with pytest.raises(Retry) as e:
        task.apply(args=(payload(Operation.approve("pay-s0")),), task_id="celery-3", throw=True)
    assert e.value.when == 0.25 and calls == ["celery-3"]
    # a claim held by another delivery: the outcome asks to retry after the claim can expire
    flaky.store.put(flaky.claims_namespace, "ses_test_00000/1/pay-s0", orjson.dumps({"token": "x", "at": 1e12}), expect=0)
    with pytest.raises(Retry) as e:
        task.apply(args=(payload(Operation.approve("pay-s0")),), task_id="celery-3", throw=True)
    assert e.value.when is not None and float(e.value.when) > 0


def test_arq_function_returns_the_outcome_retries_and_fails() -> None:
    from arq import Retry

    from allm.workers.arq import FUNCTION_NAME, enqueue, function

    worker = worker_with_session()
    fn = function(worker)
    assert fn.name == FUNCTION_NAME

    async def go() -> None:
        out = await fn.coroutine({"job_id": "j1", "job_try": 1}, payload(Operation.approve("pay-s0")))
        assert out["status"] == "completed" and out["tool_calls"] == 2
        assert (await fn.coroutine({"job_id": "j1", "job_try": 2}, payload(Operation.approve("pay-s0"))))["duplicate"]
        with pytest.raises(SessionError):
            await fn.coroutine({"job_id": "j2", "job_try": 1}, payload(Operation.continue_(), "ses_nope"))
        worker.create(awaiting_session(1))
        worker.store.put(worker.claims_namespace, "ses_test_00001/1/pay-s1", orjson.dumps({"token": "x", "at": 1e12}), expect=0)
        with pytest.raises(Retry) as e:
            await fn.coroutine({"job_id": "j3", "job_try": 1}, payload(Operation.approve("pay-s1"), "ses_test_00001"))
        assert e.value.defer_score is not None and e.value.defer_score > 0
        with pytest.raises(ValidationError):
            await enqueue(None, "ses_test_00000", {"op": "reply"})  # type: ignore[arg-type]

    asyncio.run(go())


def test_a_worker_factory_is_called_once_per_process() -> None:
    built: list[int] = []

    def factory() -> Worker:
        built.append(os.getpid())
        return Worker(MemoryStore(), {})

    per = PerProcess(factory)
    assert per() is per() and built == [os.getpid()]
    with pytest.raises(TypeError):
        PerProcess(lambda: "nope")()  # type: ignore[arg-type,return-value]
    w = Worker(MemoryStore(), {})
    assert PerProcess(w)() is w


def test_worker_options_are_checked() -> None:
    with pytest.raises(ValueError):
        Worker(MemoryStore(), {}, max_turns=0)
    with pytest.raises(ValueError):
        Worker(MemoryStore(), {}, namespace="")
    assert "MemoryStore" in repr(Worker(MemoryStore(), {}))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
ids = st.text(st.characters(codec="ascii", min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
operations = st.one_of(
    st.just(Operation.continue_()),
    st.text(min_size=1, max_size=20).map(Operation.reply),
    st.dictionaries(ids, json_values, min_size=1, max_size=3).flatmap(
        lambda r: st.lists(st.sampled_from(sorted(r)), unique=True).map(lambda e: Operation.submit_tool_results(r, errors=e))
    ),
    st.lists(ids, min_size=1, max_size=3).map(lambda i: Operation.approve(*i)),
    st.tuples(st.lists(ids, min_size=1, max_size=3), st.text(max_size=20)).map(lambda a: Operation.reject(*a[0], reason=a[1])),
)


@given(operations, ids, ids, st.none() | ids)
def test_tasks_round_trip_through_json(op: Operation, sid: str, engine: str, key_ref: str | None) -> None:
    task = Task(sid, op, engine, key_ref)
    assert Task.from_dict(orjson.loads(orjson.dumps(task.to_dict()))) == task
    assert allm.workers.Outcome("s", "idle", 1, True).to_dict()["waiting_for"] == []
