"""Malformed input: arbitrary and mutated bytes into every decoder give only typed errors.

For each adapter family, hypothesis takes the recorded corpus (streams and
non-streaming bodies from ``tests/fixtures/``), mutates it (byte flips, truncations,
duplicated slices, inserted garbage, deleted slices), cuts it at arbitrary points and
feeds it to the adapter's ``decoder(call)`` and ``decode_body``. What may come out:
events of the union, where an ``Error`` event carries an :class:`~allm.errors.AllmError`
and ends the stream, or a raised ``AllmError``; never a bare ``KeyError``,
``IndexError``, ``TypeError``, ``ValueError`` or ``UnicodeDecodeError``. The events
must also fold into a :class:`~allm.types.Response`. And an unmutated recording
split anywhere decodes to the same events as in one piece.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allm.errors import AllmError
from allm.events import Error, MessageCompleted
from allm.fold import fold_response
from allm.types import Response
from tests.adapters import WIRE_NAMES, WIRES, Wire
from tests.conftest import feed_all, splits

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

GARBAGE = st.sampled_from(
    [b"\x00", b"\xff\xfe", b"\n\n", b"\r\n\r\n", b"data: ", b"data: {", b"data: [DONE]\n\n", b"event: error\n", b"}", b"{", b'"', b"\xe2\x82", b"null", b"[]", b"1e999", b'"\\ud800"', b":", b"\r"]
) | st.binary(min_size=1, max_size=12)


@st.composite
def mutated(draw: Any, corpus: tuple[tuple[str, bytes], ...]) -> bytes:
    """One recording from ``corpus`` with up to five mutations applied."""
    _name, data = draw(st.sampled_from(corpus))
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["flip", "truncate", "duplicate", "insert", "delete"]))
        n = len(buf)
        if n == 0:
            buf.extend(draw(GARBAGE))
            continue
        i = draw(st.integers(0, n - 1))
        if kind == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del buf[i:]
        elif kind == "duplicate":
            j = draw(st.integers(i, min(n, i + 400)))
            buf[j:j] = buf[i:j]
        elif kind == "insert":
            buf[i:i] = draw(GARBAGE)
        else:
            j = draw(st.integers(i, min(n, i + 200)))
            del buf[i:j]
    return bytes(buf)


def check_events(events: list[Any]) -> Response:
    """Every event is typed; an ``Error`` carries an ``AllmError`` and ends the stream; the fold works."""
    for i, ev in enumerate(events):
        assert type(ev).__module__ == "allm.events", f"not an event: {ev!r}"
        if isinstance(ev, Error):
            assert isinstance(ev.error, AllmError)
            assert i == len(events) - 1, f"events after an Error: {events[i + 1 :]!r}"
    resp = fold_response(events)
    assert isinstance(resp.output_text, str)
    completed = [e for e in events if isinstance(e, MessageCompleted)]
    assert len(completed) <= 1
    assert (resp.finish_reason == "error") == any(isinstance(e, Error) for e in events)
    return resp


def decode_stream(wire: Wire, parts: list[bytes]) -> list[Any]:
    dec = wire.adapter("http://127.0.0.1:9").decoder(wire.call(stream=True))
    try:
        events = feed_all(dec, parts)
    except AllmError:
        return []
    if events and isinstance(events[-1], Error):
        assert dec.failed and dec.finished
    return events


def decode_body(wire: Wire, body: bytes) -> list[Any]:
    a = wire.adapter("http://127.0.0.1:9")
    try:
        return a.decode_body(wire.call(stream=False), body)
    except AllmError:
        return []


@pytest.mark.parametrize("name", WIRE_NAMES)
@FUZZ
@given(data=st.data())
def test_mutated_streams_give_only_typed_errors(name: str, data: st.DataObject) -> None:
    wire = WIRES[name]
    stream = data.draw(mutated(wire.streams))
    check_events(decode_stream(wire, data.draw(splits(stream))))


@pytest.mark.parametrize("name", WIRE_NAMES)
@FUZZ
@given(data=st.data())
def test_mutated_bodies_give_only_typed_errors(name: str, data: st.DataObject) -> None:
    wire = WIRES[name]
    check_events(decode_body(wire, data.draw(mutated(wire.bodies))))


@pytest.mark.parametrize("name", WIRE_NAMES)
@FUZZ
@given(raw=st.binary(max_size=300), data=st.data())
def test_arbitrary_bytes_give_only_typed_errors(name: str, raw: bytes, data: st.DataObject) -> None:
    wire = WIRES[name]
    check_events(decode_stream(wire, data.draw(splits(raw))))
    check_events(decode_body(wire, raw))


@pytest.mark.parametrize("name", WIRE_NAMES)
@FUZZ
@given(data=st.data())
def test_a_recording_split_anywhere_decodes_the_same(name: str, data: st.DataObject) -> None:
    wire = WIRES[name]
    _case, stream = data.draw(st.sampled_from(wire.streams))
    whole = decode_stream(wire, [stream])
    assert whole, _case
    assert decode_stream(wire, data.draw(splits(stream))) == whole


@pytest.mark.parametrize("name", WIRE_NAMES)
def test_every_recording_decodes_cleanly(name: str) -> None:
    """The unmutated corpus is the control: it must decode without any error."""
    wire = WIRES[name]
    for case, stream in wire.streams:
        events = decode_stream(wire, [stream])
        if "error-event" in case:  # a recorded in-stream provider error
            assert isinstance(events[-1], Error) and events[-1].error.reason == "provider_unavailable"
            continue
        assert isinstance(events[-1], MessageCompleted), case
        check_events(events)
    for case, body in wire.bodies:
        events = decode_body(wire, body)
        assert isinstance(events[-1], MessageCompleted), case
        check_events(events)


LISTS = {
    "openai_chat": ("openai-misc", "models-list"),
    "openai_responses": None,
    "anthropic": ("anthropic", "models-list"),
    "gemini": ("gemini", "models-list"),
    "openai_compatible": ("llama-server", "f1-models"),
}


@pytest.mark.parametrize("name", [n for n in WIRE_NAMES if LISTS[n]])
@FUZZ
@given(data=st.data())
def test_mutated_model_lists_give_only_typed_errors(name: str, data: st.DataObject) -> None:
    from tests.conftest import load_capture, load_case

    provider, case = LISTS[name]  # type: ignore[misc]
    body = load_capture(case).body if provider == "llama-server" else load_case(provider, case).body
    adapter: Any = WIRES[name].adapter("http://127.0.0.1:9")
    assert adapter.decode_list_models(body)  # the control decodes
    raw = data.draw(mutated((("models", body),)) | st.binary(max_size=100))
    try:
        models = adapter.decode_list_models(raw)
    except AllmError:
        return
    assert isinstance(models, list) and all(isinstance(m, str) for m in models)


@pytest.mark.parametrize("name", ["openai_chat", "openai_compatible", "gemini"])
@FUZZ
@given(data=st.data())
def test_mutated_embeddings_give_only_typed_errors(name: str, data: st.DataObject) -> None:
    from tests.conftest import load_capture, load_case

    if name == "openai_chat":
        body = load_case("openai-misc", "embeddings-multiple-inputs").body
    elif name == "openai_compatible":
        body = load_capture("e2-embeddings").body
    else:
        body = b'{"embeddings": [{"values": [0.5, -1.0, 2.0]}, {"values": [1.0, 0.0, 0.25]}]}'
    adapter: Any = WIRES[name].adapter("http://127.0.0.1:9")
    assert adapter.decode_embed(body).vectors  # the control decodes
    raw = data.draw(mutated((("embeddings", body),)) | st.binary(max_size=100))
    try:
        emb = adapter.decode_embed(raw)
    except AllmError:
        return
    assert all(isinstance(x, float) for v in emb.vectors for x in v)
