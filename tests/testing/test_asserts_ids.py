"""assert_sent, explain and deterministic ids, called directly."""

from __future__ import annotations

import os
import random
import string

import pytest

import allm
from allm.events import MessageStarted, TextDelta
from allm.testing import assert_sent, deterministic_ids, explain, fake, fake_engine, render_message, tool_call
from allm.types import ImagePart, ReasoningPart, TextPart


def sent_twice() -> allm.Engine:
    engine = fake_engine([tool_call("lookup", {"id": 7}, id="c1")], ["found"])
    lookup = allm.tool(name="lookup", description="Look up", schema={"type": "object", "properties": {"id": {"type": "integer"}}}, handler=lambda a: {"ok": True})
    allm.chat(engine.with_tools(lookup), allm.request([allm.system("S"), allm.user("find 7")], temperature=0, max_tokens=9))
    return engine


def test_assert_sent_passes_on_what_was_sent() -> None:
    engine = sent_twice()
    f = engine.adapter
    assert_sent(f, call=0, thread=[allm.system("S"), allm.user("find 7")], tools=["lookup"], temperature=0, max_tokens=9)
    assert_sent(f.requests, call=1, temperature=0, model="fake", stop_sequences=[])
    assert_sent(f.requests[0], thread=f.requests[0].thread)
    assert_sent(f, thread=f.requests[1])


def test_assert_sent_lists_every_difference() -> None:
    f = sent_twice().adapter
    other = allm.tool(name="lookup", description="Find", schema={"type": "object", "properties": {"id": {"type": "string"}}})
    with pytest.raises(AssertionError) as info:
        assert_sent(f, thread=[allm.system("S"), allm.user("find 8")], tools=[other, "search"], max_tokens=10, tool_choice="auto")
    msg = str(info.value)
    assert msg.startswith("the model was not sent what was expected (call 2 of 2):\n")
    for line in (
        "    [0] system: 'S'",
        "- [1] user: 'find 8'",
        "+ [1] user: 'find 7'",
        '+ [2] assistant: lookup#c1({"id":7})',
        "+ [3] tool lookup#c1: '{\"ok\":true}'",
        "tools: missing ['search']",
        "tool lookup: description: expected 'Find', sent 'Look up'",
        "tool lookup: schema differs",
        '-      "type": "string"',
        '+      "type": "integer"',
        "max_tokens: expected 10, sent 9",
        "tool_choice: expected 'auto', sent None",
    ):
        assert line in msg, line


def test_assert_sent_errors() -> None:
    f = fake(["x"])
    with pytest.raises(AssertionError, match="the model was sent nothing"):
        assert_sent(f, temperature=0)
    allm.generate(allm.Engine(adapter=f, model="fake"), "x")
    with pytest.raises(AssertionError, match="called 1 time"):
        assert_sent(f, call=3)
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['temprature'\]"):
        assert_sent(f, temprature=0)
    with pytest.raises(TypeError, match="expected allm messages"):
        assert_sent(f, thread=[42])  # type: ignore[list-item]
    with pytest.raises(AssertionError, match="tools: not expected but sent"):
        assert_sent(allm.request("x", tools=[allm.tool(name="t")]), tools=[])


def test_messages_render_on_one_line() -> None:
    img = allm.user([TextPart("Look:"), ImagePart.from_bytes(b"12345", "image/png"), ImagePart.from_url("https://x/y.png")])
    assert render_message(img) == "user: 'Look:' + <image image/png 5 bytes> + <image ? https://x/y.png>"
    reasoning = allm.assistant([ReasoningPart("hmm", signature="s"), TextPart("Yes")])
    assert render_message(reasoning) == "assistant: <reasoning 'hmm' signed> + 'Yes'"
    bad = allm.Message("assistant", "", tool_calls=[allm.ToolCall("c9", "f", {}, "{oops", parse_error="bad")])
    assert render_message(bad) == "assistant: f#c9('{oops')"
    assert render_message(allm.tool_result("c9", "no", is_error=True)) == "tool #c9 (error): 'no'"
    assert render_message(allm.user("x" * 500)).endswith("...'") and len(render_message(allm.user("x" * 500))) < 200


def test_explain_covers_hidden_differences_and_other_values() -> None:
    a = allm.Thread([allm.user("hi")])
    b = allm.Thread([allm.Message("user", "hi", metadata={"k": 1})])
    lines = explain(a, b)
    assert lines is not None and lines[0] == "Thread == Thread failed"
    assert "[0] user: 'hi'" in lines[2] and "metadata: left {}, right {'k': 1}" in lines[3]
    assert explain(allm.Usage(1, 2), allm.Usage(1, 3)) == ["Usage == Usage failed", "output_tokens: left 2, right 3"]
    assert explain([MessageStarted("a")], [MessageStarted("b")]) == [
        "1 events == 1 events failed",
        "first difference at event 0 (MessageStarted):",
        "  id: left 'a', right 'b'",
    ]
    assert explain([TextDelta("x")], [MessageStarted("b")])[1] == "event types (- left, + right):"
    assert explain(1, 2) is None and explain("a", "b") is None
    assert explain([allm.user("a")], (allm.user("b"),))[0] == "1 messages == 1 messages failed"


# ------------------------------------------------------------------------------ ids


def ids_of_a_run() -> tuple[str, str, str]:
    engine = fake_engine(["a"], ["b"])
    r1 = allm.generate(engine, "x")
    session, _ = allm.Session.start(engine, "y")
    return r1.request_id or "", session.id, session.thread.messages[-1].text


def test_deterministic_ids_repeat_and_keep_their_shape() -> None:
    with deterministic_ids(5):
        first = ids_of_a_run()
    with deterministic_ids(5):
        second = ids_of_a_run()
    with deterministic_ids(6):
        other = ids_of_a_run()
    assert first == second and first[:2] != other[:2]
    assert len(first[0]) == 22 and first[1].startswith("ses_") and len(first[1]) == 20
    free = ids_of_a_run()
    assert free[:2] != first[:2]


def test_deterministic_ids_nest_and_restore() -> None:
    from allm import ids

    before = ids.random_bytes
    with deterministic_ids("outer") as outer:
        with deterministic_ids("inner"):
            assert ids.random_bytes is not outer
        assert ids.random_bytes is outer
    assert ids.random_bytes is before is os.urandom


def test_fake_tool_call_ids_are_already_deterministic() -> None:
    def run() -> list[str]:
        engine = allm.Engine(adapter=fake(), model="fake", tools=[allm.tool(name="a", handler=lambda x: 1), allm.tool(name="b", handler=lambda x: 2)])
        return [c.id for c in allm.chat(engine, "go").steps[0].response.tool_calls]

    assert run() == run() == ["call_1", "call_2"]


def test_request_ids_stay_unique_across_fork_and_a_seeded_random() -> None:
    from allm import ids

    random.seed(7)  # a program seeding the shared generator does not make ids repeat
    first = [ids.new_request_id() for _ in range(50)]
    random.seed(7)
    again = [ids.new_request_id() for _ in range(50)]
    assert len(set(first + again)) == 100
    assert all(len(i) == 22 and set(i) <= set(string.ascii_letters + string.digits + "-_") for i in first)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child draws the ids the parent draws next, were the sequence shared
        os.write(w, " ".join(ids.new_request_id() for _ in range(20)).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        child = f.read().split()
    parent = [ids.new_request_id() for _ in range(20)]
    assert len(child) == 20 and not set(child) & set(parent)
