"""TokenBudget through the Fake: per call, per chat (a session's operations) and per key per
window, in memory and in Redis, with both drivers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import allm
from allm import middleware as mw
from allm.testing import fake_engine, text, tool_call, usage
from tests.middleware.conftest import ADD, DRIVERS, Clock, chat


def loop_script(turns: int, tokens: tuple[int, int] = (10, 5)) -> list[list[Any]]:
    """``turns`` tool-calling turns, then an answer; each call reports ``tokens`` (input, output)."""
    calls = [[tool_call("add", {"a": i, "b": 1}), usage(*tokens)] for i in range(turns)]
    return [*calls, [text("done"), usage(*tokens)]]


@DRIVERS
def test_a_call_budget_stops_a_tool_loop_at_the_limit(asynchronous: bool) -> None:
    engine = fake_engine(*loop_script(5), tools=[ADD])
    result = chat(engine, "add", asynchronous, middleware=[mw.TokenBudget(45)], max_turns=10)
    # 15 tokens per call: 15, 30, 45 -> the fourth call is not made.
    assert engine.adapter.calls == 3 and len(result.steps) == 3
    assert result.halted_reason == "token_budget"
    assert result.metadata["stopped_by"] == {
        "middleware": "token_budget",
        "message": "the call budget of 45 tokens is spent (45)",
        "budget": "call",
        "max_tokens": 45,
        "spent_tokens": 45,
    }
    roles = [m.role for m in result.thread.messages]
    assert roles == ["user"] + ["assistant", "tool"] * 3  # every tool call answered: the thread is whole
    session = allm.Session.new("add").settle(result)
    assert session.status == "completed" and session.thread == result.thread


def test_under_the_budget_nothing_changes() -> None:
    engine = fake_engine(*loop_script(2), tools=[ADD])
    result = allm.chat(engine, "add", middleware=[mw.TokenBudget(46)])
    assert result.halted_reason == "completed" and engine.adapter.calls == 3


def test_a_call_budget_counts_each_run_from_zero() -> None:
    budget = mw.TokenBudget(20)
    for _ in range(3):
        engine = fake_engine(*loop_script(3), tools=[ADD])
        result = allm.chat(engine, "add", middleware=[budget])
        assert result.halted_reason == "token_budget" and engine.adapter.calls == 2


@pytest.mark.parametrize(("count", "calls"), [("input", 3), ("output", 5), ("total", 2)])
def test_what_is_counted(count: str, calls: int) -> None:
    engine = fake_engine(*loop_script(6, (10, 5)), tools=[ADD])
    result = allm.chat(engine, "add", middleware=[mw.TokenBudget(25, count=count)], max_turns=10)  # type: ignore[arg-type]
    assert engine.adapter.calls == calls and result.halted_reason == "token_budget"


def test_unreported_usage_counts_nothing() -> None:
    engine = fake_engine([tool_call("add", {"a": 1, "b": 2})], [text("3")], tools=[ADD])
    assert allm.chat(engine, "add", middleware=[mw.TokenBudget(1)]).halted_reason == "completed"


def test_a_chat_budget_spans_a_sessions_operations() -> None:
    limits = mw.MemoryLimits()
    mw.register("chat_budget", lambda: mw.TokenBudget(40, per="chat", limits=limits))
    engine = fake_engine(*([[text(f"answer {i}"), usage(10, 5)] for i in range(5)]))
    session, r1 = allm.Session.start(engine, "one", pipeline=["chat_budget"])
    session, r2 = session.reply(engine, "two")
    session, r3 = session.reply(engine, "three")
    session, r4 = session.reply(engine, "four")
    assert [r.halted_reason for r in (r1, r2, r3, r4)] == ["completed", "completed", "completed", "token_budget"]
    assert r4.metadata["stopped_by"]["session_id"] == session.id and r4.metadata["stopped_by"]["spent_tokens"] == 45
    _other, r = allm.Session.start(engine, "elsewhere", pipeline=["chat_budget"])  # another chat: its own budget
    assert r.halted_reason == "completed"
    assert limits.total(f"token_budget|chat|{session.id}", None) == 45


@DRIVERS
def test_a_key_budget_per_window(asynchronous: bool, clock: Clock) -> None:
    limits = mw.MemoryLimits(clock=clock)
    budget = mw.TokenBudget(30, per="key", key="tenant", window=60, limits=limits)

    def run(tenant: str) -> allm.ChatResult:
        engine = fake_engine(*loop_script(4), tools=[ADD])
        return chat(engine, "add", asynchronous, middleware=[budget], context={"tenant": tenant}, max_turns=10)

    first = run("acme")
    assert first.halted_reason == "token_budget" and len(first.steps) == 2
    assert first.metadata["stopped_by"] == {
        "middleware": "token_budget",
        "message": "the key budget of 30 tokens is spent (30)",
        "budget": "key",
        "max_tokens": 30,
        "spent_tokens": 30,
        "key": "acme",
        "window": 60,
    }
    again = run("acme")
    assert again.halted_reason == "token_budget" and again.steps == ()  # spent in this window
    assert run("globex").halted_reason == "token_budget" and len(run("initech").steps) == 2  # other keys: their own
    clock.now += 60  # the next window
    assert len(run("acme").steps) == 2


def test_a_key_from_a_function_and_a_run_without_a_key() -> None:
    budget = mw.TokenBudget(10, per="key", key=lambda run: run.context.get("user"), limits=mw.MemoryLimits())
    assert allm.chat(fake_engine([text("hi"), usage(5, 5)]), "hi", middleware=[budget], context={"user": "u1"}).halted_reason == "completed"
    engine = fake_engine([text("hi")])
    with pytest.raises(allm.EngineError) as info:
        allm.chat(engine, "hi", middleware=[mw.TokenBudget(10, per="key", key="tenant")])
    err = info.value
    assert err.reason == "middleware_failed" and "context['tenant'] is empty" in err.message
    assert engine.adapter.calls == 0


@DRIVERS
def test_a_key_budget_in_redis_is_shared(asynchronous: bool, redis_url: str) -> None:
    import redis

    def run(limits: mw.RedisLimits) -> allm.ChatResult:
        engine = fake_engine(*loop_script(4), tools=[ADD])
        budget = mw.TokenBudget(40, per="key", key="tenant", window=3600, limits=limits)
        return chat(engine, "add", asynchronous, middleware=[budget], context={"tenant": "acme"}, max_turns=10)

    a, b = mw.RedisLimits(redis_url), mw.RedisLimits(redis_url)  # two clients, as two processes have
    try:
        first = run(a)
        assert len(first.steps) == 3 and first.halted_reason == "token_budget"  # 15 + 15 + 15 >= 40
        second = run(b)
        assert second.steps == () and second.metadata["stopped_by"]["spent_tokens"] == 45
    finally:
        a.close()
        b.close()
    r = redis.Redis.from_url(redis_url)
    keys = [k.decode() for k in r.keys("allm:limits:s:*")]
    assert len(keys) == 1 and keys[0].startswith("allm:limits:s:token_budget|key|acme:")
    assert int(r.get(keys[0]) or 0) == 45 and 0 < r.pttl(keys[0]) <= 7_200_000
    r.close()


def test_redis_sums_without_a_window_and_with_one(redis_url: str) -> None:
    limits = mw.RedisLimits(redis_url, prefix="t:")
    try:
        assert limits.add("k", 5, None) == 5 and limits.add("k", 7, None) == 12 and limits.total("k", None) == 12
        assert limits.total("other", None) == 0
        assert limits.add("w", 3, 0.05) == 3
        import time

        time.sleep(0.12)  # past the window (two windows of 50 ms)
        assert limits.total("w", 0.05) == 0

        async def go() -> tuple[int, int]:
            try:
                return await limits.aadd("k", 1, None), await limits.atotal("k", None)
            finally:
                await limits.aclose()

        assert asyncio.run(go()) == (13, 13)
    finally:
        limits.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens must be a positive int"),
        ({"max_tokens": 1.5}, "max_tokens must be a positive int"),
        ({"max_tokens": 10, "per": "week"}, "per must be 'call', 'chat' or 'key'"),
        ({"max_tokens": 10, "per": "key"}, "per='key' needs key="),
        ({"max_tokens": 10, "window": -1}, "window must be a positive number or None"),
        ({"max_tokens": 10, "count": "cost"}, "count must be 'total', 'input' or 'output'"),
    ],
)
def test_bad_budgets(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mw.TokenBudget(**kwargs)
    with pytest.raises(TypeError, match="limits is a MemoryLimits"):
        mw.TokenBudget(10, limits=42)  # type: ignore[arg-type]
