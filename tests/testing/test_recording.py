"""Record and replay through the real adapters and transport, on loopback servers and recorded bytes."""

from __future__ import annotations

import asyncio
import gzip
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import allm
from allm import _transport
from allm.events import TextDelta
from allm.providers import Anthropic, OpenAICompatible
from allm.testing import NoRecording, RequestBlocked, block_requests, deterministic_ids, load_exchange, recording
from allm.testing.recorder import scrub
from tests.adapters import WIRE_NAMES, WIRES, Wire
from tests.conftest import FIXTURES, feed_all, load_case, splits
from tests.loopback import LoopbackServer, Req, Writer
from tests.test_key_leaks import api_keys, find_leaks, run_scenarios
from tests.test_key_leaks import servers as servers  # the leak scenarios' servers (a module fixture)
from tests.testing.helpers import chat_server, started

KEY = "sk-test-" + "Rr5" * 12
FAST = allm.RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002, jitter=0)


def serving(wire: Wire) -> Any:
    """A server speaking ``wire`` with its recorded bytes: a stream, or the non-streaming body."""

    async def h(req: Req, w: Writer) -> None:
        body = orjson.loads(req.body) if req.body else {}
        streamed = body.get("stream") or "alt=sse" in req.path or ":streamGenerateContent" in req.path
        if streamed:
            await w.start_stream()
            await w.chunk(wire.stream)
            await w.end_stream()
        else:
            await w.respond(200, wire.body)

    return h


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    yield from started(chat_server)


def events_of(engine: allm.Engine, request: Any, **kw: Any) -> list[Any]:
    return list(allm.stream_generate(engine, request, api_key=KEY, **kw))


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("wire", WIRE_NAMES)
def test_every_adapter_replays_what_it_recorded(wire: str, tmp_path: Path) -> None:
    w = WIRES[wire]
    srv = LoopbackServer().start()
    srv.handler = serving(w)
    engine = w.engine(srv.url)
    req = allm.request([allm.system("Be brief."), allm.user("hello")], model=w.model, max_tokens=20)
    try:
        with recording(tmp_path, mode="all") as rec, deterministic_ids(7):
            live = (events_of(engine, req), allm.generate(engine, req, api_key=KEY, http_streaming=False))
            alive = asyncio.run(allm.agenerate(engine, req, api_key=KEY))
        assert len(rec.recorded) == 3 and len(srv.requests) == 3
    finally:
        srv.stop()
    with recording(tmp_path) as rec, block_requests(allow_loopback=False), deterministic_ids(7):
        again = (events_of(engine, req), allm.generate(engine, req, api_key=KEY, http_streaming=False))
        aagain = asyncio.run(allm.agenerate(engine, req, api_key=KEY))
    assert again == live and aagain == alive
    assert [e.name for e in rec.played] == sorted(p.name for p in tmp_path.iterdir())
    assert rec.unplayed == []
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert find_leaks(KEY, written) == []


