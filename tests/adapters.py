"""The five HTTP adapters under test, each with its recorded traffic.

Shared by the fault-injection, tenant, leak and decoder-fuzz tests. Each
:class:`Wire` names an adapter family, builds the adapter for a base URL (a loopback
server), and carries the real recorded bytes used as the healthy payload (a stream
and a non-streaming body) plus the whole recorded corpus of that wire format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import orjson

import allm
from allm.providers import Anthropic, Gemini, OpenAI, OpenAICompatible, OpenAIResponses
from allm.providers.base import HttpAdapter, HttpCall
from tests.conftest import FIXTURES, capture_names, case_names, load_capture, load_case


@attrs.frozen
class Wire:
    """One adapter family: how to build it, where it sends, and its recorded bytes."""

    name: str
    make: Callable[[str], HttpAdapter]  # base server URL (no path) -> adapter
    model: str
    stream: bytes  # the healthy streamed payload (SSE bytes as recorded)
    body: bytes  # the healthy non-streaming body
    key_header: str  # the request header that carries the key
    key_prefix: str  # what precedes the key in that header
    streams: tuple[tuple[str, bytes], ...]  # every recorded stream of this wire format
    bodies: tuple[tuple[str, bytes], ...]  # every recorded successful body
    error_body: Callable[[str, int], bytes]  # (message, status) -> the provider's error body
    stream_error: Callable[[str], bytes]  # message -> the provider's in-stream error event

    def adapter(self, base: str) -> HttpAdapter:
        return self.make(base)

    def engine(self, base: str, **kw: Any) -> allm.Engine:
        return allm.Engine(adapter=self.make(base), model=self.model, **kw)

    def key_of(self, headers: dict[str, str]) -> str | None:
        v = headers.get(self.key_header)
        return v.removeprefix(self.key_prefix) if v is not None else None

    def call(self, *, stream: bool = True) -> HttpCall:
        return self.make("http://127.0.0.1:9").encode(allm.request("hi", model=self.model), stream=stream)


def _raw(provider: str, name: str) -> bytes:
    return load_case(provider, name).body


def _ok_cases(provider: str, prefixes: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
    out = []
    for n in case_names(provider):
        if n.startswith(prefixes):
            c = load_case(provider, n)
            if c.ok:
                out.append((f"{provider}/{n}", c.body))
    return tuple(out)


def _captures(prefixes: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
    out = []
    for n in capture_names():
        if n.startswith(prefixes):
            c = load_capture(n)
            if c.status < 400:
                out.append((f"llama-server/{n}", c.body))
    return tuple(out)


def _openai_error(message: str, status: int) -> bytes:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return orjson.dumps({"error": {"message": message, "type": kind, "code": None}})


def _openai_stream_error(message: str) -> bytes:
    return b"data: " + orjson.dumps({"error": {"message": message, "type": "server_error", "code": "server_error"}}) + b"\n\n"


def _responses_stream_error(message: str) -> bytes:
    resp = {"id": "resp_x", "object": "response", "status": "failed", "error": {"code": "server_error", "message": message}}
    return b"event: response.failed\ndata: " + orjson.dumps({"type": "response.failed", "sequence_number": 99, "response": resp}) + b"\n\n"


def _anthropic_error(message: str, status: int) -> bytes:
    kind = {401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def _anthropic_stream_error(message: str) -> bytes:
    return b"event: error\ndata: " + orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": message}}) + b"\n\n"


def _gemini_error(message: str, status: int) -> bytes:
    names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
    return orjson.dumps({"error": {"code": status, "message": message, "status": names.get(status, "UNKNOWN")}})


def _gemini_stream_error(message: str) -> bytes:
    return b"data: " + orjson.dumps({"error": {"code": 500, "message": message, "status": "INTERNAL"}}) + b"\r\n\r\n"


WIRES: dict[str, Wire] = {
    "openai_chat": Wire(
        "openai_chat",
        lambda base: OpenAI(base_url=base + "/v1", api="chat"),
        "gpt-4.1-nano",
        _raw("openai-chat", "stream-text-include-usage-2"),
        _raw("openai-chat", "nonstream-tool-call"),
        "authorization",
        "Bearer ",
        _ok_cases("openai-chat", ("stream-",)),
        _ok_cases("openai-chat", ("nonstream-", "vision-")),
        _openai_error,
        _openai_stream_error,
    ),
    "openai_responses": Wire(
        "openai_responses",
        lambda base: OpenAIResponses(base_url=base + "/v1"),
        "gpt-4.1-nano",
        _raw("openai-responses", "stream-text"),
        _raw("openai-responses", "nonstream-text"),
        "authorization",
        "Bearer ",
        _ok_cases("openai-responses", ("stream-",)) + _captures(("h2-",)),
        _ok_cases("openai-responses", ("nonstream-", "structured-")) + _captures(("h1-", "h3-")),
        _openai_error,
        _responses_stream_error,
    ),
    "anthropic": Wire(
        "anthropic",
        lambda base: Anthropic(base_url=base + "/v1"),
        "claude-haiku-4-5",
        _raw("anthropic", "stream-text"),
        _raw("anthropic", "nonstream-text"),
        "x-api-key",
        "",
        _ok_cases("anthropic", ("stream-",)) + _captures(("g2-", "g4-")),
        _ok_cases("anthropic", ("nonstream-", "structured-", "vision-")) + _captures(("g1-", "g3-")),
        _anthropic_error,
        _anthropic_stream_error,
    ),
    "gemini": Wire(
        "gemini",
        lambda base: Gemini(base_url=base + "/v1beta"),
        "gemini-2.5-flash",
        _raw("gemini", "stream-sse-thoughts"),
        _raw("gemini", "generate-text"),
        "x-goog-api-key",
        "",
        _ok_cases("gemini", ("stream-",)),
        _ok_cases("gemini", ("generate-", "structured-", "vision-")),
        _gemini_error,
        _gemini_stream_error,
    ),
    "openai_compatible": Wire(
        "openai_compatible",
        lambda base: OpenAICompatible(base + "/v1", "llama.cpp"),
        "smollm2",
        load_capture("b1-chat-stream-usage").body,
        load_capture("a1-chat-nonstream").body,
        "authorization",
        "Bearer ",
        _captures(("b1-", "b2-", "c2-", "c4-", "d2-")),
        _captures(("a1-", "a2-", "a3-", "a4-", "c1-", "c3-", "c5-", "c6-", "d1-", "d3-")),
        _openai_error,
        _openai_stream_error,
    ),
}

WIRE_NAMES = tuple(WIRES)

assert FIXTURES.exists()
