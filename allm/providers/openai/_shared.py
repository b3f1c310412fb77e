"""What every OpenAI-shaped adapter shares: dialects as data, errors, tool choice, and the
endpoints beside generation (``/models``, ``/embeddings``, ``/images/...``).

Follows https://platform.openai.com/docs/api-reference (the error object, ``GET /models``,
``POST /embeddings``). OpenAI-compatible servers differ as *data* (:class:`Dialect`):
base URL, where the key comes from, which sampling fields exist, whether usage must be
asked for with ``stream_options``, where reasoning text arrives. Sans-IO.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import orjson

from ... import codec
from ...errors import AdapterError, from_status, parse_retry_after
from ...types import (
    CallWarning,
    Embeddings,
    ImagePart,
    ImageRequest,
    ImageResponse,
    Message,
    Request,
    TextPart,
    Usage,
)
from .._wire import (
    SHAPE_ERRORS,
    check_base_url,
    dropped,
    error_body,
    header,
    join_url,
    json_body,
    json_headers,
    malformed,
    model_ids,
    usage_count,
)
from ..base import HttpCall, KeySpec

__all__ = [
    "DIALECTS",
    "CompatibleServer",
    "Dialect",
    "OpenAIEndpoints",
    "check_endpoint",
    "content_parts",
    "dialect_of",
    "encode_prompt_cache",
    "encode_tool_choice",
    "error_from_body",
    "org_headers",
    "stream_error",
]

_OPENAI_SAMPLING = frozenset({"temperature", "top_p", "seed", "frequency_penalty", "presence_penalty", "stop"})


@attrs.frozen
class Dialect:
    """What distinguishes one OpenAI-compatible server from another, as data.

    - ``provider``: the name used by the key chain (``allm.keys``).
    - ``sampling``: the :class:`~allm.types.Request` sampling fields this server
      accepts (``temperature``, ``top_p``, ``top_k``, ``seed``,
      ``frequency_penalty``, ``presence_penalty``, ``stop``), and the sampler settings
      given in ``Request.options`` it accepts (``min_p``, ``repetition_penalty``); others
      are dropped with a warning.
    - ``max_tokens_field``: ``max_tokens`` or ``max_completion_tokens``.
    - ``stream_usage``: send ``stream_options.include_usage`` when streaming.
    - ``reasoning_fields``: delta/message fields that carry reasoning text.
    - ``prompt_cache``: the server takes ``prompt_cache_key`` / ``prompt_cache_retention``
      (OpenAI); elsewhere a request's :class:`~allm.types.PromptCache` is dropped with a
      warning.
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
    prompt_cache: bool = False
    renames: Mapping[str, str] = attrs.field(factory=dict)
    """Wire names of accepted settings that this server spells its own way."""


_WITH_TOP_K = _OPENAI_SAMPLING | {"top_k"}
# llama.cpp, vLLM and OpenRouter sample with top_k, min_p and a repetition penalty; Ollama's
# OpenAI-compatible endpoint reads none of them (its Modelfile sets them).
_OPEN_SAMPLERS = _WITH_TOP_K | {"min_p", "repetition_penalty"}

DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (
        Dialect("openai", "openai", "https://api.openai.com/v1", ("OPENAI_API_KEY",), True,
                _OPENAI_SAMPLING, "max_completion_tokens", True, (), prompt_cache=True),
        Dialect("openrouter", "openrouter", "https://openrouter.ai/api/v1", ("OPENROUTER_API_KEY",), True,
                _OPEN_SAMPLERS, "max_tokens", True, ("reasoning",)),
        Dialect("ollama", "ollama", "http://127.0.0.1:11434/v1", ("OLLAMA_API_KEY",), False,
                _OPENAI_SAMPLING, "max_tokens", True, ("reasoning",)),
        Dialect("llama.cpp", "llama_cpp", "http://127.0.0.1:8080/v1", ("LLAMA_API_KEY",), False,
                _OPEN_SAMPLERS, "max_tokens", True, ("reasoning_content",),
                renames={"repetition_penalty": "repeat_penalty"}),
        Dialect("vllm", "vllm", "http://127.0.0.1:8000/v1", ("VLLM_API_KEY",), False,
                _OPEN_SAMPLERS, "max_tokens", True, ("reasoning_content", "reasoning")),
        Dialect("generic", "openai_compatible", None, ("OPENAI_COMPATIBLE_API_KEY",), False),
    )
}


def dialect_of(dialect: str | Dialect) -> Dialect:
    """A :class:`Dialect`, or the one of :data:`DIALECTS` named ``dialect`` (``ValueError`` for none)."""
    if isinstance(dialect, Dialect):
        return dialect
    try:
        return DIALECTS[dialect]
    except KeyError:
        raise ValueError(f"unknown dialect {dialect!r}; known: {sorted(DIALECTS)}") from None


