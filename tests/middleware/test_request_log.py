"""RequestLog: one structured record per point of a run, through :mod:`logging`, and never a
key: hypothesis draws keys and a real adapter talks to a loopback server that echoes the key in
a tool call's arguments and in an error body; every record (message and ``record.allm``), the
whole DEBUG log of ``allm`` and every byte the rate limit and budgets keep in Redis are scanned
for the key, as ``tests/test_key_leaks.py`` does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import allm
from allm import keys
from allm import middleware as mw
from allm.testing import fake_engine, text, tool_call, usage
from tests.adapters import WIRES
from tests.loopback import LoopbackServer, Req, Writer
from tests.middleware.conftest import ADD
from tests.test_key_leaks import api_keys, find_leaks


class Records(logging.Handler):
    """Every record of a logger, kept."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> list[str]:
        out = []
        for r in self.records:
            out.append(r.getMessage())
            data = getattr(r, "allm", None)
            if data is not None:
                out.append(orjson.dumps(data).decode())
                out.append(repr(data))
        return out


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("allm")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def kinds(records: Records) -> list[str]:
    return [r.allm["kind"] for r in records.records if hasattr(r, "allm")]


def test_one_record_per_point(records: Records) -> None:
    engine = fake_engine([tool_call("add", {"a": 1, "b": 2}, id="c1"), usage(10, 4)], [text("3"), usage(20, 2)], tools=[ADD])
    result = allm.chat(engine, "add", middleware=["request_log"], context={"tenant": "acme"}, session_id="ses_x")
    assert result.halted_reason == "completed"
    assert kinds(records) == ["model_call", "model_response", "tool_call", "tool_result", "step", "model_call", "model_response", "step", "chat"]
    by_kind = {r.allm["kind"]: r for r in reversed(records.records)}
    first = [r.allm for r in records.records]
    run_ids = {d["run_id"] for d in first}
    assert len(run_ids) == 1 and all(d["session_id"] == "ses_x" for d in first)
    assert first[0] == {"kind": "model_call", "run_id": first[0]["run_id"], "session_id": "ses_x", "turn": 0,
                        "model": "fake", "messages": 1, "tools": ["add"]}  # fmt: skip
    assert first[1]["input_tokens"] == 10 and first[1]["total_tokens"] == 14 and first[1]["tool_calls"] == ["add"]
    assert first[3] == {**first[3], "tool_name": "add", "tool_call_id": "c1", "ok": True, "error_reason": None}
    assert by_kind["chat"].allm["halted_reason"] == "completed" and by_kind["chat"].allm["steps"] == 2
    assert [d["turn"] for d in first] == [0, 0, 0, 0, 0, 1, 1, 1, 1]  # each record in the turn it belongs to
    record = by_kind["model_response"]
    assert record.name == "allm.middleware" and record.levelno == logging.INFO
    kind, payload = record.getMessage().split(" ", 1)
    assert kind == "model_response" and orjson.loads(payload) == record.allm


def test_a_stop_is_logged_with_who_stopped(records: Records) -> None:
    rate = mw.RateLimit(1, 60, limits=mw.MemoryLimits())
    engine = fake_engine([text("hi")], [text("again")])
    allm.chat(engine, "hi", middleware=[rate])
    records.records.clear()
    allm.chat(engine, "hi", middleware=[rate, mw.RequestLog()])
    assert kinds(records) == ["chat"]  # the limit stopped the run before the log saw a request
    chat = records.records[-1].allm
    assert chat["halted_reason"] == "rate_limit" and chat["stopped_by"]["middleware"] == "rate_limit"
    records.records.clear()
    allm.chat(engine, "hi", middleware=[mw.RequestLog(), rate])
    assert kinds(records) == ["model_call", "chat"]  # first in line, the log saw the request the limit stopped


def test_levels_events_and_context(records: Records) -> None:
    log = mw.RequestLog("allm.middleware.audit", level="DEBUG", events=True, context_keys=["tenant", "api_key", "region"])
    allm.chat(fake_engine([text("hi")]), "hi", middleware=[log], context={"tenant": "acme", "api_key": "abc123def456", "other": 1})
    data = [r.allm for r in records.records]
    assert {r.name for r in records.records} == {"allm.middleware.audit"}
    assert data[0]["context"] == {"tenant": "acme", "api_key": "[redacted]"}
    assert [d["type"] for d in data if d["kind"] == "event"] == ["MessageStarted", "TextDelta", "TextCompleted", "MessageCompleted"]
    records.records.clear()
    logging.getLogger("allm.middleware.quiet").setLevel(logging.WARNING)
    allm.chat(fake_engine([text("hi")]), "hi", middleware=[mw.RequestLog("allm.middleware.quiet")])
    assert records.records == []
    with pytest.raises(ValueError, match="logging level"):
        mw.RequestLog(level="LOUD")


def test_content_is_logged_only_when_asked_and_key_shapes_are_redacted(records: Records) -> None:
    key = "sk-proj-" + "Ab3" * 12
    allm.chat(fake_engine([text(f"Your key {key} is set")]), f"my key is {key}", middleware=[mw.RequestLog(content=True)])
    texts = records.texts()
    assert any("my key is [redacted]" in t for t in texts) and any("Your key [redacted] is set" in t for t in texts)
    assert find_leaks(key, texts) == []
    records.records.clear()
    allm.chat(fake_engine([text("the answer")]), "the question", middleware=[mw.RequestLog()])
    assert not [t for t in records.texts() if "the question" in t or "the answer" in t]


