"""The pure decisions about retries, deadlines, redaction and error classification.

No sockets except the connect-deadline tests at the end, which use a listening socket
whose backlog is full (connects to it hang, as to a black-holed host).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpcore
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import allm
from allm import _transport, keys
from allm.errors import AdapterError, EngineError, from_status, redact, scrub
from allm.events import Error, MessageStarted, RawChunk, TextDelta
from allm.policy import NEVER_RETRIED, RETRY_STATUSES, Attempts, RetryPolicy, Timeouts, retry_delay, should_retry

# ------------------------------------------------------------------------------ what is retried


@pytest.mark.parametrize("status", range(400, 600))
def test_which_statuses_are_retried(status: int) -> None:
    err = from_status(status, "x", provider="p")
    assert should_retry(RetryPolicy(), err) == (status in {408, 409, 429, 500, 502, 503, 504, 529})


def test_reasons_that_cannot_succeed_are_never_retried_whatever_the_status() -> None:
    p = RetryPolicy()
    for reason in NEVER_RETRIED:
        for status in (None, 429, 500, 503):
            assert not should_retry(p, AdapterError("x", reason=reason, status=status)), (reason, status)
    # A generic 4xx label does not veto a retryable status (providers label 408/409 invalid_request_error).
    assert should_retry(p, AdapterError("x", reason="invalid_request", status=409))
    assert should_retry(p, AdapterError("x", reason="not_found", status=408))


def test_without_a_status_the_reason_decides() -> None:
    p = RetryPolicy()
    for reason in ("rate_limited", "provider_unavailable", "timeout", "network_error"):
        assert should_retry(p, AdapterError("x", reason=reason))
    for reason in ("invalid_request", "malformed_response", "not_found", "unknown"):
        assert not should_retry(p, AdapterError("x", reason=reason))


def test_statuses_are_configurable() -> None:
    p = RetryPolicy(statuses={503})
    assert p.statuses == frozenset({503})
    assert not should_retry(p, from_status(500, "x", provider="p"))
    assert frozenset({408, 409, 429, 500, 502, 503, 504, 529}) == RETRY_STATUSES


@given(
    base=st.floats(0, 5),
    cap=st.floats(0, 20),
    jitter=st.floats(0, 1),
    attempt=st.integers(1, 12),
    r=st.floats(0, 0.999999),
)
def test_backoff_is_exponential_capped_and_jitter_only_shortens(base: float, cap: float, jitter: float, attempt: int, r: float) -> None:
    p = RetryPolicy(max_attempts=20, base_delay=base, max_delay=cap, jitter=jitter)
    d = retry_delay(p, attempt, AdapterError("x", reason="network_error"), rand=lambda: r)
    b = min(cap, base * 2 ** (attempt - 1))
    assert d is not None and b * (1 - jitter) - 1e-9 <= d <= b + 1e-9 and d <= cap + 1e-9


@given(after=st.floats(0.001, 1e6), cap=st.floats(0.001, 100), r=st.floats(0, 0.999999))
def test_retry_after_is_honoured_capped_and_never_shortened(after: float, cap: float, r: float) -> None:
    p = RetryPolicy(retry_after_cap=cap)
    d = retry_delay(p, 1, AdapterError("x", reason="rate_limited", status=429, retry_after=after), rand=lambda: r)
    want = min(after, cap)
    assert d is not None and want <= d <= want * 1.025 + 1e-9
    ignored = retry_delay(RetryPolicy(respect_retry_after=False, base_delay=1, jitter=0), 1, AdapterError("x", reason="rate_limited", status=429, retry_after=after))
    assert ignored == 1


def test_attempts_are_counted_from_the_first_try() -> None:
    err = AdapterError("x", reason="network_error")
    assert [retry_delay(RetryPolicy(max_attempts=3, jitter=0), n, err) is not None for n in (1, 2, 3)] == [True, True, False]
    assert retry_delay(RetryPolicy(max_attempts=1), 1, err) is None


def test_policy_and_timeouts_validate() -> None:
    for bad in ({"max_attempts": 0}, {"jitter": 1.5}, {"jitter": -0.1}, {"base_delay": -1}, {"max_delay": -1}, {"retry_after_cap": -1}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)  # type: ignore[arg-type]
    for name in ("connect", "first_event", "idle", "total"):
        with pytest.raises(ValueError):
            Timeouts(**{name: 0})  # type: ignore[arg-type]
        assert getattr(Timeouts(**{name: None}), name) is None  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ attempts and deadlines


def test_held_events_before_content_make_a_failure_retryable() -> None:
    st_ = Attempts(RetryPolicy(), Timeouts(), now=0.0)
    st_.begin(0.0)
    started = MessageStarted("id", "m", ())
    assert st_.take([started, RawChunk({"a": 1})]) == ([], None)
    boom = AdapterError("overloaded", reason="provider_unavailable")
    assert st_.take([Error(boom)]) == ([], boom) and not st_.started
    st_.begin(1.0)  # the next attempt forgets what the failed one held
    out, err = st_.take([started, TextDelta("hi")])
    assert err is None and out == [started, TextDelta("hi")] and st_.started
    late = AdapterError("x", reason="network_error")
    assert st_.take([Error(late)]) == ([Error(late)], None)  # after the first event: passed on, not retried


def test_deadline_names_the_one_that_binds() -> None:
    t = Timeouts(first_event=10, idle=2, total=30)
    st_ = Attempts(RetryPolicy(), t, now=100.0)
    st_.begin(100.0)
    assert st_.deadline() == 110.0 and "first-event deadline of 10 s" in st_.timeout_error("p", 110.0).message
    st_.take([TextDelta("x")])
    st_.wait_start = 125.0
    assert st_.deadline() == 127.0 and "idle deadline of 2 s" in st_.timeout_error("p", 127.0).message
    st_.wait_start = 129.0
    assert st_.deadline() == 130.0 and "total deadline of 30 s" in st_.timeout_error("p", 130.0).message
    assert st_.deadline_passed(130.0) and not st_.deadline_passed(129.0)
    assert st_.next_delay(AdapterError("x", reason="network_error"), 129.99) is None  # would end after the total


# ------------------------------------------------------------------------------ redaction


def test_redact_patterns() -> None:
    cases = {
        "Incorrect API key provided: sk-proj-abcdefghijklmnop.": "Incorrect API key provided: [redacted].",
        "masked sk-proj-********************wxyz here": "masked [redacted] here",
        "masked tok_abcd************wxyz here": "masked [redacted] here",
        "API key not valid: AIzaSyA1234567890abcdefghijklmnopqrs": "API key not valid: [redacted]",
        "GET https://host/v1/models?key=abc123456&alt=sse": "GET https://host/v1/models?key=[redacted]&alt=sse",
        "sent x-api-key: abcdefgh12 and x-goog-api-key=zzzzzzzz": "sent x-api-key: [redacted] and x-goog-api-key=[redacted]",
        'headers {"authorization": "Bearer tok_12345678"}': 'headers {"authorization": "[redacted]"}',
        "a plain message about keys, tokens and **bold**": "a plain message about keys, tokens and **bold**",
    }
    for text, want in cases.items():
        assert redact(text) == want, text
    assert redact("my key hunter2-long is bad", "hunter2-long") == "my key [redacted] is bad"


def test_scrub_removes_fragments_and_metadata() -> None:
    key = "0000,00000000000"
    err = AdapterError(f"header authorization: {key}", reason="authentication_failed", metadata={"echo": [key], "n": 1})
    assert key not in err.message  # the pattern cut the key at the comma...
    assert "00000000000" in err.message  # ...and left a piece
    scrub(err, key)
    assert "000000" not in err.message and err.args == (err.message,)
    assert err.metadata == {"echo": ["[redacted]"], "n": 1}


@given(key=st.text("abcdefghijklmnopqrstuvwxyz0123456789,;&\"' -", min_size=8, max_size=30))
def test_scrub_leaves_no_six_character_piece(key: str) -> None:
    err = AdapterError(f"bad key {key}; header x-api-key: {key}, bearer {key}", reason="authentication_failed")
    scrub(err, key)
    pieces = {key[i : i + 6] for i in range(len(key) - 5)}
    assert not any(p in err.message for p in pieces)


def test_invalid_keys_are_refused_without_being_quoted() -> None:
    for key, why in (("sk-abc\n", "whitespace"), ("sk-abcé123", "non-ASCII"), ("sk-ab c123", "spaces or control")):
        with pytest.raises(EngineError) as info:
            keys.check(key, "openai", "env:OPENAI_API_KEY")
        assert info.value.reason == "invalid_key" and why in info.value.message and key not in str(info.value)
    assert keys.check("sk-valid_key-123", "openai") == "sk-valid_key-123"


# ------------------------------------------------------------------------------ classification


def test_httpx_failures_are_classified() -> None:
    t = Timeouts(connect=2)
    cases = [
        (httpx.ConnectTimeout("x"), "timeout", "connect deadline of 2 s"),
        (httpx.WriteTimeout("x"), "timeout", "send the request"),
        (httpx.PoolTimeout("x"), "timeout", "pooled connection"),
        (httpx.ReadTimeout("x"), "timeout", "read timeout"),
        (httpx.ConnectError("[Errno 111] Connection refused"), "network_error", "Connection refused"),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), "network_error", "disconnected"),
        (httpcore.ReadError("reset"), "network_error", "reset"),
        (httpx.DecodingError("Error -3 while decompressing"), "malformed_response", "decompressing"),
        (httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'"), "invalid_request", "unsupported"),
        (httpx.ConnectError("failed for https://h/v1?key=abcdef123456"), "network_error", "key=[redacted]"),
    ]
    for exc, reason, text in cases:
        err = _transport.classify(exc, "p", t)
        assert (err.reason, err.provider) == (reason, "p") and text in err.message, (exc, err)


# ------------------------------------------------------------------------------ the connect deadline, for real


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port whose connects hang: a listener with a full backlog that never accepts."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=1)
    try:
        yield port
    finally:
        filler.close()
        srv.close()


def _engine(port: int) -> allm.Engine:
    return allm.Engine(adapter=allm.providers.OpenAICompatible(f"http://127.0.0.1:{port}/v1"), model="m")


def test_connect_deadline(black_hole: int) -> None:
    retries: list[allm.RetryInfo] = []
    t0 = time.monotonic()
    with pytest.raises(AdapterError) as info:
        allm.generate(
            _engine(black_hole), "hi", timeouts=Timeouts(connect=0.2), retry=RetryPolicy(max_attempts=2, base_delay=0.01, jitter=0), on_retry=retries.append
        )
    elapsed = time.monotonic() - t0
    assert info.value.reason == "timeout" and "connect deadline of 0.2 s" in info.value.message
    assert [r.reason for r in retries] == ["timeout"]  # a connect timeout is retried
    assert 0.4 <= elapsed < 1.5


def test_the_total_deadline_bounds_the_connect(black_hole: int) -> None:
    t0 = time.monotonic()
    with pytest.raises(AdapterError) as info:
        allm.generate(_engine(black_hole), "hi", timeouts=Timeouts(connect=10, total=0.3))
    assert info.value.reason == "timeout" and "total deadline of 0.3 s" in info.value.message
    assert time.monotonic() - t0 < 1.0


async def test_connect_deadline_async(black_hole: int) -> None:
    t0 = time.monotonic()
    with pytest.raises(AdapterError) as info:
        await allm.agenerate(_engine(black_hole), "hi", timeouts=Timeouts(connect=0.2), retry=RetryPolicy(max_attempts=1))
    assert info.value.reason == "timeout" and "connect deadline" in info.value.message
    assert time.monotonic() - t0 < 1.0
    # Model lists (iter_once) have the same deadline.
    engine = allm.Engine(adapter=_engine(black_hole).adapter, timeouts=Timeouts(connect=0.2), retry=RetryPolicy(max_attempts=1))
    t0 = time.monotonic()
    with pytest.raises(AdapterError) as info:
        await allm.alist_models(engine)
    assert info.value.reason == "timeout" and time.monotonic() - t0 < 1.0
    with pytest.raises(AdapterError):
        await asyncio.to_thread(allm.list_models, engine)
    await _transport.aclose()


def test_the_retries_and_deadlines_example_runs() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parent.parent
    out = subprocess.run(
        [sys.executable, str(root / "examples" / "retries_and_deadlines.py")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
