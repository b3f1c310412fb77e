"""A stream (or body) that carries no answer ends in an Error (``malformed_response``), never
in a quiet ``finish_reason=None``: for every wire format, streamed and whole."""

from __future__ import annotations

from typing import Any

import pytest

import allm
from allm.errors import AdapterError
from allm.events import Error, MessageCompleted
from allm.providers import Anthropic, Gemini, OpenAI, OpenAIResponses
from tests.loopback import Req, Writer, serve

CHAT, RESPONSES, ANTHROPIC, GEMINI = OpenAI(), OpenAIResponses(), Anthropic(), Gemini()
REQ = allm.request("hi", model="m")


def _stream(adapter: Any, data: bytes) -> list[Any]:
    dec = adapter.decoder(adapter.encode(REQ, stream=True))
    return dec.feed(data) + dec.close()


def _body(adapter: Any, data: bytes) -> list[Any]:
    return adapter.decode_body(adapter.encode(REQ, stream=False), data)


def _no_answer(events: list[Any]) -> AdapterError:
    assert events and isinstance(events[-1], Error), events
    assert not any(isinstance(e, MessageCompleted) for e in events)
    err = events[-1].error
    assert isinstance(err, AdapterError) and err.reason == "malformed_response"
    resp = allm.Collector().fold(events)
    assert resp.finish_reason == "error" and resp.metadata["error"] == err
    return err


STREAMS = [
    ("chat: only [DONE]", CHAT, b"data: [DONE]\n\n"),
    ("chat: a usage chunk, no choice", CHAT,
     b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":0,"total_tokens":3}}\n\ndata: [DONE]\n\n'),
    ("anthropic: only message_stop", ANTHROPIC, b'event: message_stop\ndata: {"type":"message_stop"}\n\n'),
    ("anthropic: a ping, then message_stop", ANTHROPIC,
     b'event: ping\ndata: {"type":"ping"}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'),
    ("anthropic: nothing", ANTHROPIC, b""),
    ("gemini: nothing", GEMINI, b""),
    ("gemini: no candidates", GEMINI, b'data: {"usageMetadata": {"promptTokenCount": 3}}\r\n\r\n'),
    ("gemini: empty candidates", GEMINI, b'data: {"candidates": []}\r\n\r\n'),
    ("responses: only [DONE]", RESPONSES, b"data: [DONE]\n\n"),
    ("responses: completed with no output", RESPONSES,
     b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"r","status":"completed"}}\n\n'),
]


@pytest.mark.parametrize(("adapter", "data"), [(a, d) for _n, a, d in STREAMS], ids=[n for n, _a, _d in STREAMS])
def test_a_stream_with_no_answer_ends_in_an_error(adapter: Any, data: bytes) -> None:
    _no_answer(_stream(adapter, data))


BODIES = [
    ("chat: {}", CHAT, b"{}"),
    ("chat: no choices", CHAT, b'{"id":"c","object":"chat.completion","choices":[]}'),
    ("responses: {}", RESPONSES, b"{}"),
    ("responses: completed, no output", RESPONSES, b'{"id":"r","status":"completed"}'),
    ("anthropic: {}", ANTHROPIC, b"{}"),
    ("gemini: {}", GEMINI, b"{}"),
    ("gemini: empty candidates", GEMINI, b'{"candidates": []}'),
]


@pytest.mark.parametrize(("adapter", "data"), [(a, d) for _n, a, d in BODIES], ids=[n for n, _a, _d in BODIES])
def test_a_body_with_no_answer_is_an_error(adapter: Any, data: bytes) -> None:
    _no_answer(_body(adapter, data))


def test_an_empty_answer_that_is_an_answer_still_completes() -> None:
    # A choice with no content and finish_reason "stop" is an (empty) answer, not a missing one.
    chat = b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    assert allm.Collector().fold(_stream(CHAT, chat)).finish_reason == "stop"
    msg = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":1}}}\n\n'
           b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"}}\n\n'
           b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert allm.Collector().fold(_stream(ANTHROPIC, msg)).finish_reason == "stop"


def test_through_http_the_call_fails_with_the_typed_error() -> None:
    async def only_done(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.chunk(b"data: [DONE]\n\n")
        await w.end_stream()

    from allm.providers import OpenAICompatible

    with serve(only_done) as server:
        engine = allm.Engine(adapter=OpenAICompatible(server.url + "/v1"), model="m")
        # Nothing reached the caller before the failure, so the call raises it (as an HTTP error would).
        with pytest.raises(AdapterError) as ei:
            allm.generate(engine, "hi")
    assert ei.value.reason == "malformed_response" and "no answer" in ei.value.message
