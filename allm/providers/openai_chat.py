"""OpenAI Chat Completions (``POST /chat/completions``), and every server that speaks it.

Follows https://platform.openai.com/docs/api-reference/chat (request body,
``chat.completion`` and ``chat.completion.chunk`` objects, ``stream_options``).
OpenAI-compatible servers are *dialects* of this one adapter, described as data by
:class:`Dialect`: base URL, where the key comes from, which sampling fields exist,
whether usage must be asked for with ``stream_options``, where reasoning text
arrives (``reasoning_content`` for llama.cpp/vLLM/DeepSeek, ``reasoning`` for
Ollama/OpenRouter). Sans-IO: nothing here touches the network.
"""

from __future__ import annotations

import base64
import re
import sys
from array import array
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs
import orjson

from ..errors import AdapterError, ValidationError, from_status, parse_retry_after
from ..events import Error, Event, RawChunk
from ..types import Embeddings, ImagePart, ImageRequest, ImageResponse, Message, Request, TextPart, Tool, Usage
from .base import Assembler, Decoder, HttpCall, KeySpec, SSEStreamDecoder, malformed
from .media import COMPATIBLE_IMAGES, OPENAI_IMAGES, check_images

if TYPE_CHECKING:
    from .openai_responses import OpenAIResponses

__all__ = ["DIALECTS", "ChatDecoder", "Dialect", "OpenAI", "OpenAICompatible", "prefers_responses"]

_OPENAI_SAMPLING = frozenset({"temperature", "top_p", "seed", "frequency_penalty", "presence_penalty", "stop"})


@attrs.frozen
class Dialect:
    """What distinguishes one OpenAI-compatible server from another, as data.

    - ``provider``: the name used by the key chain (``allm.keys``).
    - ``sampling``: the :class:`~allm.types.Request` sampling fields this server
      accepts (``temperature``, ``top_p``, ``top_k``, ``seed``,
      ``frequency_penalty``, ``presence_penalty``, ``stop``); others are dropped
      with a warning.
    - ``max_tokens_field``: ``max_tokens`` or ``max_completion_tokens``.
    - ``stream_usage``: send ``stream_options.include_usage`` when streaming.
    - ``reasoning_fields``: delta/message fields that carry reasoning text.
    """

    name: str
    provider: str
    base_url: str | None = None
    key_env: tuple[str, ...] = ()
    key_required: bool = False
    sampling: frozenset[str] = _OPENAI_SAMPLING
    max_tokens_field: str = "max_tokens"
    stream_usage: bool = True
    reasoning_fields: tuple[str, ...] = ("reasoning_content", "reasoning")
    headers: Mapping[str, str] = attrs.field(factory=dict)


DIALECTS: dict[str, Dialect] = {
    "openai": Dialect(
        "openai",
        "openai",
        "https://api.openai.com/v1",
        ("OPENAI_API_KEY",),
        True,
        _OPENAI_SAMPLING,
        "max_completion_tokens",
        True,
        (),
    ),
    "openrouter": Dialect(
        "openrouter",
        "openrouter",
        "https://openrouter.ai/api/v1",
        ("OPENROUTER_API_KEY",),
        True,
        _OPENAI_SAMPLING | {"top_k"},
        "max_tokens",
        True,
        ("reasoning",),
    ),
    "ollama": Dialect(
        "ollama",
        "ollama",
        "http://127.0.0.1:11434/v1",
        ("OLLAMA_API_KEY",),
        False,
        _OPENAI_SAMPLING,
        "max_tokens",
        True,
        ("reasoning",),
    ),
    "llama.cpp": Dialect(
        "llama.cpp",
        "llama_cpp",
        "http://127.0.0.1:8080/v1",
        ("LLAMA_API_KEY",),
        False,
        _OPENAI_SAMPLING | {"top_k"},
        "max_tokens",
        True,
        ("reasoning_content",),
    ),
    "vllm": Dialect(
        "vllm",
        "vllm",
        "http://127.0.0.1:8000/v1",
        ("VLLM_API_KEY",),
        False,
        _OPENAI_SAMPLING | {"top_k"},
        "max_tokens",
        True,
        ("reasoning_content", "reasoning"),
    ),
    "generic": Dialect("generic", "openai_compatible", None, ("OPENAI_COMPATIBLE_API_KEY",), False),
}


