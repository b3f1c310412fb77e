"""The Open Responses app in process (httpx's ASGI transport) over the scripted Fakes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from allm.server import ServerConfig, parse_config
from allm.stores import MemoryStore

from .conftest import FAKE_CONFIG, app_client

REQUIRED = {
    "id", "object", "created_at", "completed_at", "status", "incomplete_details", "model", "previous_response_id",
    "instructions", "output", "error", "tools", "tool_choice", "truncation", "parallel_tool_calls", "text", "top_p",
    "presence_penalty", "frequency_penalty", "top_logprobs", "temperature", "reasoning", "usage", "max_output_tokens",
    "max_tool_calls", "store", "background", "service_tier", "safety_identifier", "prompt_cache_key",
}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def parse_sse(raw: bytes) -> tuple[list[dict[str, Any]], bool]:
    """The events of an SSE body (checking each frame's event line matches its type) and whether [DONE] ended it."""
    events: list[dict[str, Any]] = []
    done = False
    for frame in raw.split(b"\n\n"):
        if not frame.strip():
            continue
        lines = frame.split(b"\n")
        if lines == [b"data: [DONE]"]:
            done = True
            continue
        assert len(lines) == 2 and lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), frame
        ev = orjson.loads(lines[1][6:])
        assert lines[0][7:].decode() == ev["type"]
        events.append(ev)
    return events, done


