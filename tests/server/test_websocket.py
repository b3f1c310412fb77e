"""WebSocket mode on /v1/responses (Starlette's test client)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.testclient import TestClient

from allm.server import create_app, parse_config
from allm.stores import MemoryStore

from .conftest import FAKE_CONFIG


def turn(ws: Any, **body: Any) -> list[dict[str, Any]]:
    """Send one response.create; the events until a terminal event or an error envelope."""
    ws.send_text(orjson.dumps({"type": "response.create", **body}).decode())
    events = []
    while True:
        ev = orjson.loads(ws.receive_text())
        events.append(ev)
        if ev["type"] in ("response.completed", "response.failed", "response.incomplete") or (
            ev["type"] == "error" and "status" in ev
        ):
            return events


def test_turns_continuations_and_errors() -> None:
    app = create_app(parse_config(FAKE_CONFIG), store=MemoryStore())
    with TestClient(app) as client:
        with client.websocket_connect("/v1/responses") as ws:
            first = turn(ws, model="echo", input="one", store=False)
            assert [e["sequence_number"] for e in first] == list(range(len(first)))
            rid = first[-1]["response"]["id"]
            second = turn(ws, model="echo", input="two", store=False, previous_response_id=rid)
            assert second[-1]["response"]["output"][0]["content"][0]["text"] == "one | two"
            # only the most recent response is kept on the connection
            stale = turn(ws, model="echo", input="x", store=False, previous_response_id=rid)
            assert stale[-1]["error"]["code"] == "previous_response_not_found" and stale[-1]["status"] == 400
            bad = turn(ws, model="echo", input="x", stream=True)
            assert bad[-1]["status"] == 400 and bad[-1]["error"]["param"] == "stream"
            ws.send_text("{nope")
            err = orjson.loads(ws.receive_text())
            assert err["type"] == "error" and err["error"]["code"] == "invalid_json"
            stored = turn(ws, model="echo", input="kept")  # store defaults to true
            kept_id = stored[-1]["response"]["id"]
        # a stored response continues on another connection (and over HTTP)
        with client.websocket_connect("/v1/responses") as ws:
            nxt = turn(ws, model="echo", input="more", previous_response_id=kept_id)
            assert nxt[-1]["response"]["output"][0]["content"][0]["text"] == "kept | more"
            assert client.get(f"/v1/responses/{kept_id}").status_code == 200


def test_no_route_over_websocket() -> None:
    cfg = '[server]\nstore = "memory://"\n[[routes]]\nmatch = "^a$"\nprovider = "fake"\n'
    app = create_app(parse_config(cfg), store=MemoryStore())
    with TestClient(app) as client, client.websocket_connect("/v1/responses") as ws:
        ev = turn(ws, model="b", input="x")[-1]
        assert ev["status"] == 404 and ev["error"]["code"] == "model_not_found"
        ok = turn(ws, model="a", input="hello")[-1]
        assert ok["type"] == "response.completed"


def test_websocket_needs_the_token_when_auth_is_on() -> None:
    import pytest
    from starlette.websockets import WebSocketDisconnect

    app = create_app(parse_config(FAKE_CONFIG + '\n[auth]\ntokens = ["tok-123456"]\n'), store=MemoryStore())
    with TestClient(app) as client:
        with pytest.raises(WebSocketDisconnect), client.websocket_connect("/v1/responses") as ws:
            ws.receive_text()
        with client.websocket_connect("/v1/responses", headers={"authorization": "Bearer tok-123456"}) as ws:
            assert turn(ws, model="fake", input="hi")[-1]["type"] == "response.completed"


def test_connection_time_limit(monkeypatch: Any) -> None:
    import allm.server.app as app_module

    app = create_app(parse_config(FAKE_CONFIG), store=MemoryStore())
    with TestClient(app) as client, client.websocket_connect("/v1/responses") as ws:
        assert turn(ws, model="fake", input="hi")[-1]["type"] == "response.completed"
        monkeypatch.setattr(app_module, "WEBSOCKET_MAX_SECONDS", 0.0)
        ev = turn(ws, model="fake", input="again")[-1]
        assert ev["error"]["code"] == "websocket_connection_limit_reached"


def test_a_websocket_turn_streams_from_the_provider() -> None:
    """A WebSocket sends events as they come: the upstream is asked for a stream, and the first
    delta reaches the client while the upstream has not finished."""
    import asyncio
    import threading

    from tests.loopback import Req, Writer, chat_chunks, serve

    seen_first = threading.Event()

    async def upstream_answer(req: Req, w: Writer) -> None:
        chunks = chat_chunks(["Hel", "lo"])
        await w.start_stream()
        await w.chunk(chunks[0])
        for _ in range(500):  # until the client has the first delta (at most 5 s)
            if seen_first.is_set():
                break
            await asyncio.sleep(0.01)
        for c in chunks[1:]:
            await w.chunk(c)
        await w.end_stream()

    with serve(upstream_answer) as upstream:
        cfg = f"""
[server]
store = "memory://"

[[routes]]
match = "."
provider = "compatible"
base_url = "{upstream.url}/v1"
"""
        app = create_app(parse_config(cfg), store=MemoryStore())
        with TestClient(app) as client, client.websocket_connect("/v1/responses") as ws:
            ws.send_text(orjson.dumps({"type": "response.create", "model": "m", "input": "hi"}).decode())
            while True:
                ev = orjson.loads(ws.receive_text())
                if ev["type"] == "response.output_text.delta" and not seen_first.is_set():
                    assert ev["delta"] == "Hel"
                    assert len(upstream.requests) == 1 and upstream.requests[0].body and b'"stream":true' in upstream.requests[0].body
                    seen_first.set()
                if ev["type"] in ("response.completed", "response.failed", "error"):
                    break
            assert seen_first.is_set() and ev["type"] == "response.completed"
            assert ev["response"]["output"][0]["content"][0]["text"] == "Hello"


def test_websocket_turns_are_counted_in_metrics() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    config = FAKE_CONFIG.replace('[[routes]]\nmatch = "."', '[[routes]]\nmatch = "^breaks"\nadapter = "tests.server.fakes:breaks"\n\n[[routes]]\nmatch = "."', 1)
    app = create_app(parse_config(config), store=MemoryStore())
    with TestClient(app) as client:
        with client.websocket_connect("/v1/responses") as ws:
            ok = turn(ws, model="fake", input="one")
            assert ok[-1]["type"] == "response.completed"
            broken = turn(ws, model="breaks", input="two")
            assert broken[-1]["type"] == "response.failed"
            refused = turn(ws, model="fake", input="x", stream=True)  # refused before it starts: not counted
            assert refused[-1]["type"] == "error"
        text = client.get("/metrics").text
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for fam in text_string_to_metric_families(text) for s in fam.samples}

    def total(name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in found.items() if n == name and labels.items() <= dict(ls).items())

    assert total("allm_server_requests_total", stream="true") == 2
    assert total("allm_server_requests_total", model="fake") == 1 and total("allm_server_requests_total", model="breaks") == 1
    assert total("allm_server_in_flight") == 0
    assert total("allm_server_request_duration_seconds_count", stream="true") == 2
    assert total("allm_server_time_to_first_token_seconds_count") == 2
    assert total("allm_server_tokens_total", model="fake", direction="output") == 7
    assert total("allm_server_errors_total", model="breaks") == 1
    assert total("allm_server_errors_total", model="fake") == 0