# ------------------------------------------------------------------------------ encoding


def _image_url(part: ImagePart) -> dict[str, Any]:
    img: dict[str, Any] = {"url": part.image.data_url()}
    if part.detail is not None:
        img["detail"] = part.detail
    return {"type": "image_url", "image_url": img}


def _content(msg: Message) -> str | list[dict[str, Any]]:
    c = msg.content
    if isinstance(c, str):
        return c
    out: list[dict[str, Any]] = []
    for p in c:
        if type(p) is TextPart:
            out.append({"type": "text", "text": p.text})
        elif type(p) is ImagePart:
            out.append(_image_url(p))
        # Reasoning parts are not accepted back by Chat Completions: dropped.
    if all(d["type"] == "text" for d in out):
        return "".join(d["text"] for d in out)
    return out


def encode_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Our messages as Chat Completions ``messages``. Raises :class:`ValidationError`."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        role = m.role
        if role == "system":
            if not isinstance(m.content, str) and any(type(p) is ImagePart for p in m.content):
                raise ValidationError(
                    f"messages[{i}]: images are not allowed in a system message", reason="invalid_image"
                )
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
        else:  # tool
            if not m.tool_call_id:
                raise ValidationError(f"messages[{i}]: a tool message needs tool_call_id", reason="invalid_message")
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text})
    return out


def encode_tool(tool: Tool) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name, "parameters": dict(tool.schema)}
    if tool.description:
        fn["description"] = tool.description
    if tool.strict is not None:
        fn["strict"] = tool.strict
    return {"type": "function", "function": fn}


def encode_tool_choice(choice: str) -> str | dict[str, Any]:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def encode_body(request: Request, dialect: Dialect, *, stream: bool) -> tuple[dict[str, Any], list[str]]:
    """The JSON body and the warnings for fields this dialect does not accept.

    Images are checked first (:func:`~allm.providers.media.check_images`: OpenAI's
    documented limits for the ``openai`` dialect, the common image types elsewhere).
    """
    warnings = check_images(request.messages, OPENAI_IMAGES if dialect.name == "openai" else COMPATIBLE_IMAGES)
    body: dict[str, Any] = {"model": request.model, "messages": encode_messages(request.messages)}
    sampling = dialect.sampling
    for name in ("temperature", "top_p", "top_k", "seed", "frequency_penalty", "presence_penalty"):
        value = getattr(request, name)
        if value is None:
            continue
        if name in sampling:
            body[name] = value
        else:
            warnings.append(f"{name} is not supported by {dialect.name} and was not sent")
    if request.stop_sequences:
        if "stop" in sampling:
            body["stop"] = list(request.stop_sequences)
        else:
            warnings.append(f"stop_sequences is not supported by {dialect.name} and was not sent")
    if request.max_tokens is not None:
        body[dialect.max_tokens_field] = request.max_tokens
    if request.tools:
        body["tools"] = [encode_tool(t) for t in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = encode_tool_choice(request.tool_choice)
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
        body.update(request.options)
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


def map_usage(u: Mapping[str, Any]) -> Usage:
    """Chat Completions ``usage`` to :class:`Usage` (``prompt_tokens`` includes cached)."""
    pd = u.get("prompt_tokens_details") or {}
    cd = u.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=u.get("prompt_tokens"),
        output_tokens=u.get("completion_tokens"),
        cached_input_tokens=pd.get("cached_tokens"),
        reasoning_tokens=cd.get("reasoning_tokens"),
        total_tokens=u.get("total_tokens"),
    )


