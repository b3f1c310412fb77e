"""An Open Responses server on the Fake, called over real HTTP. No key needed.

Starts ``allm.server.create_app`` under uvicorn on a free loopback port (in a thread), then
talks to it as any client would: a plain response, a stream, a continuation, a hosted tool
and a client function tool round trip, retrieval, input items, deletion, compaction and an
error.
Uses the ``openai`` SDK when it is installed, and httpx either way.
"""

import json
import threading
import time

import httpx
import uvicorn

from allm.local import free_port
from allm.providers import Fake
from allm.server import Route, ServerConfig, create_app
from allm.testing import auto


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


config = ServerConfig(
    routes=(
        Route(match="^agent", adapter=lambda: Fake(function=auto(text="All done.")), tools=("add",)),
        Route(match=".", provider="fake", tools=()),  # echoes the last user message
    ),
    tools={"add": add},
    store="memory://",
)
port = free_port()
server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning"))
thread = threading.Thread(target=server.run, daemon=True)
thread.start()
base = f"http://127.0.0.1:{port}"
for _ in range(100):
    try:
        if httpx.get(f"{base}/healthz").status_code == 200:
            break
    except httpx.TransportError:
        time.sleep(0.05)

with httpx.Client(base_url=f"{base}/v1") as http:
    # a plain response, with every field the specification requires
    first = http.post("/responses", json={"model": "echo", "input": "Hello"}).json()
    assert first["status"] == "completed"
    assert first["output"][0]["content"][0]["text"] == "(fake) you said: Hello"
    print("response:", first["id"], first["output"][0]["content"][0]["text"])

    # a stream: one event per SSE frame, sequence numbers 0, 1, 2 ...
    with http.stream("POST", "/responses", json={"model": "echo", "input": "Stream", "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"
    print("stream:", len(events), "events")

    # a continuation by previous_response_id, then retrieve, input items, delete
    nxt = http.post("/responses", json={"model": "echo", "input": "Again", "previous_response_id": first["id"]}).json()
    assert nxt["previous_response_id"] == first["id"]
    assert http.get(f"/responses/{nxt['id']}").json()["id"] == nxt["id"]
    items = http.get(f"/responses/{first['id']}/input_items").json()["data"]
    assert items[0]["content"][0]["text"] == "Hello"
    assert http.delete(f"/responses/{first['id']}").json()["deleted"] is True
    assert http.get(f"/responses/{first['id']}").status_code == 404

    # compaction: the user messages kept, the rest summarised by the route's model into one item
    compacted = http.post("/responses/compact", json={"model": "echo", "previous_response_id": nxt["id"]}).json()
    assert [o["type"] for o in compacted["output"]] == ["message", "message", "compaction"]
    assert [o["content"][0]["text"] for o in compacted["output"][:2]] == ["Hello", "Again"]
    fresh = http.post("/responses", json={"model": "echo", "input": [*compacted["output"], {"role": "user", "content": "Go on"}]})
    assert fresh.json()["output"][0]["content"][0]["text"] == "(fake) you said: Go on"
    print("compacted:", [o["type"] for o in compacted["output"]])

    # a hosted tool runs inside one response
    done = http.post("/responses", json={"model": "agent", "input": "add two numbers"}).json()
    assert [o["type"] for o in done["output"]] == ["function_call", "function_call_output", "message"]
    args = json.loads(done["output"][0]["arguments"])
    assert done["output"][1]["output"] == str(args["a"] + args["b"])
    print("hosted tool:", done["output"][0]["name"], args, "->", done["output"][1]["output"])

    # errors are specification-shaped
    err = http.post("/responses", json={"model": "echo", "input": "x", "previous_response_id": "resp_nope"})
    assert err.status_code == 400 and err.json()["error"]["code"] == "previous_response_not_found"

try:
    import openai
except ImportError:  # the SDK is optional here
    openai = None

if openai is not None:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
    resp = client.responses.create(model="echo", input="Hi from the SDK")
    assert resp.output_text == "(fake) you said: Hi from the SDK"
    weather = {"type": "function", "name": "get_weather",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    asked = client.responses.create(model="agent", input="Weather in Paris?", tools=[weather])
    call = next(o for o in asked.output if o.type == "function_call" and o.name == "get_weather")
    answered = client.responses.create(
        model="agent", tools=[weather], previous_response_id=asked.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 18}'}],
    )
    assert answered.output_text == "All done."
    print("openai SDK:", resp.output_text, "|", answered.output_text)

server.should_exit = True
thread.join(10)
print("ok")
