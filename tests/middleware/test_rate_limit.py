"""RateLimit through the Fake: the N+1th model call in the window is refused, in memory and in
Redis, with both drivers, and across two processes sharing a real Redis."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

import allm
from allm import middleware as mw
from allm.testing import fake_engine, text, tool_call
from tests.middleware.conftest import ADD, DRIVERS, ROOT, Clock, chat, child_env


def one_call_chat(rate: mw.RateLimit, asynchronous: bool = False, tenant: str = "acme") -> allm.ChatResult:
    return chat(fake_engine([text("hi")]), "hi", asynchronous, middleware=[rate], context={"tenant": tenant})


@DRIVERS
def test_the_n_plus_first_call_in_the_window_is_refused(asynchronous: bool, clock: Clock) -> None:
    rate = mw.RateLimit(3, 60, key="tenant", limits=mw.MemoryLimits(clock=clock))
    ends = []
    for _ in range(3):
        ends.append(one_call_chat(rate, asynchronous).halted_reason)
        clock.now += 10
    refused = one_call_chat(rate, asynchronous)
    assert ends == ["completed"] * 3 and refused.halted_reason == "rate_limit"
    assert refused.steps == () and refused.final_response is None
    assert refused.metadata["stopped_by"] == {
        "middleware": "rate_limit",
        "message": "more than 3 model calls in 60 s for this key",
        "key": "acme",
        "limit": 3,
        "window": 60,
        "retry_after": pytest.approx(30.0),  # the first call leaves the window 30 s from now
    }
    assert one_call_chat(rate, asynchronous, tenant="globex").halted_reason == "completed"  # per key
    clock.now += 30  # the window slides past the first call: one more is admitted
    assert one_call_chat(rate, asynchronous).halted_reason == "completed"
    assert one_call_chat(rate, asynchronous).halted_reason == "rate_limit"


def test_each_model_call_of_a_tool_loop_counts() -> None:
    rate = mw.RateLimit(2, 3600, limits=mw.MemoryLimits())
    engine = fake_engine([tool_call("add", {"a": 1, "b": 2})], [tool_call("add", {"a": 2, "b": 2})], [text("done")], tools=[ADD])
    result = allm.chat(engine, "add", middleware=[rate])
    assert result.halted_reason == "rate_limit" and engine.adapter.calls == 2
    assert [m.role for m in result.thread.messages] == ["user", "assistant", "tool", "assistant", "tool"]
    assert result.metadata["stopped_by"]["key"] == "*"  # no key: one limit for every run


def test_a_refused_session_turn_can_be_continued_once_the_window_passed(clock: Clock) -> None:
    limits = mw.MemoryLimits(clock=clock)
    mw.register("tenant_rate", lambda: mw.RateLimit(1, 60, key="tenant", limits=limits))
    engine = fake_engine([text("first")], [text("second")])
    session, r = allm.Session.start(engine, "one", pipeline=["tenant_rate"], context={"tenant": "acme"})
    session, r = session.reply(engine, "two")
    assert r.halted_reason == "rate_limit" and session.status == "completed"
    assert r.metadata["stopped_by"]["retry_after"] == pytest.approx(60.0)
    clock.now += r.metadata["stopped_by"]["retry_after"]
    session, r = session.continue_(engine)
    assert r.halted_reason == "completed" and session.thread.messages[-1].text == "second"


def test_memory_limits_are_exact_under_threads() -> None:
    limits = mw.MemoryLimits()
    rate = mw.RateLimit(25, 3600, limits=limits)
    ends: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            r = one_call_chat(rate)
            with lock:
                ends.append(r.halted_reason)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ends.count("completed") == 25 and ends.count("rate_limit") == 35


@DRIVERS
def test_redis_refuses_the_n_plus_first_call(asynchronous: bool, redis_url: str) -> None:
    import redis

    limits = mw.RedisLimits(redis_url)
    rate = mw.RateLimit(3, 600, key="tenant", limits=limits)
    try:
        ends = [one_call_chat(rate, asynchronous).halted_reason for _ in range(4)]
        assert ends == ["completed", "completed", "completed", "rate_limit"]
        refused = one_call_chat(rate, asynchronous)
        wait = refused.metadata["stopped_by"]["retry_after"]
        assert refused.halted_reason == "rate_limit" and 590 < wait <= 600
        assert one_call_chat(rate, asynchronous, tenant="globex").halted_reason == "completed"
    finally:
        limits.close()
    r = redis.Redis.from_url(redis_url)
    assert r.zcard("allm:limits:h:rate_limit|acme") == 3  # refused calls are not recorded
    assert 0 < r.pttl("allm:limits:h:rate_limit|acme") <= 601_000
    r.close()


def test_redis_windows_slide(redis_url: str) -> None:
    limits = mw.RedisLimits(redis_url)
    try:
        assert [limits.hit("k", 2, 0.2).allowed for _ in range(3)] == [True, True, False]
        refused = limits.hit("k", 2, 0.2)
        assert refused.count == 2 and refused.retry_after is not None and 0 <= refused.retry_after <= 0.2
        time.sleep(refused.retry_after + 0.05)
        assert limits.hit("k", 2, 0.2).allowed
    finally:
        limits.close()


def test_an_unreachable_redis_fails_the_run_with_a_typed_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    limits = mw.RedisLimits(f"redis://:hunter2secret@127.0.0.1:{port}/0")
    engine = fake_engine([text("hi")])
    with pytest.raises(allm.errors.StoreError) as info:
        allm.chat(engine, "hi", middleware=[mw.RateLimit(5, 60, limits=limits)])
    err = info.value
    assert err.reason == "unavailable" and f"127.0.0.1:{port}/0 cannot be reached" in err.message
    assert "hunter2" not in str(err) + repr(err) + repr(limits)
    assert engine.adapter.calls == 0


def test_two_processes_sharing_redis_admit_exactly_the_limit(redis_url: str, tmp_path: Path) -> None:
    limit, chats = 7, 10
    procs = []
    for i in range(2):
        cmd = [sys.executable, "-m", "tests.middleware.rate_worker", redis_url, str(limit), str(chats),
               str(tmp_path / f"ready{i}"), str(tmp_path / "go")]  # fmt: skip
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    (tmp_path / "go").write_text("go")
    outs: list[dict[str, Any]] = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(orjson.loads(out.strip().splitlines()[-1]))
    assert len({o["pid"] for o in outs}) == 2
    ends = [e for o in outs for e in o["ends"]]
    assert ends.count("completed") == limit and ends.count("rate_limit") == 2 * chats - limit
    assert sum(o["calls"] for o in outs) == limit  # a refused call never reached the model
    assert all(0 < w <= 3600 for o in outs for w in o["retry_after"])
