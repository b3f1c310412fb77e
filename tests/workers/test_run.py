"""The worker's run of a task, in process, against the store interface (MemoryStore).

What these show: each operation, with the sync and the async shell; every step is one
conditional write; a worker that dies at any point of a task (simulated at every store
operation, before and after it) leaves a store from which a redelivery finishes the
session exactly as an uninterrupted run does, repeating at most the one model call or the
one tool call that was in flight; two deliveries at once never both commit and never both
run a tool; every misuse is a typed error that writes nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

import allm
import allm.testing
from allm.errors import EngineError, SessionError, StoreError, ValidationError
from allm.stores import MemoryStore, Record
from allm.testing import error as fake_error
from allm.testing import text, tool_call
from allm.workers import NAMESPACE, Operation, Outcome, Task, Worker, decode_record
from tests.workers.scenario import awaiting_session, build_engine, expected_roles, roles

MODES = ["sync", "async"]


class Counts:
    def __init__(self) -> None:
        self.model: Counter[tuple[str, int]] = Counter()
        self.tools: Counter[str] = Counter()
        self.lock = threading.Lock()

    def on_model(self, mark: str, n: int) -> None:
        with self.lock:
            self.model[(mark, n)] += 1

    def on_tool(self, name: str, call_id: str) -> None:
        with self.lock:
            self.tools[call_id] += 1


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def run(worker: Worker, task: Task | dict[str, Any], task_id: str | None, mode: str) -> Outcome:
    if mode == "sync":
        return worker.run(task, task_id=task_id)
    return asyncio.run(worker.arun(task, task_id=task_id))


def setup(n: int = 1, **worker_options: Any) -> tuple[Worker, Counts, MemoryStore]:
    counts = Counts()
    store = MemoryStore()
    engine = build_engine(counts.on_model, counts.on_tool)
    worker = Worker(store, {"default": engine}, **worker_options)
    for i in range(n):
        worker.create(awaiting_session(i))
    return worker, counts, store


def approve(i: int = 0) -> Task:
    return Task(f"ses_test_{i:05d}", Operation.approve(f"pay-s{i}"))


# ------------------------------------------------------------------------------ operations


@pytest.mark.parametrize("mode", MODES)
def test_approve_drives_the_session_to_completion_one_write_per_step(mode: str) -> None:
    worker, counts, store = setup()
    out = run(worker, approve(), "task-1", mode)
    assert out.status == "completed" and out.applied and not out.conflict and not out.duplicate
    assert (out.model_calls, out.tool_calls, out.commits, out.version) == (2, 2, 4, 5)
    session, version = worker.load("ses_test_00000")
    assert version == 5
    assert roles(session) == expected_roles()
    assert session.messages[-1].text == "done s0"
    assert counts.tools == {"pay-s0": 1, "lookup-s0": 1}
    assert sum(counts.model.values()) == 2
    assert store.keys(worker.claims_namespace) == []  # claims are released after their commit


@pytest.mark.parametrize("mode", MODES)
def test_a_redelivered_task_changes_nothing(mode: str) -> None:
    worker, counts, store = setup()
    run(worker, approve(), "task-1", mode)
    before = store.get(NAMESPACE, "ses_test_00000")
    again = run(worker, approve(), "task-1", mode)
    assert again.duplicate and again.applied and (again.model_calls, again.tool_calls, again.commits) == (0, 0, 0)
    assert store.get(NAMESPACE, "ses_test_00000") == before
    assert counts.tools == {"pay-s0": 1, "lookup-s0": 1}


@pytest.mark.parametrize("mode", MODES)
def test_sync_and_async_store_the_same_session(mode: str) -> None:
    worker, _, store = setup()
    run(worker, approve(), "t", "sync")
    sync_session = decode_record(store.get(NAMESPACE, "ses_test_00000").value, "x")  # type: ignore[union-attr]
    worker2, _, store2 = setup()
    run(worker2, approve(), "t", mode)
    assert decode_record(store2.get(NAMESPACE, "ses_test_00000").value, "x") == sync_session  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
def test_reply_continue_submit_and_reject(mode: str) -> None:
    worker, counts, _ = setup()
    sid = "ses_test_00000"
    # reject the payment: the model reads the refusal and calls lookup, then answers
    out = run(worker, Task(sid, Operation.reject("pay-s0", reason="too much")), "r", mode)
    assert out.status == "completed" and counts.tools == {"lookup-s0": 1}
    session, _ = worker.load(sid)
    refusal = session.messages[2]
    assert refusal.is_error and orjson.loads(refusal.text) == {"error": "too much"}
    # a reply appends the user's message and runs the loop
    out = run(worker, Task(sid, Operation.reply("Thanks [s0]")), "p", mode)
    assert out.status == "completed" and out.model_calls == 1
    session, v = worker.load(sid)
    assert session.messages[-2].role == "user" and session.messages[-2].text == "Thanks [s0]"
    # continue on a completed session runs the model once more
    out = run(worker, Task(sid, Operation.continue_()), "c", mode)
    assert out.model_calls == 1 and out.version == v + 1

    # submit_tool_results answers the manual call with a result computed elsewhere (a long tool)
    worker2, counts2, _ = setup()
    out = run(worker2, Task(sid, Operation.submit_tool_results({"pay-s0": {"status": "sent later"}})), "s", mode)
    assert out.status == "completed" and counts2.tools == {"lookup-s0": 1}
    session, _ = worker2.load(sid)
    assert orjson.loads(session.messages[2].text) == {"status": "sent later"}
    # errors= marks a result as a tool error
    worker3, _, _ = setup()
    run(worker3, Task(sid, Operation.submit_tool_results({"pay-s0": "bank offline"}, errors=["pay-s0"])), "e", mode)
    session, _ = worker3.load(sid)
    assert session.messages[2].is_error and session.messages[2].text == "bank offline"


@pytest.mark.parametrize("mode", MODES)
def test_manual_calls_leave_the_session_stored_and_the_task_finished(mode: str) -> None:
    """Approval and long tools: the task ends with the session awaiting, a new task resumes it."""
    worker, counts, _ = setup()
    sid = "ses_test_00000"
    fresh = allm.Session.new("Pay bob 5 EUR. [s9]", id="ses_new")
    worker.create(fresh)
    out = run(worker, Task("ses_new", Operation.continue_()), "c1", mode)
    assert out.status == "awaiting_tools" and out.waiting_for == ("pay-s9",) and out.model_calls == 1
    assert counts.tools == {}
    # continue on it is illegal: nothing here may run the manual call
    with pytest.raises(SessionError) as e:
        run(worker, Task("ses_new", Operation.continue_()), "c2", mode)
    assert e.value.reason == "invalid_status" and "legal now: submit_tool_result" in str(e.value)
    # a tool without a handler in this worker (run elsewhere) is left pending too
    engine = build_engine()
    no_handler = engine.with_tools(allm.tool("lookup", "Look something up."))
    w2 = Worker(worker.store, {"default": no_handler})
    out = run(w2, Task(sid, Operation.submit_tool_results({"pay-s0": "ok"})), "s1", mode)
    assert out.status == "awaiting_tools" and out.waiting_for == ("lookup-s0",)
    out = run(w2, Task(sid, Operation.submit_tool_results({"lookup-s0": {"rate": 2}})), "s2", mode)
    assert out.status == "completed"


@pytest.mark.parametrize("mode", MODES)
def test_a_handler_that_asks_the_user_waits_for_a_reply_task(mode: str) -> None:
    counts = Counts()
    engine = build_engine(counts.on_model, counts.on_tool, lookup_returns=lambda a: allm.AskUser("Which bank?", choices=["A", "B"]))
    worker = Worker(MemoryStore(), {"default": engine})
    worker.create(awaiting_session(0))
    out = run(worker, approve(), "a", mode)
    assert out.status == "awaiting_user"
    session, _ = worker.load("ses_test_00000")
    assert session.pending_question == "Which bank?" and session.metadata["ask_user"]["choices"] == ["A", "B"]
    assert session.messages[-1].role == "assistant" and session.messages[-1].text == "Which bank?"
    out = run(worker, Task("ses_test_00000", Operation.reply("A")), "r", mode)
    assert out.status == "completed" and out.model_calls == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_handler_that_halts_ends_the_run(mode: str) -> None:
    engine = build_engine(lookup_returns=lambda a: allm.Halt("booked", {"ref": 7}))
    worker = Worker(MemoryStore(), {"default": engine})
    worker.create(awaiting_session(0))
    out = run(worker, approve(), "a", mode)
    assert out.status == "completed" and out.model_calls == 1
    session, _ = worker.load("ses_test_00000")
    assert orjson.loads(session.messages[-1].text) == {"ref": 7}


@pytest.mark.parametrize("mode", MODES)
def test_max_turns_stops_with_the_session_idle(mode: str) -> None:
    worker, _, _ = setup(max_turns=1)
    out = run(worker, approve(), "a", mode)
    assert out.status == "idle" and out.halted_reason == "max_turns" and out.model_calls == 1
    out = run(worker, Task("ses_test_00000", Operation.continue_()), "c", mode)
    assert out.status == "completed"


@pytest.mark.parametrize("mode", MODES)
def test_a_model_error_mid_answer_is_committed_as_the_error_status(mode: str) -> None:
    def model(request: allm.Request) -> list[Any]:
        return [text("partial"), fake_error("provider_unavailable", "stream dropped")]

    engine = build_engine().with_adapter(allm.providers.Fake(function=model))
    worker = Worker(MemoryStore(), {"default": engine})
    worker.create(awaiting_session(0))
    out = run(worker, approve(), "a", mode)
    assert out.status == "error" and out.version == 3
    session, _ = worker.load("ses_test_00000")
    assert session.error.reason == "provider_unavailable"


@pytest.mark.parametrize("mode", MODES)
def test_a_model_call_that_fails_before_its_first_event_raises_and_keeps_earlier_steps(mode: str) -> None:
    def model(request: allm.Request) -> list[Any]:
        return [fake_error("invalid_request", "bad request", status=400, before_stream=True)]

    engine = build_engine().with_adapter(allm.providers.Fake(function=model))
    worker = Worker(MemoryStore(), {"default": engine})
    worker.create(awaiting_session(0))
    with pytest.raises(allm.AdapterError) as e:
        run(worker, approve(), "a", mode)
    assert e.value.reason == "invalid_request"
    session, version = worker.load("ses_test_00000")
    assert version == 2 and session.status == "idle"  # the approved call's result is committed


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("mode", MODES)
def test_misuse_is_a_typed_error_that_writes_nothing(mode: str) -> None:
    worker, counts, store = setup()
    sid = "ses_test_00000"
    before = store.get(NAMESPACE, sid)

    def raises(task: Any, cls: type[Exception], reason: str | None = None) -> Exception:
        with pytest.raises(cls) as e:
            run(worker, task, "x", mode)
        if reason is not None:
            assert getattr(e.value, "reason", None) == reason, e.value
        return e.value

    raises(Task("ses_missing", Operation.continue_()), SessionError, "not_found")
    raises(Task(sid, Operation.reply("hi")), SessionError, "invalid_status")
    raises(Task(sid, Operation.approve("nope")), SessionError, "unknown_tool_call_id")
    raises(Task(sid, Operation.reject("pay-s0", "nope")), SessionError, "unknown_tool_call_id")
    raises(Task(sid, Operation.continue_(), engine="other"), EngineError, "invalid_engine")
    raises({"session_id": sid}, ValidationError, "invalid_request")
    raises({"session_id": sid, "operation": {"op": "dance"}}, ValidationError, "invalid_request")
    assert store.get(NAMESPACE, sid) == before and counts.tools == {} and not counts.model

    w2 = Worker(store, {"default": build_engine().with_tools(allm.tool("pay", "no handler here", manual=True))})
    with pytest.raises(EngineError) as e:
        run(w2, Task(sid, Operation.approve("pay-s0")), "x", mode)
    assert e.value.reason == "unknown_tool"
    assert store.get(NAMESPACE, sid) == before and store.keys(worker.claims_namespace) == []

    store.put(NAMESPACE, "ses_bad", b'{"allm_worker": 1, "session": {"nope": 1}}')
    with pytest.raises(StoreError) as e2:
        run(worker, Task("ses_bad", Operation.continue_()), "x", mode)
    assert e2.value.reason == "corrupt"

    w3 = Worker(store, lambda name: "not an engine")  # type: ignore[arg-type,return-value]
    with pytest.raises(EngineError) as e:
        run(w3, Task(sid, Operation.continue_()), "x", mode)
    assert e.value.reason == "invalid_engine"


def test_a_session_in_the_error_state_names_recover() -> None:
    worker, _, _store = setup()
    s = allm.Session(id="ses_err", status="error", metadata={"error": allm.AdapterError("x", reason="timeout")})
    worker.create(s)
    with pytest.raises(SessionError) as e:
        worker.run(Task("ses_err", Operation.continue_()))
    assert e.value.reason == "session_in_error_state" and "recover" in str(e.value)


def test_create_is_create_only_and_load_reads_back() -> None:
    worker, _, _ = setup()
    with pytest.raises(StoreError) as e:
        worker.create(awaiting_session(0))
    assert e.value.reason == "version_conflict"
    session, version = worker.load("ses_test_00000")
    assert session == awaiting_session(0) and version == 1
    assert asyncio.run(worker.aload("ses_test_00000")) == (session, 1)
    assert asyncio.run(worker.acreate(awaiting_session(1))) == 1
    with pytest.raises(SessionError) as e2:
        worker.load("ses_nope")
    assert e2.value.reason == "not_found"


def test_operation_and_task_values() -> None:
    ops = [
        Operation.continue_(),
        Operation.reply("hi"),
        Operation.submit_tool_results({"a": {"x": 1}, "b": "s"}, errors=["b"]),
        Operation.approve("a", "b"),
        Operation.reject("a", reason="no"),
    ]
    for op in ops:
        assert Operation.from_dict(orjson.loads(orjson.dumps(op.to_dict()))) == op
        t = Task("ses_1", op, "eng", "tenant-1")
        assert Task.from_dict(orjson.loads(orjson.dumps(t.to_dict()))) == t
    assert Operation.from_dict({"op": "reject", "tool_call_ids": ["a"]}).reason == "The user declined this tool call."
    bad: Sequence[Any] = [
        {"op": "reply"},
        {"op": "reply", "text": ""},
        {"op": "reply", "text": 3},
        {"op": "continue", "text": "x"},
        {"op": "approve"},
        {"op": "approve", "tool_call_ids": "a"},
        {"op": "approve", "tool_call_ids": [""]},
        {"op": "submit_tool_results"},
        {"op": "submit_tool_results", "results": {"a": 1}, "errors": ["b"]},
        {"op": "continue", "tool_call_ids": ["a"]},
        {"op": "continue", "reason": "x"},
        {"op": "continue", "api_key": "sk-x"},
        "continue",
    ]
    for b in bad:
        with pytest.raises(ValidationError):
            Operation.from_dict(b)
    for t in [{"session_id": "", "operation": {"op": "continue"}}, {"session_id": "s", "operation": {"op": "continue"}, "key": "sk"},
              {"session_id": "s", "operation": {"op": "continue"}, "key_ref": ""}]:
        with pytest.raises(ValidationError):
            Task.from_dict(t)


# ------------------------------------------------------------------------------ a worker that dies anywhere


class Crash(BaseException):
    """A worker process dying (not an Exception: nothing in the worker catches it)."""


class CrashingStore:
    """The store interface over a MemoryStore; dies before or after its ``at``-th operation."""

    def __init__(self, inner: MemoryStore, at: int, when: str) -> None:
        self.inner, self.at, self.when, self.n = inner, at, when, 0
        self.log: list[tuple[str, str, str]] = []

    def _op(self, name: str, *args: Any, **kw: Any) -> Any:
        self.n += 1
        self.log.append((name, args[0], args[1]))
        if self.n == self.at and self.when == "before":
            raise Crash(name)
        value = getattr(self.inner, name)(*args, **kw)
        if self.n == self.at and self.when == "after":
            raise Crash(name)
        return value

    def get(self, *a: Any, **k: Any) -> Record | None:
        return self._op("get", *a, **k)  # type: ignore[no-any-return]

    def put(self, *a: Any, **k: Any) -> int:
        return self._op("put", *a, **k)  # type: ignore[no-any-return]

    def delete(self, *a: Any, **k: Any) -> bool:
        return self._op("delete", *a, **k)  # type: ignore[no-any-return]

    async def aget(self, *a: Any, **k: Any) -> Record | None:
        return self.get(*a, **k)

    async def aput(self, *a: Any, **k: Any) -> int:
        return self.put(*a, **k)

    async def adelete(self, *a: Any, **k: Any) -> bool:
        return self.delete(*a, **k)


def until_rest(worker: Worker, task: Task, task_id: str, mode: str, clock: Clock) -> Outcome:
    for _ in range(10):
        out = run(worker, task, task_id, mode)
        if out.retry_after is None:
            return out
        clock.now += out.retry_after
    raise AssertionError("no progress")


@pytest.mark.parametrize("mode", MODES)
def test_a_worker_killed_at_any_point_is_finished_by_the_redelivery(mode: str) -> None:
    # the uninterrupted run, for reference
    ref_worker, _, ref_store = setup()
    run(ref_worker, approve(), "task-1", mode)
    reference = ref_store.get(NAMESPACE, "ses_test_00000")
    assert reference is not None
    w, _, inner0 = setup()
    probe = CrashingStore(inner0, 0, "never")
    Worker(probe, w.engines).run(approve(), task_id="task-1")  # type: ignore[arg-type]
    ops = probe.log
    assert [o[0] for o in ops].count("put") == 4 + 2  # 4 commits, 2 claims
    cases = 0
    for at in range(1, len(ops) + 1):
        for when in ("before", "after"):
            counts = Counts()
            inner = MemoryStore()
            clock = Clock()
            engine = build_engine(counts.on_model, counts.on_tool)
            Worker(inner, {"default": engine}).create(awaiting_session(0))
            dying = Worker(CrashingStore(inner, at, when), {"default": engine}, clock=clock)  # type: ignore[arg-type]
            with pytest.raises(Crash):
                run(dying, approve(), "task-1", mode)
            clock.now += 0.5
            redelivery = Worker(inner, {"default": engine}, clock=clock)
            out = until_rest(redelivery, approve(), "task-1", mode, clock)
            assert out.status == "completed"
            final = inner.get(NAMESPACE, "ses_test_00000")
            assert final is not None and final.value == reference.value and final.version == 5, (at, when)
            # what was in flight when the worker died, and may run again:
            name, ns, _key = ops[at - 1]
            # a commit right after a claim's check (get) is a tool call's; any other commit, a model call's
            commit_after_tool = name == "put" and ns == NAMESPACE and ops[at - 2][:2] == ("get", NAMESPACE) and at > 2
            in_flight_tool = when == "before" and commit_after_tool
            model_in_flight = when == "before" and name == "put" and ns == NAMESPACE and not commit_after_tool
            assert sum(counts.model.values()) == 2 + (1 if model_in_flight else 0), (at, when, counts.model)
            assert max(counts.model.values()) <= 2
            extra_tools = sum(counts.tools.values()) - 2
            assert set(counts.tools) == {"pay-s0", "lookup-s0"}
            assert extra_tools == (1 if in_flight_tool else 0), (at, when, counts.tools)
            cases += 1
    assert cases == 2 * len(ops)


# ------------------------------------------------------------------------------ two deliveries at once


class Gate:
    """Holds each arriving model call until ``n`` calls are inside, then lets them all go."""

    def __init__(self, n: int) -> None:
        self.barrier = threading.Barrier(n, timeout=30)

    def on_model(self, mark: str, n: int) -> None:
        self.barrier.wait()


def test_two_deliveries_at_once_one_commits_the_other_writes_nothing() -> None:
    gate = Gate(2)
    store = MemoryStore()
    engine = build_engine(gate.on_model)
    worker = Worker(store, {"default": engine})
    worker.create(allm.Session.new("Pay bob 5 EUR. [s1]", id="ses_race"))
    outcomes: list[Outcome] = []

    def deliver() -> None:
        outcomes.append(worker.run(Task("ses_race", Operation.continue_()), task_id="same-task"))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(outcomes) == 2
    won = [o for o in outcomes if not o.conflict]
    lost = [o for o in outcomes if o.conflict]
    assert len(won) == 1 and len(lost) == 1
    assert won[0].commits == 1 and won[0].status == "awaiting_tools"
    assert lost[0].commits == 0 and not lost[0].applied and lost[0].retry_after is not None
    session, version = worker.load("ses_race")
    assert version == 2 and len(session.messages) == 2  # one model step, stored once
    # the queue runs the loser again: it finds its input applied and does nothing
    again = worker.run(Task("ses_race", Operation.continue_()), task_id="same-task")
    assert again.duplicate and again.commits == 0 and worker.load("ses_race")[1] == 2


def test_two_approvals_at_once_run_the_tool_once() -> None:
    started, release = threading.Event(), threading.Event()
    counts = Counts()

    def slow_pay(args: dict[str, Any]) -> Any:
        started.set()
        assert release.wait(30)
        return {"status": "sent"}

    engine = build_engine(counts.on_model, counts.on_tool, pay_returns=slow_pay)
    clock = Clock()
    store = MemoryStore()
    worker = Worker(store, {"default": engine}, clock=clock)
    worker.create(awaiting_session(0))
    first: list[Outcome] = []
    t = threading.Thread(target=lambda: first.append(worker.run(approve(), task_id="click-1")))
    t.start()
    assert started.wait(30)
    second = worker.run(approve(), task_id="click-2")  # the same approval, clicked twice
    assert second.conflict and not second.applied and second.tool_calls == 0
    assert second.retry_after is not None and second.retry_after > 1  # the claim is fresh
    release.set()
    t.join(30)
    assert first[0].status == "completed"
    third = worker.run(approve(), task_id="click-2")  # retried: the call is answered
    assert not third.conflict and third.commits == 0
    assert counts.tools == {"pay-s0": 1, "lookup-s0": 1}


def test_a_claim_of_a_dead_worker_is_taken_over_after_the_claim_timeout() -> None:
    worker, counts, store = setup(claim_timeout=10.0, clock=(clock := Clock()))
    store.put(worker.claims_namespace, "ses_test_00000/1/pay-s0", orjson.dumps({"token": "dead", "at": clock.now}), expect=0)
    out = worker.run(approve(), task_id="t")
    assert out.conflict and out.retry_after is not None and 10.0 <= out.retry_after <= 10.2 and counts.tools == {}
    clock.now += out.retry_after
    out = worker.run(approve(), task_id="t")
    assert out.status == "completed" and counts.tools == {"pay-s0": 1, "lookup-s0": 1}


@pytest.mark.parametrize("mode", MODES)
def test_approving_two_calls_a_crash_between_them_runs_neither_twice(mode: str) -> None:
    runs: Counter[str] = Counter()

    def pay(args: dict[str, Any], ctx: allm.ToolContext) -> Any:
        runs[ctx.tool_call.id] += 1
        return {"status": "sent"}

    pay_tool = allm.tool("pay", "Send money.", handler=pay, manual=True)
    script = [[tool_call("pay", {"to": "a"}, id="p1"), tool_call("pay", {"to": "b"}, id="p2")], [text("paid both")]]
    session, _ = allm.Session.start(allm.testing.fake_engine(script[0], tools=[pay_tool]), "pay a and b", id="ses_two")
    inner = MemoryStore()
    Worker(inner, {}).create(session)
    task = Task("ses_two", Operation.approve("p1", "p2"))
    # load, claim p1, check, commit p1, release p1, [claim p2 <- dies here]
    dying = Worker(CrashingStore(inner, 6, "before"), {"default": allm.testing.fake_engine(*script, tools=[pay_tool])})  # type: ignore[arg-type]
    with pytest.raises(Crash):
        run(dying, task, "approve-both", mode)
    assert runs == {"p1": 1}
    stored, version = Worker(inner, {}).load("ses_two")
    assert version == 2 and [c.id for c in stored.pending_tool_calls] == ["p2"]
    worker = Worker(inner, {"default": allm.testing.fake_engine(*script[1:], tools=[pay_tool])})
    out = run(worker, task, "approve-both", mode)
    assert out.status == "completed" and out.tool_calls == 1 and runs == {"p1": 1, "p2": 1}
    assert run(worker, task, "approve-both", mode).duplicate


def test_prune_claims_removes_the_claims_dead_workers_left() -> None:
    worker, _, store = setup()
    store.put(worker.claims_namespace, "ses_test_00000/7/pay-s0", b'{"token": "dead", "at": 0}', expect=0)
    assert worker.prune_claims(max_age=3600) == []
    time.sleep(0.02)
    assert worker.prune_claims(max_age=0.01) == ["ses_test_00000/7/pay-s0"]
    assert store.keys(worker.claims_namespace) == []
