"""Retries, deadlines, mid-stream errors and per-tenant keys, against a misbehaving server.

A tiny HTTP server on 127.0.0.1 (standard library only, no key needed) speaks the
OpenAI Chat Completions stream and misbehaves on request: it answers 429 with
``retry-after-ms``, goes silent, fails mid-stream, and echoes the key it was sent in
a 401. Run: ``python examples/retries_and_deadlines.py``.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import allm
from allm.events import Error, TextDelta
from allm.providers import OpenAICompatible

attempts: dict[str, int] = {}


def chunk(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def text(t: str) -> bytes:
    return chunk({"id": "c1", "model": "demo", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]})


STOP = chunk({"id": "c1", "model": "demo", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"data: [DONE]\n\n"


class Misbehaving(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes

    def log_message(self, *args: object) -> None:  # keep the example's output readable
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        prompt = json.loads(body)["messages"][-1]["content"]
        attempts[prompt] = attempts.get(prompt, 0) + 1
        if prompt == "busy" and attempts[prompt] == 1:
            return self.reply(429, {"error": {"message": "slow down", "type": "requests"}}, {"retry-after-ms": "150"})
        if prompt == "who am i":
            key = self.headers.get("authorization", "").removeprefix("Bearer ")
            return self.reply(401, {"error": {"message": f"Incorrect API key provided: {key}", "code": "invalid_api_key"}})
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        if prompt == "silent":
            time.sleep(2)  # longer than the client's first-event deadline
            return
        self.wfile.write(text("Hello, "))
        self.wfile.flush()
        if prompt == "fail midway":
            self.wfile.write(chunk({"error": {"message": "the model crashed", "type": "server_error"}}))
            return
        self.wfile.write(text("world!") + STOP)

    def reply(self, status: int, obj: dict, headers: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        for k, v in {"content-type": "application/json", "content-length": str(len(data)), **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


server = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
threading.Thread(target=server.serve_forever, daemon=True).start()
engine = allm.Engine(
    adapter=OpenAICompatible(f"http://127.0.0.1:{server.server_address[1]}/v1"),
    model="demo",
    retry=allm.RetryPolicy(max_attempts=3, base_delay=0.05),
    timeouts=allm.Timeouts(connect=2, first_event=0.5, idle=5, total=10),
)

# 1. A 429 is retried after the wait the server asked for; on_retry sees it before the sleep.
retries: list[allm.RetryInfo] = []
resp = allm.generate(engine, "busy", on_retry=retries.append)
print("busy ->", resp.output_text, [(r.attempt, r.reason, round(r.delay, 3)) for r in retries])
assert resp.output_text == "Hello, world!" and resp.finish_reason == "stop"
assert [(r.attempt, r.reason, r.error.status) for r in retries] == [(1, "rate_limited", 429)]
assert retries[0].delay >= 0.15  # retry-after-ms honoured

# 2. A silent server: a typed timeout within the deadline (retried, then raised), never a hang.
t0 = time.monotonic()
try:
    allm.generate(engine, "silent", retry=allm.RetryPolicy(max_attempts=2, base_delay=0.01))
    raise AssertionError("expected a timeout")
except allm.AdapterError as err:
    elapsed = time.monotonic() - t0
    print("silent ->", err.reason, "|", err.message, f"| {elapsed:.2f}s")
    assert err.reason == "timeout" and "first-event deadline of 0.5 s" in err.message
    assert elapsed < 2.0 and attempts["silent"] == 2

# 3. A failure after output began: not retried; the partial output is kept.
events = list(allm.stream_generate(engine, "fail midway"))
assert isinstance(events[-1], Error) and events[-1].error.reason == "provider_unavailable"
resp = allm.Collector().fold(events)
print("fail midway ->", repr(resp.output_text), resp.finish_reason, resp.metadata["error"].reason)
assert resp.output_text == "Hello, " and resp.finish_reason == "error" and attempts["fail midway"] == 1
assert [e.delta for e in events if isinstance(e, TextDelta)] == ["Hello, "]

# 4. Per-tenant keys: each call carries its tenant's key, and an echoed key never shows.
for tenant_key in ("tenant-a-7f3c9d2e", "tenant-b-51be08aa"):
    with allm.keys.scope(tenant_key):
        try:
            allm.generate(engine, "who am i")
        except allm.AdapterError as err:
            print("who am i ->", err.reason, "|", err.message)
            assert err.reason == "authentication_failed" and tenant_key not in str(err) and tenant_key not in repr(err)
            assert "[redacted]" in err.message

server.shutdown()
print("ok")
