"""Built-ins from plain data (``from_spec``), the counters' own checks and errors, and the loop's
protocol around consultations."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import allm
from allm import middleware as mw
from allm.loop import Consult, Loop, LoopPolicy
from allm.testing import fake_engine, text


def test_specs_build_the_built_ins() -> None:
    p = mw.from_spec([
        {"use": "rate_limit", "limit": 5, "window": 60, "key": "tenant", "name": "route_rate"},
        {"use": "token_budget", "max_tokens": 1000, "per": "key", "key": "tenant", "window": 3600},
        {"use": "content_filter", "deny": ["secret"], "output": False},
        {"use": "request_log", "level": "DEBUG", "context_keys": ["tenant"]},
        {"use": "my_registered"},
        "another_name",
    ])  # fmt: skip
    assert p.names == ("route_rate", "token_budget", "content_filter", "request_log", "my_registered", "another_name")
    rate, budget, flt, log = p.entries[:4]
    assert isinstance(rate, mw.RateLimit) and (rate.limit, rate.window, rate.key) == (5, 60, "tenant")
    assert isinstance(budget, mw.TokenBudget) and (budget.per, budget.window) == ("key", 3600)
    assert isinstance(flt, mw.ContentFilter) and flt.output is False
    assert isinstance(log, mw.RequestLog) and log.level == 10
    assert mw.from_spec("request_log") == "request_log"


def test_a_redis_spec_shares_one_client_per_url(redis_url: str) -> None:
    a = mw.from_spec({"use": "rate_limit", "limit": 1, "window": 60, "redis": redis_url})
    b = mw.from_spec({"use": "token_budget", "max_tokens": 10, "per": "chat", "redis": redis_url})
    assert isinstance(a.limits, mw.RedisLimits) and a.limits is b.limits
    engine = fake_engine([text("one")], [text("two")], middleware=[a])
    assert [allm.chat(engine, "hi").halted_reason for _ in range(2)] == ["completed", "rate_limit"]


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ({"limit": 5}, ValueError, "needs 'use'"),
        ({"use": "rate_limit", "limit": 5}, ValueError, "rate_limit needs 'window'"),
        ({"use": "rate_limit", "limit": 5, "window": 60, "burst": 2}, ValueError, r"rate_limit does not take \['burst'\]"),
        ({"use": "rate_limit", "limit": 5, "window": 60, "redis": "redis://x", "limits": None}, ValueError, "redis or limits, not both"),
        ({"use": "mine", "limit": 5}, ValueError, "'mine' is not a built-in middleware"),
        ({"use": "rate_limit", "limit": 0, "window": 60}, ValueError, "limit must be a positive int"),
        ({"use": "has space"}, ValueError, "middleware name"),
        (42, TypeError, "a middleware spec is a name, a mapping or a list"),
    ],
)
def test_bad_specs(spec: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        mw.from_spec(spec)


def test_counter_arguments_are_checked() -> None:
    limits = mw.MemoryLimits()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="a limit is a positive int"):
            limits.hit("k", bad, 1)  # type: ignore[arg-type]
    for bad_window in (0, -1, float("inf"), "1"):
        with pytest.raises(ValueError, match="a window is a positive number of seconds"):
            limits.add("k", 1, bad_window)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit must be a positive int"):
        mw.RateLimit(0, 60)
    with pytest.raises(ValueError, match="window must be a positive number"):
        mw.RateLimit(1, 0)


def test_memory_limits_forget_idle_keys() -> None:
    now = [0.0]
    limits = mw.MemoryLimits(clock=lambda: now[0])
    for i in range(3000):
        limits.hit(f"k{i}", 1, 1.0)
        limits.add(f"s{i}", 1, 1.0)
        now[0] += 0.01
    # Every 1024 counts, keys whose window has passed are dropped: far fewer than 3000 remain.
    assert len(limits._hits) < 1200 and len(limits._sums) < 1200


def test_a_redis_refusal_other_than_a_connection_failure_is_a_typed_error(redis_url: str) -> None:
    import redis

    r = redis.Redis.from_url(redis_url)
    r.set("allm:limits:h:rate_limit|*", "not a sorted set")
    r.close()
    limits = mw.RedisLimits(redis_url)
    try:
        with pytest.raises(allm.errors.StoreError, match="refused a count: ResponseError") as info:
            limits.hit("rate_limit|*", 1, 60)
        assert info.value.reason == "unknown"

        async def go() -> None:
            with pytest.raises(allm.errors.StoreError):
                await limits.ahit("rate_limit|*", 1, 60)

        asyncio.run(go())
    finally:
        limits.close()


def test_a_twin_only_hook_needs_the_async_driver() -> None:
    class TwinOnly:
        name = "twin_only"

        async def abefore_model(self, run: mw.Run, request: allm.Request) -> None:
            return None

    assert asyncio.run(allm.achat(fake_engine([text("hi")]), "hi", middleware=[TwinOnly()])).halted_reason == "completed"
    with pytest.raises(allm.EngineError, match=r"twin_only has only an async before_model \(abefore_model\)"):
        allm.chat(fake_engine([text("hi")]), "hi", middleware=[TwinOnly()])


def test_the_loop_refuses_a_verdict_it_did_not_ask_for() -> None:
    class Watch:
        def before_model(self, run: mw.Run, request: allm.Request) -> None:
            return None

    loop = Loop(allm.Thread((allm.user("hi"),)), allm.request("hi"), LoopPolicy(middleware=[Watch()]))
    with pytest.raises(RuntimeError, match="consulted\\(\\) without a pending Consult"):
        loop.consulted(mw.Verdict())
    action = loop.next_action()
    assert type(action) is Consult and action.point == "before_model" and action.request is not None
    loop.consulted(action.perform())
    with pytest.raises(RuntimeError, match="without a pending Consult"):
        loop.consulted(mw.Verdict())
    assert type(loop.next_action()).__name__ == "CallModel"
