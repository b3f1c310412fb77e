"""Base URLs: the path is joined before the query string (Azure's ``?api-version=...``), for
every adapter and every endpoint; whitespace, CR/LF and other control characters, relative
URLs, fragments and user info are refused when the adapter is built."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

import allm
from allm.errors import ValidationError
from allm.providers import Anthropic, Gemini, OpenAI, OpenAICompatible, OpenAIResponses
from allm.providers.base import HttpCall
from tests.loopback import Req, Writer, chat_chunks, serve

AZURE = "https://res.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21"
REQ = allm.request("hi", model="m")
PNG = allm.Image.from_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16, "image/png")

Make = Callable[[str], Any]
ADAPTERS: dict[str, Make] = {
    "OpenAI": lambda u: OpenAI(base_url=u),
    "OpenAI(api=responses)": lambda u: OpenAI(base_url=u, api="responses"),
    "OpenAICompatible": lambda u: OpenAICompatible(u),
    "OpenAIResponses": lambda u: OpenAIResponses(base_url=u),
    "Anthropic": lambda u: Anthropic(base_url=u),
    "Gemini": lambda u: Gemini(base_url=u),
}


def _calls(adapter: Any) -> dict[str, HttpCall]:
    """One call of each endpoint the adapter has."""
    calls = {"stream": adapter.encode(REQ, stream=True), "body": adapter.encode(REQ, stream=False)}
    if hasattr(adapter, "encode_list_models"):
        calls["models"] = adapter.encode_list_models()
    if hasattr(adapter, "encode_embed"):
        calls["embeddings"] = adapter.encode_embed(["a"], model="m")
    if hasattr(adapter, "encode_count_tokens"):
        calls["count_tokens"] = adapter.encode_count_tokens(REQ)
    if hasattr(adapter, "encode_image"):
        calls["images"] = adapter.encode_image("generate", allm.ImageRequest("a cat", model="m"))
        if "edit" in adapter.image_operations:
            calls["image_edit"] = adapter.encode_image("edit", allm.ImageRequest("a hat", model="m", images=(PNG,)))
    return calls


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_the_path_goes_before_the_query_on_every_endpoint(name: str) -> None:
    plain = _calls(ADAPTERS[name]("https://host.example/base"))
    azure = _calls(ADAPTERS[name](AZURE))
    assert plain.keys() == azure.keys() and len(plain) >= 4
    for endpoint, call in azure.items():
        u = urlsplit(call.url)
        own = urlsplit(plain[endpoint].url)
        suffix = own.path.removeprefix("/base")
        assert u.path == "/openai/deployments/gpt4o" + suffix, (endpoint, call.url)
        assert "api-version=2024-10-21" in u.query.split("&"), (endpoint, call.url)
        for q in own.query.split("&") if own.query else ():  # the endpoint's own query is kept too
            assert q in u.query.split("&"), (endpoint, call.url)
        assert "?" not in u.path and u.query.count("api-version") == 1


def test_the_openai_router_reads_a_responses_call_back_with_a_query() -> None:
    adapter = OpenAI(base_url=AZURE, api="responses")
    call = adapter.encode(REQ, stream=True)
    assert urlsplit(call.url).path.endswith("/responses")
    assert type(adapter.decoder(call)).__name__ == "ResponsesDecoder"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("https://api.example.com/v1 ", "' '"),
        (" https://api.example.com/v1", "' '"),
        ("https://api.example.com/v1\r\nX-Injected: 1", "'\\r'"),
        ("https://api.example.com/v1\n", "'\\n'"),
        ("https://api.exa\tmple.com/v1", "'\\t'"),
        ("https://api.example.com/v\x001", "'\\x00'"),
        ("https://api.example.com/v1\x7f", "'\\x7f'"),
        ("https://api.example.com/v1\u00a0", "'\\xa0'"),
        ("api.example.com/v1", "not an absolute URL"),
        ("/v1", "not an absolute URL"),
        ("https://api.example.com/v1#frag", "fragment"),
        ("https://user:sk-secret@api.example.com/v1", "user info"),
        ("https://api.example.com:99999/v1", "not a URL"),
    ],
)
@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_a_bad_base_url_is_refused_when_the_adapter_is_built(name: str, url: str, needle: str) -> None:
    with pytest.raises(ValidationError) as ei:
        ADAPTERS[name](url)
    assert ei.value.reason == "invalid_request" and needle in ei.value.message
    assert "sk-secret" not in str(ei.value)


def test_dialect_base_urls_are_checked_too() -> None:
    from allm.providers import Dialect

    with pytest.raises(ValidationError, match="base_url"):
        OpenAICompatible(dialect=Dialect("mine", "mine", "http://host/v1\r\n"))
    with pytest.raises(ValidationError):
        OpenAIResponses.compatible("http://127.0.0.1:8080/v1 ")


def test_the_server_receives_the_joined_path_and_the_query() -> None:
    async def handler(req: Req, w: Writer) -> None:
        await w.start_stream()
        for c in chat_chunks(["ok"]):
            await w.chunk(c)
        await w.end_stream()

    with serve(handler) as server:
        engine = allm.Engine(adapter=OpenAICompatible(server.url + "/openai/deployments/d?api-version=2024-10-21"), model="m")
        assert allm.generate(engine, "hi").output_text == "ok"
        assert server.requests[-1].path == "/openai/deployments/d/chat/completions?api-version=2024-10-21"
