"""The request guard: what it blocks, what it lets through, what its error says."""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import Iterator

import pytest

import allm
from allm.providers import Anthropic, Gemini, OpenAI, OpenAICompatible, OpenAIResponses
from allm.testing import RequestBlocked, allow_requests, block_requests, fake_engine, requests_blocked
from allm.testing._hook import provider_of, safe_url
from tests.loopback import LoopbackServer
from tests.testing.helpers import chat_server, started

KEY = "sk-proj-" + "Kx7" * 12


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    yield from started(chat_server)


PROVIDERS = [
    (lambda: OpenAI(), "gpt-4.1-mini", "openai", "POST https://api.openai.com/v1/chat/completions"),
    (lambda: OpenAIResponses(), "gpt-5", "openai", "POST https://api.openai.com/v1/responses"),
    (lambda: Anthropic(), "claude-sonnet-4-5", "anthropic", "POST https://api.anthropic.com/v1/messages"),
    (
        lambda: Gemini(),
        "gemini-2.5-flash",
        "gemini",
        "POST https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
    ),
    (lambda: OpenAICompatible.openrouter(), "openai/gpt-4.1", "openrouter", "POST https://openrouter.ai/api/v1/chat/completions"),
]


@pytest.mark.parametrize(("make", "model", "provider", "line"), PROVIDERS, ids=[p[2] + str(i) for i, p in enumerate(PROVIDERS)])
def test_every_provider_is_blocked_by_name_and_url_without_its_key(make, model: str, provider: str, line: str) -> None:  # type: ignore[no-untyped-def]
    engine = allm.Engine(adapter=make(), model=model)
    with block_requests(), pytest.raises(RequestBlocked) as info:
        allm.generate(engine, "hi", api_key=KEY)
    err = info.value
    assert (err.provider, f"{err.method} {err.url}") == (provider, line)
    assert str(err).startswith(f"a real request to {provider} was blocked: {line}\n")
    assert not isinstance(err, allm.AllmError)  # no retry, fallback or loop error handling swallows it
    texts = [str(err), repr(err), repr(err.args), pickle.dumps(err).decode("latin-1")]
    assert all(KEY not in t and KEY[8:20] not in t for t in texts)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is RequestBlocked and (again.provider, again.url, str(again)) == (err.provider, err.url, str(err))


async def test_async_calls_are_blocked_too() -> None:
    engine = allm.Engine(adapter=Anthropic(), model="claude-sonnet-4-5")
    with block_requests():
        with pytest.raises(RequestBlocked):
            await allm.agenerate(engine, "hi", api_key=KEY)
        with pytest.raises(RequestBlocked):
            await allm.aembed(allm.Engine(adapter=OpenAI(), model="text-embedding-3-small"), ["x"], api_key=KEY)


def test_model_lists_and_embeddings_are_blocked() -> None:
    with block_requests():
        with pytest.raises(RequestBlocked) as info:
            allm.list_models(allm.Engine(adapter=OpenAI()), api_key=KEY)
        assert info.value.method == "GET" and info.value.url == "https://api.openai.com/v1/models"
        with pytest.raises(RequestBlocked):
            allm.embed(allm.Engine(adapter=OpenAI(), model="text-embedding-3-small"), ["x"], api_key=KEY)


def test_the_fake_and_loopback_servers_pass(server: LoopbackServer) -> None:
    local = allm.Engine(adapter=OpenAICompatible.llama_cpp(server.url + "/v1"), model="m")
    with block_requests():
        assert requests_blocked()
        assert allm.generate(fake_engine(["scripted"]), "x").output_text == "scripted"
        assert allm.generate(local, "dlrow olleh").output_text.strip() == "hello world"
    assert len(server.requests) == 1


def test_nothing_leaves_when_loopback_is_not_allowed(server: LoopbackServer) -> None:
    local = allm.Engine(adapter=OpenAICompatible.llama_cpp(server.url + "/v1"), model="m")
    with block_requests(allow_loopback=False), pytest.raises(RequestBlocked) as info:
        allm.generate(local, "x", api_key=KEY)
    assert info.value.provider == "an OpenAI Chat Completions server at 127.0.0.1"
    assert server.requests == [] and server.opened == 0  # not even a connection


def test_allowed_hosts_and_nesting(server: LoopbackServer) -> None:
    outside = requests_blocked()  # a run may have the guard on (ALLM_ALLOW_REQUESTS=0)
    local = allm.Engine(adapter=OpenAICompatible.llama_cpp(server.url + "/v1"), model="m")
    with block_requests(allow_loopback=False, allow_hosts=["127.0.0.1"]):
        allm.generate(local, "a")
    with block_requests(allow_loopback=False):
        with allow_requests():
            assert not requests_blocked()
            allm.generate(local, "b")
        assert requests_blocked()
        with pytest.raises(RequestBlocked):
            allm.generate(local, "c")
    assert requests_blocked() == outside
    assert [r.path for r in server.requests] == ["/v1/chat/completions"] * 2


def test_the_guard_covers_every_thread_and_is_removed_afterwards(server: LoopbackServer) -> None:
    from allm import _transport

    before = _transport._hook
    engine = allm.Engine(adapter=OpenAI(), model="gpt-4.1-mini")
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            allm.generate(engine, "hi", api_key=KEY)
        except BaseException as exc:
            errors.append(exc)

    with block_requests():
        assert _transport._hook is not None
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert len(errors) == 4 and all(isinstance(e, RequestBlocked) for e in errors)
    assert _transport._hook is before  # nothing left installed


def test_as_a_decorator() -> None:
    outside = requests_blocked()
    @block_requests()
    def call() -> None:
        allm.generate(allm.Engine(adapter=OpenAI(), model="m"), "hi", api_key=KEY)

    with pytest.raises(RequestBlocked):
        call()
    assert requests_blocked() == outside


def test_urls_lose_credentials_and_key_parameters() -> None:
    url = f"https://user:pw@example.com:8443/v1/x?key={KEY}&alt=sse&api_key=abc12345&access_token=t0k3n123"
    assert safe_url(url) == "https://example.com:8443/v1/x?alt=sse"
    assert safe_url(f"https://example.com/{KEY}/x") == "https://example.com/[redacted]/x"


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://api.openai.com/v1/chat/completions", "openai"),
        ("https://eu.api.openai.com/v1/responses", "openai"),
        ("https://api.anthropic.com/v1/messages", "anthropic"),
        ("https://gateway.example/v1/messages", "an Anthropic Messages server at gateway.example"),
        ("https://gateway.example/v1/responses", "an OpenAI Responses server at gateway.example"),
        ("https://gw.example/v1beta/models/g:generateContent", "a Gemini server at gw.example"),
        ("https://gw.example/v1/embeddings", "an OpenAI-style server at gw.example"),
        ("https://gw.example/other", "a server at gw.example"),
    ],
)
def test_provider_names(url: str, name: str) -> None:
    assert provider_of(url) == name


def test_a_fresh_event_loop_is_covered() -> None:
    engine = allm.Engine(adapter=Gemini(), model="gemini-2.5-flash")
    with block_requests(), pytest.raises(RequestBlocked):
        asyncio.run(allm.agenerate(engine, "hi", api_key=KEY))
