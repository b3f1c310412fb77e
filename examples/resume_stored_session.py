"""Store a session that waits for approval, resume it in another process.

A web request starts the conversation and stores the session (JSON bytes); later
a worker process, given only those bytes and the engine's configuration, approves
the pending call, finishes the turn and stores the result. No key, function or
client is ever in the stored session: the worker attaches its own tool handlers
by name.

Run it: ``python examples/resume_stored_session.py`` (no key, no network: the model is a Fake).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import allm
from allm import codec
from allm.testing import fake_engine, text, tool_call

REFUND_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "amount_eur": {"type": "number"}},
    "required": ["order_id", "amount_eur"],
}


def refund(args: dict[str, Any], ctx: allm.ToolContext) -> dict[str, Any]:
    """The worker's handler (the web process never runs it)."""
    return {"refunded": args["amount_eur"], "order_id": args["order_id"], "by_pid": os.getpid(), "tenant": ctx.context["tenant"]}


def worker(engine_json: bytes, session_json: bytes, out: Any) -> None:
    """Runs in a fresh interpreter: rebuild the engine, attach handlers by name, resume."""
    engine = codec.loads(engine_json, allm.Engine)
    engine = engine.with_tools(allm.tool("refund", "Refund an order.", REFUND_SCHEMA, handler=refund, manual=True))
    session = allm.Session.from_json(session_json)
    for call in session.pending_tool_calls:
        session = session.approve(engine, call.id)
    session, _result = session.continue_(engine)
    out.put(session.to_json())


def main() -> None:
    # --- the web process: start the conversation, stop at the approval, store.
    engine = fake_engine(
        [tool_call("refund", {"order_id": "A-7", "amount_eur": 30}, id="r1")],
        [text("Done: 30 EUR refunded for order A-7.")],
        tools=[allm.tool("refund", "Refund an order.", REFUND_SCHEMA, manual=True)],  # no handler here
        context={"tenant": "acme"},
    )
    session, result = allm.Session.start(engine, "Please refund order A-7 (30 EUR).")
    assert session.status == "awaiting_tools" and result.halted_reason == "manual_tool_calls"
    stored_session = session.to_json()
    stored_engine = codec.dumps(engine)
    assert b"handler" not in stored_session and b"api_key" not in stored_engine

    # --- the worker: another OS process, given only bytes.
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=worker, args=(stored_engine, stored_session, out))
    proc.start()
    resumed = allm.Session.from_json(out.get(timeout=60))
    proc.join(timeout=60)
    assert proc.exitcode == 0

    # --- back in the web process: the stored result is a complete conversation.
    assert resumed.id == session.id and resumed.status == "completed"
    tool_msg = next(m for m in resumed.thread.messages if m.role == "tool")
    assert '"refunded":30' in tool_msg.text and f'"by_pid":{os.getpid()}' not in tool_msg.text
    assert '"tenant":"acme"' in tool_msg.text
    assert resumed.thread.messages[-1].text == "Done: 30 EUR refunded for order A-7."
    print(resumed.thread.messages[-1].text)
    print("ok")


if __name__ == "__main__":
    main()
