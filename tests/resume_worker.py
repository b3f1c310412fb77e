"""A worker process that resumes a stored session (run by tests/test_session.py).

Usage: python tests/resume_worker.py ENGINE_JSON SESSION_JSON OUT_JSON

It is given only bytes: the engine's stored configuration (adapter, model, tool
definitions; a Fake here, whose script continues the conversation) and the stored
session. Handlers are code, so this worker attaches its own by tool name, approves
the pending tool calls, continues the turn and writes the resulting session.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import allm
from allm import codec


def transfer_funds(args: dict[str, Any], ctx: allm.ToolContext) -> dict[str, Any]:
    return {
        "status": "sent",
        "to": args["to"],
        "amount_eur": args["amount_eur"],
        "worker_pid": os.getpid(),
        "tenant": ctx.context.get("tenant"),
        "session_id": ctx.session_id,
    }


def main() -> None:
    engine_path, session_path, out_path = sys.argv[1:4]
    stored_engine = codec.loads(Path(engine_path).read_bytes(), allm.Engine)
    known = stored_engine.tool("transfer_funds")
    assert known is not None and known.handler is None  # definitions travel, functions do not
    engine = stored_engine.with_tools(
        allm.tool(known.name, known.description, known.schema, handler=transfer_funds, manual=known.manual)
    )
    session = allm.Session.from_json(Path(session_path).read_bytes())
    assert session.status == "awaiting_tools", session.status
    for call in session.pending_tool_calls:
        session = session.approve(engine, call.id)
    session, result = session.continue_(engine)
    Path(out_path).write_bytes(session.to_json())
    print(f"{os.getpid()} {result.halted_reason}")


if __name__ == "__main__":
    main()
