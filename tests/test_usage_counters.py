"""Usage counters sent as strings: a numeric string is its number; anything else is ``None``,
recorded in ``Response.metadata["dropped_usage"]``, and never reaches ``Usage`` (which refuses
non-int counters), so summing usage keeps working. Real recorded bytes, counters rewritten."""

from __future__ import annotations

import re
from typing import Any

import pytest

import allm
from allm.errors import ValidationError
from allm.providers import Anthropic, Gemini, OpenAI, OpenAIResponses
from tests.conftest import load_case

# (adapter, recorded stream, recorded body, the counter fields of that wire format)
WIRES: dict[str, tuple[Any, str, str, str, tuple[str, ...]]] = {
    "chat": (OpenAI(), "openai-chat", "stream-text-include-usage-2", "nonstream-tool-call",
             ("prompt_tokens", "completion_tokens", "total_tokens")),
    "responses": (OpenAIResponses(), "openai-responses", "stream-text", "nonstream-text",
                  ("input_tokens", "output_tokens", "total_tokens")),
    "anthropic": (Anthropic(), "anthropic", "stream-text", "nonstream-text", ("input_tokens", "output_tokens")),
    "gemini": (Gemini(), "gemini", "stream-sse-text", "generate-text",
               ("promptTokenCount", "candidatesTokenCount", "totalTokenCount")),
}


def _rewrite(data: bytes, fields: tuple[str, ...], to: str) -> bytes:
    """Each counter ``"field": 12`` as ``"field": "12"`` (``to="digits"``) or ``"field": "many"``."""
    pattern = re.compile(rb'("(?:' + b"|".join(f.encode() for f in fields) + rb')":\s*)(\d+)')
    return pattern.sub((lambda m: m.group(1) + b'"' + m.group(2) + b'"') if to == "digits" else (lambda m: m.group(1) + b'"many"'), data)


def _fold(adapter: Any, data: bytes, *, stream: bool) -> allm.Response:
    call = adapter.encode(allm.request("hi", model="m"), stream=stream)
    if stream:
        dec = adapter.decoder(call)
        events = dec.feed(data) + dec.close()
    else:
        events = adapter.decode_body(call, data)
    return allm.Collector().fold(events)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
@pytest.mark.parametrize("wire", sorted(WIRES))
def test_numeric_strings_are_numbers(wire: str, stream: bool) -> None:
    adapter, provider, s_case, b_case, fields = WIRES[wire]
    raw = load_case(provider, s_case if stream else b_case).body
    quoted = _rewrite(raw, fields, "digits")
    assert quoted != raw
    original = _fold(adapter, raw, stream=stream)
    resp = _fold(adapter, quoted, stream=stream)
    assert original.usage.input_tokens is not None
    assert resp.usage == original.usage and "dropped_usage" not in resp.metadata
    assert (resp.usage + resp.usage).input_tokens == 2 * original.usage.input_tokens


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
@pytest.mark.parametrize("wire", sorted(WIRES))
def test_unreadable_counters_are_none_and_recorded(wire: str, stream: bool) -> None:
    adapter, provider, s_case, b_case, fields = WIRES[wire]
    raw = load_case(provider, s_case if stream else b_case).body
    original = _fold(adapter, raw, stream=stream)
    resp = _fold(adapter, _rewrite(raw, fields, "many"), stream=stream)
    assert resp.finish_reason == original.finish_reason and resp.output_text == original.output_text  # nothing else lost
    assert resp.usage.input_tokens is None and resp.usage.output_tokens is None
    dropped = resp.metadata["dropped_usage"]
    assert dropped and set(dropped) <= set(fields) and set(dropped.values()) == {"many"}
    total = resp.usage + original.usage  # summing still works
    assert total.input_tokens == original.usage.input_tokens
    assert allm.codec.loads(allm.codec.dumps(resp), allm.Response) == resp


@pytest.mark.parametrize("bad", ["12", 1.5, -1, True, [3], {"n": 1}])
def test_usage_refuses_counters_that_are_not_token_counts(bad: Any) -> None:
    with pytest.raises(ValidationError, match=r"Usage\.input_tokens must be a token count"):
        allm.Usage(input_tokens=bad)
    with pytest.raises(ValidationError, match=r"Usage\.total_tokens"):
        allm.Usage(1, 2, total_tokens=bad)
    assert allm.Usage(0, 5, None, None, None, 5).output_tokens == 5
