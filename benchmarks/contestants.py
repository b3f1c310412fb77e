"""The contestants: one class per library, each able to stream and to POST.

Every method returns what it received (``(text, tool arguments)`` or the answer
text) so the runner checks it against :func:`benchmarks.wire.expected`: a
contestant that drops or garbles data fails the run instead of looking fast.

- :class:`Floor`: the least a Python client can do (see ``benchmarks/README.md``):
  httpx, a minimal SSE split for the provider's exact framing, ``orjson.loads`` per
  event, the text (and tool-call arguments) pulled out and joined once.
- :class:`Allm`: ``allm.stream_generate`` / ``astream_generate`` (streams) and
  ``allm.generate(..., http_streaming=False)`` (plain requests).
- :class:`OpenAISDK`, :class:`AnthropicSDK`: the official SDKs' raw streams
  (``stream=True``, the lightest path each offers).
- :class:`LiteLLM`: ``litellm.completion`` / ``acompletion`` with its defaults.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from .wire import MODEL

KEY = "sk-bench-0000"
PROMPT = "Count to three."
MAX_TOKENS = 1024
Result = tuple[str, str]

# ------------------------------------------------------------------------------ URLs


def base(port: int, n_text: int, n_tool: int) -> str:
    """The server root for one response shape (see :mod:`benchmarks.server`)."""
    return f"http://127.0.0.1:{port}/b/{n_text}/{n_tool}"


def _url(port: int, provider: str, n_text: int, n_tool: int, stream: bool) -> str:
    root = base(port, n_text, n_tool)
    if provider == "openai":
        return root + "/v1/chat/completions"
    if provider == "anthropic":
        return root + "/v1/messages"
    action = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
    return f"{root}/v1beta/models/{MODEL['gemini']}{action}"


def _payload(provider: str, stream: bool) -> dict[str, Any]:
    if provider == "openai":
        p: dict[str, Any] = {"model": MODEL["openai"], "messages": [{"role": "user", "content": PROMPT}]}
        if stream:
            p["stream"] = True
            p["stream_options"] = {"include_usage": True}
        return p
    if provider == "anthropic":
        p = {"model": MODEL["anthropic"], "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": PROMPT}]}
        if stream:
            p["stream"] = True
        return p
    return {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}


def _headers(provider: str, stream: bool) -> dict[str, str]:
    h = {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"}
    if provider == "openai":
        h["authorization"] = f"Bearer {KEY}"
    elif provider == "anthropic":
        h["x-api-key"] = KEY
        h["anthropic-version"] = "2023-06-01"
    else:
        h["x-goog-api-key"] = KEY
    return h


# ------------------------------------------------------------------------------ the floor


class _FloorParser:
    """A minimal SSE split for one provider's exact framing, ``orjson.loads`` per event."""

    __slots__ = ("args", "buf", "done", "parts", "provider", "sep")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.sep = b"\r\n\r\n" if provider == "gemini" else b"\n\n"
        self.buf = b""
        self.parts: list[str] = []
        self.args: list[str] = []
        self.done = False

    def feed(self, chunk: bytes) -> None:
        buf = self.buf + chunk if self.buf else chunk
        events = buf.split(self.sep)
        self.buf = events.pop()
        for ev in events:
            i = ev.find(b"data: ")
            if i < 0:
                continue
            data = ev[i + 6 :]
            if self.provider == "openai":
                if data == b"[DONE]":
                    self.done = True
                    return
                choices = orjson.loads(data)["choices"]
                if choices:
                    delta = choices[0]["delta"]
                    t = delta.get("content")
                    if t:
                        self.parts.append(t)
                    tcs = delta.get("tool_calls")
                    if tcs:
                        a = tcs[0]["function"].get("arguments")
                        if a:
                            self.args.append(a)
            elif self.provider == "anthropic":
                obj = orjson.loads(data)
                kind = obj["type"]
                if kind == "content_block_delta":
                    d = obj["delta"]
                    if d["type"] == "text_delta":
                        self.parts.append(d["text"])
                    elif d["type"] == "input_json_delta":
                        self.args.append(d["partial_json"])
                elif kind == "message_stop":
                    self.done = True
            else:
                cand = orjson.loads(data)["candidates"][0]
                for part in cand["content"]["parts"]:
                    t = part.get("text")
                    if t:
                        self.parts.append(t)
                    fc = part.get("functionCall")
                    if fc:
                        self.args.append(orjson.dumps(fc["args"]).decode())
                if "finishReason" in cand:
                    self.done = True

    def result(self) -> Result:
        if not self.done:
            raise RuntimeError("the stream ended without its terminal marker")
        return "".join(self.parts), "".join(self.args)


