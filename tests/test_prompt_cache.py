"""``Request.prompt_cache`` (a key and a retention) mapped per provider: OpenAI's
``prompt_cache_key`` / ``prompt_cache_retention``, an Anthropic ``cache_control`` breakpoint on
the last block of the prompt, a typed warning where a provider has no equivalent."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest

import allm
from allm import codec
from allm.errors import ValidationError
from allm.providers import Anthropic, Fake, Gemini, OpenAI, OpenAICompatible, OpenAIResponses
from allm.testing import text
from allm.types import PromptCache

THREAD = [allm.system("Be brief."), allm.user("Summarise the attached report."), allm.assistant("It says..."),
          allm.user("Shorter.")]


def _body(adapter: Any, req: allm.Request) -> tuple[dict[str, Any], tuple[allm.types.CallWarning, ...]]:
    call = adapter.encode(req, stream=True)
    return orjson.loads(call.body or b""), call.warnings


def test_a_session_id_can_be_set_as_the_key_with_evolve() -> None:
    req = allm.request(THREAD, model="gpt-4.1")
    keyed = attrs.evolve(req, prompt_cache=PromptCache(key="ses_123"))
    assert keyed.prompt_cache == PromptCache("ses_123") and req.prompt_cache is None
    assert codec.loads(codec.dumps(keyed), allm.Request) == keyed


@pytest.mark.parametrize(("retention", "wire"), [(None, None), ("5m", "in_memory"), ("1h", "24h"), ("24h", "24h")])
@pytest.mark.parametrize("adapter", [OpenAI(), OpenAI(api="responses"), OpenAIResponses()], ids=["chat", "router", "responses"])
def test_openai_sends_key_and_retention(adapter: Any, retention: Any, wire: Any) -> None:
    body, warnings = _body(adapter, allm.request(THREAD, model="gpt-4.1", prompt_cache=PromptCache("ses_1", retention)))
    assert body["prompt_cache_key"] == "ses_1"
    assert body.get("prompt_cache_retention") == wire
    assert not [w for w in warnings if w.setting == "prompt_cache"]
    no_key, _ = _body(adapter, allm.request(THREAD, model="gpt-4.1", prompt_cache=PromptCache(retention="24h")))
    assert "prompt_cache_key" not in no_key and no_key["prompt_cache_retention"] == "24h"
    plain, _ = _body(adapter, allm.request(THREAD, model="gpt-4.1"))
    assert "prompt_cache_key" not in plain and "prompt_cache_retention" not in plain


@pytest.mark.parametrize("adapter", [OpenAICompatible.llama_cpp(), OpenAICompatible.vllm(), Gemini(),
                                     OpenAIResponses.compatible("http://127.0.0.1:8080/v1", "llama.cpp")],
                         ids=["llama.cpp", "vllm", "gemini", "responses-llama.cpp"])
def test_no_equivalent_is_a_typed_warning(adapter: Any) -> None:
    body, warnings = _body(adapter, allm.request(THREAD, model="m", prompt_cache=PromptCache("k", "1h")))
    assert "prompt_cache_key" not in orjson.dumps(body).decode()
    (w,) = [w for w in warnings if w.setting == "prompt_cache"]
    assert w.kind == "dropped_setting" and "was not sent" in w.message
    assert allm.types.CallWarning.from_text(w.message).setting == "prompt_cache"


def _breakpoints(body: dict[str, Any]) -> list[tuple[str, Any]]:
    out = [("tool", t["cache_control"]) for t in body.get("tools", []) if "cache_control" in t]
    out += [("system", b["cache_control"]) for b in body.get("system", []) if "cache_control" in b]
    for i, m in enumerate(body["messages"]):
        out += [(f"messages[{i}]", b["cache_control"]) for b in m["content"] if "cache_control" in b]
    return out


@pytest.mark.parametrize(("retention", "ttl"), [(None, None), ("5m", "5m"), ("1h", "1h")])
def test_anthropic_marks_the_last_block_of_the_prompt(retention: Any, ttl: Any) -> None:
    body, warnings = _body(Anthropic(), allm.request(THREAD, model="m", prompt_cache=PromptCache("k", retention)))
    cc = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    assert _breakpoints(body) == [("messages[2]", cc)]
    assert body["messages"][-1]["content"][-1] == {"type": "text", "text": "Shorter.", "cache_control": cc}
    assert not warnings and "prompt_cache_key" not in body


def test_anthropic_24h_is_sent_as_1h_with_a_warning() -> None:
    body, warnings = _body(Anthropic(), allm.request(THREAD, model="m", prompt_cache=PromptCache(retention="24h")))
    assert _breakpoints(body) == [("messages[2]", {"type": "ephemeral", "ttl": "1h"})]
    (w,) = warnings
    assert (w.kind, w.setting, w.provider) == ("unsupported_feature", "prompt_cache", "anthropic")


def test_anthropic_skips_thinking_and_uses_system_or_tools_without_messages_blocks() -> None:
    thought = allm.ReasoningPart("hmm", signature="sig", provider="anthropic")
    req = allm.request([allm.user("q"), allm.assistant(("partial", thought))], model="m", prompt_cache=PromptCache("k"))
    body, _ = _body(Anthropic(), req)
    assert _breakpoints(body) == [("messages[1]", {"type": "ephemeral"})]
    assert body["messages"][1]["content"][0]["text"] == "partial"


def test_anthropic_with_automatic_caching_sets_its_ttl_and_respects_the_limit() -> None:
    body, _ = _body(Anthropic(cache_control=True), allm.request(THREAD, model="m", prompt_cache=PromptCache("k", "1h")))
    assert body["cache_control"] == {"type": "ephemeral", "ttl": "1h"} and _breakpoints(body) == []
    marked = {"anthropic": {"cache_control": {"type": "ephemeral"}}}
    full = [allm.Message("system", "a", metadata=marked), allm.Message("user", "b", metadata=marked),
            allm.Message("assistant", "c", metadata=marked), allm.Message("user", "d", metadata=marked), allm.user("e")]
    body, warnings = _body(Anthropic(), allm.request(full, model="m", prompt_cache=PromptCache("k")))
    assert len(_breakpoints(body)) == 4
    assert [w.setting for w in warnings] == ["prompt_cache"] and "4 cache breakpoints" in warnings[0].message


def test_engine_default_and_request_merge_field_by_field() -> None:
    fake = Fake(scripts=[[text("a")], [text("b")]])
    engine = allm.Engine(adapter=fake, model="fake", defaults={"prompt_cache": PromptCache(retention="24h")})
    allm.generate(engine, allm.request("hi", prompt_cache=PromptCache(key="ses_9")))
    allm.generate(engine, "hi")
    assert [r.prompt_cache for r in fake.requests] == [PromptCache("ses_9", "24h"), PromptCache(retention="24h")]


@pytest.mark.parametrize(("kwargs", "needle"), [({"key": ""}, "non-empty"), ({"retention": "2h"}, "'5m', '1h', '24h'"),
                                                ({"key": 5}, "non-empty")])
def test_bad_values_are_refused(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as ei:
        PromptCache(**kwargs)
    assert needle in ei.value.message
