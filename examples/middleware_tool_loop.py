"""Middleware in the tool loop, on the Fake (no key, no network): a token budget that stops an
agent's tool loop, a per-tenant rate limit, a content filter, a structured request log, and a
stored session that keeps its pipeline by name.

Run: python examples/middleware_tool_loop.py
"""

from __future__ import annotations

import asyncio
import logging
import sys

import allm
from allm import middleware as mw
from allm.testing import fake_engine, text, tool_call, usage

INVENTORY = {"apples": 12, "pears": 0, "plums": 7}


def stock(args: dict[str, str]) -> dict[str, object]:
    item = args["item"]
    return {"item": item, "in_stock": INVENTORY.get(item, 0)}


STOCK = allm.tool(
    "stock", "How many of an item are in stock.", {"type": "object", "properties": {"item": {"type": "string"}}}, handler=stock
)


def agent(*scripts: list[object], **fields: object) -> allm.Engine:
    return fake_engine(*scripts, tools=[STOCK], **fields)


def main() -> None:
    # The request log writes one JSON record per point of the run to standard output.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  log %(message)s"))
    logging.getLogger("allm.middleware").addHandler(handler)
    logging.getLogger("allm.middleware").setLevel(logging.INFO)

    # 1. A budget of 1000 tokens per call stops a tool loop before the call that would pass it.
    engine = agent(
        [tool_call("stock", {"item": "apples"}), usage(300, 20)],
        [tool_call("stock", {"item": "pears"}), usage(340, 20)],
        [tool_call("stock", {"item": "plums"}), usage(380, 20)],
        [text("12 apples, no pears, 7 plums."), usage(420, 15)],
    )
    result = allm.chat(engine, "What fruit is in stock?", middleware=["request_log", mw.TokenBudget(1000)])
    assert result.halted_reason == "token_budget" and engine.adapter.calls == 3
    assert [m.role for m in result.thread.messages] == ["user"] + ["assistant", "tool"] * 3
    print(f"budget: {result.halted_reason} after {len(result.steps)} calls, {result.metadata['stopped_by']['spent_tokens']} tokens")

    # 2. Two model calls per tenant per minute; the third is refused with the time to wait.
    limit = mw.RateLimit(2, 60, key="tenant")
    engine = agent(*[[text(f"Answer {i}.")] for i in range(3)])
    ends = [allm.chat(engine, "Hello", middleware=[limit], context={"tenant": "acme"}) for _ in range(3)]
    assert [r.halted_reason for r in ends] == ["completed", "completed", "rate_limit"]
    wait = ends[-1].metadata["stopped_by"]["retry_after"]
    assert 0 < wait <= 60
    print(f"rate limit: {[r.halted_reason for r in ends]}, retry after {wait:.0f} s")

    # 3. The content filter keeps a denied answer out of the thread (and out of the session).
    engine = agent([text("Our supplier's internal price list: ...")])
    guard = mw.ContentFilter([r"internal price"])
    session, result = allm.Session.start(engine, "Show me your price list.", middleware=[guard])
    assert result.halted_reason == "content_filter" and session.status == "completed"
    assert [m.role for m in session.thread.messages] == ["user"]
    print(f"content filter: {result.halted_reason} ({result.metadata['stopped_by']['direction']})")

    # 4. A session keeps its pipeline by name: stored, loaded and continued with the same budget.
    mw.register("shop_budget", lambda: mw.TokenBudget(500, per="chat", name="shop_budget"))
    engine = agent([text("Hello!"), usage(200, 100)], [text("Sure."), usage(250, 100)], [text("never")])
    session, _ = allm.Session.start(engine, "Hi", pipeline=["shop_budget"])
    session = allm.Session.from_json(session.to_json())
    session, second = session.reply(engine, "And apples?")
    session, third = asyncio.run(session.areply(engine, "And pears?"))
    assert (second.halted_reason, third.halted_reason) == ("completed", "shop_budget")
    assert session.pipeline == ("shop_budget",) and engine.adapter.calls == 2
    print(f"stored session: {third.halted_reason} after {third.metadata['stopped_by']['spent_tokens']} tokens of its chat")


if __name__ == "__main__":
    main()