def _lean_result(provider: str, objs: list[Any], done: bool) -> Result:
    """The text and tool-call arguments in the decoded events of one stream (the lean floor)."""
    parts: list[str] = []
    args: list[str] = []
    for obj in objs:
        if provider == "openai":
            choices = obj["choices"]
            if choices:
                delta = choices[0]["delta"]
                if delta.get("content"):
                    parts.append(delta["content"])
                if delta.get("tool_calls") and delta["tool_calls"][0]["function"].get("arguments"):
                    args.append(delta["tool_calls"][0]["function"]["arguments"])
        elif provider == "anthropic":
            if obj["type"] == "content_block_delta":
                d = obj["delta"]
                if d["type"] == "text_delta":
                    parts.append(d["text"])
                elif d["type"] == "input_json_delta":
                    args.append(d["partial_json"])
            elif obj["type"] == "message_stop":
                done = True
        else:
            cand = obj["candidates"][0]
            for part in cand["content"]["parts"]:
                if part.get("text"):
                    parts.append(part["text"])
                if part.get("functionCall"):
                    args.append(orjson.dumps(part["functionCall"]["args"]).decode())
            if "finishReason" in cand:
                done = True
    if not done:
        raise RuntimeError("the stream ended without its terminal marker")
    return "".join(parts), "".join(args)


def _floor_text(provider: str, obj: Any) -> str:
    if provider == "openai":
        return str(obj["choices"][0]["message"]["content"])
    if provider == "anthropic":
        return str(obj["content"][0]["text"])
    return str(obj["candidates"][0]["content"]["parts"][0]["text"])


class Floor:
    name = "floor"
    providers = ("openai", "anthropic", "gemini")

    def __init__(self, port: int) -> None:
        import httpx

        self.port = port
        self.client = httpx.Client(timeout=None)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        self._limits = limits
        self._aclient: Any = None

    def _a(self) -> Any:
        import httpx

        if self._aclient is None:
            self._aclient = httpx.AsyncClient(timeout=None, limits=self._limits)
        return self._aclient

    def stream(self, provider: str, n_text: int, n_tool: int) -> Result:
        p = _FloorParser(provider)
        url = _url(self.port, provider, n_text, n_tool, True)
        body = orjson.dumps(_payload(provider, True))
        with self.client.stream("POST", url, content=body, headers=_headers(provider, True)) as r:
            r.raise_for_status()
            for chunk in r.iter_bytes():
                p.feed(chunk)
        return p.result()

    async def astream(self, provider: str, n_text: int, n_tool: int) -> Result:
        p = _FloorParser(provider)
        url = _url(self.port, provider, n_text, n_tool, True)
        body = orjson.dumps(_payload(provider, True))
        async with self._a().stream("POST", url, content=body, headers=_headers(provider, True)) as r:
            r.raise_for_status()
            async for chunk in r.aiter_bytes():
                p.feed(chunk)
        return p.result()

    def post(self, provider: str, n_text: int) -> str:
        url = _url(self.port, provider, n_text, 0, False)
        r = self.client.post(url, content=orjson.dumps(_payload(provider, False)), headers=_headers(provider, False))
        r.raise_for_status()
        return _floor_text(provider, orjson.loads(r.content))

    async def apost(self, provider: str, n_text: int) -> str:
        url = _url(self.port, provider, n_text, 0, False)
        r = await self._a().post(url, content=orjson.dumps(_payload(provider, False)), headers=_headers(provider, False))
        r.raise_for_status()
        return _floor_text(provider, orjson.loads(r.content))


