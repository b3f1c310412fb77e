"""Observed streams are iterated without a closing wrapper (``EventStream(direct=True)``):
leaving a ``for`` loop over one still closes it, and its HTTP connection, at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import allm
from allm import telemetry
from allm.events import MessageCompleted, MessageStarted, ToolCallCompleted
from allm.providers import Fake
from allm.testing import tool_call
from tests.adapters import WIRE_NAMES, WIRES
from tests.loopback import LoopbackServer, serve
from tests.telemetry.conftest import Records
from tests.test_cancellation import assert_left_at_once, prefix_then_stall
from tests.test_faults import KEY, is_content, pool


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve() as s:
        yield s


def engine(*scripts: Any) -> allm.Engine:
    return allm.Engine(adapter=Fake(scripts=list(scripts)), model="fake-1")


def phases(records: Records) -> list[tuple[str, str, bool]]:
    return [(r.kind, r.phase, r.cancelled) for r in records]


@pytest.mark.parametrize("wire", WIRE_NAMES)
def test_break_out_of_a_held_observed_stream(server: LoopbackServer, wire: str, records: Records) -> None:
    server.handler = prefix_then_stall(wire)  # type: ignore[assignment]
    stream = allm.stream_generate(WIRES[wire].engine(server.url), "hi", api_key=KEY)
    for ev in stream:
        if is_content(ev):
            break
    t0 = time.monotonic()
    assert phases(records) == [("stream", "start", False), ("stream", "stop", True)]
    assert_left_at_once(server, t0, pool(False))
    with pytest.raises(StopIteration):
        next(stream)  # still referenced, and over
    stream.close()
    assert len(records) == 2


def test_leaving_or_closing_inside_the_loop(records: Records) -> None:
    s = allm.stream_generate(engine(["a", "b", "c"]), "x")
    for _ in s:
        break
    assert phases(records) == [("stream", "start", False), ("stream", "stop", True)]
    assert list(s) == []  # a second loop finds it closed
    records.clear()
    s = allm.stream_generate(engine(["a", "b", "c"]), "x")
    seen = [ev for ev in s if not s.close()]  # closed while the loop holds it
    assert len(seen) == 1 and phases(records) == [("stream", "start", False), ("stream", "stop", True)]
    records.clear()
    s = allm.stream_generate(engine(["a", "b", "c"]), "x")
    with pytest.raises(RuntimeError):
        for _ in s:
            raise RuntimeError("the consumer failed")
    assert phases(records) == [("stream", "start", False), ("stream", "stop", True)]


def test_pulled_then_looped_is_one_operation(records: Records) -> None:
    s = allm.stream_generate(engine(["a", "b", "c"]), "x")
    first = next(s)
    rest = list(s)
    assert type(first) is MessageStarted and type(rest[-1]) is MessageCompleted
    assert phases(records) == [("stream", "start", False), ("stream", "stop", False)]


def test_break_out_of_an_observed_chat(records: Records) -> None:
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    eng = engine([tool_call("add", {"a": 1, "b": 2})], ["3"])
    c = allm.stream(eng, "1+2?", tools=[allm.function_tool(add)])
    for ev in c:
        if type(ev) is ToolCallCompleted:
            break
    assert phases(records) == [
        ("chat", "start", False),
        ("stream", "start", False),
        ("stream", "stop", True),
        ("chat", "stop", True),
    ]
    assert list(c) == [] and len(records) == 4


def test_off_streams_keep_their_wrapper() -> None:
    assert not telemetry.active
    s = allm.stream_generate(engine(["a"]), "x")
    it = iter(s)
    assert it.gi_code.co_name == "_closing"  # type: ignore[attr-defined]
    it.close()


def test_observed_streams_are_looped_directly(records: Records) -> None:
    s = allm.stream_generate(engine(["a"]), "x")
    it = iter(s)
    assert it.gi_code.co_name == "observe"  # type: ignore[attr-defined]  # no wrapper around it
    assert [type(ev) for ev in it][-1] is MessageCompleted
    c = allm.stream(engine(["a"]), "x")
    it = iter(c)
    assert it.gi_code.co_name == "_chat_events"  # type: ignore[attr-defined]
    assert next(it) is not None
    it.close()
    assert phases(records)[-2:] == [("stream", "stop", True), ("chat", "stop", True)]
