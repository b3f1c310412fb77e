"""A Tool built directly is checked as ``allm.tool(...)`` checks one: name, description,
schema, manual, strict, handler. Stored tools are checked when loaded."""

from __future__ import annotations

from typing import Any

import pytest

import allm
from allm import codec
from allm.errors import ValidationError


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "bad name!"}, "tool name 'bad name!' must be 1 to 64 characters"),
        ({"name": ""}, "tool name '' must be"),
        ({"name": "x" * 65}, "must be 1 to 64 characters"),
        ({"name": 3}, "tool name 3 must be"),
        ({"name": "f", "description": None}, "description must be a string"),
        ({"name": "f", "schema": "object"}, "schema must be a JSON Schema object"),
        ({"name": "f", "schema": {"type": "string"}}, '"type": "object"'),
        ({"name": "f", "schema": {"type": "object", "default": float("nan")}}, "schema.default is nan"),
        ({"name": "f", "manual": "yes"}, "manual must be True or False"),
        ({"name": "f", "strict": 1}, "strict must be True, False or None"),
        ({"name": "f", "handler": "not callable"}, "handler must be callable"),
        ({"name": "f", "metadata": []}, "metadata must be a mapping"),
    ],
)
def test_a_tool_built_directly_is_checked(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as ei:
        allm.Tool(**kwargs)
    assert ei.value.reason == "invalid_tool" and needle in ei.value.message


def test_the_same_name_rule_as_allm_tool() -> None:
    for name in ("bad name!", "a.b", "ü", ""):
        with pytest.raises(ValidationError) as direct:
            allm.Tool(name)
        with pytest.raises(ValidationError) as built:
            allm.tool(name)
        assert direct.value.message == built.value.message
    assert allm.Tool("get_weather-2").name == "get_weather-2"
    assert allm.Tool("f", handler=lambda args: 1).handler is not None


def test_a_stored_tool_with_a_bad_name_does_not_load() -> None:
    data = codec.to_dict(allm.Tool("ok"))
    data["value"]["name"] = "bad name!"
    with pytest.raises(ValidationError, match="bad name"):
        codec.from_dict(data, allm.Tool)


def test_a_request_holds_only_tools() -> None:
    with pytest.raises(ValidationError, match=r"tools\[0\] is a dict") as ei:
        allm.request("hi", tools=[{"type": "function", "function": {"name": "f"}}])
    assert ei.value.reason == "invalid_tool"