class LeanFloor(Floor):
    """The plainest correct stream loop: split the buffer on the blank line, take what follows
    ``data: ``, ``orjson.loads`` it and keep the object; the text and arguments are read out of
    the kept objects once the stream has ended. Nothing per event but the split and the parse."""

    name = "lean floor"

    def stream(self, provider: str, n_text: int, n_tool: int) -> Result:
        sep = b"\r\n\r\n" if provider == "gemini" else b"\n\n"
        objs: list[Any] = []
        done = False
        buf = b""
        url = _url(self.port, provider, n_text, n_tool, True)
        with self.client.stream("POST", url, content=orjson.dumps(_payload(provider, True)), headers=_headers(provider, True)) as r:
            r.raise_for_status()
            for chunk in r.iter_bytes():
                *events, buf = (buf + chunk).split(sep)
                for ev in events:
                    data = ev[ev.find(b"data: ") + 6 :]
                    if data == b"[DONE]":
                        done = True
                    else:
                        objs.append(orjson.loads(data))
        return _lean_result(provider, objs, done)

    async def astream(self, provider: str, n_text: int, n_tool: int) -> Result:
        sep = b"\r\n\r\n" if provider == "gemini" else b"\n\n"
        objs: list[Any] = []
        done = False
        buf = b""
        url = _url(self.port, provider, n_text, n_tool, True)
        async with self._a().stream("POST", url, content=orjson.dumps(_payload(provider, True)), headers=_headers(provider, True)) as r:
            r.raise_for_status()
            async for chunk in r.aiter_bytes():
                *events, buf = (buf + chunk).split(sep)
                for ev in events:
                    data = ev[ev.find(b"data: ") + 6 :]
                    if data == b"[DONE]":
                        done = True
                    else:
                        objs.append(orjson.loads(data))
        return _lean_result(provider, objs, done)


# ------------------------------------------------------------------------------ allm


class Allm:
    name = "allm"
    providers = ("openai", "anthropic", "gemini")

    def __init__(self, port: int) -> None:
        import allm

        self.allm = allm
        self.port = port
        self.request = allm.request([allm.user(PROMPT)], max_tokens=MAX_TOKENS)
        self._engines: dict[tuple[str, int, int], Any] = {}

    def engine(self, provider: str, n_text: int, n_tool: int) -> Any:
        key = (provider, n_text, n_tool)
        e = self._engines.get(key)
        if e is None:
            from allm.providers import Anthropic, Gemini, OpenAI

            root = base(self.port, n_text, n_tool)
            adapter: Any
            if provider == "openai":
                adapter = OpenAI(base_url=root + "/v1", api="chat")
            elif provider == "anthropic":
                adapter = Anthropic(base_url=root + "/v1")
            else:
                adapter = Gemini(base_url=root + "/v1beta")
            e = self._engines[key] = self.allm.Engine(adapter=adapter, model=MODEL[provider])
        return e

    def stream(self, provider: str, n_text: int, n_tool: int) -> Result:
        from allm.events import TextDelta, ToolCallDelta

        parts: list[str] = []
        args: list[str] = []
        for ev in self.allm.stream_generate(self.engine(provider, n_text, n_tool), self.request, api_key=KEY):
            t = type(ev)
            if t is TextDelta:
                parts.append(ev.delta)
            elif t is ToolCallDelta:
                args.append(ev.arguments_delta)
        return "".join(parts), "".join(args)

    async def astream(self, provider: str, n_text: int, n_tool: int) -> Result:
        from allm.events import TextDelta, ToolCallDelta

        parts: list[str] = []
        args: list[str] = []
        async for ev in self.allm.astream_generate(self.engine(provider, n_text, n_tool), self.request, api_key=KEY):
            t = type(ev)
            if t is TextDelta:
                parts.append(ev.delta)
            elif t is ToolCallDelta:
                args.append(ev.arguments_delta)
        return "".join(parts), "".join(args)

    def post(self, provider: str, n_text: int) -> str:
        r = self.allm.generate(self.engine(provider, n_text, 0), self.request, api_key=KEY, http_streaming=False)
        return str(r.output_text)

    async def apost(self, provider: str, n_text: int) -> str:
        r = await self.allm.agenerate(self.engine(provider, n_text, 0), self.request, api_key=KEY, http_streaming=False)
        return str(r.output_text)