def test_the_layout_is_the_fixtures_layout(server: LoopbackServer, tmp_path: Path) -> None:
    engine = allm.Engine(adapter=OpenAICompatible.llama_cpp(server.url + "/v1"), model="m")
    with recording(tmp_path, mode="all", test="tests/x.py::test_y", note="a reversed echo"):
        allm.generate(engine, "dlrow", api_key=KEY)
    (case,) = tmp_path.iterdir()
    assert case.name == "01-post-v1-chat-completions"
    assert sorted(p.name for p in case.iterdir()) == sorted(
        ["SOURCE.txt", "headers.txt", "request.json", "request_headers.txt", "request_line.txt", "response.raw", "status.txt"]
    )
    assert (case / "request_line.txt").read_text() == f"POST {server.url}/v1/chat/completions\n"
    assert (case / "status.txt").read_text() == "200 X\n"  # the loopback server's reason phrase
    assert orjson.loads((case / "request.json").read_bytes())["messages"] == [{"role": "user", "content": "dlrow"}]
    assert "authorization" not in (case / "request_headers.txt").read_text().lower()
    assert "content-type: text/event-stream" in (case / "headers.txt").read_text().lower()
    assert (case / "response.raw").read_bytes().startswith(b"data: {")
    source = (case / "SOURCE.txt").read_text()
    for line in ("recorder: allm.testing.recorder", "provider: an OpenAI Chat Completions server at 127.0.0.1",
                 "test: tests/x.py::test_y", "exercises: a reversed echo", "complete: yes", "secrets: "):
        assert line in source
    ex = load_exchange(case)
    assert (ex.method, ex.path, ex.status, ex.complete) == ("POST", "/v1/chat/completions", 200, True)
    # The loader reads the fixtures' cases too (same layout).
    fixture = load_exchange(FIXTURES / "anthropic" / "stream-text")
    assert fixture.url == "https://api.anthropic.com/v1/messages" and fixture.status == 200


# ------------------------------------------------------------------------------ chunking


def _case(tmp: Path, w: Wire, body: bytes, name: str = "01-stream") -> Path:
    """A case folder holding ``body`` as the answer to ``w``'s streamed call."""
    call = w.call(stream=True)
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "request_line.txt").write_text(f"{call.method} {call.url}\n")
    (d / "request.json").write_bytes(call.body or b"")
    (d / "status.txt").write_text("200 OK\n")
    (d / "headers.txt").write_text("content-type: text/event-stream\n")
    (d / "response.raw").write_bytes(body)
    return tmp