def error_from_body(provider: str, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
    """An OpenAI-shaped error body (``{"error": {"message", "type", "code"}}``) as a typed error."""
    message = ""
    code: str | None = None
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or "")
        c = err.get("code")
        t = err.get("type")
        code = str(c) if isinstance(c, str) else (str(t) if t else None)
        if isinstance(t, str) and isinstance(c, str):
            code = f"{c} {t}"
    elif isinstance(err, str):
        message = err
    elif isinstance(data, dict) and isinstance(data.get("message"), str):
        message = data["message"]
    else:
        message = body[:500].decode("utf-8", "replace")
    lower = {k.lower(): v for k, v in headers.items()}
    e = from_status(
        status,
        message or f"HTTP {status}",
        provider=provider,
        code=code,
        retry_after=parse_retry_after(headers),
        request_id=lower.get("x-request-id"),
    )
    # A request larger than the per-minute token limit can never succeed by waiting.
    if status == 429 and message.lower().startswith("request too large"):
        e = AdapterError(
            e.message,
            reason="context_length_exceeded",
            provider=provider,
            status=status,
            retry_after=e.retry_after,
            request_id=e.request_id,
        )
    return e


class ChatDecoder(SSEStreamDecoder):
    """Incremental decoder of a ``chat.completion.chunk`` SSE stream.

    Tool calls are tracked by ``index``; an id and name may arrive on the first
    fragment, later, or never (a deterministic id is made then). The stream must
    end with ``data: [DONE]``; ending without it is a ``malformed_response`` error.
    """

    __slots__ = ("_asm", "_dialect", "_finish", "_raw", "_refused")

    terminal_marker = "data: [DONE]"

    def __init__(self, provider: str, dialect: Dialect, warnings: tuple[str, ...] = (), include_raw: bool = False):
        super().__init__(provider)
        self._dialect = dialect
        self._asm = Assembler(provider, warnings)
        self._finish: str | None = None
        self._refused = False
        self._raw = include_raw

    def _on_items(self, items: list[tuple[str | None, bytes]], out: list[Event]) -> None:
        # One loop for feed and close, the per-chunk work inline: it runs once per streamed chunk.
        for _name, data in items:
            if data == b"[DONE]":
                self.finished = True
                finish = "content_filter" if self._refused else map_finish_reason(self._finish)
                out.extend(self._asm.finish(finish, self._finish))
                return
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                self._fail(out, malformed(self.provider, f"a stream chunk is not valid JSON: {exc}"))
                return
            try:
                self._on_chunk(obj, out)
            except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
                self._fail(out, malformed(self.provider, f"unexpected chunk shape ({type(exc).__name__}: {exc})"))
            if self.finished:
                return

    def _on_chunk(self, obj: Any, out: list[Event]) -> None:
        asm = self._asm
        if not isinstance(obj, dict):
            raise TypeError("chunk is not a JSON object")
        if not asm.started:
            if "error" in obj:
                self._fail(out, _stream_error(self.provider, obj["error"]))
                return
            out.extend(asm.start(obj.get("id"), obj.get("model")))
        if self._raw:
            out.append(RawChunk(obj))
        choices = obj.get("choices")
        if choices:
            ch = choices[0]
            if ch.get("index", 0) == 0:
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
                fr = ch.get("finish_reason")
                if fr:
                    self._finish = fr
        elif "error" in obj:
            self._fail(out, _stream_error(self.provider, obj["error"]))
            return
        u = obj.get("usage")
        if u:
            out.append(asm.add_usage(map_usage(u)))

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


def _stream_error(provider: str, err: Any) -> AdapterError:
    if isinstance(err, dict):
        msg = str(err.get("message") or "error in stream")
        code = err.get("code")
        t = err.get("type")
        status = code if isinstance(code, int) else None
        codes = " ".join(str(x) for x in (code, t) if isinstance(x, str))
        return from_status(status or 500, msg, provider=provider, code=codes or None)
    return AdapterError(str(err), reason="unknown", provider=provider)


