"""Every recorded conversation imports into a thread and exports back to what was recorded.

The recordings are real provider traffic (``tests/fixtures``, copied from the shared corpus
with their SOURCE.txt): request bodies as sent, and each request with its recorded answer
appended as the next assistant turn. Equality is up to the normalisations listed in
``guides/history_formats.md`` (``tests/formats/wire.py`` applies exactly those).
"""

from __future__ import annotations

import pytest

from allm import formats
from tests.formats.canon import canon
from tests.formats.corpus import CONVERSATIONS, Conversation
from tests.formats.wire import conversation, normalise

# Recorded requests that a provider refused because the conversation was malformed: the import
# refuses or reports them the same way.
REFUSED = {"openai-chat/error-400-invalid-type:request"}
UNKNOWN_ROLE = {"llama-server/i4-error-bad-role:request", "llama-server/i4-error-bad-role:reply"}
GOOD = [c for c in CONVERSATIONS if c.id not in REFUSED | UNKNOWN_ROLE]


def test_the_corpus_is_all_there() -> None:
    by_format: dict[str, int] = {}
    for c in CONVERSATIONS:
        by_format[c.format] = by_format.get(c.format, 0) + 1
    assert by_format == {"openai_chat": 59, "openai_responses": 19, "anthropic": 28, "gemini": 19}
    kinds = {c.id.rsplit(":", 1)[1] for c in CONVERSATIONS}
    assert kinds == {"request", "reply"}


@pytest.mark.parametrize("conv", GOOD, ids=[c.id for c in GOOD])
def test_import_then_export_gives_back_the_recorded_conversation(conv: Conversation) -> None:
    thread, warnings = formats.from_payload(conv.payload, conv.format)
    assert [w for w in warnings if w.kind != "not_history"] == []
    out, export_warnings = formats.to_payload(thread, conv.format)
    assert export_warnings == []
    assert normalise(conv.format, out) == normalise(conv.format, conversation(conv.format, conv.payload))


@pytest.mark.parametrize("conv", GOOD, ids=[c.id for c in GOOD])
def test_a_recorded_conversation_is_exact_after_one_normalising_round_trip(conv: Conversation) -> None:
    """Once in allm's spelling, export -> import -> export is the identity on the payload."""
    thread, _ = formats.from_payload(conv.payload, conv.format)
    once, _ = formats.to_payload(thread, conv.format)
    again, warnings = formats.to_payload(formats.from_payload(once, conv.format)[0], conv.format)
    assert warnings == []
    assert again == once


@pytest.mark.parametrize("target", formats.FORMATS)
@pytest.mark.parametrize("conv", GOOD, ids=[c.id for c in GOOD])
def test_a_recorded_conversation_in_another_format_loses_nothing_silently(conv: Conversation, target: str) -> None:
    thread, _ = formats.from_payload(conv.payload, conv.format)
    payload, w1 = formats.to_payload(thread, target)
    back, w2 = formats.from_payload(payload, target)
    gemini = target == "gemini"
    if canon(back, (target,), rename_ids=gemini) != canon(thread, (target,), rename_ids=gemini):
        assert [w for w in w1 + w2 if not (gemini and w.path == "")], f"{conv.id} -> {target} lost something silently"


def test_the_recorded_reasoning_survives_with_its_signatures() -> None:
    by_id = {c.id: c for c in CONVERSATIONS}
    anthropic, _ = formats.from_anthropic(by_id["anthropic/nonstream-thinking:reply"].payload)
    thinking = anthropic.messages[-1].reasoning[0]
    assert thinking.provider == "anthropic" and thinking.signature and thinking.signature.startswith("EvoRCpMB")
    gemini, _ = formats.from_gemini(by_id["gemini/generate-function-call-thought-signature:reply"].payload)
    call = gemini.messages[-1].tool_calls[0]
    assert call.id == "call_883098" and call.metadata["gemini"]["id"] == "call_883098"
    assert call.metadata["gemini"]["thought_signature"].startswith("ErkECrYE")
    responses, _ = formats.from_openai_responses(by_id["openai-responses/stream-function-call-output-followup:request"].payload)
    rs = responses.messages[1].reasoning[0]
    assert rs.provider == "openai" and rs.encrypted_content and rs.encrypted_content.startswith("gAAAAAB")
    assert [m.role for m in responses.messages] == ["user", "assistant", "tool"]
    assert responses.messages[1].tool_calls[0].id == responses.messages[2].tool_call_id


def test_a_refused_recording_is_refused_on_import_with_its_path() -> None:
    conv = next(c for c in CONVERSATIONS if c.id in REFUSED)
    with pytest.raises(formats.FormatError) as exc:
        formats.from_openai_chat(conv.payload)
    assert exc.value.reason == "invalid_payload"
    assert "messages[0].content" in exc.value.message


def test_an_unknown_role_is_reported_and_strict_refuses_it() -> None:
    conv = next(c for c in CONVERSATIONS if c.id == "llama-server/i4-error-bad-role:reply")
    thread, warnings = formats.from_openai_chat(conv.payload)
    assert [m.role for m in thread.messages] == ["assistant"]
    assert [(w.kind, w.path) for w in warnings if w.kind != "not_history"] == [("unknown", "messages[0]")]
    assert "'wizard'" in warnings[-1].message
    with pytest.raises(formats.FormatError) as exc:
        formats.from_openai_chat(conv.payload, strict=True)
    assert exc.value.reason == "unrepresentable" and exc.value.warning == warnings[-1]