@pytest.mark.parametrize("wire", WIRE_NAMES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_chunking_replays_to_the_same_events(wire: str, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    w = WIRES[wire]
    name, body = data.draw(st.sampled_from(w.streams), label="stream")
    folder = _case(tmp_path_factory.mktemp("case"), w, body)
    engine = w.engine("http://127.0.0.1:9", retry=allm.RetryPolicy(max_attempts=1))
    req = allm.request("hi", model=w.model)

    def outcome(chunks: Any) -> tuple[list[Any], allm.AllmError | None]:
        events: list[Any] = []
        with recording(folder, match="path", chunks=chunks):
            try:
                events.extend(allm.stream_generate(engine, req, api_key=KEY, include_raw_chunks=True))
            except allm.AllmError as exc:  # a stream that fails before its first event
                return events, exc
        return events, None

    whole, whole_error = outcome(len(body) + 1)
    parts = data.draw(splits(body, max_cuts=60), label="parts")
    split, split_error = outcome(lambda _body: parts)
    assert (split, split_error) == (whole, whole_error), name
    # And through the same transport the events are the adapter's own decoding of the bytes.
    dec = w.adapter("http://127.0.0.1:9").decoder(w.call(), include_raw=True)
    direct = [e for e in feed_all(dec, [body])]
    if whole_error is None:
        assert [type(e) for e in whole] == [type(e) for e in direct]


@settings(max_examples=10, deadline=None)
@given(data=st.data(), size=st.integers(1, 64))
def test_async_replay_chunking(data: st.DataObject, size: int) -> None:
    w = WIRES["anthropic"]
    engine = w.engine("http://127.0.0.1:9")
    path = FIXTURES / "anthropic" / "stream-text"

    async def run(chunks: Any) -> allm.Response:
        with recording(path, match="path", chunks=chunks), deterministic_ids(1):
            return await allm.agenerate(engine, allm.request("hi", model=w.model), api_key=KEY)

    parts = data.draw(splits(load_case("anthropic", "stream-text").body))
    assert asyncio.run(run(lambda _body: parts)) == asyncio.run(run(size)) == asyncio.run(run(10**6))


def test_fixture_cases_replay_through_the_real_adapter_by_path() -> None:
    engine = allm.Engine(adapter=Anthropic(base_url="http://127.0.0.1:9/v1"), model="claude-haiku-4-5")
    case = load_case("anthropic", "stream-text")
    with recording(FIXTURES / "anthropic" / "stream-text", match="path") as rec:
        resp = allm.generate(engine, "anything", api_key=KEY)
    assert [e.name for e in rec.played] == ["stream-text"]
    dec = Anthropic().decoder(Anthropic().encode(allm.request("x", model="m"), stream=True))
    texts = "".join(e.delta for e in feed_all(dec, [case.body]) if isinstance(e, TextDelta))
    assert resp.output_text == texts and texts


# ------------------------------------------------------------------------------ the transport path: retries, errors, cancellation, encodings


def test_a_recorded_429_replays_as_a_retry(tmp_path: Path) -> None:
    calls = {"n": 0}

    async def flaky(req: Req, w: Writer) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            await w.respond(429, b'{"error": {"message": "slow down", "type": "rate_limit"}}', {"retry-after-ms": "1"})
        else:
            await chat_server(req, w)

    srv = LoopbackServer().start()
    srv.handler = flaky
    engine = allm.Engine(adapter=OpenAICompatible.llama_cpp(srv.url + "/v1"), model="m", retry=FAST)
    try:
        live_retries: list[allm.RetryInfo] = []
        with recording(tmp_path, mode="all"):
            live = allm.generate(engine, "olleh", api_key=KEY, on_retry=live_retries.append)
    finally:
        srv.stop()
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["01-post-v1-chat-completions", "02-post-v1-chat-completions"]
    assert (tmp_path / "01-post-v1-chat-completions" / "status.txt").read_text().startswith("429")
    retries: list[allm.RetryInfo] = []
    with recording(tmp_path):
        again = allm.generate(engine, "olleh", api_key=KEY, on_retry=retries.append)
    assert again.output_text == live.output_text == "hello "
    assert [r.error.reason for r in retries] == [r.error.reason for r in live_retries] == ["rate_limited"]


def test_a_recorded_error_status_replays_as_the_same_typed_error(tmp_path: Path) -> None:
    async def refuse(req: Req, w: Writer) -> None:
        await w.respond(401, orjson.dumps({"error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_request_error"}}))

    srv = LoopbackServer().start()
    srv.handler = refuse
    engine = allm.Engine(adapter=OpenAICompatible.llama_cpp(srv.url + "/v1"), model="m")
    try:
        with recording(tmp_path, mode="all"), pytest.raises(allm.AdapterError) as live:
            allm.generate(engine, "x", api_key=KEY)
    finally:
        srv.stop()
    with recording(tmp_path), pytest.raises(allm.AdapterError) as again:
        allm.generate(engine, "x", api_key=KEY)
    assert again.value == live.value and again.value.reason == "authentication_failed"
    raw = (tmp_path / "01-post-v1-chat-completions" / "response.raw").read_bytes()
    assert KEY.encode() not in raw and b"Incorrect API key provided: [redacted]" in raw
    assert orjson.loads(raw)  # still JSON


def test_a_cancelled_stream_is_saved_as_incomplete_and_replays_the_same(tmp_path: Path) -> None:
    async def slow(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.chunk(b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"first"},"finish_reason":null}]}\n\n')
        await asyncio.sleep(30)

    srv = LoopbackServer().start()
    srv.handler = slow
    engine = allm.Engine(adapter=OpenAICompatible.llama_cpp(srv.url + "/v1"), model="m")

    def first_delta() -> str:
        stream = allm.stream_generate(engine, "x", api_key=KEY)
        try:
            for ev in stream:
                if isinstance(ev, TextDelta):
                    return ev.delta
        finally:
            stream.close()
        raise AssertionError("no text")

    try:
        with recording(tmp_path, mode="all") as rec:
            assert first_delta() == "first"
        assert srv.wait_for(lambda: srv.disconnects == 1, 10)
    finally:
        srv.stop()
    (ex,) = rec.recorded
    assert not ex.complete and "complete: no (the client closed the response after" in (tmp_path / ex.name / "SOURCE.txt").read_text()
    with recording(tmp_path):
        assert first_delta() == "first"


