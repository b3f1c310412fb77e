"""Tests of support_agent.py with allm's pytest plugin: scripted, function, auto, replayed, guarded.

Run: ``python examples/testing_suite.py`` (or ``pytest examples/testing``). No key, no
network: the model is a Fake, or a recording of allm's local SmolLM2 server replayed
offline. To record again against a running server:
``ALLM_LOCAL_BASE_URL=http://127.0.0.1:PORT/v1 pytest examples/testing --allm-record-mode=all -k real_model``.
"""

from __future__ import annotations

import os

import pytest
from support_agent import SORRY, SYSTEM, answer, small_talk

import allm
from allm.providers import OpenAI, OpenAICompatible
from allm.testing import RequestBlocked, assert_sent, text, tool_call, usage

LOCAL = os.environ.get("ALLM_LOCAL_BASE_URL", "http://127.0.0.1:8080/v1")


@pytest.mark.allm_script(
    [tool_call("lookup_order", {"order_id": "A-1"}), usage(120, 15)],
    [text("Your order A-1 has shipped with DHL."), usage(160, 12)],
)
def test_looks_the_order_up_before_answering(allm_engine, allm_requests, allm_events):
    assert answer(allm_engine, "Where is my order A-1?") == "Your order A-1 has shipped with DHL."
    assert_sent(
        allm_requests,
        call=0,
        thread=[allm.system(SYSTEM), allm.user("Where is my order A-1?")],
        tools=["lookup_order"],
        temperature=0,
        max_tokens=200,
    )
    tool_message = allm_requests[1].messages[-1]
    assert tool_message.role == "tool" and tool_message.text == '{"order_id":"A-1","status":"shipped","carrier":"DHL"}'
    assert allm_events.types()[-1] == "MessageCompleted"


@pytest.mark.allm_script(function=lambda request: tool_call("lookup_order", {"order_id": "A-2"}))
def test_gives_up_after_four_model_calls(allm_engine, allm_requests):
    assert answer(allm_engine, "And A-2?") == SORRY
    assert len(allm_requests) == 4


def test_every_tool_is_wired(allm_engine, allm_requests):
    """No script: auto() calls lookup_order with schema-made arguments ("a"), which fails."""
    out = answer(allm_engine, "Anything")
    sent_back = allm_requests[1].messages[-1]
    assert sent_back.is_error and "no order a" in sent_back.text
    assert "no order a" in out


@pytest.mark.allm_recording
def test_small_talk_with_the_real_model(allm_recording):
    """SmolLM2's real answer, recorded once (recordings/), replayed offline."""
    engine = allm.Engine(adapter=OpenAICompatible.llama_cpp(LOCAL), model="smollm2")
    assert "Paris" in small_talk(engine, "What is the capital of France?")
    assert len(allm_recording.played) + len(allm_recording.recorded) == 1


def test_a_real_provider_is_blocked(monkeypatch):
    """pytest.ini sets allm_allow_requests = false: even with a key at hand, nothing is sent."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-a-developers-real-key")
    engine = allm.Engine(adapter=OpenAI(), model="gpt-4.1-mini")
    with pytest.raises(RequestBlocked) as info:
        answer(engine, "Where is A-1?")
    assert info.value.provider == "openai" and info.value.url == "https://api.openai.com/v1/chat/completions"
    assert "sk-a-developers" not in str(info.value)
