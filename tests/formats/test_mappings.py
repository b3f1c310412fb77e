"""The mapping tables of ``guides/history_formats.md``, row by row, on small payloads."""

from __future__ import annotations

import allm
from allm import formats
from allm.types import ImagePart, Message, ReasoningPart, TextPart, Thread, ToolCall


def kinds(ws: list[formats.FormatWarning]) -> list[tuple[str, str]]:
    return [(w.kind, w.path) for w in ws]


# ------------------------------------------------------------------------------ Chat Completions


def test_chat_roles_parts_and_reasoning() -> None:
    thread, ws = formats.from_openai_chat(
        [
            {"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
            {"role": "user", "name": "ada", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}},
            ]},
            {"role": "assistant", "content": None, "reasoning_content": "Two images.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": '{"n": 2}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "a cat"}]},
            {"role": "assistant", "content": None, "refusal": "I cannot say."},
        ]
    )
    assert thread.messages[0] == Message("system", "Be brief.")
    user = thread.messages[1]
    assert user.name == "ada" and user.parts[1] == ImagePart.from_bytes(b"\x89PNG\r\n\x1a\n", "image/png", "low")
    assert user.parts[2] == ImagePart.from_url("https://example.org/cat.png")
    a = thread.messages[2]
    assert a.reasoning == (ReasoningPart("Two images."),) and a.tool_calls == (ToolCall("call_1", "look", {"n": 2}, '{"n": 2}'),)
    assert thread.messages[3] == Message("tool", "a cat", tool_call_id="call_1")
    assert thread.messages[4].text == "I cannot say."
    assert kinds(ws) == [("rewritten", "messages[4]")]
    out, ws = formats.to_openai_chat(thread)
    assert out["messages"][0] == {"role": "system", "content": "Be brief."}
    assert out["messages"][2] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": '{"n": 2}'}}]}
    assert kinds(ws) == [("unsupported_content", "messages[2].content[0]")]  # reasoning is not sent back


def test_chat_skips_and_reports_what_it_does_not_know() -> None:
    thread, ws = formats.from_openai_chat(
        {"model": "m", "messages": [
            {"role": "function", "name": "f", "content": "x"},
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA"}}], "cache": 1},
            {"role": "assistant", "content": "ok", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}], "audio": {"id": "a"}},
        ]}
    )
    assert kinds(ws) == [
        ("not_history", ""),
        ("unknown", "messages[0]"),
        ("unknown", "messages[1]"),
        ("unsupported_content", "messages[1].content[0]"),
        ("unknown", "messages[2]"),
        ("unsupported_content", "messages[2].tool_calls[0]"),
    ]
    assert [m.role for m in thread.messages] == ["user", "assistant"]


# ------------------------------------------------------------------------------ Anthropic


def test_anthropic_tool_results_split_a_user_turn_and_join_back() -> None:
    payload = {
        "system": "Use tools.",
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Two calls.", "signature": "EqQB"},
                {"type": "redacted_thinking", "data": "EmwK"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "no data"}], "is_error": True},
                {"type": "text", "text": "Also, hurry.", "cache_control": {"type": "ephemeral"}},
            ]},
        ],
    }
    thread, ws = formats.from_anthropic(payload)
    assert ws == []
    assert [m.role for m in thread.messages] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert thread.messages[2].reasoning == (
        ReasoningPart("Two calls.", "EqQB", provider="anthropic"),
        ReasoningPart(redacted_data="EmwK", provider="anthropic"),
    )
    assert thread.messages[4].is_error and thread.messages[4].text == "no data"
    assert thread.messages[5].metadata == {"anthropic": {"cache_control": {"type": "ephemeral"}}}
    out, ws = formats.to_anthropic(thread)
    assert ws == []
    assert out["system"] == [{"type": "text", "text": "Use tools."}]
    assert len(out["messages"]) == 3 and [b["type"] for b in out["messages"][2]["content"]] == ["tool_result", "tool_result", "text"]
    assert out["messages"][2]["content"][2]["cache_control"] == {"type": "ephemeral"}


def test_anthropic_rewrites_ids_moves_late_system_prompts_and_drops_foreign_reasoning() -> None:
    thread = Thread((
        allm.user("hi"),
        allm.system("Be brief."),
        allm.assistant([ReasoningPart("hmm", "sig", provider="gemini"), TextPart("Calling.")],
                       [ToolCall("functions.get:0", "get", {}, "{}")]),
        allm.tool_result("functions.get:0", "done"),
    ))
    out, ws = formats.to_anthropic(thread)
    wid = out["messages"][1]["content"][1]["id"]
    assert wid == out["messages"][2]["content"][0]["tool_use_id"] and wid.startswith("functions_get_0_")
    assert out["system"] == [{"type": "text", "text": "Be brief."}]
    assert kinds(ws) == [
        ("rewritten", "messages[1]"),
        ("foreign_reasoning", "messages[2].content[0]"),
        ("rewritten", "messages[2].tool_calls[0]"),
        ("rewritten", "messages[3]"),
    ]


# ------------------------------------------------------------------------------ Gemini


