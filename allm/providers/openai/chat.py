"""OpenAI Chat Completions (``POST /chat/completions``), and every server that speaks it.

Follows https://platform.openai.com/docs/api-reference/chat (request body,
``chat.completion`` and ``chat.completion.chunk`` objects, ``stream_options``).
OpenAI-compatible servers are *dialects* of this one adapter
(:class:`~allm.providers.openai._shared.Dialect`): :class:`OpenAICompatible` talks to
OpenRouter, Ollama, llama.cpp's ``llama-server``, vLLM or any other. Reasoning text
arrives in ``reasoning_content`` (llama.cpp, vLLM, DeepSeek) or ``reasoning`` (Ollama,
OpenRouter). Sans-IO: nothing here touches the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ...events import Error, Event, RawChunk
from ...types import CallWarning, ImagePart, Message, Request, Tool, Usage
from .._threads import check_request, check_thread
from .._wire import (
    SSEStreamDecoder,
    body_events,
    copy_settings,
    dropped,
    json_body,
    malformed,
    option_settings,
    usage_count,
)
from ..assembler import Assembler
from ..base import Decoder, HttpCall
from ..media import COMPATIBLE_IMAGES, OPENAI_IMAGES, check_images
from ._shared import (
    CompatibleServer,
    Dialect,
    OpenAIEndpoints,
    content_parts,
    encode_prompt_cache,
    encode_tool_choice,
    stream_error,
)

__all__ = ["ChatAdapter", "ChatDecoder", "OpenAICompatible", "decode_body", "encode_body", "encode_messages", "map_usage"]


# ------------------------------------------------------------------------------ encoding

_SETTINGS = ("temperature", "top_p", "top_k", "seed", "frequency_penalty", "presence_penalty")


def _image_url(part: ImagePart) -> dict[str, Any]:
    img: dict[str, Any] = {"url": part.image.data_url()}
    if part.detail is not None:
        img["detail"] = part.detail
    return {"type": "image_url", "image_url": img}


def _content(msg: Message) -> str | list[dict[str, Any]]:
    return content_parts(msg, lambda t: {"type": "text", "text": t}, _image_url)


def encode_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Our messages as Chat Completions ``messages``.

    Raises :class:`~allm.errors.ValidationError` for a thread no provider accepts
    (:func:`~allm.providers._threads.check_thread`)."""
    check_thread(messages)
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.role
        if role == "system":
            out.append({"role": "system", "content": m.text})
        elif role == "user":
            d: dict[str, Any] = {"role": "user", "content": _content(m)}
            if m.name:
                d["name"] = m.name
            out.append(d)
        elif role == "assistant":
            text = m.text
            d = {"role": "assistant", "content": text if text or not m.tool_calls else None}
            if m.tool_calls:
                d["tool_calls"] = [
                    {
                        "id": tc.id,
                        "type": "function",
                        "function": {"name": tc.name, "arguments": tc.raw_arguments or "{}"},
                    }
                    for tc in m.tool_calls
                ]
            out.append(d)
        else:  # tool (check_thread made sure it answers an earlier call)
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text})
    return out


def encode_tool(tool: Tool) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name, "parameters": dict(tool.schema)}
    if tool.description:
        fn["description"] = tool.description
    if tool.strict is not None:
        fn["strict"] = tool.strict
    return {"type": "function", "function": fn}