def decode_body(provider: str, dialect: Dialect, body: bytes, warnings: tuple[str, ...] = (), include_raw: bool = False) -> list[Event]:
    """A non-streaming ``chat.completion`` body as the same events a stream gives."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [Error(malformed(provider, f"the response body is not valid JSON: {exc}"))]
    asm = Assembler(provider, warnings)
    out: list[Event] = []
    try:
        if not isinstance(obj, dict):
            raise TypeError("body is not a JSON object")
        if "error" in obj and not obj.get("choices"):
            return [Error(_stream_error(provider, obj["error"]))]
        out.extend(asm.start(obj.get("id"), obj.get("model")))
        if include_raw:
            out.append(RawChunk(obj))
        finish: str | None = None
        refused = False
        choices = obj.get("choices") or []
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
            finish = ch.get("finish_reason")
            refused = bool(refusal) and not msg.get("content")
        u = obj.get("usage")
        if u:
            out.append(asm.add_usage(map_usage(u)))
        out.extend(asm.finish("content_filter" if refused else map_finish_reason(finish), finish))
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        out.append(Error(malformed(provider, f"unexpected body shape ({type(exc).__name__}: {exc})")))
    return out


def _vector(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        arr = array("f")
        arr.frombytes(base64.b64decode(value))
        if sys.byteorder != "little":
            arr.byteswap()
        return tuple(arr)
    return tuple(float(x) for x in value)


# ------------------------------------------------------------------------------ adapters


def check_endpoint(owner: str, dialect: Dialect, base_url: str | None, headers: Mapping[str, str]) -> None:
    """Raise ``ValueError`` when there is no base URL, or a key was put in ``headers``."""
    if not (base_url or dialect.base_url):
        raise ValueError(f"{owner}(dialect={dialect.name!r}) needs base_url=")
    for k in headers:
        if k.lower() in ("authorization", "x-api-key", "api-key"):
            raise ValueError("do not put a key in headers=: pass api_key= or use allm.keys")


class _ChatAdapter:
    """Shared behaviour of :class:`OpenAI` and :class:`OpenAICompatible` (Chat Completions)."""

    __slots__ = ()

    def _dialect(self) -> Dialect:
        raise NotImplementedError

    def _base_url(self) -> str:
        raise NotImplementedError

    def _extra_headers(self) -> dict[str, str]:
        return {}

    @property
    def key_spec(self) -> KeySpec:
        d = self._dialect()
        return KeySpec(d.provider, d.key_env, d.key_required)

    @property
    def provider(self) -> str:
        return self._dialect().provider

    def encode(self, request: Request, *, stream: bool) -> HttpCall:
        d = self._dialect()
        body, warnings = encode_body(request, d, stream=stream)
        headers = {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"}
        headers.update(d.headers)
        headers.update(self._extra_headers())
        return HttpCall(
            "POST",
            self._base_url().rstrip("/") + "/chat/completions",
            headers,
            orjson.dumps(body),
            stream,
            d.provider,
            request.model,
            tuple(warnings),
        )

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def decoder(self, call: HttpCall, *, include_raw: bool = False) -> Decoder:
        return ChatDecoder(call.provider, self._dialect(), call.warnings, include_raw)

    def decode_body(self, call: HttpCall, body: bytes, *, include_raw: bool = False) -> list[Event]:
        return decode_body(call.provider, self._dialect(), body, call.warnings, include_raw)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        return error_from_body(self._dialect().provider, status, headers, body)

    # -- embeddings (POST /embeddings), https://platform.openai.com/docs/api-reference/embeddings

    embed_batch_size = 2048

    def encode_embed(self, texts: Sequence[str], *, model: str, dimensions: int | None = None) -> HttpCall:
        d = self._dialect()
        body: dict[str, Any] = {"model": model, "input": list(texts), "encoding_format": "base64"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        headers = {"content-type": "application/json", "accept": "application/json", **d.headers, **self._extra_headers()}
        return HttpCall("POST", self._base_url().rstrip("/") + "/embeddings", headers, orjson.dumps(body), False, d.provider, model)

    def decode_embed(self, body: bytes) -> Embeddings:
        """An ``embedding`` list (float arrays or base64 little-endian float32) in input order."""
        provider = self._dialect().provider
        try:
            data = orjson.loads(body)
            items = sorted(data["data"], key=lambda x: x.get("index", 0))
            vectors = tuple(_vector(it["embedding"]) for it in items)
            u = data.get("usage") or {}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise malformed(provider, f"unexpected embeddings body ({type(exc).__name__}: {exc})") from None
        usage = Usage(input_tokens=u.get("prompt_tokens"), total_tokens=u.get("total_tokens"))
        return Embeddings(vectors, data.get("model"), usage)

    # -- models list (GET /models)

    def encode_list_models(self) -> HttpCall:
        d = self._dialect()
        return HttpCall("GET", self._base_url().rstrip("/") + "/models", {"accept": "application/json", **d.headers, **self._extra_headers()}, None, False, d.provider)

    def decode_list_models(self, body: bytes) -> list[str]:
        """Model ids of a ``{"data": [{"id": ...}, ...]}`` body; raises ``malformed_response``."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise malformed(self._dialect().provider, f"the model list is not valid JSON: {exc}") from None
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise malformed(self._dialect().provider, "a model list has no data array")
        return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]

    # -- images (POST /images/...), https://platform.openai.com/docs/api-reference/images

    image_operations = frozenset({"generate", "edit", "variations"})

    def encode_image(self, operation: str, request: ImageRequest) -> HttpCall:
        """One Images API call (see :mod:`allm.providers.openai_images`)."""
        from .openai_images import encode_image_call

        d = self._dialect()
        return encode_image_call(self._base_url(), {**d.headers, **self._extra_headers()}, d.provider, operation, request)

    def decode_image(self, call: HttpCall, body: bytes) -> ImageResponse:
        from .openai_images import decode_images

        return decode_images(call, body)

    def image_error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        """:meth:`error`, with a moderation refusal of an image as ``content_filter``."""
        from .openai_images import refine_error

        return refine_error(self.error(status, headers, body), body)