class AllmNoop(Allm):
    """allm with one telemetry handler attached that does nothing (figure 7)."""

    name = "allm + no-op telemetry handler"

    def __init__(self, port: int) -> None:
        super().__init__(port)
        from allm import telemetry

        telemetry.add_handler(_ignore)


def _ignore(record: Any) -> None:
    pass


class AllmOtel(Allm):
    """allm with OpenTelemetry on (figure 7): the SDK's tracer provider with a batch span
    processor (its exporter drops the batches) and a meter provider aggregating the metrics."""

    name = "allm + OpenTelemetry"

    def __init__(self, port: int) -> None:
        super().__init__(port)
        from collections.abc import Sequence

        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        import allm.otel

        class Drop(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
        allm.otel.instrument(tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))


# ------------------------------------------------------------------------------ official SDKs


class OpenAISDK:
    name = "openai SDK"
    providers = ("openai",)

    def __init__(self, port: int) -> None:
        import openai

        self.openai = openai
        self.port = port
        self._clients: dict[tuple[bool, int, int], Any] = {}

    def _client(self, is_async: bool, n_text: int, n_tool: int) -> Any:
        key = (is_async, n_text, n_tool)
        c = self._clients.get(key)
        if c is None:
            cls = self.openai.AsyncOpenAI if is_async else self.openai.OpenAI
            c = self._clients[key] = cls(api_key=KEY, base_url=base(self.port, n_text, n_tool) + "/v1", max_retries=0)
        return c

    @staticmethod
    def _take(chunk: Any, parts: list[str], args: list[str]) -> None:
        if chunk.choices:
            d = chunk.choices[0].delta
            if d.content:
                parts.append(d.content)
            if d.tool_calls:
                a = d.tool_calls[0].function.arguments
                if a:
                    args.append(a)

    def stream(self, provider: str, n_text: int, n_tool: int) -> Result:
        parts: list[str] = []
        args: list[str] = []
        s = self._client(False, n_text, n_tool).chat.completions.create(
            model=MODEL["openai"], messages=[{"role": "user", "content": PROMPT}], stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in s:
            self._take(chunk, parts, args)
        return "".join(parts), "".join(args)

    async def astream(self, provider: str, n_text: int, n_tool: int) -> Result:
        parts: list[str] = []
        args: list[str] = []
        s = await self._client(True, n_text, n_tool).chat.completions.create(
            model=MODEL["openai"], messages=[{"role": "user", "content": PROMPT}], stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in s:
            self._take(chunk, parts, args)
        return "".join(parts), "".join(args)

    def post(self, provider: str, n_text: int) -> str:
        r = self._client(False, n_text, 0).chat.completions.create(
            model=MODEL["openai"], messages=[{"role": "user", "content": PROMPT}]
        )
        return str(r.choices[0].message.content)

    async def apost(self, provider: str, n_text: int) -> str:
        r = await self._client(True, n_text, 0).chat.completions.create(
            model=MODEL["openai"], messages=[{"role": "user", "content": PROMPT}]
        )
        return str(r.choices[0].message.content)


class AnthropicSDK:
    name = "anthropic SDK"
    providers = ("anthropic",)

    def __init__(self, port: int) -> None:
        import anthropic

        self.anthropic = anthropic
        self.port = port
        self._clients: dict[tuple[bool, int, int], Any] = {}

    def _client(self, is_async: bool, n_text: int, n_tool: int) -> Any:
        key = (is_async, n_text, n_tool)
        c = self._clients.get(key)
        if c is None:
            cls = self.anthropic.AsyncAnthropic if is_async else self.anthropic.Anthropic
            c = self._clients[key] = cls(api_key=KEY, base_url=base(self.port, n_text, n_tool), max_retries=0)
        return c

    @staticmethod
    def _take(ev: Any, parts: list[str], args: list[str]) -> None:
        if ev.type == "content_block_delta":
            d = ev.delta
            if d.type == "text_delta":
                parts.append(d.text)
            elif d.type == "input_json_delta":
                args.append(d.partial_json)

    def _kw(self) -> dict[str, Any]:
        return {"model": MODEL["anthropic"], "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": PROMPT}]}

    def stream(self, provider: str, n_text: int, n_tool: int) -> Result:
        parts: list[str] = []
        args: list[str] = []
        for ev in self._client(False, n_text, n_tool).messages.create(stream=True, **self._kw()):
            self._take(ev, parts, args)
        return "".join(parts), "".join(args)

    async def astream(self, provider: str, n_text: int, n_tool: int) -> Result:
        parts: list[str] = []
        args: list[str] = []
        s = await self._client(True, n_text, n_tool).messages.create(stream=True, **self._kw())
        async for ev in s:
            self._take(ev, parts, args)
        return "".join(parts), "".join(args)

    def post(self, provider: str, n_text: int) -> str:
        r = self._client(False, n_text, 0).messages.create(**self._kw())
        return str(r.content[0].text)

    async def apost(self, provider: str, n_text: int) -> str:
        r = await self._client(True, n_text, 0).messages.create(**self._kw())
        return str(r.content[0].text)


