"""The sessions stored in tests/fixtures/sessions/, as values (shared by the tests and the writer)."""

from __future__ import annotations

import allm
from allm.errors import AdapterError
from allm.types import Image, ImagePart, Message, ReasoningPart, TextPart, Thread, ToolCall

TRANSFER = ToolCall("call_t1", "transfer_funds", {"to": "Bob", "amount_eur": 50}, '{"to": "Bob", "amount_eur": 50}')
ASK = ToolCall("call_q1", "which_account", {}, "{}")


def awaiting_tools() -> allm.Session:
    return allm.Session(
        id="ses_fixture_tools",
        thread=Thread(
            (
                allm.system("You move money between accounts."),
                allm.user("Send 50 EUR to Bob."),
                Message("assistant", "", tool_calls=(TRANSFER,)),
            )
        ),
        status="awaiting_tools",
        pending_tool_calls=(TRANSFER,),
        context={"tenant": "acme", "user_id": 42},
        metadata={"ticket": "T-1"},
    )


def awaiting_user() -> allm.Session:
    return allm.Session(
        id="ses_fixture_user",
        thread=Thread(
            (
                allm.user("Pay my bill."),
                Message("assistant", "", tool_calls=(ASK,)),
                allm.tool_result("call_q1", "<awaiting user response>", name="which_account"),
                Message(
                    "assistant",
                    "Which account?",
                    metadata={"ask_user": True, "tool_call_id": "call_q1", "choices": ["checking", "savings"]},
                ),
            )
        ),
        status="awaiting_user",
        pending_question="Which account?",
        pending_tool_call_id="call_q1",
        metadata={"ask_user": {"choices": ["checking", "savings"], "options": {"mask": False}}},
    )


def error() -> allm.Session:
    return allm.Session(
        id="ses_fixture_error",
        thread=Thread((allm.user("Hello"),)),
        status="error",
        metadata={
            "error": AdapterError(
                "overloaded", reason="provider_unavailable", provider="anthropic", status=529, retry_after=2.0
            )
        },
    )


def completed() -> allm.Session:
    return allm.Session(
        id="ses_fixture_completed",
        thread=Thread(
            (
                allm.user([TextPart("What is in this image?"), ImagePart(Image.from_bytes(b"\x89PNG\r\n", "image/png"), "low")]),
                Message(
                    "assistant",
                    (ReasoningPart("Looking closely.", signature="sig-1", provider="anthropic"), TextPart("A cat.")),
                ),
                allm.user("Thanks!"),
                Message("assistant", "You're welcome. ✓"),
            ),
            metadata={"title": "cat picture"},
        ),
        status="completed",
    )


FIXTURES = {
    "awaiting_tools": awaiting_tools,
    "awaiting_user": awaiting_user,
    "error": error,
    "completed": completed,
}

if __name__ == "__main__":  # writes the fixture files (run once per released schema)
    from pathlib import Path

    out = Path(__file__).parent / "fixtures" / "sessions"
    out.mkdir(parents=True, exist_ok=True)
    import orjson

    for name, build in FIXTURES.items():
        data = orjson.loads(build().to_json())
        (out / f"{name}.json").write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