async def create(c: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await c.post("/v1/responses", json={"model": "fake", **body})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_json_response_has_every_required_field(client: httpx.AsyncClient) -> None:
    resp = await create(client, input="Say hello")
    assert set(resp) >= REQUIRED
    assert resp["status"] == "completed" and resp["object"] == "response"
    assert resp["output"][0]["type"] == "message"
    assert resp["output"][0]["content"][0]["text"] == "Hello there, friend! 1 2 3 4 5"
    u = resp["usage"]
    assert u["input_tokens"] > 0 and u["output_tokens"] == 7 and u["total_tokens"] == u["input_tokens"] + 7
    assert u["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0} and u["output_tokens_details"] == {"reasoning_tokens": 0}
    assert resp["completed_at"] >= resp["created_at"]


async def test_stream_sequence_is_gapless_and_ends_with_one_terminal_event(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/responses", json={"model": "fake", "input": "hi", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events, done = parse_sse(r.content)
    assert done
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert sum(t in ("response.completed", "response.failed", "response.incomplete") for t in types) == 1
    for t in ("response.output_item.added", "response.content_part.added", "response.output_text.delta",
              "response.output_text.done", "response.content_part.done", "response.output_item.done"):
        assert t in types
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == events[-1]["response"]["output"][0]["content"][0]["text"]


async def test_reasoning_is_streamed_as_a_reasoning_item(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/responses", json={"model": "thinker", "input": "why?", "stream": True})
    events, _ = parse_sse(r.content)
    types = [e["type"] for e in events]
    assert "response.reasoning.delta" in types or "response.reasoning.done" in types
    final = events[-1]["response"]
    assert [o["type"] for o in final["output"]] == ["reasoning", "message"]
    assert final["output"][0]["content"][0] == {"type": "reasoning_text", "text": "thinking it over"}
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 2


async def test_continuation_rebuilds_the_thread(client: httpx.AsyncClient) -> None:
    first = await create(client, model="echo", input="one", instructions="be brief")
    second = await create(client, model="echo", input="two", previous_response_id=first["id"])
    assert second["output"][0]["content"][0]["text"] == "one | two"
    assert second["previous_response_id"] == first["id"]
    third = await create(client, model="echo", input=[{"role": "user", "content": "three"}], previous_response_id=second["id"])
    assert third["output"][0]["content"][0]["text"] == "one | two | three"


async def test_store_false_cannot_be_retrieved_or_continued(client: httpx.AsyncClient) -> None:
    resp = await create(client, input="hi", store=False)
    assert resp["store"] is False
    assert (await client.get(f"/v1/responses/{resp['id']}")).status_code == 404
    r = await client.post("/v1/responses", json={"model": "fake", "input": "more", "previous_response_id": resp["id"]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "previous_response_not_found"
    assert r.json()["error"]["param"] == "previous_response_id"


async def test_retrieve_delete_and_input_items(client: httpx.AsyncClient) -> None:
    resp = await create(client, input=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                       {"role": "user", "content": [{"type": "input_text", "text": "c"}]}])
    got = (await client.get(f"/v1/responses/{resp['id']}")).json()
    assert got == resp
    items = (await client.get(f"/v1/responses/{resp['id']}/input_items", params={"order": "asc"})).json()
    assert items["object"] == "list" and [i["role"] for i in items["data"]] == ["user", "assistant", "user"]
    assert all(i["id"] and i["type"] == "message" for i in items["data"])
    desc = (await client.get(f"/v1/responses/{resp['id']}/input_items", params={"limit": 2})).json()
    assert [i["id"] for i in desc["data"]] == [i["id"] for i in reversed(items["data"])][:2] and desc["has_more"]
    nxt = (await client.get(f"/v1/responses/{resp['id']}/input_items", params={"limit": 2, "after": desc["last_id"]})).json()
    assert [i["id"] for i in nxt["data"]] == [items["data"][0]["id"]] and not nxt["has_more"]
    assert (await client.get(f"/v1/responses/{resp['id']}/input_items", params={"order": "up"})).status_code == 400
    d = await client.delete(f"/v1/responses/{resp['id']}")
    assert d.json() == {"id": resp["id"], "object": "response.deleted", "deleted": True}
    assert (await client.get(f"/v1/responses/{resp['id']}")).status_code == 404
    assert (await client.delete(f"/v1/responses/{resp['id']}")).status_code == 404
    assert (await client.get(f"/v1/responses/{resp['id']}/input_items")).status_code == 404


async def test_stream_replay_starting_after(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/responses", json={"model": "fake", "input": "hi", "stream": True})
    events, _ = parse_sse(r.content)
    rid = events[0]["response"]["id"]
    again = await client.get(f"/v1/responses/{rid}", params={"stream": "true"})
    replay, done = parse_sse(again.content)
    assert replay == events and done
    tail, _ = parse_sse((await client.get(f"/v1/responses/{rid}", params={"stream": "true", "starting_after": 3})).content)
    assert tail == events[4:]
    bad = await client.get(f"/v1/responses/{rid}", params={"stream": "true", "starting_after": "x"})
    assert bad.status_code == 400


async def test_client_function_tool_round_trip(client: httpx.AsyncClient) -> None:
    first = await create(client, input="weather in Paris?", tools=[WEATHER])
    calls = [o for o in first["output"] if o["type"] == "function_call"]
    assert len(calls) == 1 and calls[0]["name"] == "get_weather" and calls[0]["status"] == "completed"
    assert orjson.loads(calls[0]["arguments"]).keys() == {"city"}
    assert first["status"] == "completed"
    assert first["tools"] == [{**WEATHER, "strict": None}]
    out = [{"type": "function_call_output", "call_id": calls[0]["call_id"], "output": '{"temp_c": 18}'}]
    second = await create(client, input=out, tools=[WEATHER], previous_response_id=first["id"])
    assert second["output"][-1]["type"] == "message"


async def test_tool_choice_none_and_named(client: httpx.AsyncClient) -> None:
    none = await create(client, input="weather?", tools=[WEATHER], tool_choice="none")
    assert [o["type"] for o in none["output"]] == ["message"]
    other = {**WEATHER, "name": "get_time"}
    named = await create(client, input="weather?", tools=[WEATHER, other], tool_choice={"type": "function", "name": "get_time"})
    assert [o["name"] for o in named["output"] if o["type"] == "function_call"] == ["get_time"]
    both = await create(client, input="weather?", tools=[WEATHER, other])
    assert len([o for o in both["output"] if o["type"] == "function_call"]) == 2
    bad = await client.post("/v1/responses", json={"model": "fake", "input": "x", "tools": [WEATHER],
                                                    "tool_choice": {"type": "function", "name": "nope"}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tool_choice"


async def test_hosted_tool_runs_inside_one_response(client: httpx.AsyncClient) -> None:
    resp = await create(client, model="hosted", input="add 2 and 3")
    types = [o["type"] for o in resp["output"]]
    assert types == ["function_call", "function_call_output", "message"]
    call, result = resp["output"][0], resp["output"][1]
    assert call["name"] == "add" and result["call_id"] == call["call_id"]
    args = orjson.loads(call["arguments"])
    assert result["output"] == str(args["a"] + args["b"])
    assert resp["output"][2]["content"][0]["text"] == "Hello there, friend! 1 2 3 4 5"


async def test_max_tool_calls_stops_the_loop(client: httpx.AsyncClient) -> None:
    resp = await create(client, model="hosted", input="add", max_tool_calls=1)
    assert [o["type"] for o in resp["output"]] == ["function_call", "function_call_output"]
    assert resp["status"] == "incomplete" and resp["incomplete_details"] == {"reason": "max_tool_calls"}
    assert resp["max_tool_calls"] == 1


async def test_async_hosted_tool() -> None:
    cfg = FAKE_CONFIG.replace('add = "tests.server.tools:add"', 'add = "tests.server.tools:add"\nslow_echo = "tests.server.tools:slow_echo"')
    cfg = cfg.replace('tools = ["add"]', 'tools = ["slow_echo"]')
    async with app_client(cfg) as c:
        resp = await create(c, model="hosted", input="echo")
        assert [o["type"] for o in resp["output"]] == ["function_call", "function_call_output", "message"]
        assert orjson.loads(resp["output"][0]["arguments"])["text"] == resp["output"][1]["output"]


async def test_input_images_and_system_messages_reach_the_model(client: httpx.AsyncClient) -> None:
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    app = client.app  # type: ignore[attr-defined]
    resp = await create(client, model="echo", input=[
        {"type": "message", "role": "system", "content": "sys"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "look"},
                                                        {"type": "input_image", "image_url": png}]},
    ])
    assert resp["output"][0]["content"][0]["text"] == "look"
    assert app.state.responses is not None


async def test_background_then_cancel() -> None:
    cfg = FAKE_CONFIG.replace('adapter = "tests.server.fakes:echo"', 'adapter = "tests.server.fakes:slow"')
    async with app_client(cfg) as c:
        r = await c.post("/v1/responses", json={"model": "echo", "input": "x", "background": True})
        body = r.json()
        assert r.status_code == 200 and body["status"] == "queued" and body["background"] is True
        got = (await c.get(f"/v1/responses/{body['id']}")).json()
        assert got["status"] in ("queued", "in_progress")
        cancelled = await c.post(f"/v1/responses/{body['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        stored = (await c.get(f"/v1/responses/{body['id']}")).json()
        assert stored["status"] == "cancelled"
        events, _ = parse_sse((await c.get(f"/v1/responses/{body['id']}", params={"stream": "true"})).content)
        assert events[0]["type"] == "response.created" and events[1]["type"] == "response.queued"
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        # a foreground response cannot be cancelled; an unknown one is 404
        fg = await create(c, input="hi")
        assert (await c.post(f"/v1/responses/{fg['id']}/cancel")).status_code == 400
        assert (await c.post("/v1/responses/resp_nope/cancel")).status_code == 404
        assert (await c.post("/v1/responses", json={"model": "fake", "input": "x", "background": True, "store": False})).status_code == 400


async def test_background_completes_and_streams_while_running() -> None:
    cfg = FAKE_CONFIG.replace('adapter = "tests.server.fakes:echo"', 'adapter = "tests.server.fakes:drip"')
    async with app_client(cfg) as c:
        body = (await c.post("/v1/responses", json={"model": "echo", "input": "x", "background": True})).json()
        events, done = parse_sse((await c.get(f"/v1/responses/{body['id']}", params={"stream": "true"})).content)
        assert done and events[-1]["type"] == "response.completed"
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert (await c.get(f"/v1/responses/{body['id']}")).json()["status"] == "completed"


async def test_compact_round_trip(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/responses/compact", json={"model": "echo", "input": [
        {"role": "user", "content": "alpha"}, {"role": "assistant", "content": "beta"}]})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "response.compaction"
    assert [o["type"] for o in body["output"]] == ["message", "compaction"]
    assert body["output"][0]["role"] == "user" and body["output"][0]["content"] == [{"type": "input_text", "text": "alpha"}]
    resp = await create(client, model="echo", input=[*body["output"], {"role": "user", "content": "gamma"}])
    assert resp["output"][0]["content"][0]["text"] == "alpha | gamma"
    missing = await client.post("/v1/responses/compact", json={"input": "x"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
    forged = await client.post("/v1/responses", json={"model": "echo", "input": [{"type": "compaction", "id": "c", "encrypted_content": "zzz"}]})
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "invalid_compaction"


async def test_models_and_healthz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert {m["id"] for m in models["data"]} == {"thinker", "fake"}


# ------------------------------------------------------------------------------ errors


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    for body in (b"{not json", b"", b"[1, 2]", b'{"input": "no model"}'):
        r = await client.post("/v1/responses", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, body
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request"


async def test_no_route_is_404_model_not_found() -> None:
    cfg = '[server]\nstore = "memory://"\n[[routes]]\nmatch = "^only-this$"\nprovider = "fake"\n'
    async with app_client(cfg) as c:
        r = await c.post("/v1/responses", json={"model": "other", "input": "x"})
        assert r.status_code == 404
        assert r.json()["error"] == {"message": "no route serves the model 'other'", "type": "not_found",
                                     "param": "model", "code": "model_not_found"}


async def test_body_over_the_limit_is_413() -> None:
    cfg = FAKE_CONFIG.replace('store = "memory://"', 'store = "memory://"\nmax_body_bytes = 200')
    async with app_client(cfg) as c:
        big = {"model": "fake", "input": "x" * 500}
        r = await c.post("/v1/responses", json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

        async def chunks() -> Any:  # no content-length: counted while reading
            yield orjson.dumps(big)

        r = await c.post("/v1/responses", content=chunks())
        assert r.status_code == 413
        assert (await c.post("/v1/responses", json={"model": "fake", "input": "ok"})).status_code == 200


async def test_invalid_tool_schema_is_400(client: httpx.AsyncClient) -> None:
    cases = [
        [{"type": "function", "name": "bad name!", "parameters": {"type": "object"}}],
        [{"type": "function", "name": "f", "parameters": {"type": "string"}}],
        [{"type": "function", "parameters": {"type": "object"}}],
        [{"type": "web_search"}],
        "notalist",
    ]
    for tools in cases:
        r = await client.post("/v1/responses", json={"model": "fake", "input": "x", "tools": tools})
        assert r.status_code == 400, tools
        assert r.json()["error"]["param"].startswith("tools"), r.json()


async def test_bad_fields_name_their_param(client: httpx.AsyncClient) -> None:
    for field, value in [("temperature", "hot"), ("max_output_tokens", 0), ("stream", "yes"), ("input", 5),
                         ("metadata", []), ("truncation", "sometimes"), ("tool_choice", "maybe")]:
        r = await client.post("/v1/responses", json={"model": "fake", "input": "x", field: value})
        assert r.status_code == 400, field
        assert r.json()["error"]["param"] == field
    r = await client.post("/v1/responses", json={"model": "fake", "input": [{"type": "message", "role": "robot", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[0].role"
    r = await client.post("/v1/responses", json={"model": "fake", "input": [{"type": "item_reference", "id": "x"}]})
    assert r.status_code == 400


async def test_unknown_previous_response_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/responses", json={"model": "fake", "input": "x", "previous_response_id": "resp_missing"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "previous_response_not_found"


async def test_unknown_paths_and_methods_are_spec_errors(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = await client.put("/v1/responses")
    assert r.status_code == 405 and "error" in r.json()


async def test_auth_tokens() -> None:
    cfg = FAKE_CONFIG + '\n[auth]\ntokens = ["s3cret-token"]\n'
    async with app_client(cfg) as c:
        r = await c.post("/v1/responses", json={"model": "fake", "input": "x"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = await c.post("/v1/responses", json={"model": "fake", "input": "x"}, headers={"authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = await c.post("/v1/responses", json={"model": "fake", "input": "x"}, headers={"authorization": "Bearer s3cret-token"})
        assert r.status_code == 200
        assert (await c.get("/healthz")).status_code == 200


async def test_retention_prunes_by_count_and_age() -> None:
    store = MemoryStore()
    cfg = FAKE_CONFIG.replace('store = "memory://"', 'store = "memory://"\nretention_max_count = 3')
    async with app_client(cfg, store=store) as c:
        ids = [(await create(c, input=f"n{i}"))["id"] for i in range(5)]
        service = c.app.state.responses  # type: ignore[attr-defined]
        removed = await service.prune()
        assert sorted(removed) == sorted(ids[:2])
        for rid in ids[:2]:
            assert (await c.get(f"/v1/responses/{rid}")).status_code == 404
        for rid in ids[2:]:
            assert (await c.get(f"/v1/responses/{rid}")).status_code == 200
    cfg = FAKE_CONFIG.replace('store = "memory://"', 'store = "memory://"\nretention_max_age = 0.05')
    async with app_client(cfg) as c:
        old = (await create(c, input="old"))["id"]
        await asyncio.sleep(0.2)
        new = (await create(c, input="new"))["id"]
        removed = await c.app.state.responses.prune()  # type: ignore[attr-defined]
        assert removed == [old]
        assert (await c.get(f"/v1/responses/{new}")).status_code == 200


async def test_retention_runs_every_hundred_writes() -> None:
    cfg = FAKE_CONFIG.replace('store = "memory://"', 'store = "memory://"\nretention_max_count = 10')
    store = MemoryStore()
    async with app_client(cfg, store=store) as c:
        for i in range(100):
            await create(c, input=f"{i}", model="echo")
        assert len(store.keys("responses")) == 10


async def test_sqlite_store_keeps_responses_across_apps(tmp_path: Any) -> None:
    from allm.stores import open_store

    url = f"sqlite:///{tmp_path / 'r.db'}"
    cfg = FAKE_CONFIG.replace('store = "memory://"', f'store = "{url}"')
    async with app_client(parse_config(cfg), store=open_store(url)) as c:
        rid = (await create(c, model="echo", input="kept"))["id"]
    async with app_client(parse_config(cfg), store=open_store(url)) as c:
        assert (await c.get(f"/v1/responses/{rid}")).json()["output"][0]["content"][0]["text"] == "kept"
        nxt = await create(c, model="echo", input="and more", previous_response_id=rid)
        assert nxt["output"][0]["content"][0]["text"] == "kept | and more"


def test_config_without_routes_serves_no_model() -> None:
    async def run() -> None:
        async with app_client(ServerConfig(store="memory://")) as c:
            r = await c.post("/v1/responses", json={"model": "m", "input": "x"})
            assert r.status_code == 404

    asyncio.run(run())


async def test_dropped_settings_are_reported(client: httpx.AsyncClient) -> None:
    resp = await create(client, input="x", reasoning={"effort": "low"}, top_logprobs=2, metadata={"mine": "kept"})
    assert resp["metadata"]["mine"] == "kept"
    assert "reasoning settings are not passed" in resp["metadata"]["allm_warnings"]
    assert "top_logprobs" in resp["metadata"]["allm_warnings"]
    assert resp["reasoning"] == {"effort": "low", "summary": None}


async def test_parallel_tool_calls_false_is_accepted(client: httpx.AsyncClient) -> None:
    resp = await create(client, input="weather?", tools=[WEATHER], parallel_tool_calls=False)
    assert resp["parallel_tool_calls"] is False
    assert [o["type"] for o in resp["output"]] == ["function_call"]


async def test_deleting_a_running_background_response_stops_and_forgets_it() -> None:
    cfg = FAKE_CONFIG.replace('adapter = "tests.server.fakes:echo"', 'adapter = "tests.server.fakes:slow"')
    async with app_client(cfg) as c:
        body = (await c.post("/v1/responses", json={"model": "echo", "input": "x", "background": True})).json()
        await asyncio.sleep(0.05)
        d = await c.delete(f"/v1/responses/{body['id']}")
        assert d.status_code == 200 and d.json()["deleted"] is True
        assert (await c.get(f"/v1/responses/{body['id']}")).status_code == 404
        assert c.app.state.responses.runs == {}  # type: ignore[attr-defined]


async def test_allowed_tools_are_enforced(client: httpx.AsyncClient) -> None:
    other = {**WEATHER, "name": "get_time"}
    choice = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get_time"}]}
    resp = await create(client, input="x", tools=[WEATHER, other], tool_choice=choice)
    assert [o["name"] for o in resp["output"] if o["type"] == "function_call"] == ["get_time"]
    assert resp["tool_choice"] == choice
    bad = {**choice, "tools": [{"type": "function", "name": "nope"}]}
    r = await client.post("/v1/responses", json={"model": "fake", "input": "x", "tools": [WEATHER], "tool_choice": bad})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice.tools"


async def test_max_tool_calls_refuses_the_calls_past_it_in_one_turn() -> None:
    from . import tools

    cfg = FAKE_CONFIG.replace('add = "tests.server.tools:add"', 'add = "tests.server.tools:counted_add"')
    cfg = cfg.replace('[[routes]]\nmatch = "^hosted"', '[[routes]]\nmatch = "^triple"\nadapter = "tests.server.fakes:triple"\ntools = ["add"]\n\n[[routes]]\nmatch = "^hosted"', 1)
    async with app_client(cfg) as c:
        tools.COUNTED.clear()
        resp = await create(c, model="triple", input="add", max_tool_calls=2)
        assert tools.COUNTED == [(0, 1), (1, 1)]  # the third call's handler never ran
        outputs = {o["call_id"]: o["output"] for o in resp["output"] if o["type"] == "function_call_output"}
        assert outputs["call_0"] == "1" and outputs["call_1"] == "2"
        assert "max_tool_calls is 2: this call was not run" in outputs["call_2"]
        assert resp["status"] == "incomplete" and resp["incomplete_details"] == {"reason": "max_tool_calls"}
        tools.COUNTED.clear()
        free = await create(c, model="triple", input="add")
        assert len(tools.COUNTED) == 3 and free["status"] == "completed"


SUMMARISING = FAKE_CONFIG.replace(
    '[[routes]]\nmatch = "^thinker"',
    '[[routes]]\nmatch = "^summ"\nadapter = "tests.server.fakes:summariser"\n\n'
    '[[routes]]\nmatch = "^breaks"\nadapter = "tests.server.fakes:breaks"\n\n[[routes]]\nmatch = "^thinker"', 1)


async def test_compact_summarises_all_but_the_user_and_system_messages() -> None:
    async with app_client(SUMMARISING) as c:
        fake = c.app.state.responses.routes[0].engine.adapter  # type: ignore[attr-defined]
        r = await c.post("/v1/responses/compact", json={"model": "summ", "input": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "What is 2+3?"},
            {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": '{"a":2,"b":3}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "5"},
            {"role": "assistant", "content": "It is 5."},
            {"role": "user", "content": [{"type": "input_text", "text": "And 5+5?"}]},
        ]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [(o["type"], o.get("role")) for o in body["output"]] == [
            ("message", "system"), ("message", "user"), ("message", "user"), ("compaction", None)]
        assert [o["content"][0]["text"] for o in body["output"][:3]] == ["Be terse.", "What is 2+3?", "And 5+5?"]
        assert body["usage"]["input_tokens"] == 40 and body["usage"]["output_tokens"] == 3
        (asked,) = fake.requests  # one summary call, reading the whole conversation
        assert asked.messages[0].role == "system" and asked.messages[0].text.startswith("You compact")
        read = asked.messages[1].text
        for part in ("user: What is 2+3?", 'assistant called add({"a":2,"b":3}) [call_1]',
                     "tool result (call_1): 5", "assistant: It is 5.", "user: And 5+5?"):
            assert part in read, part
        nxt = await create(c, model="summ", input=[*body["output"], {"role": "user", "content": "Go on."}])
        assert nxt["status"] == "completed"
        sent = fake.requests[1].messages
        assert [(m.role, m.text) for m in sent] == [
            ("system", "Be terse."), ("user", "What is 2+3?"), ("user", "And 5+5?"),
            ("assistant", "Summary of the conversation so far: SUMMARY"), ("user", "Go on.")]


async def test_compact_with_nothing_to_summarise_calls_no_model() -> None:
    async with app_client(SUMMARISING) as c:
        fake = c.app.state.responses.routes[0].engine.adapter  # type: ignore[attr-defined]
        r = await c.post("/v1/responses/compact", json={"model": "summ", "input": "Only a question."})
        body = r.json()
        assert [o["type"] for o in body["output"]] == ["message", "compaction"]
        assert body["usage"]["total_tokens"] == 0 and fake.requests == []
        nxt = await create(c, model="summ", input=[*body["output"], {"role": "user", "content": "Next."}])
        assert [(m.role, m.text) for m in fake.requests[0].messages] == [("user", "Only a question."), ("user", "Next.")]
        assert nxt["status"] == "completed"


async def test_compact_reports_a_failed_summary_call() -> None:
    async with app_client(SUMMARISING) as c:
        r = await c.post("/v1/responses/compact", json={"model": "breaks", "input": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
        assert r.status_code == 502, r.text  # the stream failed part-way: no half summary
        assert r.json()["error"]["code"] == "upstream_error"
        unfinished = await c.post("/v1/responses/compact", json={"model": "summ", "previous_response_id": "resp_nope"})
        assert unfinished.status_code == 400 and unfinished.json()["error"]["code"] == "previous_response_not_found"


async def test_item_reference_reads_the_item_from_its_stored_response() -> None:
    from allm.server.translate import response_of_item

    async with app_client(SUMMARISING) as c:
        fake = c.app.state.responses.routes[0].engine.adapter  # type: ignore[attr-defined]
        first = await create(c, model="thinker", input="hello")
        reasoning, message = first["output"]
        assert reasoning["type"] == "reasoning" and message["type"] == "message"
        assert response_of_item(message["id"]) == first["id"] and response_of_item(reasoning["id"]) == first["id"]
        nxt = await create(c, model="summ", input=[{"type": "item_reference", "id": message["id"]},
                                                   {"role": "user", "content": "next"}])
        assert nxt["status"] == "completed"
        assert [(m.role, m.text) for m in fake.requests[-1].messages] == [("assistant", "you said: hello"), ("user", "next")]
        listed = (await c.get(f"/v1/responses/{nxt['id']}/input_items", params={"order": "asc"})).json()["data"]
        assert listed[0]["id"] == message["id"] and listed[0]["content"][0]["text"] == "you said: hello"
        # an input item the server gave an id is found too, and a given id is kept as it was
        said = (await c.get(f"/v1/responses/{first['id']}/input_items")).json()["data"][0]
        assert response_of_item(said["id"]) == first["id"]
        again = await create(c, model="summ", input=[{"type": "item_reference", "id": said["id"]}])
        assert again["status"] == "completed" and [(m.role, m.text) for m in fake.requests[-1].messages] == [("user", "hello")]
        own = await create(c, model="summ", input=[{"type": "message", "id": "mine_1", "role": "user", "content": "hi"}])
        assert (await c.get(f"/v1/responses/{own['id']}/input_items")).json()["data"][0]["id"] == "mine_1"
        # what names nothing: a well-formed id of no response, an id this server did not make,
        # an item of a response that was not stored, and one of a deleted response
        unstored = await create(c, model="thinker", input="x", store=False)
        await c.delete(f"/v1/responses/{first['id']}")
        for ref in ("msg_" + "0" * 40, "msg_abc", unstored["output"][1]["id"], message["id"]):
            r = await c.post("/v1/responses", json={"model": "summ", "input": [{"role": "user", "content": "a"},
                                                                               {"type": "item_reference", "id": ref}]})
            assert r.status_code == 400, ref
            assert r.json()["error"]["code"] == "item_not_found" and r.json()["error"]["param"] == "input[1].id", ref
        bad = await c.post("/v1/responses", json={"model": "summ", "input": [{"type": "item_reference", "id": 7}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "input[0].id"
