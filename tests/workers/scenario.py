"""A deterministic agent for the worker tests: a manual ``pay`` tool, an automatic ``lookup`` tool.

The Fake model answers by the state of the thread it is sent, so any worker process that
builds this engine answers a given session the same way:

- no tool result yet: call ``pay`` (manual: a person approves it);
- after ``pay``'s result: call ``lookup``;
- after ``lookup``'s result: answer ``"done <session marker>"``.

``counter`` hooks let a test count model calls and handler runs (in memory here; in Redis
for the multi-process tests).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import allm
from allm.providers import Fake
from allm.testing import delay, text, tool_call

MARK = re.compile(r"\[(s\d+)\]")


def marker(request: allm.Request) -> str:
    m = MARK.search(request.messages[0].text)
    assert m is not None, request.messages[0].text
    return m.group(1)


def answer(request: allm.Request, seconds: float = 0.0) -> list[Any]:
    mark = marker(request)
    tools = [m.name for m in request.messages if m.role == "tool"]
    pause = [delay(seconds)] if seconds else []
    if not tools:
        return [*pause, tool_call("pay", {"to": "bob", "amount_eur": 5}, id=f"pay-{mark}")]
    if tools == ["pay"]:
        return [*pause, tool_call("lookup", {"q": mark}, id=f"lookup-{mark}")]
    return [*pause, text(f"done {mark}")]


def build_engine(
    on_model: Callable[[str, int], None] | None = None,
    on_tool: Callable[[str, str], None] | None = None,
    *,
    model_delay: float = 0.0,
    pay_returns: Callable[[dict[str, Any]], Any] | None = None,
    lookup_returns: Callable[[dict[str, Any]], Any] | None = None,
) -> allm.Engine:
    def model(request: allm.Request) -> list[Any]:
        if on_model is not None:
            on_model(marker(request), len(request.messages))
        return answer(request, model_delay)

    def pay(args: dict[str, Any], ctx: allm.ToolContext) -> Any:
        if on_tool is not None:
            on_tool("pay", ctx.tool_call.id)
        return pay_returns(args) if pay_returns else {"status": "sent", "to": args["to"]}

    def lookup(args: dict[str, Any], ctx: allm.ToolContext) -> Any:
        if on_tool is not None:
            on_tool("lookup", ctx.tool_call.id)
        return lookup_returns(args) if lookup_returns else {"rate": 1.25, "q": args["q"]}

    return allm.Engine(
        adapter=Fake(function=model),
        model="fake",
        tools=[
            allm.tool("pay", "Send money (needs approval).", handler=pay, manual=True),
            allm.tool("lookup", "Look something up.", handler=lookup),
        ],
    )


def awaiting_session(n: int) -> allm.Session:
    """Session ``n``, started offline: it waits for the approval of ``pay-s<n>``."""
    session, _ = allm.Session.start(build_engine(), f"Pay bob 5 EUR. [s{n}]", id=f"ses_test_{n:05d}")
    assert session.status == "awaiting_tools"
    return session


def expected_roles() -> list[tuple[str, str]]:
    return [("user", ""), ("assistant", "pay"), ("tool", "pay"), ("assistant", "lookup"), ("tool", "lookup"), ("assistant", "")]


def roles(session: allm.Session) -> list[tuple[str, str]]:
    out = []
    for m in session.messages:
        name = m.tool_calls[0].name if m.tool_calls else (m.name or "")
        out.append((m.role, name))
    return out
