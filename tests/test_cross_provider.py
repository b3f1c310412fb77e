"""A thread produced with one provider continues on another.

OpenAI tool turn -> Anthropic follow-up (with thinking) -> Gemini follow-up -> OpenAI
Responses and Chat Completions again. Each adapter drops what it cannot accept (other
providers' reasoning signatures, encrypted reasoning) instead of failing, and rewrites
tool-call ids where its API needs them. The assistant turns are real decoded responses
from the recorded traffic, not hand-written.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

import allm
from allm.fold import fold_response
from allm.providers import Anthropic, Gemini, OpenAI, OpenAIResponses
from tests.conftest import feed_all, load_case


def decoded(adapter: Any, provider: str, case: str) -> allm.Response:
    c = load_case(provider, case)
    call = adapter.encode(allm.request("x", model="m"), stream=True)
    return fold_response(feed_all(adapter.decoder(call), [c.body]))


def body(adapter: Any, thread: allm.Thread, **kw: Any) -> dict[str, Any]:
    call = adapter.encode(allm.request(thread, model="m", tools=[WEATHER], **kw), stream=True)
    return orjson.loads(call.body)


WEATHER = allm.Tool(
    "weather",
    "Gets current weather for a location",
    {"type": "object", "properties": {"latitude": {"type": "string"}, "longitude": {"type": "string"}}, "required": ["latitude", "longitude"]},
)


def openai_turn() -> allm.Thread:
    first = decoded(OpenAI(), "openai-chat", "stream-tool-call-single")
    assert first.tool_calls and first.tool_calls[0].id.startswith("call_")
    call = first.tool_calls[0]
    return allm.Thread(
        [
            allm.user("What's the weather in Berlin? (52.5200, 13.4050)"),
            first.message,
            allm.tool_result(call.id, '{"temperature_c": 12, "sky": "overcast"}', name=call.name),
        ]
    )


def anthropic_reasoning_message() -> allm.Message:
    resp = decoded(Anthropic(), "anthropic", "stream-thinking")
    parts = resp.message.reasoning
    assert parts and parts[0].signature and parts[0].provider == "anthropic"
    return resp.message


def test_openai_tool_turn_continues_on_anthropic() -> None:
    thread = openai_turn()
    b = body(Anthropic(), thread)
    msgs = b["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    tool_use = next(blk for blk in msgs[1]["content"] if blk["type"] == "tool_use")
    tool_result = msgs[2]["content"][0]
    call = thread.messages[1].tool_calls[0]
    assert tool_use["id"] == call.id and tool_use["name"] == "weather"
    assert tool_use["input"] == {"latitude": "52.5200", "longitude": "13.4050"}
    assert tool_result["type"] == "tool_result" and tool_result["tool_use_id"] == call.id


def test_foreign_ids_are_rewritten_consistently_for_anthropic() -> None:
    call = allm.ToolCall("functions.weather:0", "weather", {"latitude": "1", "longitude": "2"}, '{"latitude": "1", "longitude": "2"}')
    thread = allm.Thread([allm.user("q"), allm.assistant("", [call]), allm.tool_result(call.id, "sunny")])
    msgs = body(Anthropic(), thread)["messages"]
    use_id = next(blk for blk in msgs[1]["content"] if blk["type"] == "tool_use")["id"]
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", use_id) and use_id != call.id
    assert msgs[2]["content"][0]["tool_use_id"] == use_id
    assert body(Anthropic(), thread)["messages"] == msgs  # deterministic


def test_anthropic_thinking_is_kept_for_anthropic_and_dropped_elsewhere() -> None:
    thread = openai_turn()
    answer = anthropic_reasoning_message()
    thread = thread.add(answer, allm.user("And tomorrow?"))

    anth = body(Anthropic(), thread)
    thinking = [blk for m in anth["messages"] for blk in (m["content"] if isinstance(m["content"], list) else []) if blk["type"] == "thinking"]
    assert thinking and thinking[0]["signature"] == answer.reasoning[0].signature
    assert thinking[0]["thinking"] == answer.reasoning[0].text

    gem = body(Gemini(), thread)
    flat = orjson.dumps(gem).decode()
    assert answer.reasoning[0].signature not in flat  # Anthropic's signature never reaches Gemini
    model_turns = [c for c in gem["contents"] if c["role"] == "model"]
    assert any("functionCall" in p for c in model_turns for p in c["parts"])
    assert not any(p.get("thought") for c in model_turns for p in c["parts"])

    for adapter in (OpenAI(), OpenAIResponses()):
        out = orjson.dumps(body(adapter, thread)).decode()
        assert answer.reasoning[0].signature not in out
        assert answer.reasoning[0].text not in out


def test_openai_then_anthropic_then_gemini_then_openai() -> None:
    thread = openai_turn()
    call = thread.messages[1].tool_calls[0]

    # Gemini: the function response names the function it answers, found by tool_call_id.
    gem = body(Gemini(), thread)
    roles = [c["role"] for c in gem["contents"]]
    assert roles == ["user", "model", "user"]
    fc = gem["contents"][1]["parts"][-1]["functionCall"]
    assert fc["name"] == "weather" and fc["args"] == {"latitude": "52.5200", "longitude": "13.4050"}
    fr = gem["contents"][2]["parts"][0]["functionResponse"]
    assert fr["name"] == "weather"
    assert "12" in orjson.dumps(fr["response"]).decode()

    # A Gemini answer with a thought signature on its function call, then back to OpenAI.
    g = decoded(Gemini(), "gemini", "stream-sse-function-call")
    assert g.tool_calls
    gcall = g.tool_calls[0]
    thread2 = thread.add(g.message, allm.tool_result(gcall.id, "ok"))
    chat = body(OpenAI(), thread2)
    ids = [tc["id"] for m in chat["messages"] if m["role"] == "assistant" for tc in m.get("tool_calls", [])]
    results = [m["tool_call_id"] for m in chat["messages"] if m["role"] == "tool"]
    assert ids == results == [call.id, gcall.id]
    resp_items = body(OpenAIResponses(), thread2)["input"]
    fcs = [i for i in resp_items if i.get("type") == "function_call"]
    outs = [i for i in resp_items if i.get("type") == "function_call_output"]
    assert [i["call_id"] for i in fcs] == [i["call_id"] for i in outs] == [call.id, gcall.id]
    assert not [i for i in resp_items if i.get("type") == "reasoning"]  # nothing OpenAI can use

    # Gemini again: its own signature comes back on its own function call.
    gem2 = body(Gemini(), thread2)
    signed = [p for c in gem2["contents"] for p in c["parts"] if "functionCall" in p and p.get("thoughtSignature")]
    expected = gcall.metadata["gemini"]["thought_signature"]
    assert expected and [p["thoughtSignature"] for p in signed] == [expected]

    # And Anthropic at the end: every tool_use answered, ids valid.
    anth = body(Anthropic(), thread2)
    uses = [blk["id"] for m in anth["messages"] if m["role"] == "assistant" for blk in m["content"] if blk["type"] == "tool_use"]
    results = [blk["tool_use_id"] for m in anth["messages"] if m["role"] == "user" for blk in (m["content"] if isinstance(m["content"], list) else []) if blk["type"] == "tool_result"]
    assert uses == results and len(uses) == 2
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]+", i) for i in uses)


def test_openai_encrypted_reasoning_only_goes_back_to_openai_responses() -> None:
    r = decoded(OpenAIResponses(), "openai-responses", "stream-function-call-with-reasoning")
    enc = [p for p in r.message.reasoning if p.encrypted_content]
    assert enc, "the recorded case carries encrypted reasoning"
    thread = allm.Thread([allm.user("q"), r.message, *(allm.tool_result(tc.id, "42") for tc in r.tool_calls)])
    assert enc[0].encrypted_content in orjson.dumps(body(OpenAIResponses(), thread)).decode()
    for adapter in (Anthropic(), Gemini(), OpenAI(api="chat")):
        assert enc[0].encrypted_content not in orjson.dumps(body(adapter, thread)).decode()


def test_the_dropped_settings_table_in_the_providers_guide_is_true() -> None:
    from pathlib import Path

    from allm.providers import OpenAICompatible

    guide = (Path(__file__).parent.parent / "guides" / "providers.md").read_text()
    table = guide.split("<!-- dropped-table -->", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in [ln for ln in table.splitlines() if ln.startswith("|")][2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = re.findall(r"`(\w+)`", cells[1].split("(and")[0])
    req = allm.request(
        "hi", model="m", temperature=0.5, top_p=0.9, top_k=40, max_tokens=50, stop_sequences=["X"], seed=1, frequency_penalty=0.1, presence_penalty=0.1
    )
    adapters = {
        "`OpenAI` (Chat Completions)": OpenAI(api="chat"),
        "`OpenAI` (Responses) / `OpenAIResponses`": OpenAIResponses(),
        "`Anthropic`": Anthropic(),
        "`Gemini`": Gemini(),
        "`OpenAICompatible.openrouter()`": OpenAICompatible.openrouter(),
        "`OpenAICompatible.ollama()`": OpenAICompatible.ollama(),
        "`OpenAICompatible.llama_cpp()`": OpenAICompatible.llama_cpp(),
        "`OpenAICompatible.vllm()`": OpenAICompatible.vllm(),
        "`OpenAICompatible(base_url)` (generic)": OpenAICompatible("http://h/v1"),
    }
    assert set(rows) == set(adapters)
    for name, adapter in adapters.items():
        warnings = adapter.encode(req, stream=True).warnings
        assert all(w.kind == "dropped_setting" and w.message.startswith(f"{w.setting} ") for w in warnings), name
        dropped = [w.setting for w in warnings]
        assert dropped == rows[name], name
    assert OpenAI().encode(allm.request("x", model="o3-mini", top_k=1), stream=True).url.endswith("/responses")