# Model families that are reasoning-first: served by the Responses API, which carries their
# reasoning between turns (o1, o3, o4-mini, gpt-5*, codex-mini, computer-use-preview...).
_RESPONSES_MODELS = re.compile(r"(?:o\d+|gpt-5|codex|computer-use)(?![a-z0-9])")


def prefers_responses(model: str | None) -> bool:
    """Whether ``OpenAI(api="auto")`` sends ``model`` to the Responses API.

    The rule: after an optional ``ft:`` (fine-tune) prefix and ``owner/`` prefix, the
    name starts with ``o<digits>`` (``o1``, ``o3-mini``, ``o4-mini-deep-research``),
    ``gpt-5`` (``gpt-5``, ``gpt-5.1``, ``gpt-5-nano``, ``gpt-5-codex``), ``codex``
    (``codex-mini-latest``) or ``computer-use``, followed by the end of the name or
    a separator. Everything else (``gpt-4.1``, ``gpt-4o``, ``gpt-3.5-turbo``,
    ``omni-moderation-latest``...) goes to Chat Completions.
    """
    if not model:
        return False
    m = model.lower()
    if m.startswith("ft:"):
        m = m[3:]
    m = m.rsplit("/", 1)[-1]
    return _RESPONSES_MODELS.match(m) is not None


def _is_responses_call(call: HttpCall) -> bool:
    return call.url.endswith("/responses")


_APIS = ("auto", "chat", "responses")


