"""Human approval of tool calls: the agent proposes, a person decides, the agent goes on.

A tool marked ``manual=True`` is never run by the loop: the session stops in
``awaiting_tools`` with the calls pending. Here a (simulated) person approves one
transfer and rejects the other; ``approve`` runs the tool's handler, ``reject``
tells the model why not. A handler can also ask the user a question (``AskUser``).

Run it: ``python examples/human_approval.py`` (no key, no network: the model is a Fake).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import allm
from allm.testing import fake_engine, text, tool_call

LEDGER: list[tuple[str, float]] = []


def send_money(args: dict[str, Any]) -> dict[str, Any]:
    LEDGER.append((args["to"], args["amount_eur"]))
    return {"status": "sent", "to": args["to"], "amount_eur": args["amount_eur"]}


def pick_account(args: dict[str, Any]) -> allm.AskUser:
    return allm.AskUser("Which account should I pay from?", choices=["checking", "savings"])


SEND = allm.tool(
    "send_money",
    "Send money to someone. Needs the account holder's approval.",
    {
        "type": "object",
        "properties": {"to": {"type": "string"}, "amount_eur": {"type": "number", "exclusiveMinimum": 0}},
        "required": ["to", "amount_eur"],
    },
    handler=send_money,
    manual=True,
)
PICK = allm.tool("pick_account", "Ask which account to use.", handler=pick_account)


def person_decides(call: allm.ToolCall) -> bool:
    """Stands in for a real approval screen: approve transfers up to 100 EUR."""
    return float(call.arguments["amount_eur"]) <= 100


def main() -> None:
    engine = fake_engine(
        # The model first asks which account to use...
        [tool_call("pick_account", {}, id="q1")],
        # ...then proposes two transfers...
        [
            text("I'll send both payments."),
            tool_call("send_money", {"to": "Bob", "amount_eur": 50}, id="t1"),
            tool_call("send_money", {"to": "Mallory", "amount_eur": 5000}, id="t2"),
        ],
        # ...and finally reports what happened.
        [text("Sent 50 EUR to Bob from savings. The 5000 EUR payment to Mallory was declined.")],
        tools=[SEND, PICK],
    )

    session, result = allm.Session.start(engine, "Pay Bob 50 EUR and Mallory 5000 EUR.")
    assert session.status == "awaiting_user" and result.halted_reason == "ask_user"
    assert session.pending_question == "Which account should I pay from?"
    assert session.metadata["ask_user"]["choices"] == ["checking", "savings"]

    session, result = session.reply(engine, "savings")
    assert session.status == "awaiting_tools" and result.halted_reason == "manual_tool_calls"
    assert [c.id for c in session.pending_tool_calls] == ["t1", "t2"]
    assert LEDGER == []  # nothing was sent without approval

    for call in session.pending_tool_calls:
        if person_decides(call):
            session = session.approve(engine, call.id)
        else:
            session = session.reject(call.id, "The account holder declined this payment.")
    assert session.status == "idle" and LEDGER == [("Bob", 50)]

    session, result = session.continue_(engine)
    assert session.status == "completed"
    assert result.final_response is not None
    print(result.final_response.output_text)

    # The model saw both outcomes.
    approved, declined = (m for m in session.thread.messages if m.role == "tool" and m.tool_call_id in ("t1", "t2"))
    assert not approved.is_error and '"status":"sent"' in approved.text
    assert declined.is_error and "declined" in declined.text

    # Trying to approve again is an error that says what is legal now.
    try:
        session.approve(engine, "t1")
    except allm.SessionError as exc:
        assert exc.reason == "invalid_status" and "legal now: reply, continue_, step" in exc.message
    else:
        raise AssertionError("approving in a completed session must fail")
    print("ok")


if __name__ == "__main__":
    main()
