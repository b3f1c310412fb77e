"""Testing an agent without a model: script what the model says, check what the agent does.

Run it: ``python examples/scripted_agent_test.py`` (or ``pytest examples/scripted_agent_test.py``).
No key, no network: the Fake plays the model's side of the conversation, turn by
turn, and records every request the agent sent.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import allm
from allm import events as E
from allm.providers import Fake
from allm.testing import event_types, text, tool_call, usage

# ---------------------------------------------------------------- the agent under test

ORDERS = {"A-1": {"status": "shipped", "carrier": "DHL"}, "A-2": {"status": "processing"}}


@allm.function_tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order.

    Args:
        order_id: The order number, e.g. A-1.
    """
    if order_id not in ORDERS:
        raise KeyError(f"no order {order_id}")
    return {"order_id": order_id, **ORDERS[order_id]}


def support_agent(model: Fake) -> allm.Engine:
    return allm.Engine(adapter=model, model="support-model", tools=[lookup_order])


SYSTEM = allm.system("You answer questions about orders. Look orders up before answering.")


# ---------------------------------------------------------------- the tests


def test_agent_looks_the_order_up_and_answers() -> None:
    model = Fake(
        scripts=[
            [tool_call("lookup_order", {"order_id": "A-1"}, id="c1"), usage(120, 15)],
            [text("Your order A-1 has shipped with DHL."), usage(160, 12)],
        ]
    )
    events = list(allm.stream(support_agent(model), [SYSTEM, allm.user("Where is order A-1?")]))
    result = allm.ChatCollector().fold(events)

    assert result.halted_reason == "completed"
    assert result.final_response is not None
    assert result.final_response.output_text == "Your order A-1 has shipped with DHL."
    # The tool ran once and its result is what the model read next.
    tool_msg = model.requests[1].messages[-1]
    assert tool_msg.role == "tool" and tool_msg.tool_call_id == "c1"
    assert tool_msg.text == '{"order_id":"A-1","status":"shipped","carrier":"DHL"}'
    # The tool was offered with a schema built from the function.
    offered = model.requests[0].tools[0]
    assert offered.schema["required"] == ["order_id"]
    # The events came in the documented order.
    names = event_types(events)
    first_turn_end = names.index("MessageCompleted")
    assert names[first_turn_end : first_turn_end + 5] == [
        "MessageCompleted",
        "ToolExecutionStarted",
        "ToolExecutionCompleted",
        "ToolResultEncoded",
        "StepCompleted",
    ]
    # Usage per step, summed by the caller.
    total = result.steps[0].response.usage + result.steps[1].response.usage
    assert (total.input_tokens, total.output_tokens) == (280, 27)


def test_a_failing_tool_is_reported_to_the_model() -> None:
    model = Fake(
        scripts=[
            [tool_call("lookup_order", {"order_id": "Z-9"}, id="c1")],
            [text("I could not find order Z-9. Could you check the number?")],
        ]
    )
    result = allm.chat(support_agent(model), [SYSTEM, allm.user("Where is Z-9?")])
    sent = model.requests[1].messages[-1]
    assert sent.is_error and "no order Z-9" in sent.text
    assert result.halted_reason == "completed"


def test_a_malformed_call_never_reaches_the_handler() -> None:
    model = Fake(
        scripts=[
            [tool_call("lookup_order", {"order": "A-1"})],  # wrong argument name
            [tool_call("lookup_order", {"order_id": "A-2"})],  # the model corrects itself
            [text("Order A-2 is being processed.")],
        ]
    )
    events = list(allm.stream(support_agent(model), [SYSTEM, allm.user("And A-2?")]))
    errors = [e for e in events if isinstance(e, E.ToolExecutionCompleted) and e.error is not None]
    assert len(errors) == 1 and errors[0].error is not None and errors[0].error.reason == "invalid_arguments"
    assert "'order_id' is a required property" in model.requests[1].messages[-1].text
    assert allm.ChatCollector().fold(events).halted_reason == "completed"


def test_the_agent_stops_after_max_turns() -> None:
    model = Fake(function=lambda request: [tool_call("lookup_order", {"order_id": "A-1"})])
    result = allm.chat(support_agent(model), [SYSTEM, allm.user("Loop forever")], max_turns=3)
    assert result.halted_reason == "max_turns" and model.calls == 3


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
            print(f"ok  {name}")