def test_compressed_bodies_are_saved_decoded(tmp_path: Path) -> None:
    body = orjson.dumps({"id": "c", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "zipped"}, "finish_reason": "stop"}]})

    async def gz(req: Req, w: Writer) -> None:
        await w.respond(200, gzip.compress(body), {"Content-Encoding": "gzip"})

    srv = LoopbackServer().start()
    srv.handler = gz
    engine = allm.Engine(adapter=OpenAICompatible.llama_cpp(srv.url + "/v1"), model="m")
    try:
        with recording(tmp_path, mode="all"), deterministic_ids():
            live = allm.generate(engine, "x", http_streaming=False)
    finally:
        srv.stop()
    (case,) = tmp_path.iterdir()
    assert (case / "response.raw").read_bytes() == body
    with recording(tmp_path), deterministic_ids():
        assert allm.generate(engine, "x", http_streaming=False) == live
    assert live.output_text == "zipped"


def _per_event(body: bytes) -> list[bytes]:
    """One SSE event per chunk."""
    return [part + b"\n\n" for part in body.split(b"\n\n") if part]


def _recorded_stream(server: LoopbackServer, folder: Path) -> list[Any]:
    with recording(folder, mode="all"), deterministic_ids():
        return events_of(_engine(server), "four words are here")


@pytest.mark.parametrize("asynchronous", [False, True])
def test_paced_replays_meet_the_engines_deadlines(server: LoopbackServer, tmp_path: Path, asynchronous: bool) -> None:
    live = _recorded_stream(server, tmp_path)
    engine = allm.Engine(adapter=OpenAICompatible.llama_cpp("http://127.0.0.1:9/v1"), model="m", retry=allm.RetryPolicy(max_attempts=1))

    def run(timeouts: allm.Timeouts, **pace: float) -> tuple[list[Any], allm.AllmError | None]:
        async def arun() -> list[Any]:
            return [e async for e in allm.astream_generate(engine, "four words are here", api_key=KEY, timeouts=timeouts)]

        with recording(tmp_path, chunks=_per_event, **pace), deterministic_ids():
            try:
                evs = asyncio.run(arun()) if asynchronous else events_of(engine, "four words are here", timeouts=timeouts)
            except allm.AllmError as exc:
                return [], exc
        return evs, None

    paced, err = run(allm.Timeouts(first_event=10.0, idle=10.0), initial_delay=0.01, chunk_delay=0.01)
    assert err is None and paced == live
    stalled, err = run(allm.Timeouts(first_event=0.1), initial_delay=5.0)
    assert stalled == [] and err is not None and err.reason == "timeout" and "first-event deadline of 0.1 s" in err.message
    idle, err = run(allm.Timeouts(idle=0.1), chunk_delay=5.0)
    assert err is None and isinstance(idle[-1], allm.events.Error)
    assert idle[-1].error.reason == "timeout" and "idle deadline of 0.1 s" in idle[-1].error.message
    assert any(isinstance(e, TextDelta) for e in idle)  # the content before the stall arrived


# ------------------------------------------------------------------------------ matching and modes


def _engine(server: LoopbackServer) -> allm.Engine:
    return allm.Engine(adapter=OpenAICompatible.llama_cpp(server.url + "/v1"), model="m")


