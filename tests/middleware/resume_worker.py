"""A process that resumes a stored session with its named pipeline (run by test_sessions.py).

Usage: python -m tests.middleware.resume_worker ENGINE_JSON SESSION_JSON OUT_JSON REDIS_URL MODE

It is given only bytes: the stored engine (a Fake whose script continues the conversation,
tool definitions, its middleware names) and the stored session (its thread, status and
pipeline names). Like any process that resumes sessions, it registers the middleware names
(``register_names``) and attaches tool handlers by name; then it approves the pending call and
continues the turn (``MODE`` ``sync`` or ``async``), writes the new session and prints how the
run ended. With ``MODE`` ``bare`` it registers nothing and prints the error it gets.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson

import allm
from allm import codec
from allm import middleware as mw


def register_names(redis_url: str) -> None:
    """The names every process of this deployment registers at start-up."""
    mw.register("tenant_rate", lambda: mw.RateLimit(2, 3600, key="tenant", limits=redis_url, name="tenant_rate"), replace=True)
    mw.register("chat_budget", lambda: mw.TokenBudget(10_000, per="chat", limits=redis_url, name="chat_budget"), replace=True)


def transfer(args: dict[str, Any]) -> dict[str, Any]:
    return {"status": "sent", "amount": args.get("amount"), "pid": os.getpid()}


def add(args: dict[str, Any]) -> int:
    return int(args["a"]) + int(args["b"])


def main() -> None:
    engine_path, session_path, out_path, redis_url, mode = sys.argv[1:6]
    stored = codec.loads(Path(engine_path).read_bytes(), allm.Engine)
    handlers = {"transfer": transfer, "add": add}
    engine = stored.with_tools(*[allm.tool(t.name, t.description, t.schema, handler=handlers[t.name], manual=t.manual) for t in stored.tools])
    session = allm.Session.from_json(Path(session_path).read_bytes())
    assert session.status == "awaiting_tools", session.status
    for call in session.pending_tool_calls:
        session = session.approve(engine, call.id)
    if mode == "bare":
        try:
            session.continue_(engine)
        except allm.EngineError as exc:
            print(orjson.dumps({"pid": os.getpid(), "reason": exc.reason, "metadata": exc.metadata, "message": exc.message}).decode())
            return
        raise SystemExit("expected an EngineError")
    register_names(redis_url)
    if mode == "async":
        session, result = asyncio.run(session.acontinue(engine))
    else:
        session, result = session.continue_(engine)
    Path(out_path).write_bytes(session.to_json())
    out = {"pid": os.getpid(), "halted_reason": result.halted_reason, "stopped_by": result.metadata.get("stopped_by"),
           "pipeline": list(session.pipeline), "calls": engine.adapter.calls}  # fmt: skip
    print(orjson.dumps(out).decode())


if __name__ == "__main__":
    main()