@attrs.frozen
class OpenAI(_ChatAdapter):
    """The OpenAI API. Key: ``OPENAI_API_KEY`` (provider ``openai``).

    ``organization`` and ``project`` become the ``OpenAI-Organization`` and
    ``OpenAI-Project`` headers.

    ``api`` picks the wire API per call: ``"auto"`` (the default) sends reasoning-first
    models (see :func:`prefers_responses`: o-series, gpt-5*, codex, computer-use) to
    the Responses API (``POST /responses``, :class:`~allm.providers.openai_responses.OpenAIResponses`)
    and every other model to Chat Completions (``POST /chat/completions``);
    ``"chat"`` and ``"responses"`` force one. ``store``, ``reasoning_effort`` and
    ``reasoning_summary`` configure the Responses calls (see ``OpenAIResponses``);
    ``reasoning_effort``, when set, is also sent as Chat Completions'
    ``reasoning_effort``. Which API a call was encoded for is read back from its
    URL, so ``decoder``/``decode_body`` always match ``encode``; both APIs share the
    same error body shape.
    """

    base_url: str = "https://api.openai.com/v1"
    organization: str | None = None
    project: str | None = None
    api: Literal["auto", "chat", "responses"] = attrs.field(default="auto", validator=attrs.validators.in_(_APIS))
    store: bool | None = False
    reasoning_effort: str | None = None
    reasoning_summary: str | None = None

    def _dialect(self) -> Dialect:
        return DIALECTS["openai"]

    def _base_url(self) -> str:
        return self.base_url

    def _extra_headers(self) -> dict[str, str]:
        h = {}
        if self.organization:
            h["openai-organization"] = self.organization
        if self.project:
            h["openai-project"] = self.project
        return h

    def api_for(self, model: str | None) -> Literal["chat", "responses"]:
        """``"chat"`` or ``"responses"``: the API a call for ``model`` uses."""
        if self.api == "auto":
            return "responses" if prefers_responses(model) else "chat"
        return self.api

    def responses(self) -> OpenAIResponses:
        """The Responses adapter this one delegates to (same URL, headers and settings)."""
        from .openai_responses import OpenAIResponses

        return OpenAIResponses(
            self.base_url, self.organization, self.project, self.store, self.reasoning_effort, self.reasoning_summary
        )

    def encode(self, request: Request, *, stream: bool) -> HttpCall:
        if self.api_for(request.model) == "responses":
            return self.responses().encode(request, stream=stream)
        if self.reasoning_effort is not None and "reasoning_effort" not in request.options:
            request = attrs.evolve(request, options={"reasoning_effort": self.reasoning_effort, **request.options})
        return super().encode(request, stream=stream)

    def decoder(self, call: HttpCall, *, include_raw: bool = False) -> Decoder:
        if _is_responses_call(call):
            return self.responses().decoder(call, include_raw=include_raw)
        return super().decoder(call, include_raw=include_raw)

    def decode_body(self, call: HttpCall, body: bytes, *, include_raw: bool = False) -> list[Event]:
        if _is_responses_call(call):
            return self.responses().decode_body(call, body, include_raw=include_raw)
        return super().decode_body(call, body, include_raw=include_raw)


@attrs.frozen
class OpenAICompatible(_ChatAdapter):
    """Any server that speaks Chat Completions: a dialect name or :class:`Dialect`, and a base URL.

    Dialects: ``"generic"`` (the default; needs ``base_url``), ``"openrouter"``,
    ``"ollama"``, ``"llama.cpp"``, ``"vllm"``. ``headers`` are added to every
    call (never put a key there: use ``api_key=`` or :mod:`allm.keys`).
    """

    base_url: str | None = None
    dialect: str | Dialect = "generic"
    headers: Mapping[str, str] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        check_endpoint("OpenAICompatible", self._dialect(), self.base_url, self.headers)

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

    def _dialect(self) -> Dialect:
        d = self.dialect
        if isinstance(d, Dialect):
            return d
        try:
            return DIALECTS[d]
        except KeyError:
            raise ValueError(f"unknown dialect {d!r}; known: {sorted(DIALECTS)}") from None

    def _base_url(self) -> str:
        url = self.base_url or self._dialect().base_url
        assert url is not None
        return url

    def _extra_headers(self) -> dict[str, str]:
        return dict(self.headers)
