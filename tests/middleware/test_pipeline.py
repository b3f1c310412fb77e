"""Pipelines as values, the registry of names, storing them (engines, sessions), and the
errors for bad entries, names and stops."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import allm
from allm import codec
from allm import middleware as mw
from allm.testing import fake_engine, text


class Named:
    name = "named_one"

    def on_event(self, run: mw.Run, event: Any) -> None:
        pass


def make_named() -> Named:
    return Named()


def test_entries_and_names() -> None:
    budget = mw.TokenBudget(100)
    p = mw.Pipeline(["request_log", budget, Named, make_named])
    assert p.names == ("request_log", "token_budget", "named_one", "make_named")
    assert len(p) == 4 and list(p) == ["request_log", budget, Named, make_named]
    assert p == mw.Pipeline(["request_log", "token_budget", "named_one", "make_named"])  # by names
    assert hash(p) == hash(mw.Pipeline(list(p.names)))
    assert repr(p) == "Pipeline(['request_log', 'token_budget', 'named_one', 'make_named'])"
    assert (mw.Pipeline(["a"]) + ["b"]).names == ("a", "b")  # noqa: RUF005
    assert mw.Pipeline() + None == mw.Pipeline() and not mw.Pipeline()
    assert mw.as_pipeline(p) is p and mw.as_pipeline(None) == mw.Pipeline()
    with pytest.raises(AttributeError):
        p.entries = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("request_log", TypeError, "middleware is a sequence"),
        (42, TypeError, "middleware is a sequence"),
        ([42], TypeError, "a pipeline entry is a registered name, a middleware"),
        ([""], ValueError, "a middleware name is 1 to 64 characters"),
        (["has space"], ValueError, "a middleware name is 1 to 64 characters"),
    ],
)
def test_bad_entries_are_refused_where_they_are_given(value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        mw.Pipeline(value)
    with pytest.raises(error, match=message):
        allm.Engine(adapter=allm.providers.Fake(script=["x"]), middleware=value)
    with pytest.raises(error, match=message):
        allm.chat(fake_engine(["x"]), "hi", middleware=value)


def test_the_registry() -> None:
    mw.register("named_one", Named)
    mw.register("named_one", Named)  # the same registration again is accepted
    with pytest.raises(ValueError, match="already registered as 'named_one'"):
        mw.register("named_one", make_named)
    mw.register("named_one", make_named, replace=True)
    assert "named_one" in mw.registered() and "request_log" in mw.registered()
    assert mw.factory("named_one") is make_named
    shared = Named()
    mw.register("shared_one", shared)
    assert mw.factory("shared_one")() is shared
    with pytest.raises(TypeError, match="takes a factory or a middleware"):
        mw.register("x", 42)
    with pytest.raises(ValueError, match="middleware name"):
        mw.register("no way", Named)
    assert mw.unregister("named_one") and not mw.unregister("named_one")


def test_an_unregistered_name_is_a_typed_error_naming_it_at_call_time() -> None:
    engine = fake_engine(["x"], middleware=["tenant_limit"])
    with pytest.raises(allm.EngineError) as info:
        allm.stream(engine, "hi")  # raised by the call, before any event
    err = info.value
    assert err.reason == "unknown_middleware" and err.metadata["middleware"] == "tenant_limit"
    assert "no middleware is registered as 'tenant_limit'" in err.message
    assert "allm.middleware.register('tenant_limit', factory)" in err.message
    assert engine.adapter.calls == 0


def test_a_factory_that_makes_no_middleware_is_a_type_error() -> None:
    mw.register("not_one", lambda: object())
    with pytest.raises(TypeError, match="the factory registered as 'not_one' returned object"):
        allm.chat(fake_engine(["x"]), "hi", middleware=["not_one"])


def test_engines_store_middleware_by_name() -> None:
    engine = fake_engine(["x"], middleware=["request_log", mw.RateLimit(5, 60), Named])
    data = codec.dumps(engine)
    assert b'"middleware":["request_log","rate_limit","named_one"]' in data
    back = codec.loads(data, allm.Engine)
    assert back.middleware == engine.middleware and back.middleware.entries == ("request_log", "rate_limit", "named_one")
    assert b"middleware" not in codec.dumps(fake_engine(["x"]))  # the default is omitted
    assert pickle.loads(pickle.dumps(allm.Engine(adapter=allm.providers.Fake(script=["x"]), middleware=["a"]))).middleware.names == ("a",)
    bad = data.replace(b'["request_log","rate_limit","named_one"]', b'["fine", 3]')
    with pytest.raises(allm.ValidationError, match="stored Engine is invalid"):
        codec.loads(bad, allm.Engine)
    with pytest.raises(allm.ValidationError, match="stored Engine is invalid"):
        codec.loads(data.replace(b'"named_one"', b'"not a name"'), allm.Engine)


def test_sessions_store_pipeline_names() -> None:
    s = allm.Session.new("hi", pipeline=["tenant_limit", "request_log"])
    assert s.pipeline == ("tenant_limit", "request_log")
    back = allm.Session.from_json(s.to_json())
    assert back == s and back.pipeline == s.pipeline
    assert b"pipeline" not in allm.Session.new("hi").to_json()
    assert pickle.loads(pickle.dumps(s)) == s
    with pytest.raises(TypeError, match="registered middleware names"):
        allm.Session.new("hi", pipeline=[mw.RateLimit(1, 1)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="registered middleware names"):
        allm.Session.new("hi", pipeline="request_log")
    with pytest.raises(ValueError, match="middleware name"):
        allm.Session.new("hi", pipeline=["bad name"])


names = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)


@given(st.lists(names, max_size=6))
def test_pipelines_round_trip_through_stored_sessions_and_engines(pipeline: list[str]) -> None:
    s = allm.Session.new("hi", pipeline=pipeline)
    assert allm.Session.from_json(s.to_json()).pipeline == tuple(pipeline)
    e = allm.Engine(adapter=allm.providers.Fake(script=["x"]), middleware=pipeline)
    assert codec.loads(codec.dumps(e), allm.Engine).middleware.names == tuple(pipeline)


@pytest.mark.parametrize("reason", ["completed", "error", "max_turns", "cancelled", "", "two words"])
def test_a_stop_may_not_use_the_loops_reasons(reason: str) -> None:
    with pytest.raises(ValueError):
        mw.Stop(reason)
    with pytest.raises(ValueError):
        mw.TokenBudget(10, name=reason)


def test_stop_and_refuse_values() -> None:
    s = mw.Stop("held", "why", {"n": 1})
    assert s == mw.Stop("held", "why", {"n": 1}) and s.metadata == {"n": 1}
    assert mw.Refuse().message == "" and mw.Refuse("no", {"a": 1}).metadata == {"a": 1}


def test_a_session_runs_its_pipeline_by_name_in_every_operation() -> None:
    seen: list[str] = []

    class Count:
        name = "counted"

        def before_model(self, run: mw.Run, request: allm.Request) -> None:
            seen.append(run.session_id or "")

    mw.register("counted", Count)
    engine = fake_engine([text("a")], [text("b")], [text("c")])
    s, _ = allm.Session.start(engine, "one", pipeline=["counted"])
    s, _ = s.reply(engine, "two")
    s = allm.Session.from_json(s.to_json())
    s, _ = s.reply(engine, "three")
    assert seen == [s.id] * 3
    mw.unregister("counted")
    with pytest.raises(allm.EngineError) as info:
        s.reply(engine, "four")
    assert info.value.reason == "unknown_middleware" and info.value.metadata["middleware"] == "counted"
