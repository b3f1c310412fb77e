from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

import allm
from allm import keys
from allm.errors import AdapterError, from_status, parse_retry_after, redact
from allm.policy import Attempts, RetryPolicy, Timeouts, retry_delay


@pytest.fixture(autouse=True)
def clean_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("OPENAI_API_KEY", "OPENROUTER_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    keys.clear()
    yield
    keys.clear()


def test_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    assert keys.lookup("openai", ("OPENAI_API_KEY",)) == ("from-env", "env:OPENAI_API_KEY")
    keys.configure(openai="from-config")
    assert keys.lookup("openai", ("OPENAI_API_KEY",)) == ("from-config", "config")
    keys.put("openai", "from-store")
    assert keys.lookup("openai", ("OPENAI_API_KEY",)) == ("from-store", "store")
    with keys.scope(openai="from-scope"):
        assert keys.lookup("openai", ("OPENAI_API_KEY",)) == ("from-scope", "scope")
        assert keys.lookup("openai", (), "from-call") == ("from-call", "call")
    assert keys.resolve("openai", ("OPENAI_API_KEY",)) == "from-store"
    keys.delete("openai")
    assert keys.resolve("openai", ("OPENAI_API_KEY",)) == "from-config"


def test_empty_strings_count_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")
    keys.put("openai", "")
    with keys.scope(openai=""):
        assert keys.lookup("openai", ("OPENAI_API_KEY",), "") == (None, None)


def test_missing_key_names_every_place_checked() -> None:
    with pytest.raises(allm.EngineError) as info:
        keys.resolve("openrouter", ("OPENROUTER_API_KEY",))
    err = info.value
    assert err.reason == "missing_key" and err.provider == "openrouter"
    for place in ("api_key=", "allm.keys.scope()", "allm.keys.put()", "allm.keys.configure()", "OPENROUTER_API_KEY"):
        assert place in err.message
    assert keys.resolve("llama_cpp", (), required=False) is None


def test_generic_scope_and_provider_specific_wins() -> None:
    with keys.scope("any-key"):
        assert keys.resolve("anthropic") == "any-key"
        with keys.scope(anthropic="ant"):
            assert keys.resolve("anthropic") == "ant" and keys.resolve("openai") == "any-key"
        assert keys.resolve("anthropic") == "any-key"
    assert keys.lookup("anthropic") == (None, None)


async def test_scopes_are_per_task() -> None:
    async def tenant(n: int) -> str | None:
        with keys.scope(openai=f"tenant-{n}"):
            await asyncio.sleep(0.001 * (n % 3))
            return keys.resolve("openai")

    got = await asyncio.gather(*(tenant(n) for n in range(50)))
    assert got == [f"tenant-{n}" for n in range(50)]


def test_scopes_are_per_thread() -> None:
    results: dict[int, str | None] = {}
    barrier = threading.Barrier(8)

    def run(n: int) -> None:
        with keys.scope(openai=f"k{n}"):
            barrier.wait()
            results[n] = keys.resolve("openai")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: f"k{n}" for n in range(8)}


def test_missing_key_is_raised_when_the_call_is_made() -> None:
    from allm.providers import OpenAI

    engine = allm.Engine(adapter=OpenAI(), model="gpt-4.1-mini")
    with pytest.raises(allm.EngineError, match="OPENAI_API_KEY"):
        allm.stream_generate(engine, "hi")


# ------------------------------------------------------------------------------ errors


def test_redaction() -> None:
    msg = "Incorrect API key provided: sk-proj-abcdefghijklmnop. Also AIzaSyA1234567890abcdefghijklmno and Bearer abcdefghijkl"
    out = redact(msg)
    assert "sk-proj" not in out and "AIza" not in out and "abcdefghijkl" not in out
    assert redact("key is hunter2hunter2", "hunter2hunter2") == "key is [redacted]"
    err = AdapterError("Incorrect API key provided: sk-live-0123456789abcdef", reason="authentication_failed")
    assert "0123456789" not in str(err) and "0123456789" not in repr(err)


@pytest.mark.parametrize(
    ("status", "message", "code", "reason"),
    [
        (400, "prompt is too long: 210000 tokens > 200000 maximum", None, "context_length_exceeded"),
        (400, "This model's maximum context length is 8192 tokens", "context_length_exceeded", "context_length_exceeded"),
        (400, "bad", None, "invalid_request"),
        (401, "no", None, "authentication_failed"),
        (403, "no", None, "permission_denied"),
        (404, "no", None, "not_found"),
        (408, "slow", None, "timeout"),
        (409, "conflict", None, "provider_unavailable"),
        (429, "slow down", None, "rate_limited"),
        (500, "oops", None, "provider_unavailable"),
        (529, "Overloaded", "overloaded_error", "provider_unavailable"),
        (200, "weird", None, "unknown"),
    ],
)
def test_status_classification(status: int, message: str, code: str | None, reason: str) -> None:
    assert from_status(status, message, provider="p", code=code).reason == reason


def test_unknown_reason_is_rejected() -> None:
    with pytest.raises(ValueError, match="no reason"):
        AdapterError("x", reason="exploded")


def test_parse_retry_after() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "nonsense"}) is None
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past


def test_retry_delays() -> None:
    p = RetryPolicy(max_attempts=4, base_delay=1, max_delay=3, jitter=0)
    rl = AdapterError("x", reason="rate_limited", status=429)
    assert [retry_delay(p, n, rl) for n in (1, 2, 3, 4)] == [1, 2, 3, None]
    assert retry_delay(p, 1, AdapterError("x", reason="invalid_request", status=400)) is None
    assert retry_delay(p, 1, AdapterError("x", reason="network_error")) == 1
    assert retry_delay(p, 1, AdapterError("x", reason="rate_limited", status=429, retry_after=2.5)) == 2.5
    jittery = RetryPolicy(base_delay=1, jitter=0.5)
    assert retry_delay(jittery, 1, rl, rand=lambda: 1.0) == 0.5  # jitter only shortens: never above the cap
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_attempt_deadlines() -> None:
    st = Attempts(RetryPolicy(), Timeouts(first_event=10, idle=2, total=30), now=100.0)
    st.begin(100.0)
    assert st.deadline() == 110.0
    st.take([allm.events.TextDelta("x")])
    st.wait_start = 105.0
    assert st.deadline() == 107.0
    st2 = Attempts(RetryPolicy(), Timeouts(first_event=None, idle=None, total=5), now=0.0)
    st2.begin(1.0)
    assert st2.deadline() == 5.0
    assert st2.next_delay(AdapterError("x", reason="rate_limited"), now=4.9) is None  # would pass the total deadline
