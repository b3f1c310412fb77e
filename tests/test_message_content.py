"""Message content is checked when the message is built: a part that is not a part (a
provider-style dict, a number) or ``None`` content is a ValidationError naming it; a list of
plain strings is text parts, and its text reaches every wire format."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import allm
from allm import codec
from allm.errors import ValidationError
from allm.providers import Anthropic, Gemini, OpenAI, OpenAIResponses
from allm.testing import fake_engine, text

ADAPTERS = [OpenAI(), OpenAIResponses(), Anthropic(), Gemini()]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ([{"type": "text", "text": "hi"}], "content[0] is a dict with keys 'type', 'text'"),
        (["fine", 42], "content[1] is an int"),
        ([allm.TextPart("a"), None], "content[1] is a NoneType"),
        ({"type": "text", "text": "hi"}, "not a dict with keys 'type', 'text'"),
        (b"bytes", "not a bytes"),
        (7, "not an int"),
    ],
)
def test_a_part_that_is_not_a_part_is_refused_naming_its_index_and_type(content: Any, needle: str) -> None:
    for build in (lambda: allm.user(content), lambda: allm.Message("user", content), lambda: allm.assistant(content)):
        with pytest.raises(ValidationError) as ei:
            build()
        assert ei.value.reason == "invalid_message" and needle in ei.value.message


def test_none_content_is_refused() -> None:
    for build in (lambda: allm.user(None), lambda: allm.Message("assistant", None), lambda: allm.system(None)):  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="content is None") as ei:
            build()
        assert ei.value.reason == "invalid_message"


def test_a_provider_dict_points_to_the_part_classes() -> None:
    with pytest.raises(ValidationError, match=r"allm\.TextPart"):
        allm.user([{"type": "text", "text": "hi"}])


def test_a_list_of_strings_is_text_parts() -> None:
    m = allm.user(["Hello", " ", allm.TextPart("world")])
    assert m.content == (allm.TextPart("Hello"), allm.TextPart(" "), allm.TextPart("world"))
    assert m.text == "Hello world"
    assert allm.Message("user", ("a", "b")).text == "ab"
    assert allm.user(allm.TextPart("one")).content == (allm.TextPart("one"),)  # a single part


def test_a_list_of_strings_reaches_every_wire_format() -> None:
    req = allm.request([allm.user(["What is", " 2+2?"])], model="m")
    for adapter in ADAPTERS:
        wire = (adapter.encode(req, stream=False).body or b"").decode()
        assert "What is" in wire and " 2+2?" in wire, (type(adapter).__name__, wire)
    anthropic = orjson.loads(Anthropic().encode(req, stream=False).body or b"")
    assert anthropic["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": " 2+2?"}]}
    ]


def test_text_parts_must_hold_text_and_tool_calls_must_be_tool_calls() -> None:
    with pytest.raises(ValidationError, match=r"TextPart\.text"):
        allm.TextPart(None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"tool_calls\[0\]"):
        allm.assistant("x", tool_calls=[{"id": "c", "name": "f"}])  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="only assistant"):
        allm.Message("user", "x", tool_calls=(allm.ToolCall("c", "f"),))
    with pytest.raises(ValidationError, match="unknown role"):
        allm.Message("robot", "x")  # type: ignore[arg-type]


def test_threads_and_requests_hold_only_messages() -> None:
    with pytest.raises(ValidationError, match=r"messages\[1\] is a dict") as ei:
        allm.Thread([allm.user("a"), {"role": "user", "content": "b"}])  # type: ignore[list-item]
    assert ei.value.reason == "invalid_thread"
    with pytest.raises(ValidationError, match=r"messages\[0\] is a str"):
        allm.Request(messages=["hi"])  # type: ignore[list-item]


def test_nothing_is_lost_on_the_way_through_a_call_and_the_codec() -> None:
    engine = fake_engine([text("ok")])
    resp = allm.generate(engine, allm.request([allm.user(["a", "b"])]))
    assert resp.output_text == "ok"
    sent = engine.adapter.requests[0]  # type: ignore[attr-defined]
    assert sent.messages[0].text == "ab"
    m = allm.user(["a", allm.ImagePart.from_url("https://example.org/x.png")])
    assert codec.loads(codec.dumps(m), allm.Message) == m