# ------------------------------------------------------------------------------ leak scan


def tool_call_body(key: str) -> bytes:
    """An OpenAI chat completion asking for ``echo`` with the key in its arguments."""
    arguments = orjson.dumps({"note": f"use {key}"}).decode()
    return orjson.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1-nano",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "echo", "arguments": arguments}}],
        }}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    })  # fmt: skip


def echoing_handler() -> Any:
    wire = WIRES["openai_chat"]

    async def handler(req: Req, w: Writer) -> None:
        key = wire.key_of(req.headers) or ""
        if b'"role":"tool"' in req.body:  # the second turn: refused, the key echoed back
            echo = f"Incorrect API key provided: {key}; header authorization: Bearer {key}"
            await w.respond(401, wire.error_body(echo, 401), {"x-request-id": "req_1"})
        else:
            await w.respond(200, tool_call_body(key))

    return handler


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    s = LoopbackServer().start()
    s.handler = echoing_handler()
    yield s
    s.stop()


ECHO = allm.tool("echo", schema={"type": "object", "properties": {"note": {"type": "string"}}}, handler=lambda a: {"echo": a["note"]})
LOG = mw.RequestLog(level=logging.DEBUG, events=True, context_keys=["tenant", "api_key", "authorization", "note"])


def leaky_runs(base: str, key: str, scoped: bool, redis_url: str) -> list[allm.ChatResult]:
    counted = [
        mw.RateLimit(100, 60, key="tenant", limits=redis_url),
        mw.TokenBudget(10_000, per="key", key="tenant", window=60, limits=redis_url),
        mw.TokenBudget(10_000, per="chat", limits=redis_url, name="chat_budget"),
    ]
    engine = allm.Engine(adapter=WIRES["openai_chat"].make(base), model="gpt-4.1-nano", tools=[ECHO], middleware=[LOG, *counted])
    options: dict[str, Any] = {
        "context": {"tenant": "acme", "api_key": key, "authorization": f"Bearer {key}", "note": "kept"},
        "http_streaming": False,
        "retry": allm.RetryPolicy(max_attempts=1),
        "session_id": "ses_leak",
    }
    prompt = f"my key is {key}, call echo"
    out = []
    if scoped:
        with keys.scope(key):
            out.append(allm.chat(engine, prompt, **options))
    else:
        out.append(allm.chat(engine, prompt, api_key=key, **options))
    out.append(asyncio.run(allm.achat(engine, prompt, api_key=key, **options)))
    return out


def _stored(redis_url: str, *, clear: bool = False) -> list[bytes]:
    """The Redis counts' names and values (scanned for the key too); ``clear`` empties the database after."""
    import redis

    from tests.workers.leaks import redis_bytes

    client = redis.Redis.from_url(redis_url)
    stored = [name + b" " + value for name, value in redis_bytes(client)]
    if clear:
        client.flushdb()
    client.close()
    return stored


#: What a run with a dummy key logs and stores: a key made of such text is not a leak.
BASELINE: list[str | bytes] = []


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(key=api_keys, scoped=st.booleans())
def test_the_request_log_never_contains_a_key(
    key: str, scoped: bool, server: LoopbackServer, records: Records, redis_url: str
) -> None:
    # Each example counts its own calls (the rate limit's window would span the examples).
    _stored(redis_url, clear=True)
    if not BASELINE:
        records.records.clear()
        leaky_runs(server.url, "QQQQQQQQQQQQQQQQ", False, redis_url)
        BASELINE.extend([*records.texts(), *(r.getMessage() for r in records.records), *_stored(redis_url, clear=True)])
    assume(not find_leaks(key, BASELINE))  # the key is not ordinary text the run shows anyway
    records.records.clear()
    before = len(server.requests)
    results = leaky_runs(server.url, key, scoped, redis_url)
    sent = [WIRES["openai_chat"].key_of(r.headers) for r in server.requests[before:]]
    assert len(sent) == 4 and all(k == key for k in sent)  # the key did travel
    for r in results:
        assert r.halted_reason == "error" and r.metadata["error"].reason == "authentication_failed"
        tool_msg = r.thread.messages[2]
        assert orjson.loads(tool_msg.text) == {"echo": f"use {key}"}  # the key was in the tool result the model read
    got = kinds(records)
    assert got.count("model_call") == 4 and got.count("tool_call") == 2 and got.count("chat") == 2
    errors = [r.allm["error"] for r in records.records if r.allm.get("kind") == "model_response" and "error" in r.allm]
    assert len(errors) == 2 and all(e["reason"] == "authentication_failed" for e in errors)
    stored = _stored(redis_url)
    assert any(b"chat_budget|chat|ses_leak" in s for s in stored) and any(b"rate_limit|acme" in s for s in stored)
    texts = records.texts() + [r.getMessage() for r in records.records] + stored
    assert find_leaks(key, texts) == []
