"""Tool groups: each call is routed to the group that declared its tool, with that group's context."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import allm
from allm.conversations import ToolGroup
from allm.conversations.groups import bind_tools
from allm.conversations.storage import NAMESPACE
from allm.errors import ValidationError
from allm.stores import MemoryStore
from allm.testing import fake_engine, tool_call
from tests.conversations.helpers import WAIT

SECRET = "sk-weather-SECRET-0123456789abcdef"
SCHEMA = {"type": "object", "properties": {}}


def all_stored_bytes(store: MemoryStore) -> bytes:
    out = b""
    for key in store.keys(NAMESPACE):
        record = store.get(NAMESPACE, key)
        assert record is not None
        out += record.value + b"".join(store.read(NAMESPACE, key))
    return out


def test_calls_are_routed_to_their_groups_context(
    convs: allm.Conversations, store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    seen: dict[str, Any] = {}

    def weather(args: dict[str, Any], ctx: allm.ToolContext) -> str:
        seen["weather"] = (dict(ctx.context), ctx.session_id)
        return "sunny"

    async def calendar(args: dict[str, Any], ctx: allm.ToolContext) -> str:
        seen["calendar"] = dict(ctx.context)
        return "free"

    def clock(args: dict[str, Any], ctx: allm.ToolContext) -> str:
        seen["clock"] = dict(ctx.context)
        return "noon"

    def no_ctx(args: dict[str, Any]) -> str:
        seen["no_ctx"] = True
        return "plain"

    groups = [
        ToolGroup([allm.tool("weather", "W", SCHEMA, handler=weather)], context={"api_key": SECRET, "unit": "c"}, name="weather"),
        ToolGroup([allm.tool("calendar", "C", SCHEMA, handler=calendar), allm.tool("no_ctx", "N", SCHEMA, handler=no_ctx)], context={"db": object()}),
        allm.tool("clock", "T", SCHEMA, handler=clock),
    ]
    engine = fake_engine(
        [tool_call("weather", {}), tool_call("calendar", {}), tool_call("clock", {}), tool_call("no_ctx", {})],
        ["done"],
        context={"tenant": "acme", "unit": "f"},
    )
    convs.open("c1", engine=engine, tools=groups, context={"user": "ana"})
    with caplog.at_level(logging.DEBUG):
        assert convs.talk("c1", "plan my day", timeout=WAIT).text == "done"
    weather_ctx, session_id = seen["weather"]
    assert weather_ctx == {"tenant": "acme", "unit": "c", "user": "ana", "api_key": SECRET}  # the group wins per key
    assert session_id == "c1"
    assert set(seen["calendar"]) == {"tenant", "unit", "user", "db"} and seen["calendar"]["unit"] == "f"
    assert seen["clock"] == {"tenant": "acme", "unit": "f", "user": "ana"}  # no group: no group context
    assert seen["no_ctx"] is True
    # A group's context is never stored, shown or logged.
    stored = all_stored_bytes(store)
    assert b"acme" not in stored  # the engine's context is not stored either
    assert SECRET.encode() not in stored and SECRET[10:20].encode() not in stored
    assert b'"user":"ana"' in stored  # the conversation's own context is
    assert SECRET not in repr(groups[0]) and SECRET not in caplog.text
    assert SECRET not in repr(convs.session("c1")) and SECRET not in repr(convs.list())


def test_duplicate_names_and_bad_entries_are_refused(convs: allm.Conversations) -> None:
    a = allm.tool("same", "A", SCHEMA, handler=lambda x: 1)
    with pytest.raises(ValidationError) as e:
        bind_tools([ToolGroup([a], name="first"), ToolGroup([a], name="second")])
    assert e.value.reason == "invalid_tool" and "first" in str(e.value) and "second" in str(e.value)
    with pytest.raises(ValidationError):
        bind_tools([a, ToolGroup([a])])
    with pytest.raises(ValidationError):
        bind_tools(["not a tool"])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        bind_tools([ToolGroup(["not a tool"])])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        convs.open("c1", engine=fake_engine(["x"]), tools=[a, a])
    assert convs.get("c1") is None


def test_a_group_tool_replaces_an_engine_tool_of_the_same_name(convs: allm.Conversations) -> None:
    engine_tool = allm.tool("lookup", "L", SCHEMA, handler=lambda a: "engine's")
    group_tool = allm.tool("lookup", "L", SCHEMA, handler=lambda a, ctx: f"group's {ctx.context['k']}")
    engine = fake_engine([tool_call("lookup", {})], ["done"], tools=[engine_tool])
    convs.open("c1", engine=engine, tools=[ToolGroup([group_tool], context={"k": 1})])
    convs.talk("c1", "go", timeout=WAIT)
    assert convs.messages("c1")[2].text == "group's 1"


def test_handlers_without_context_are_left_as_they_are() -> None:
    def plain(args: dict[str, Any]) -> str:
        return "x"

    t = allm.tool("plain", "P", SCHEMA, handler=plain)
    (bound,) = bind_tools([ToolGroup([t], context={"a": 1})])
    assert bound.handler is plain
    manual = allm.tool("manual", "M", SCHEMA, manual=True)
    (bound_manual,) = bind_tools([ToolGroup([manual], context={"a": 1})])
    assert bound_manual.handler is None
