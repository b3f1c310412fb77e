"""Sessions stored mid-loop and resumed in another process (a real subprocess) with the same
named pipeline, its counts shared through a real Redis; a process that has not registered a
name gets a typed error naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

import allm
from allm import codec
from allm import middleware as mw
from allm.testing import fake_engine, text, tool_call, usage
from tests.middleware.conftest import ADD, ROOT, child_env
from tests.middleware.resume_worker import register_names

TRANSFER = allm.tool(
    "transfer", "Send money.", {"type": "object", "properties": {"amount": {"type": "integer"}}}, manual=True
)


def stored_mid_loop(tmp_path: Path, redis_url: str) -> allm.Session:
    """A session whose first call asked for a manual tool: stored awaiting it, in files."""
    register_names(redis_url)
    engine = fake_engine(
        [tool_call("transfer", {"amount": 50}, id="t1"), usage(100, 20)],  # this process
        [tool_call("add", {"a": 2, "b": 3}, id="a1"), usage(150, 10)],  # the resuming process
        [text("Sent 50 and added 2 + 3."), usage(170, 12)],  # never reached: the rate limit stops it
        tools=[ADD, TRANSFER],
        middleware=["request_log"],
    )
    session, result = allm.Session.start(
        engine, "Send 50 and add 2 and 3.", pipeline=["tenant_rate", "chat_budget"], context={"tenant": "acme"}
    )
    assert result.halted_reason == "manual_tool_calls" and session.status == "awaiting_tools"
    (tmp_path / "engine.json").write_bytes(codec.dumps(engine))
    (tmp_path / "session.json").write_bytes(session.to_json())
    assert b'"pipeline":["tenant_rate","chat_budget"]' in session.to_json()
    assert b'"middleware":["request_log"]' in codec.dumps(engine)
    return session


def resume(tmp_path: Path, redis_url: str, mode: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tests.middleware.resume_worker", str(tmp_path / "engine.json"),
           str(tmp_path / "session.json"), str(tmp_path / "out.json"), redis_url, mode]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = orjson.loads(proc.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_session_resumed_in_another_process_runs_the_same_named_pipeline(tmp_path: Path, redis_url: str, mode: str) -> None:
    import redis

    session = stored_mid_loop(tmp_path, redis_url)
    out = resume(tmp_path, redis_url, mode)
    # The rate limit (2 calls per tenant, kept in Redis) counted this process's call and the
    # child's: the child's second call is refused.
    assert out["halted_reason"] == "tenant_rate" and out["pipeline"] == ["tenant_rate", "chat_budget"]
    assert out["stopped_by"]["middleware"] == "tenant_rate"
    assert out["stopped_by"]["key"] == "acme" and out["stopped_by"]["limit"] == 2
    assert out["calls"] == 2  # the stored Fake had made one call; the child made one more
    resumed = allm.Session.from_json((tmp_path / "out.json").read_bytes())
    assert resumed.id == session.id and resumed.status == "completed" and resumed.pipeline == session.pipeline
    roles = [(m.role, m.tool_call_id) for m in resumed.thread.messages]
    assert roles == [("user", None), ("assistant", None), ("tool", "t1"), ("assistant", None), ("tool", "a1")]
    assert orjson.loads(resumed.thread.messages[2].text)["pid"] == out["pid"]  # approved in the child
    r = redis.Redis.from_url(redis_url)
    assert r.zcard("allm:limits:h:tenant_rate|acme") == 2
    assert int(r.get(f"allm:limits:s:chat_budget|chat|{session.id}") or 0) == 120 + 160  # both processes' calls
    r.close()


def test_resuming_without_the_registered_names_is_a_typed_error_naming_one(tmp_path: Path, redis_url: str) -> None:
    stored_mid_loop(tmp_path, redis_url)
    out = resume(tmp_path, redis_url, "bare")
    assert out["reason"] == "unknown_middleware" and out["metadata"]["middleware"] == "tenant_rate"
    assert "no middleware is registered as 'tenant_rate'" in out["message"]
    assert "request_log" in out["metadata"]["registered"]  # the engine's built-in name was found


def test_a_session_stopped_by_its_budget_resumes_elsewhere_still_stopped(redis_url: str) -> None:
    mw.register("small_budget", lambda: mw.TokenBudget(100, per="chat", limits=redis_url))
    engine = fake_engine([text("one"), usage(60, 60)], [text("never")])
    session, result = allm.Session.start(engine, "hi", pipeline=["small_budget"])
    assert result.halted_reason == "completed"
    again = allm.Session.from_json(session.to_json())  # as another process would load it
    again, stopped = again.reply(engine, "more")
    assert stopped.halted_reason == "token_budget" and again.status == "completed"
    assert stopped.metadata["stopped_by"]["spent_tokens"] == 120 and engine.adapter.calls == 1