def test_modes(server: LoopbackServer, tmp_path: Path) -> None:
    engine = _engine(server)
    with recording(tmp_path, mode="once") as rec:
        allm.generate(engine, "a")
    assert rec.effective_mode == "all" and len(server.requests) == 1
    with recording(tmp_path, mode="once") as rec:  # something is recorded: replay only
        allm.generate(engine, "a")
        with pytest.raises(NoRecording):
            allm.generate(engine, "b")
    assert rec.effective_mode == "none" and len(server.requests) == 1
    with recording(tmp_path, mode="new_episodes") as rec:
        allm.generate(engine, "a")
        allm.generate(engine, "b")
    assert [e.name for e in rec.played] == ["01-post-v1-chat-completions"] and len(rec.recorded) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01-post-v1-chat-completions", "02-post-v1-chat-completions"]
    assert len(server.requests) == 2
    with recording(tmp_path, mode="all") as rec:
        allm.generate(engine, "c")
    assert [p.name for p in tmp_path.iterdir()] == ["01-post-v1-chat-completions"] and len(server.requests) == 3
    with recording(tmp_path) as rec:
        pass
    assert [e.name for e in rec.unplayed] == ["01-post-v1-chat-completions"]


def test_each_recording_replays_once_in_order(server: LoopbackServer, tmp_path: Path) -> None:
    engine = _engine(server)
    with recording(tmp_path, mode="all"):
        allm.generate(engine, "same")
        allm.generate(engine, "same")
    with recording(tmp_path) as rec:
        allm.generate(engine, "same")
        allm.generate(engine, "same")
        with pytest.raises(NoRecording) as info:
            allm.generate(engine, "same")
    assert [e.name for e in rec.played] == ["01-post-v1-chat-completions", "02-post-v1-chat-completions"]
    assert "all 2 recording(s) of this request were already replayed" in str(info.value)


def test_matching_ignores_key_order_and_ignored_fields_but_not_values(server: LoopbackServer, tmp_path: Path) -> None:
    engine = _engine(server)
    with recording(tmp_path, mode="all"):
        allm.generate(engine, allm.request("x", metadata={"user": "a"}, options={"user": "u1"}, temperature=0))
    case = tmp_path / "01-post-v1-chat-completions"
    sent = orjson.loads((case / "request.json").read_bytes())
    (case / "request.json").write_bytes(orjson.dumps(dict(reversed(list(sent.items()))), option=orjson.OPT_INDENT_2))
    with recording(tmp_path, ignore=["user"]):
        allm.generate(engine, allm.request("x", options={"user": "u2"}, temperature=0))
    with recording(tmp_path), pytest.raises(NoRecording) as info:
        allm.generate(engine, allm.request("x", options={"user": "u1"}, temperature=0.5))
    err = info.value
    assert err.nearest == "01-post-v1-chat-completions"
    assert '-  "temperature": 0,' in err.diff and '+  "temperature": 0.5,' in err.diff
    assert isinstance(err, RequestBlocked) and err.method == "POST" and err.path == str(tmp_path)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is NoRecording and (again.diff, again.nearest, str(again)) == (err.diff, err.nearest, str(err))


def test_an_empty_folder_says_so(tmp_path: Path) -> None:
    engine = allm.Engine(adapter=OpenAICompatible.llama_cpp("http://127.0.0.1:9/v1"), model="m")
    with recording(tmp_path / "none"), pytest.raises(NoRecording) as info:
        allm.generate(engine, "x", api_key=KEY)
    assert "the folder holds no recording" in str(info.value) and info.value.nearest is None
    assert KEY not in str(info.value)


def test_a_different_path_is_named_in_the_error(server: LoopbackServer, tmp_path: Path) -> None:
    engine = _engine(server)
    with recording(tmp_path, mode="all"):
        allm.generate(engine, "x")
    with recording(tmp_path), pytest.raises(NoRecording) as info:
        allm.embed(allm.Engine(adapter=OpenAICompatible.llama_cpp(server.url + "/v1"), model="m"), ["x"])
    assert "path /v1/chat/completions != /v1/embeddings" in str(info.value)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown recording mode 'sometimes'"):
        recording(tmp_path, mode="sometimes")
    with pytest.raises(ValueError, match="match= is 'body' or 'path'"):
        recording(tmp_path, match="everything")
    with pytest.raises(ValueError, match="chunks="):
        recording(tmp_path, chunks=0)
    with pytest.raises(ValueError, match="seconds, 0 or more"):
        recording(tmp_path, chunk_delay=-1)
    with pytest.raises(ValueError, match="is one recorded exchange"):
        recording(FIXTURES / "anthropic" / "stream-text", mode="new_episodes")


