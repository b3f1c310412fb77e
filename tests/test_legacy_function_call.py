"""A legacy Chat Completions ``function_call`` answer (``message.function_call``,
``finish_reason: "function_call"``, and the streamed ``delta.function_call``) comes out as a
tool call, in the body and the stream decoder alike, whatever the byte boundaries, and the
tool loop runs it."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

import allm
from allm.providers import OpenAI, OpenAICompatible
from tests.conftest import feed_all, splits
from tests.loopback import Req, Writer, serve

ADAPTER = OpenAI()
ARGS = '{"city": "Paris"}'


def _sse(*objs: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(o) + b"\n\n" for o in objs) + b"data: [DONE]\n\n"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-legacy", "model": "gpt-3.5-turbo-0613",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


STREAM = _sse(
    _chunk({"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": ""}}),
    _chunk({"function_call": {"arguments": '{"city": '}}),
    _chunk({"function_call": {"arguments": '"Paris"}'}}),
    _chunk({}, "function_call"),
)
BODY = orjson.dumps({
    "id": "chatcmpl-legacy", "object": "chat.completion", "model": "gpt-3.5-turbo-0613",
    "choices": [{"index": 0, "finish_reason": "function_call",
                 "message": {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": ARGS}}}],
    "usage": {"prompt_tokens": 60, "completion_tokens": 15, "total_tokens": 75},
})


def _check(resp: allm.Response) -> None:
    assert resp.finish_reason == "tool_calls" and resp.raw_finish_reason == "function_call"
    assert len(resp.tool_calls) == 1
    call = resp.tool_calls[0]
    assert call.name == "get_weather" and call.arguments == {"city": "Paris"} and call.parse_error is None
    assert call.id  # made up: the legacy form has none


def test_the_body_gives_a_tool_call() -> None:
    call = ADAPTER.encode(allm.request("hi", model="gpt-3.5-turbo-0613"), stream=False)
    resp = allm.Collector().fold(ADAPTER.decode_body(call, BODY))
    _check(resp)
    assert resp.usage.input_tokens == 60


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_the_stream_gives_the_same_tool_call_at_any_split(data: st.DataObject) -> None:
    call = ADAPTER.encode(allm.request("hi", model="gpt-3.5-turbo-0613"), stream=True)
    events = feed_all(ADAPTER.decoder(call), data.draw(splits(STREAM)))
    resp = allm.Collector().fold(events)
    _check(resp)
    body = allm.Collector().fold(ADAPTER.decode_body(ADAPTER.encode(allm.request("hi", model="m"), stream=False), BODY))
    assert resp.tool_calls[0].arguments == body.tool_calls[0].arguments


def test_the_tool_loop_runs_a_legacy_call() -> None:
    bodies: list[dict[str, Any]] = []
    answers = [STREAM, _sse(_chunk({"role": "assistant", "content": "18 °C in Paris."}), _chunk({}, "stop"))]

    async def handler(req: Req, w: Writer) -> None:
        bodies.append(orjson.loads(req.body))
        await w.start_stream()
        await w.chunk(answers[len(bodies) - 1])
        await w.end_stream()

    weather = allm.tool("get_weather", schema={"type": "object", "properties": {"city": {"type": "string"}}},
                        handler=lambda args: {"temp_c": 18, "city": args["city"]})
    with serve(handler) as server:
        engine = allm.Engine(adapter=OpenAICompatible(server.url + "/v1"), model="m", tools=[weather])
        result = allm.chat(engine, "Weather in Paris?")
    assert result.final_response is not None and result.final_response.output_text == "18 °C in Paris."
    sent = bodies[1]["messages"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[2]["role"] == "tool" and sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"]
    assert orjson.loads(sent[2]["content"]) == {"temp_c": 18, "city": "Paris"}
