"""Export a real conversation in every history format, import it back, and carry it on.

Runs with no key and no network: the conversation is a recorded Anthropic exchange with
extended thinking (``tests/fixtures/anthropic/nonstream-thinking``: the request as sent and
the answer as received, decoded by the Anthropic adapter)::

    PYTHONPATH=. python examples/history_formats.py

It shows that:

1. every format writes a history file and reads it back, and says what it could not keep
   (Chat Completions and Gemini cannot hold Anthropic's signed thinking);
2. the Anthropic and allm formats bring the thinking back with its signature, byte for byte,
   so the next Anthropic turn is accepted;
3. an imported thread is an ordinary thread: the conversation goes on from it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import orjson

import allm
from allm import formats
from allm.providers import Anthropic
from allm.testing import fake_engine, text

CASE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "anthropic" / "nonstream-thinking"


def recorded_thread() -> allm.Thread:
    request = orjson.loads((CASE / "request.json").read_bytes())
    thread, warnings = formats.from_anthropic(request)
    assert [w.kind for w in warnings] == ["not_history"]  # model, max_tokens, thinking: settings, not history
    adapter = Anthropic()
    call = adapter.encode(allm.request(thread, model=request["model"]), stream=False)
    events = adapter.decode_body(call, (CASE / "response.raw").read_bytes())
    answer = allm.Collector("recorded").fold(events)
    return thread.add(answer.message)


def main() -> None:
    thread = recorded_thread()
    thinking = thread.messages[-1].reasoning[0]
    assert thinking.provider == "anthropic" and thinking.signature
    print(f"conversation: {len(thread)} messages; the answer starts {thread.messages[-1].text[:60]!r}")

    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats.FORMATS:
            path = Path(tmp) / f"history.{fmt}.json.gz"
            info = formats.export_history(thread, path, format=fmt)
            size, count = info
            back, warnings = formats.import_history(path)
            assert count == len(thread) == len(back)
            assert [m.text for m in back.messages] == [m.text for m in thread.messages]
            kept = back.messages[-1].reasoning[:1] == (thinking,)
            lost = ", ".join(sorted({w.kind for w in warnings})) or "nothing"
            print(f"{fmt:17} {size:6} bytes  thinking kept: {'yes' if kept else 'no '}  reported: {lost}")
            if fmt in ("anthropic", "allm"):
                assert kept and warnings == []
            if fmt in ("openai_chat", "gemini"):
                assert not kept and {w.kind for w in warnings} <= {"unsupported_content", "foreign_reasoning"}

        # The Anthropic file is a valid next request: the signed thinking goes back as received.
        back, _ = formats.import_history(Path(tmp) / "history.anthropic.json.gz")
        payload, _ = formats.to_anthropic(back.add(allm.user("And what would the mirror show?")))
        assert payload["messages"][1]["content"][0] == {"type": "thinking", "thinking": thinking.text, "signature": thinking.signature}

    # An imported thread carries on like any other.
    engine = fake_engine([text("It would show you asking.")])
    reply = allm.generate(engine, allm.request(back.add(allm.user("And what would the mirror show?"))))
    assert reply.output_text == "It would show you asking."
    print("continued:", reply.output_text)


if __name__ == "__main__":
    main()
