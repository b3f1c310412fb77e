"""structured_finalize: run the tool loop, then one tools-off call with the schema."""

from __future__ import annotations

import orjson
import pytest

import allm
from allm.events import ChatCompleted, StepCompleted
from allm.providers import Fake
from allm.testing import error, text, tool_call

SCHEMA = allm.json_schema("weather", {"type": "object", "properties": {"temp_c": {"type": "number"}}, "required": ["temp_c"]})


def lookup(args: dict[str, str]) -> dict[str, int]:
    return {"temp_c": 18}


TOOL = allm.tool(name="lookup", description="Weather for a city", schema={"type": "object", "properties": {"city": {"type": "string"}}}, handler=lookup)


def engine(*scripts: list[object]) -> allm.Engine:
    return allm.Engine(adapter=Fake(scripts=list(scripts)), model="fake", tools=[TOOL])


def test_two_passes_merge_into_one_result() -> None:
    e = engine([tool_call("lookup", {"city": "Paris"}, id="c1")], [text("It is 18 degrees.")], [text('{"temp_c": 18}')])
    req = allm.request("Weather in Paris as JSON?", response_format=SCHEMA)
    events = list(allm.stream(e, req, structured_finalize=True))
    assert sum(isinstance(ev, ChatCompleted) for ev in events) == 1 and isinstance(events[-1], ChatCompleted)
    assert sum(isinstance(ev, StepCompleted) for ev in events) == 3
    result = allm.chat(engine([tool_call("lookup", {"city": "Paris"}, id="c1")], [text("It is 18 degrees.")], [text('{"temp_c": 18}')]), req, structured_finalize=True)
    streamed = events[-1].result
    assert (result.thread, result.halted_reason, result.metadata) == (streamed.thread, streamed.halted_reason, streamed.metadata)
    assert orjson.loads(result.final_response.output_text) == {"temp_c": 18}  # type: ignore[union-attr]
    assert result.halted_reason == "completed" and len(result.steps) == 3
    assert result.metadata["structured_finalize"] == {"pass_1_halted": "completed"}
    reqs = e.adapter.requests  # type: ignore[attr-defined]
    assert [r.response_format for r in reqs] == [None, None, SCHEMA]
    assert [len(r.tools) for r in reqs] == [1, 1, 0]
    assert reqs[2].messages[-1] == allm.user("Now provide your final structured response.")
    assert result.thread.messages[-1].text == '{"temp_c": 18}'


def test_custom_or_empty_nudge() -> None:
    e = engine([text("plain")], [text('{"temp_c": 1}')])
    allm.chat(e, allm.request("q", response_format=SCHEMA), structured_finalize=True, structured_finalize_nudge="")
    assert e.adapter.requests[1].messages[-1].role == "assistant"  # type: ignore[attr-defined]
    e2 = engine([text("plain")], [text('{"temp_c": 1}')])
    allm.chat(e2, allm.request("q", response_format=SCHEMA), structured_finalize=True, structured_finalize_nudge="JSON now.")
    assert e2.adapter.requests[1].messages[-1] == allm.user("JSON now.")  # type: ignore[attr-defined]


def test_no_second_pass_after_an_error_or_a_question() -> None:
    e = engine([text("partial"), error("provider_unavailable")])
    result = allm.chat(e, allm.request("q", response_format=SCHEMA), structured_finalize=True)
    assert result.halted_reason == "error" and e.adapter.calls == 1  # type: ignore[attr-defined]
    assert result.metadata["structured_finalize"] == {"pass_1_halted": "error"}


def test_max_turns_then_finalize_does_not_count_pass_2() -> None:
    e = engine([tool_call("lookup", {"city": "A"})], [text('{"temp_c": 3}')])
    result = allm.chat(e, allm.request("q", response_format=SCHEMA), structured_finalize=True, max_turns=1)
    assert result.metadata["structured_finalize"] == {"pass_1_halted": "max_turns"}
    assert result.halted_reason == "completed" and orjson.loads(result.final_response.output_text) == {"temp_c": 3}  # type: ignore[union-attr]


def test_needs_a_response_format_and_raises_at_call_time() -> None:
    with pytest.raises(ValueError, match="response_format"):
        allm.stream(engine(["x"]), "q", structured_finalize=True)


async def test_async_twin() -> None:
    e = engine([tool_call("lookup", {"city": "Paris"})], [text("18.")], [text('{"temp_c": 18}')])
    result = await allm.achat(e, allm.request("q", response_format=SCHEMA), structured_finalize=True)
    assert orjson.loads(result.final_response.output_text) == {"temp_c": 18}  # type: ignore[union-attr]
    assert len(result.steps) == 3 and e.adapter.requests[2].tools == ()  # type: ignore[attr-defined]
