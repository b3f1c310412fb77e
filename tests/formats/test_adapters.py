"""The formats write what the adapters send: for the same thread, ``to_X(thread)`` equals the
conversation part of the body the adapter encodes (``adapter.encode(request).body``).

Threads: every recorded conversation of the corpus, imported, encoded by every adapter (a
thread read from one provider and sent to another included), and generated threads. The
documented differences: an image given by URL becomes a Gemini ``fileData`` part in the
``gemini`` format, where the Gemini adapter refuses it; two message metadata entries only the
formats read are compared without (the ``phase`` of a Responses assistant message,
``metadata["openai"]["phase"]``, and a Gemini object-shaped function response,
``metadata["gemini"]["response_object"]``).
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import allm
from allm import formats
from allm.errors import ValidationError
from allm.providers import Anthropic, Gemini, OpenAI, OpenAIResponses
from allm.types import Thread
from tests import strategies as S
from tests.formats.corpus import CONVERSATIONS

ADAPTERS: dict[str, tuple[Any, str, tuple[str, ...]]] = {
    "openai_chat": (OpenAI(api="chat"), "gpt-4.1-mini", ("messages",)),
    "openai_responses": (OpenAIResponses(), "gpt-5-nano", ("instructions", "input")),
    "anthropic": (Anthropic(), "claude-sonnet-4-5", ("system", "messages")),
    "gemini": (Gemini(), "gemini-2.5-flash", ("systemInstruction", "contents")),
}


def adapter_payload(fmt: str, thread: Thread) -> dict[str, Any] | None:
    """The conversation part of what the adapter sends for ``thread``, or None when it refuses it."""
    adapter, model, keys = ADAPTERS[fmt]
    try:
        call = adapter.encode(allm.Request(messages=thread.messages, model=model), stream=False)
    except ValidationError:
        return None
    body = orjson.loads(call.body)
    return {k: body[k] for k in keys if k in body}


FORMAT_ONLY = {("openai", "phase"), ("gemini", "response_object")}


def without_format_only_metadata(thread: Thread) -> Thread:
    def strip(meta: Any) -> dict[str, Any]:
        out = {}
        for k, v in meta.items():
            if isinstance(v, dict):
                v = {k2: v2 for k2, v2 in v.items() if (k, k2) not in FORMAT_ONLY}
                if not v:
                    continue
            out[k] = v
        return out

    return Thread(tuple(attrs.evolve(m, metadata=strip(m.metadata)) for m in thread.messages), thread.metadata)


def _imported() -> list[tuple[str, Thread]]:
    out = []
    for c in CONVERSATIONS:
        try:
            thread, _ = formats.from_payload(c.payload, c.format)
        except formats.FormatError:
            continue
        out.append((c.id, thread))
    return out


IMPORTED = _imported()


@pytest.mark.parametrize("fmt", list(ADAPTERS))
@pytest.mark.parametrize(("case", "thread"), IMPORTED, ids=[i for i, _ in IMPORTED])
def test_recorded_conversations_are_written_as_the_adapter_sends_them(case: str, thread: Thread, fmt: str) -> None:
    expected = adapter_payload(fmt, thread)
    assert expected is not None, f"the {fmt} adapter refused {case}"
    payload, _warnings = formats.to_payload(without_format_only_metadata(thread), fmt)
    assert payload == expected


@pytest.mark.parametrize("fmt", list(ADAPTERS))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_threads_are_written_as_the_adapter_sends_them(fmt: str, data: st.DataObject) -> None:
    thread = data.draw(st.one_of(S.portable_threads, S.anthropic_threads, S.gemini_threads, S.responses_threads, S.chat_threads))
    expected = adapter_payload(fmt, thread)
    assume(expected is not None)
    payload, _warnings = formats.to_payload(without_format_only_metadata(thread), fmt)
    assert payload == expected


def test_a_url_image_is_file_data_in_the_gemini_format_and_refused_by_the_adapter() -> None:
    thread = Thread((allm.user([allm.TextPart("What is this?"), allm.ImagePart.from_url("https://example.org/cat.png", "image/png")]),))
    assert adapter_payload("gemini", thread) is None
    payload, warnings = formats.to_gemini(thread)
    assert payload["contents"][0]["parts"][1] == {"fileData": {"fileUri": "https://example.org/cat.png", "mimeType": "image/png"}}
    assert warnings == []
    back, _ = formats.from_gemini(payload)
    assert back == Thread((allm.user((allm.TextPart("What is this?"), allm.ImagePart.from_url("https://example.org/cat.png", "image/png"))),))