def test_the_innermost_recording_answers_and_nothing_is_left_installed(server: LoopbackServer, tmp_path: Path) -> None:
    engine = _engine(server)
    before = _transport._hook
    with recording(tmp_path / "a", mode="all"):
        allm.generate(engine, "outer")
        with recording(tmp_path / "b", mode="all"):
            allm.generate(engine, "inner")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["01-post-v1-chat-completions"]
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["01-post-v1-chat-completions"]
    assert _transport._hook is before


# ------------------------------------------------------------------------------ keys


def test_scrub_removes_the_key_its_pieces_and_masks() -> None:
    key = "sk-abcdefghijklmnopqrstuvwxyz012345"
    masked = key[:8] + "*" * 20 + key[-4:]
    data = orjson.dumps({"message": f"bad key {key}; {masked}; piece {key[5:20]}"})
    out = scrub(data, [key])
    assert find_leaks(key, [out]) == [] and orjson.loads(out)
    assert scrub(data, []) == data


BASE_KEY = "QQQQQQQQQQQQQQQQ"
BASE_FILES: dict[str, list[bytes]] = {}


def _record_scenarios(wire: str, server: LoopbackServer, key: str, folder: Path) -> list[bytes]:
    with recording(folder, mode="all"):
        run_scenarios(WIRES[wire], server.url, key, scoped=False)
    return [p.read_bytes() for p in folder.rglob("*") if p.is_file()]


@pytest.mark.parametrize("wire", WIRE_NAMES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(key=api_keys)
def test_recordings_hold_no_key_material(
    wire: str, key: str, servers: dict[str, LoopbackServer], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The key-leak scenarios (a 401 and a 429 quoting the key in full and masked, in-stream errors
    quoting it, raw chunks, a reset), recorded: no file holds the key or a 12-character piece of it."""
    server = servers[wire]
    if wire not in BASE_FILES:
        BASE_FILES[wire] = _record_scenarios(wire, server, BASE_KEY, tmp_path_factory.mktemp("base"))
    assume(not find_leaks(key, BASE_FILES[wire]))
    before = len(server.requests)
    folder = tmp_path_factory.mktemp("rec")
    files = _record_scenarios(wire, server, key, folder)
    sent = [WIRES[wire].key_of(r.headers) for r in server.requests[before:]]
    assert sent and all(k == key for k in sent)  # the key did travel
    cases = [p for p in folder.iterdir() if p.is_dir()]
    assert len(cases) >= 8 and any((c / "status.txt").read_text().startswith("401") for c in cases)
    assert find_leaks(key, files) == []
    assert all(WIRES[wire].key_header not in (c / "request_headers.txt").read_text().lower() for c in cases)
    SCANNED[wire] = SCANNED.get(wire, 0) + 1


SCANNED: dict[str, int] = {}


def test_every_wire_was_scanned_with_drawn_keys() -> None:
    """Runs after the property test above: each wire recorded and scanned several drawn keys."""
    assert sorted(SCANNED) == sorted(WIRE_NAMES) and min(SCANNED.values()) >= 3, SCANNED


def test_without_scrubbing_the_scenarios_would_write_the_key(
    servers: dict[str, LoopbackServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the scan finds the key when the recorder does not remove it."""
    from allm.testing import recorder as module

    monkeypatch.setattr(module, "scrub", lambda data, secrets: data)
    files = _record_scenarios("anthropic", servers["anthropic"], KEY, tmp_path)
    assert find_leaks(KEY, files)