def check_endpoint(owner: str, dialect: Dialect, base_url: str | None, headers: Mapping[str, str]) -> None:
    """Raise ``ValueError`` when there is no base URL, or a key was put in ``headers``;
    :class:`~allm.errors.ValidationError` for a base URL that is not a clean absolute URL
    (see :func:`~allm.providers._wire.check_base_url`)."""
    url = base_url or dialect.base_url
    if not url:
        raise ValueError(f"{owner}(dialect={dialect.name!r}) needs base_url=")
    check_base_url(owner, url)
    for k in headers:
        if k.lower() in ("authorization", "x-api-key", "api-key"):
            raise ValueError("do not put a key in headers=: pass api_key= or use allm.keys")


def org_headers(organization: str | None, project: str | None) -> dict[str, str]:
    """The ``OpenAI-Organization`` / ``OpenAI-Project`` headers of those that are set."""
    h = {}
    if organization:
        h["openai-organization"] = organization
    if project:
        h["openai-project"] = project
    return h


def encode_tool_choice(choice: str) -> str | dict[str, Any]:
    """``auto`` / ``none`` / ``required`` as they are; a tool name as Chat Completions' function choice."""
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


# PromptCache.retention -> OpenAI's prompt_cache_retention ("in_memory" keeps a prefix 5 to 10
# minutes, at most an hour; "24h" up to a day): https://platform.openai.com/docs/guides/prompt-caching
_RETENTION = {"5m": "in_memory", "1h": "24h", "24h": "24h"}


def encode_prompt_cache(
    request: Request, dialect: Dialect, body: dict[str, Any], warnings: list[CallWarning], by: str
) -> None:
    """A request's :class:`~allm.types.PromptCache` as ``prompt_cache_key`` and
    ``prompt_cache_retention`` (``"5m"`` -> ``"in_memory"``; ``"1h"`` and ``"24h"`` ->
    ``"24h"``, the shortest OpenAI retention that keeps a prefix that long), for a dialect
    that takes them; else a ``dropped_setting`` warning naming ``by``."""
    pc = request.prompt_cache
    if pc is None:
        return
    if not dialect.prompt_cache:
        warnings.append(dropped("prompt_cache", dialect.provider, by))
        return
    if pc.key is not None:
        body["prompt_cache_key"] = pc.key
    if pc.retention is not None:
        body["prompt_cache_retention"] = _RETENTION[pc.retention]


def content_parts(
    msg: Message, text: Callable[[str], dict[str, Any]], image: Callable[[ImagePart], dict[str, Any]]
) -> str | list[dict[str, Any]]:
    """A message's content as the OpenAI APIs take it: its text when it has no image, else
    its parts built by ``text`` and ``image``. Reasoning parts are not sent back."""
    c = msg.content
    if isinstance(c, str):
        return c
    if not any(type(p) is ImagePart for p in c):
        return "".join(p.text for p in c if type(p) is TextPart)
    out: list[dict[str, Any]] = []
    for p in c:
        if type(p) is TextPart:
            out.append(text(p.text))
        elif type(p) is ImagePart:
            out.append(image(p))
    return out


# ------------------------------------------------------------------------------ errors


