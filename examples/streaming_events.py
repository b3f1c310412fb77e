"""Streaming: event order, filters, on_event, stopping early and folding a partial stream."""

import asyncio

import allm
from allm.events import MessageCompleted, TextDelta, ToolCallCompleted
from allm.testing import event_types, fake_engine, text, tool_call_delta, usage

script = [
    text("Let me "),
    text("check."),
    tool_call_delta("call_w", '{"city": ', name="get_weather"),
    tool_call_delta("call_w", '"Paris"}'),
    usage(12, 7),
]

# 1. The order of events for one call.
kinds = event_types(allm.stream_generate(fake_engine(script), "weather?"))
print(kinds)
assert kinds[0] == "MessageStarted" and kinds[-1] == "MessageCompleted"
assert kinds.index("ToolCallStarted") < kinds.index("ToolCallDelta") < kinds.index("ToolCallCompleted")

# 2. Filters drop deltas; on_event still sees every adapter event; the fold is unchanged.
seen = []
events = list(
    allm.stream_generate(fake_engine(script), "weather?", emit_text_deltas=False, emit_tool_deltas=False, on_event=seen.append)
)
assert not any(isinstance(e, TextDelta) for e in events)
assert any(isinstance(e, TextDelta) for e in seen)
resp = allm.Collector().fold(events)
assert resp.output_text == "Let me check."
assert resp.finish_reason == "tool_calls"  # derived: a completed tool call
assert resp.tool_calls[0].arguments == {"city": "Paris"}
assert resp.usage.input_tokens == 12

# 3. Stop early: close the stream; a partial fold says it was cancelled.
collector = allm.Collector()
with allm.stream_generate(fake_engine([text("one "), text("two "), text("three")]), "count") as stream:
    for event in stream:
        collector.apply(event)
        if isinstance(event, TextDelta) and event.delta == "two ":
            break
partial = collector.response()
assert partial.output_text == "one two " and partial.metadata == {"halted_reason": "cancelled"}


# 4. Async twin: same events.
async def main() -> None:
    events = [e async for e in allm.astream_generate(fake_engine(script), "weather?")]
    assert isinstance(events[-1], MessageCompleted)
    assert any(isinstance(e, ToolCallCompleted) for e in events)


asyncio.run(main())
print("ok")