def test_gemini_pairs_results_by_name_and_order_and_keeps_signatures() -> None:
    payload = {
        "system_instruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"parts": [{"text": "Weather in Paris and Rome?"}]},
            {"role": "model", "parts": [
                {"text": "Let me look.", "thought_signature": "SIG-T"},
                {"function_call": {"name": "weather", "args": {"city": "Paris"}}},
                {"function_call": {"name": "weather", "args": {"city": "Rome"}}},
                {"text": "", "thoughtSignature": "SIG-C"},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "weather", "response": {"output": "18 C"}}},
                {"functionResponse": {"name": "weather", "response": {"temp_c": 21, "sky": "clear"}}},
            ]},
        ],
    }
    thread, ws = formats.from_gemini(payload)
    assert ws == []
    system, user, model, r1, r2 = thread.messages
    assert system == Message("system", "Be brief.") and user.role == "user"
    assert model.parts == (TextPart("Let me look."), ReasoningPart("", "SIG-T", provider="gemini"))
    c1, c2 = model.tool_calls
    assert (c1.id, c2.id) == ("call_1_0", "call_1_1")
    assert c1.metadata == {"gemini": {"thought_signature": "SIG-C"}}  # the empty signed part belongs to the first call
    assert (r1.tool_call_id, r1.text) == ("call_1_0", "18 C")
    assert r2.tool_call_id == "call_1_1" and r2.metadata == {"gemini": {"response_object": True}}
    out, ws = formats.to_gemini(thread)
    assert ws == []
    assert out["contents"][1]["parts"][0] == {"text": "Let me look.", "thoughtSignature": "SIG-T"}
    assert out["contents"][1]["parts"][1]["thoughtSignature"] == "SIG-C"
    assert out["contents"][2]["parts"][1]["functionResponse"]["response"] == {"temp_c": 21, "sky": "clear"}


def test_gemini_reports_results_that_would_pair_with_the_wrong_call() -> None:
    thread = Thread((
        allm.user("two"),
        allm.assistant("", [ToolCall("a", "f", {}, "{}"), ToolCall("b", "f", {}, "{}")]),
        allm.tool_result("b", "second first"),
        allm.tool_result("a", "first second"),
    ))
    out, ws = formats.to_gemini(thread)
    assert ("rewritten", "messages[2]") in kinds(ws) and ("rewritten", "messages[3]") in kinds(ws)
    back, _ = formats.from_gemini(out)
    assert back.messages[2].tool_call_id == "call_1_0"  # paired by order: reported above


# ------------------------------------------------------------------------------ Responses


def test_responses_groups_assistant_items_and_reads_instructions() -> None:
    payload = {
        "instructions": "Be brief.",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"},
                                                             {"type": "input_image", "image_url": "https://e.org/a.png", "detail": "high"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "A."}, {"type": "summary_text", "text": "B."}],
             "encrypted_content": "gAAA"},
            {"type": "message", "role": "assistant", "phase": "commentary", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "18 C"}]},
            {"type": "message", "role": "assistant", "phase": "final_answer", "content": "18 C."},
            {"type": "item_reference", "id": "msg_9"},
        ],
    }
    thread, ws = formats.from_openai_responses(payload)
    assert kinds(ws) == [("unsupported_content", "input[6]")]
    system, user, a1, tool, a2 = thread.messages
    assert system.text == "Be brief." and user.parts[1] == ImagePart.from_url("https://e.org/a.png", detail="high")
    assert a1.parts == (ReasoningPart("A.\n\nB.", encrypted_content="gAAA", id="rs_1", provider="openai"), TextPart("Checking."))
    assert a1.metadata == {"openai": {"phase": "commentary"}}
    assert a1.tool_calls[0].metadata == {"openai": {"item_id": "fc_1"}}
    assert tool == Message("tool", "18 C", tool_call_id="call_1")
    assert a2.metadata == {"openai": {"phase": "final_answer"}}
    out, ws = formats.to_openai_responses(thread)
    assert ws == [] and out["instructions"] == "Be brief."
    assert out["input"][1] == {"type": "reasoning", "summary": [{"type": "summary_text", "text": "A.\n\nB."}], "encrypted_content": "gAAA"}
    assert out["input"][2]["phase"] == "commentary"


def test_responses_reports_merges_and_reasoning_it_cannot_send() -> None:
    thread = Thread((
        allm.system("one"),
        allm.system("two"),
        allm.user("hi"),
        allm.assistant([ReasoningPart("x", provider="openai")], [ToolCall("c", "f", {}, "{}")]),
        allm.assistant("then this"),
    ))
    out, ws = formats.to_openai_responses(thread)
    assert out["instructions"] == "one\n\ntwo"
    assert kinds(ws) == [("rewritten", "messages[1]"), ("unsupported_content", "messages[3].content[0]"), ("rewritten", "messages[4]")]
    back, _ = formats.from_openai_responses(out)
    assert [m.role for m in back.messages] == ["system", "user", "assistant"]


def test_input_string_and_reasoning_text() -> None:
    thread, ws = formats.from_openai_responses("Hi")
    assert thread == Thread((allm.user("Hi"),)) and ws == []
    thread, ws = formats.from_openai_responses([{"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "raw"}]}])
    assert thread.messages[0].reasoning[0].text == "raw" and kinds(ws) == [("rewritten", "input[0].content")]