def encode_body(request: Request, dialect: Dialect, *, stream: bool) -> tuple[dict[str, Any], list[CallWarning]]:
    """The JSON body and the warnings for fields this dialect does not accept.

    Images are checked first (:func:`~allm.providers.media.check_images`: OpenAI's
    documented limits for the ``openai`` dialect, the common image types elsewhere).
    """
    provider = dialect.provider
    check_request(request)
    warnings = check_images(request.messages, OPENAI_IMAGES if dialect.name == "openai" else COMPATIBLE_IMAGES, provider)
    body: dict[str, Any] = {"model": request.model, "messages": encode_messages(request.messages)}
    sampling = dialect.sampling
    copy_settings(request, _SETTINGS, sampling, body, warnings, provider, dialect.name)
    if request.stop_sequences:
        if "stop" in sampling:
            body["stop"] = list(request.stop_sequences)
        else:
            warnings.append(dropped("stop_sequences", provider, dialect.name))
    if request.max_tokens is not None:
        body[dialect.max_tokens_field] = request.max_tokens
    if request.tools:
        body["tools"] = [encode_tool(t) for t in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = encode_tool_choice(request.tool_choice)
    encode_prompt_cache(request, dialect, body, warnings, dialect.name)
    rf = request.response_format
    if rf is not None:
        if rf.type == "json_schema":
            js: dict[str, Any] = {"name": rf.name or "response", "schema": dict(rf.schema or {})}
            js["strict"] = rf.strict
            body["response_format"] = {"type": "json_schema", "json_schema": js}
        else:
            body["response_format"] = {"type": rf.type}
    if stream:
        body["stream"] = True
        if dialect.stream_usage:
            body["stream_options"] = {"include_usage": True}
    if request.options:
        body.update(option_settings(request.options, sampling, body, warnings, provider, dialect.name, dialect.renames))
    return body, warnings


# ------------------------------------------------------------------------------ decoding

_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def map_finish_reason(raw: str | None) -> str | None:
    if raw is None:
        return None
    return _FINISH.get(raw, "other")


def map_usage(u: Mapping[str, Any], dropped: dict[str, Any] | None = None) -> Usage:
    """Chat Completions ``usage`` to :class:`Usage` (``prompt_tokens`` includes cached).

    Counters are read by :func:`~allm.providers._wire.usage_count` (numeric strings are
    numbers; anything else unreadable is ``None`` and recorded in ``dropped``)."""
    pd = u.get("prompt_tokens_details")
    cd = u.get("completion_tokens_details")
    return Usage(
        input_tokens=usage_count(u, "prompt_tokens", dropped),
        output_tokens=usage_count(u, "completion_tokens", dropped),
        cached_input_tokens=usage_count(pd, "cached_tokens", dropped) if isinstance(pd, Mapping) else None,
        reasoning_tokens=usage_count(cd, "reasoning_tokens", dropped) if isinstance(cd, Mapping) else None,
        total_tokens=usage_count(u, "total_tokens", dropped),
    )


_NO_ANSWER = "the stream carried no answer"
# The assembler key of a legacy ``function_call`` (never an int, so never a tool_calls index).
_FUNCTION_CALL = "function_call"


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{what} is not a string")
    return v


class ChatDecoder(SSEStreamDecoder):
    """Incremental decoder of a ``chat.completion.chunk`` SSE stream.

    Tool calls are tracked by ``index``; an id and name may arrive on the first
    fragment, later, or never (a deterministic id is made then). The legacy
    ``delta.function_call`` (one call, no id) is read as a tool call too. The stream
    must end with ``data: [DONE]``; ending without it, or a ``[DONE]`` before any
    chunk with a choice (the stream carried no answer), is a ``malformed_response`` error.
    """

    __slots__ = ("_answered", "_asm", "_dialect", "_finish", "_raw", "_refused")

    terminal_marker = "data: [DONE]"

    def __init__(
        self, provider: str, dialect: Dialect, warnings: tuple[CallWarning, ...] = (), include_raw: bool = False
    ) -> None:
        super().__init__(provider)
        self._dialect = dialect
        self._asm = Assembler(provider, warnings)
        self._finish: str | None = None
        self._refused = False
        self._answered = False  # a chunk with a choice was seen
        self._raw = include_raw

    def _on_items(self, items: list[tuple[str | None, bytes]], out: list[Event]) -> None:
        for name, data in items:
            if data == b"[DONE]":
                if not self._answered:
                    self._fail(out, malformed(self.provider, _NO_ANSWER + " (data: [DONE] came before any choice)"))
                    return
                self.finished = True
                finish = "content_filter" if self._refused else map_finish_reason(self._finish)
                out.extend(self._asm.finish(finish, self._finish))
                return
            self._json_item(name, data, out)
            if self.finished:
                return

    def _on_json(self, name: str | None, obj: Any, out: list[Event]) -> None:
        asm = self._asm
        if not isinstance(obj, dict):
            raise TypeError("chunk is not a JSON object")
        if not asm.started:
            if "error" in obj:
                self._fail(out, stream_error(self.provider, obj["error"]))
                return
            out.extend(asm.start(obj.get("id"), obj.get("model")))
        if self._raw:
            out.append(RawChunk(obj))
        choices = obj.get("choices")
        if choices:
            ch = choices[0]
            if ch.get("index", 0) == 0:
                self._answered = True
                delta = ch.get("delta")
                if delta:
                    c = delta.get("content")
                    if c:
                        out.append(asm.text(c))
                    refusal = delta.get("refusal")
                    if refusal and isinstance(refusal, str):  # structured outputs: the model declined
                        self._refused = True
                        out.append(asm.text(refusal))
                    for f in self._dialect.reasoning_fields:
                        r = delta.get(f)
                        if r and isinstance(r, str):
                            out.append(asm.reasoning(r))
                    tcs = delta.get("tool_calls")
                    if tcs:
                        self._tool_deltas(tcs, out)
                    fc = delta.get("function_call")
                    if fc:
                        self._function_call_delta(fc, out)
                fr = ch.get("finish_reason")
                if fr:
                    self._finish = fr
        elif "error" in obj:
            self._fail(out, stream_error(self.provider, obj["error"]))
            return
        u = obj.get("usage")
        if u:
            out.append(asm.add_usage(map_usage(u, asm.dropped_usage)))

    def _function_call_delta(self, fc: Any, out: list[Event]) -> None:
        """The legacy ``delta.function_call`` (``{"name"?, "arguments"?}``): one call without an
        id; the assembler gives it one when it completes."""
        if not isinstance(fc, dict):
            raise TypeError("function_call is not a JSON object")
        name = fc.get("name")
        if name or not self._asm.has_tool(_FUNCTION_CALL):
            out.extend(self._asm.tool_call(_FUNCTION_CALL, name=name if isinstance(name, str) else None))
        args = fc.get("arguments")
        if args:
            out.extend(self._asm.tool_arguments(_FUNCTION_CALL, _str(args, "function_call.arguments")))

    def _tool_deltas(self, tcs: list[Any], out: list[Event]) -> None:
        asm = self._asm
        for pos, tc in enumerate(tcs):
            key = tc.get("index")
            if key is None:
                key = pos
            fn = tc.get("function") or {}
            tid = tc.get("id")
            name = fn.get("name")
            if tid or name or not asm.has_tool(key):
                out.extend(asm.tool_call(key, id=tid, name=name))
            args = fn.get("arguments")
            if args:
                out.extend(asm.tool_arguments(key, args))


def decode_body(
    provider: str, dialect: Dialect, body: bytes, warnings: tuple[CallWarning, ...] = (), include_raw: bool = False
) -> list[Event]:
    """A non-streaming ``chat.completion`` body as the same events a stream gives."""

    def read(obj: Any, out: list[Event]) -> None:
        if not isinstance(obj, dict):
            raise TypeError("body is not a JSON object")
        if "error" in obj and not obj.get("choices"):
            out.append(Error(stream_error(provider, obj["error"])))
            return
        asm = Assembler(provider, warnings)
        out.extend(asm.start(obj.get("id"), obj.get("model")))
        if include_raw:
            out.append(RawChunk(obj))
        finish: str | None = None
        refused = False
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            out.append(Error(malformed(provider, "the response body carried no answer (no choices)")))
            return
        if choices:
            ch = choices[0]
            msg = ch.get("message") or {}
            for f in dialect.reasoning_fields:
                r = msg.get(f)
                if r and isinstance(r, str):
                    out.append(asm.reasoning(r))
                    out.extend(asm.close_block(None, "reasoning"))
            c = msg.get("content")
            refusal = msg.get("refusal")
            if not c and refusal and isinstance(refusal, str):  # structured outputs: the model declined
                c = refusal
            if c:
                out.append(asm.text(c))
                out.extend(asm.close_block(None, "text"))
            for i, tc in enumerate(msg.get("tool_calls") or []):
                fn = tc.get("function") or {}
                out.extend(asm.tool_call(i, id=tc.get("id"), name=fn.get("name")))
                out.extend(asm.tool_arguments(i, fn.get("arguments") or ""))
                out.extend(asm.close_block(i, "tool"))
            fc = msg.get("function_call")  # the legacy single call (finish_reason "function_call")
            if fc:
                if not isinstance(fc, dict):
                    raise TypeError("function_call is not a JSON object")
                name = fc.get("name")
                out.extend(asm.tool_call(_FUNCTION_CALL, name=name if isinstance(name, str) else None))
                out.extend(asm.tool_arguments(_FUNCTION_CALL, _str(fc.get("arguments") or "", "function_call.arguments")))
                out.extend(asm.close_block(_FUNCTION_CALL, "tool"))
            finish = ch.get("finish_reason")
            refused = bool(refusal) and not msg.get("content")
        u = obj.get("usage")
        if u:
            out.append(asm.add_usage(map_usage(u, asm.dropped_usage)))
        out.extend(asm.finish("content_filter" if refused else map_finish_reason(finish), finish))

    return body_events(provider, body, read)


# ------------------------------------------------------------------------------ adapters


class ChatAdapter(OpenAIEndpoints):
    """What :class:`OpenAICompatible` and the ``OpenAI`` router share: Chat Completions
    generation, plus the endpoints of :class:`~allm.providers.openai._shared.OpenAIEndpoints`."""

    __slots__ = ()

    def encode(self, request: Request, *, stream: bool) -> HttpCall:
        """``POST {base_url}/chat/completions``. Raises :class:`~allm.errors.ValidationError` for bad messages."""
        d = self._dialect()
        body, warnings = encode_body(request, d, stream=stream)
        return HttpCall(
            "POST",
            self._url("/chat/completions"),
            self._headers(stream),
            json_body(body),
            stream,
            d.provider,
            request.model,
            tuple(warnings),
        )

    def decoder(self, call: HttpCall, *, include_raw: bool = False) -> Decoder:
        return ChatDecoder(call.provider, self._dialect(), call.warnings, include_raw)

    def decode_body(self, call: HttpCall, body: bytes, *, include_raw: bool = False) -> list[Event]:
        return decode_body(call.provider, self._dialect(), body, call.warnings, include_raw)


@attrs.frozen
class OpenAICompatible(ChatAdapter, CompatibleServer):
    """Any server that speaks Chat Completions: a dialect name or :class:`Dialect`, and a base URL.

    Dialects: ``"generic"`` (the default; needs ``base_url``), ``"openrouter"``,
    ``"ollama"``, ``"llama.cpp"``, ``"vllm"``. ``headers`` are added to every
    call (never put a key there: use ``api_key=`` or :mod:`allm.keys`).
    """

    base_url: str | None = None
    dialect: str | Dialect = "generic"
    headers: Mapping[str, str] = attrs.field(factory=dict)

    @classmethod
    def openrouter(cls, *, app_url: str | None = None, app_title: str | None = None, base_url: str | None = None) -> OpenAICompatible:
        """OpenRouter; ``app_url``/``app_title`` become its attribution headers."""
        h: dict[str, str] = {}
        if app_url:
            h["HTTP-Referer"] = app_url
        if app_title:
            h["X-Title"] = app_title
        return cls(base_url, "openrouter", h)

    @classmethod
    def ollama(cls, base_url: str | None = None) -> OpenAICompatible:
        return cls(base_url, "ollama")

    @classmethod
    def llama_cpp(cls, base_url: str | None = None) -> OpenAICompatible:
        return cls(base_url, "llama.cpp")

    @classmethod
    def vllm(cls, base_url: str | None = None) -> OpenAICompatible:
        return cls(base_url, "vllm")

    def _extra_headers(self) -> dict[str, str]:
        return dict(self.headers)
