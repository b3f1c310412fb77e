"""Decode recorded Gemini traffic with the Gemini adapter, then build the next tool turn.

Runs with no key and no network: the bytes are a real ``streamGenerateContent?alt=sse``
answer recorded from the Gemini API (``tests/fixtures/gemini/``)::

    PYTHONPATH=. python examples/gemini_replay.py

It shows the three things that matter when moving a tool loop to Gemini:

1. the SSE stream (CRLF line ends, no ``[DONE]``) decodes to the usual events and
   folds to a :class:`allm.Response`, exactly as with any other adapter;
2. Gemini gives function calls no id, so the adapter makes a deterministic one, and
   the tool result answers by that id;
3. the ``thoughtSignature`` Gemini put on the function call is sent back on the
   same part of the next request (Gemini 3 rejects the turn without it).
"""

from __future__ import annotations

from pathlib import Path

import orjson

import allm
from allm.events import Error, MessageCompleted, ToolCallCompleted
from allm.providers import Gemini

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "gemini"


def main() -> None:
    adapter = Gemini()
    weather = allm.Tool(
        "weather",
        "Gets current weather for a location",
        {
            "type": "object",
            "properties": {"latitude": {"type": "string"}, "longitude": {"type": "string"}},
            "required": ["latitude", "longitude"],
        },
    )
    question = allm.user("What's the weather in Berlin? (52.5200, 13.4050)")
    request = allm.request([question], model="gemini-2.5-flash", tools=[weather])

    # 1. Decode the recorded stream, in uneven pieces as a network would deliver it.
    call = adapter.encode(request, stream=True)
    assert call.url.endswith("/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    raw = (FIXTURES / "stream-sse-function-call" / "response.raw").read_bytes()
    decoder = adapter.decoder(call)
    events = []
    for i in range(0, len(raw), 97):
        events.extend(decoder.feed(raw[i : i + 97]))
    events.extend(decoder.close())
    assert not [e for e in events if isinstance(e, Error)]
    assert isinstance(events[-1], MessageCompleted)
    response = allm.Collector().fold(events)

    # 2. One function call, with a deterministic id built from the response id.
    (tc,) = response.tool_calls
    assert [e.tool_call for e in events if isinstance(e, ToolCallCompleted)] == [tc]
    assert tc.name == "weather" and tc.arguments == {"latitude": "52.5200", "longitude": "13.4050"}
    assert tc.id == f"call_{response.id}_0"
    assert response.finish_reason == "tool_calls" and response.raw_finish_reason == "STOP"
    # output includes thinking: 30 answer tokens + 43 thought tokens
    assert response.usage.output_tokens == 73 and response.usage.reasoning_tokens == 43
    signature = tc.metadata["gemini"]["thought_signature"]
    print(f"tool call {tc.id}: {tc.name}({tc.arguments}); signature {len(signature)} chars")

    # 3. The next request: the call and its signature go back, the result is named by the call.
    thread = [question, response.message, allm.tool_result(tc.id, "15°C, Wind: 10 km/h")]
    follow_up = adapter.encode(allm.request(thread, model="gemini-2.5-flash", tools=[weather]), stream=True)
    body = orjson.loads(follow_up.body or b"")
    model_turn, tool_turn = body["contents"][1], body["contents"][2]
    assert model_turn["role"] == "model"
    assert model_turn["parts"][0]["thoughtSignature"] == signature
    assert model_turn["parts"][0]["functionCall"]["name"] == "weather"
    assert tool_turn["parts"][0]["functionResponse"] == {"name": "weather", "response": {"output": "15°C, Wind: 10 km/h"}}
    # the recorded follow-up request carried the very same model turn
    recorded = orjson.loads((FIXTURES / "stream-sse-function-response-followup" / "request.json").read_bytes())
    assert model_turn == recorded["contents"][1]

    # The key only ever travels in a header, which the shell adds.
    assert adapter.auth_headers("my-key") == {"x-goog-api-key": "my-key"}
    assert "key" not in follow_up.url.split("?", 1)[-1]
    print("follow-up request carries functionCall + thoughtSignature + functionResponse: ok")


if __name__ == "__main__":
    main()
