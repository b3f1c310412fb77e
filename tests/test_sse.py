from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from allm.sse import SSEDecoder
from tests.conftest import FIXTURES, splits


def decode(parts: list[bytes]) -> list[tuple[str | None, bytes]]:
    d = SSEDecoder()
    out = []
    for p in parts:
        out.extend(d.feed(p))
    out.extend(d.close())
    return out


def test_basic_events_and_fields() -> None:
    data = b"event: ping\ndata: {}\n\n: keep-alive comment\n\ndata: a\ndata: b\n\nid: 7\nretry: 10\ndata:x\n\n"
    assert decode([data]) == [("ping", b"{}"), (None, b"a\nb"), (None, b"x")]


def test_crlf_and_cr_line_ends() -> None:
    assert decode([b"data: one\r\n\r\ndata: two\r\rdata: three\n\n"]) == [
        (None, b"one"),
        (None, b"two"),
        (None, b"three"),
    ]


def test_crlf_split_between_chunks() -> None:
    assert decode([b"data: one\r", b"\n\r", b"\ndata: two\r\n\r\n"]) == [(None, b"one"), (None, b"two")]


def test_final_event_without_blank_line_is_dispatched_at_close() -> None:
    assert decode([b"data: [DONE]"]) == [(None, b"[DONE]")]
    assert decode([b"data: a\n"]) == [(None, b"a")]


def test_data_line_without_colon_and_empty_events() -> None:
    assert decode([b"data\n\n\n\nevent: x\n\n"]) == [(None, b"")]


def test_only_one_leading_space_is_stripped() -> None:
    assert decode([b"data:  two spaces\n\n"]) == [(None, b" two spaces")]


def test_bytes_seen_counts_input() -> None:
    d = SSEDecoder()
    d.feed(b"data: 1\n\n")
    d.feed(b"data")
    assert d.bytes_seen == 13


RECORDED = [
    (FIXTURES / "openai-chat" / "stream-tool-call-single" / "response.raw").read_bytes(),
    (FIXTURES / "gemini" / "stream-sse-thoughts" / "response.raw").read_bytes(),
    (FIXTURES / "anthropic" / "stream-tool-use" / "response.raw").read_bytes(),
]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(RECORDED).flatmap(lambda b: splits(b)))
def test_any_split_decodes_the_same(parts: list[bytes]) -> None:
    whole = b"".join(parts)
    assert decode(parts) == decode([whole])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300).flatmap(lambda b: splits(b)))
def test_arbitrary_bytes_never_raise_and_split_invariant(parts: list[bytes]) -> None:
    assert decode(parts) == decode([b"".join(parts)])


_LINE = st.binary(max_size=12).filter(lambda b: b"\n" not in b and b"\r" not in b)
_EVENT = st.tuples(
    st.sampled_from([b"", b"event: before\n", b": keep-alive\n", b"data: held\n", b"id: 3\r\n"]),
    st.one_of(st.none(), _LINE),
    _LINE,
    st.sampled_from([b"\n", b"\r\n"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_EVENT, max_size=6))
def test_whole_events_per_chunk_decode_as_the_line_loop_does(events: list[tuple[bytes, bytes | None, bytes, bytes]]) -> None:
    # Providers send one whole event per chunk, which feed reads on a quicker road; fed one
    # byte at a time, the same bytes go through the line loop.
    chunks: list[bytes] = []
    for before, name, data, end in events:
        if before:
            chunks.append(before)
        head = b"" if name is None else b"event: " + name + end
        chunks.append(head + b"data: " + data + end + end)
    whole = b"".join(chunks)
    assert decode(chunks) == decode([whole[i : i + 1] for i in range(len(whole))])
