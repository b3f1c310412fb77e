"""Thread helpers append one message and return a new thread; the thread they are called on
is unchanged, and each checks what it appends as the message constructors do."""

from __future__ import annotations

import pytest

import allm
from allm.errors import ValidationError
from allm.providers import Anthropic


def test_each_helper_appends_one_message() -> None:
    call = allm.ToolCall("call_1", "get_weather", {"city": "Paris"}, '{"city": "Paris"}')
    empty = allm.Thread(metadata={"title": "t"})
    t = (
        empty.add_system("Be brief.")
        .add_user("Weather in Paris?")
        .add_assistant(tool_calls=[call])
        .add_tool_result("call_1", '{"temp_c": 18}', name="get_weather")
        .add_assistant("18 °C.")
        .add_user(["And", " Rome?"])
    )
    assert empty.messages == ()  # unchanged
    assert [m.role for m in t.messages] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert t.messages == (
        allm.system("Be brief."),
        allm.user("Weather in Paris?"),
        allm.assistant(tool_calls=[call]),
        allm.tool_result("call_1", '{"temp_c": 18}', name="get_weather"),
        allm.assistant("18 °C."),
        allm.user(["And", " Rome?"]),
    )
    assert t.metadata == {"title": "t"}
    assert t.add_tool_result("call_1", "boom", is_error=True).last.is_error  # type: ignore[union-attr]
    # The thread is ready for any adapter.
    Anthropic().encode(allm.request(t, model="m"), stream=False)


def test_helpers_check_what_they_append() -> None:
    t = allm.Thread()
    with pytest.raises(ValidationError, match=r"content\[0\] is a dict"):
        t.add_user([{"type": "text", "text": "hi"}])  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="tool_call_id"):
        t.add_tool_result("", "x")
    with pytest.raises(ValidationError, match="content is None"):
        t.add_system(None)  # type: ignore[arg-type]
