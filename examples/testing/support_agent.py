"""A small order-support agent: the code under test of this folder's suite.

``answer`` runs a tool loop (the model looks orders up with ``lookup_order``);
``small_talk`` is one plain call. Nothing here knows it is being tested.
"""

from __future__ import annotations

from typing import Any

import allm

ORDERS: dict[str, dict[str, Any]] = {
    "A-1": {"status": "shipped", "carrier": "DHL"},
    "A-2": {"status": "processing"},
}

SYSTEM = "You answer questions about orders. Look orders up before answering."
SORRY = "Sorry, I could not finish looking that up."


@allm.function_tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order.

    Args:
        order_id: The order number, e.g. A-1.
    """
    if order_id not in ORDERS:
        raise KeyError(f"no order {order_id}")
    return {"order_id": order_id, **ORDERS[order_id]}


def answer(engine: allm.Engine, question: str) -> str:
    """The agent's final answer to ``question`` (at most four model calls), or an apology."""
    request = allm.request([allm.system(SYSTEM), allm.user(question)], temperature=0, max_tokens=200)
    result = allm.chat(engine.with_tools(lookup_order), request, max_turns=4)
    if result.halted_reason != "completed" or result.final_response is None:
        return SORRY
    return result.final_response.output_text


def small_talk(engine: allm.Engine, question: str) -> str:
    """A brief answer to a general question (one call)."""
    request = allm.request(
        [allm.system("You are a helpful assistant. Be brief."), allm.user(question)], temperature=0, max_tokens=30
    )
    return allm.generate(engine, request).output_text