def error_from_body(provider: str, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
    """An OpenAI-shaped error body (``{"error": {"message", "type", "code"}}``) as a typed error.

    The reason comes from the status (:func:`~allm.errors.from_status`); a 429 whose
    message starts "Request too large" (over the per-minute token limit, which waiting
    cannot fix) is ``context_length_exceeded``. ``retry_after`` from ``retry-after-ms`` /
    ``retry-after``; ``request_id`` from ``x-request-id``.
    """
    _data, err, message = error_body(body)
    c = err.get("code")
    t = err.get("type")
    code = str(c) if isinstance(c, str) else (str(t) if t else None)
    if isinstance(t, str) and isinstance(c, str):
        code = f"{c} {t}"
    e = from_status(
        status,
        message or f"HTTP {status}",
        provider=provider,
        code=code,
        retry_after=parse_retry_after(headers),
        request_id=header(headers, "x-request-id"),
    )
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


def stream_error(provider: str, err: Any) -> AdapterError:
    """An ``{"error": {...}}`` chunk (or body) of a Chat Completions stream as a typed error."""
    if isinstance(err, dict):
        msg = str(err.get("message") or "error in stream")
        code = err.get("code")
        t = err.get("type")
        status = code if isinstance(code, int) else None
        codes = " ".join(str(x) for x in (code, t) if isinstance(x, str))
        return from_status(status or 500, msg, provider=provider, code=codes or None)
    return AdapterError(str(err), reason="unknown", provider=provider)


# ------------------------------------------------------------------------------ endpoints


def _vector(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        arr = array("f")
        arr.frombytes(base64.b64decode(value))
        if sys.byteorder != "little":
            arr.byteswap()
        return tuple(arr)
    return tuple(float(x) for x in value)


class OpenAIEndpoints:
    """Keys, errors, ``/models``, ``/embeddings`` and ``/images/...`` of an OpenAI-shaped server.

    Shared by the Chat Completions and Responses adapters; a subclass says which
    server through ``_dialect()``, ``_base_url()`` and ``_extra_headers()``.
    """

    __slots__ = ()

    def _dialect(self) -> Dialect:
        raise NotImplementedError

    def _base_url(self) -> str:
        raise NotImplementedError

    def _extra_headers(self) -> dict[str, str]:
        return {}

    def _url(self, path: str) -> str:
        """``path`` joined to the base URL, whose query string (``?api-version=...``) is kept."""
        return join_url(self._base_url(), path)

    def _headers(self, stream: bool) -> dict[str, str]:
        """JSON headers, then the dialect's, then the adapter's own."""
        return {**json_headers(stream), **self._dialect().headers, **self._extra_headers()}

    @property
    def key_spec(self) -> KeySpec:
        d = self._dialect()
        return KeySpec(d.provider, d.key_env, d.key_required)

    @property
    def provider(self) -> str:
        return self._dialect().provider

    def auth_headers(self, key: str | None) -> dict[str, str]:
        """``Authorization: Bearer <key>``, or nothing without a key."""
        return {"authorization": f"Bearer {key}"} if key else {}

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        """An HTTP error as a typed error (see :func:`error_from_body`)."""
        return error_from_body(self._dialect().provider, status, headers, body)

    # -- models (GET /models)

    def encode_list_models(self) -> HttpCall:
        """``GET {base_url}/models``."""
        h = {"accept": "application/json", **self._dialect().headers, **self._extra_headers()}
        return HttpCall("GET", self._url("/models"), h, None, False, self.provider)

    def decode_list_models(self, body: bytes) -> list[str]:
        """Model ids of a ``{"data": [{"id": ...}, ...]}`` body; raises ``malformed_response``."""
        return model_ids(self.provider, body)

    # -- embeddings (POST /embeddings), https://platform.openai.com/docs/api-reference/embeddings

    embed_batch_size = 2048

    def encode_embed(self, texts: Sequence[str], *, model: str, dimensions: int | None = None) -> HttpCall:
        """``POST {base_url}/embeddings`` asking for base64 vectors (a quarter of the bytes of floats)."""
        body: dict[str, Any] = {"model": model, "input": list(texts), "encoding_format": "base64"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        return HttpCall("POST", self._url("/embeddings"), self._headers(False), json_body(body), False, self.provider, model)

    def decode_embed(self, body: bytes) -> Embeddings:
        """An ``embedding`` list (float arrays or base64 little-endian float32) in input order."""
        try:
            data = orjson.loads(body)
            items = sorted(data["data"], key=lambda x: x.get("index", 0))
            vectors = tuple(_vector(it["embedding"]) for it in items)
            u = data.get("usage") or {}
        except (orjson.JSONDecodeError, *SHAPE_ERRORS) as exc:
            raise malformed(self.provider, f"unexpected embeddings body ({type(exc).__name__}: {exc})") from None
        u = u if isinstance(u, Mapping) else {}
        usage = Usage(input_tokens=usage_count(u, "prompt_tokens"), total_tokens=usage_count(u, "total_tokens"))
        return Embeddings(vectors, data.get("model"), usage)

    # -- images (POST /images/...), https://platform.openai.com/docs/api-reference/images

    image_operations = frozenset({"generate", "edit", "variations"})

    def encode_image(self, operation: str, request: ImageRequest) -> HttpCall:
        """One Images API call (see :mod:`allm.providers.openai.images`)."""
        from .images import encode_image_call

        headers = {**self._dialect().headers, **self._extra_headers()}
        return encode_image_call(self._base_url(), headers, self.provider, operation, request)

    def decode_image(self, call: HttpCall, body: bytes) -> ImageResponse:
        from .images import decode_images

        return decode_images(call, body)

    def image_error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        """:meth:`error`, with a moderation refusal of an image as ``content_filter``."""
        from .images import refine_error

        return refine_error(self.error(status, headers, body), body)


class CompatibleServer(OpenAIEndpoints):
    """An adapter configured by ``base_url``, ``dialect`` and ``headers`` (attrs fields of
    the subclass): it checks them when built (:func:`check_endpoint`)."""

    __slots__ = ()

    base_url: str | None
    dialect: str | Dialect
    headers: Mapping[str, str]

    def __attrs_post_init__(self) -> None:
        check_endpoint(type(self).__name__, self._dialect(), self.base_url, self.headers)

    def _dialect(self) -> Dialect:
        return dialect_of(self.dialect)

    def _base_url(self) -> str:
        return self.base_url or self._dialect().base_url or ""


# A dialect given as a value is stored inside the adapter; a named one as its name.
codec.register(
    str | Dialect,
    unstructure=lambda v: v if isinstance(v, str) else {"dialect": codec.unstructure(v, Dialect)},
    structure=lambda v: v if isinstance(v, str) else codec.structure(v["dialect"], Dialect),
)