# ------------------------------------------------------------------------------ LiteLLM


class LiteLLM:
    name = "LiteLLM"
    providers = ("openai", "anthropic")

    def __init__(self, port: int) -> None:
        import litellm

        litellm.suppress_debug_info = True
        self.litellm = litellm
        self.port = port

    def _kw(self, provider: str, n_text: int, n_tool: int) -> dict[str, Any]:
        root = base(self.port, n_text, n_tool)
        kw: dict[str, Any] = {"messages": [{"role": "user", "content": PROMPT}], "api_key": KEY, "max_retries": 0}
        if provider == "openai":
            kw.update(model="openai/" + MODEL["openai"], api_base=root + "/v1")
        else:
            kw.update(model="anthropic/" + MODEL["anthropic"], api_base=root, max_tokens=MAX_TOKENS)
        return kw

    @staticmethod
    def _take(chunk: Any, parts: list[str], args: list[str]) -> None:
        if chunk.choices:
            d = chunk.choices[0].delta
            if d.content:
                parts.append(d.content)
            if d.tool_calls:
                a = d.tool_calls[0].function.arguments
                if a:
                    args.append(a)

    def stream(self, provider: str, n_text: int, n_tool: int) -> Result:
        parts: list[str] = []
        args: list[str] = []
        for chunk in self.litellm.completion(stream=True, **self._kw(provider, n_text, n_tool)):
            self._take(chunk, parts, args)
        return "".join(parts), "".join(args)

    async def astream(self, provider: str, n_text: int, n_tool: int) -> Result:
        parts: list[str] = []
        args: list[str] = []
        s = await self.litellm.acompletion(stream=True, **self._kw(provider, n_text, n_tool))
        async for chunk in s:
            self._take(chunk, parts, args)
        return "".join(parts), "".join(args)

    def post(self, provider: str, n_text: int) -> str:
        r = self.litellm.completion(**self._kw(provider, n_text, 0))
        return str(r.choices[0].message.content)

    async def apost(self, provider: str, n_text: int) -> str:
        r = await self.litellm.acompletion(**self._kw(provider, n_text, 0))
        return str(r.choices[0].message.content)


LIBRARIES: dict[str, tuple[str, str | None]] = {
    # name -> (class name, the module that must be importable for it to run)
    "floor": ("Floor", None),
    "floor-lean": ("LeanFloor", None),
    "allm": ("Allm", None),
    "allm-noop": ("AllmNoop", None),
    "allm-otel": ("AllmOtel", "opentelemetry.sdk"),
    "openai": ("OpenAISDK", "openai"),
    "anthropic": ("AnthropicSDK", "anthropic"),
    "litellm": ("LiteLLM", "litellm"),
}


def make(lib: str, port: int) -> Any:
    return globals()[LIBRARIES[lib][0]](port)



async def gather_streams(c: Any, provider: str, n_streams: int, n_text: int) -> list[Result]:
    """``n_streams`` concurrent streams on one event loop."""
    return list(await asyncio.gather(*(c.astream(provider, n_text, 0) for _ in range(n_streams))))
