"""The :class:`Anthropic` adapter: the Messages API (``POST /v1/messages``), and servers that speak it.

The same adapter talks to any server that implements ``/v1/messages`` (llama.cpp's
``llama-server``, gateways) through ``base_url``. Encoding:
:mod:`~allm.providers.anthropic.encode`; decoding: :mod:`~allm.providers.anthropic.decode`;
errors: :mod:`~allm.providers.anthropic.errors`. Sans-IO.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ...errors import AdapterError
from ...events import Event
from ...types import CallWarning, Request
from .._wire import check_base_url, join_url, json_body, model_ids, token_count
from ..base import HttpCall, KeySpec
from ..media import ANTHROPIC_IMAGES, check_request_size
from .decode import MessagesDecoder, decode_body
from .encode import (
    ANTHROPIC_BASE_URL,
    ANTHROPIC_VERSION,
    CACHE_TTLS,
    DEFAULT_MAX_TOKENS,
    encode_body,
    parse_betas,
)
from .errors import PROVIDER, error_from_body

__all__ = ["Anthropic"]


def _join_betas(*groups: tuple[str, ...]) -> str:
    seen: dict[str, None] = {}
    for g in groups:
        for b in g:
            seen.setdefault(b, None)
    return ",".join(seen)


@attrs.frozen
class Anthropic:
    """The Anthropic Messages API (or any server that speaks it, via ``base_url``).

    - ``base_url``: ``https://api.anthropic.com/v1``; ``/messages`` and ``/models``
      are appended.
    - ``version``: the ``anthropic-version`` header (``2023-06-01``).
    - ``beta``: beta names joined into one ``anthropic-beta`` header (a request
      adds its own with ``options={"anthropic_beta": [...]}``).
    - ``default_max_tokens``: ``max_tokens`` when a request sets none (4096; the
      API requires the field). With thinking on, the thinking budget is added to it.
    - ``thinking_budget``: extended thinking, ``{"type": "enabled",
      "budget_tokens": N}`` (tokens; the API's minimum is 1024). A request may send
      its own with ``options={"thinking": {...}}``.
    - ``cache_control``: automatic prompt caching (a top-level ``cache_control:
      {"type": "ephemeral"}``; the API places the breakpoint on the last cacheable
      block); ``cache_ttl``: ``"5m"`` or ``"1h"``. Explicit breakpoints: put
      ``{"anthropic": {"cache_control": {"type": "ephemeral"}}}`` in a message's or
      tool's ``metadata`` (at most 4 per request, the API's limit).
    - ``key_required``: ``None`` (the default) means a key is required for the
      official ``base_url`` and optional elsewhere (a local ``llama-server`` needs
      none). The key (provider ``anthropic``, env ``ANTHROPIC_API_KEY``) goes in the
      ``x-api-key`` header; note that for another ``base_url`` an
      ``ANTHROPIC_API_KEY`` found in the environment is sent there too.
    """

    base_url: str = ANTHROPIC_BASE_URL
    version: str = ANTHROPIC_VERSION
    beta: tuple[str, ...] = attrs.field(default=(), converter=parse_betas)
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    thinking_budget: int | None = None
    cache_control: bool = False
    cache_ttl: str | None = None
    key_required: bool | None = None

    def __attrs_post_init__(self) -> None:
        if self.default_max_tokens < 1:
            raise ValueError("default_max_tokens must be at least 1")
        if self.thinking_budget is not None and self.thinking_budget < 1:
            raise ValueError("thinking_budget must be a positive number of tokens")
        if self.cache_ttl not in CACHE_TTLS:
            raise ValueError(f"cache_ttl must be '5m' or '1h', not {self.cache_ttl!r}")
        check_base_url(type(self).__name__, self.base_url)

    # -- identity and keys

    @property
    def provider(self) -> str:
        return PROVIDER

    @property
    def official(self) -> bool:
        """Whether ``base_url`` is Anthropic's own API."""
        return self.base_url.rstrip("/") == ANTHROPIC_BASE_URL

    @property
    def key_spec(self) -> KeySpec:
        required = self.official if self.key_required is None else self.key_required
        return KeySpec(PROVIDER, ("ANTHROPIC_API_KEY",), required)

    def auth_headers(self, key: str | None) -> dict[str, str]:
        """``{"x-api-key": key}``, or nothing without a key."""
        return {"x-api-key": key} if key else {}

    def _headers(self, accept: str, extra_betas: tuple[str, ...] = ()) -> dict[str, str]:
        h = {"accept": accept, "anthropic-version": self.version}
        betas = _join_betas(self.beta, extra_betas)
        if betas:
            h["anthropic-beta"] = betas
        return h

    def _url(self, path: str) -> str:
        """``path`` joined to ``base_url``, whose query string is kept."""
        return join_url(self.base_url, path)

    # -- requests

    def encode_body(self, request: Request, *, stream: bool) -> tuple[dict[str, Any], list[CallWarning], tuple[str, ...]]:
        """``(body, warnings, betas from the request)`` for ``POST /messages`` with this adapter's
        settings (see :func:`~allm.providers.anthropic.encode.encode_body`)."""
        return encode_body(
            request,
            stream=stream,
            default_max_tokens=self.default_max_tokens,
            thinking_budget=self.thinking_budget,
            cache_control=self.cache_control,
            cache_ttl=self.cache_ttl,
        )

    def encode(self, request: Request, *, stream: bool) -> HttpCall:
        """``POST {base_url}/messages`` for ``request`` (no key: see :meth:`auth_headers`)."""
        body, warnings, betas = self.encode_body(request, stream=stream)
        headers = {"content-type": "application/json", **self._headers("text/event-stream" if stream else "application/json", betas)}
        data = json_body(body)
        check_request_size(len(data), request.messages, ANTHROPIC_IMAGES)
        return HttpCall("POST", self._url("/messages"), headers, data, stream, PROVIDER, request.model, tuple(warnings))

    def decoder(self, call: HttpCall, *, include_raw: bool = False) -> MessagesDecoder:
        return MessagesDecoder(call.warnings, include_raw, call.provider)

    def decode_body(self, call: HttpCall, body: bytes, *, include_raw: bool = False) -> list[Event]:
        return decode_body(body, call.warnings, include_raw, call.provider)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        return error_from_body(status, headers, body, PROVIDER)

    # -- models (GET /models), https://docs.anthropic.com/en/api/models-list

    def encode_list_models(self) -> HttpCall:
        """``GET {base_url}/models?limit=1000`` (one page holds every model)."""
        return HttpCall("GET", self._url("/models?limit=1000"), self._headers("application/json"), None, False, PROVIDER)

    def decode_list_models(self, body: bytes) -> list[str]:
        """Model ids of a ``{"data": [{"id": ...}, ...]}`` body; raises ``malformed_response``."""
        return model_ids(PROVIDER, body)

    # -- token counting (POST /messages/count_tokens), https://docs.anthropic.com/en/api/messages-count-tokens

    def encode_count_tokens(self, request: Request, model: str | None = None) -> HttpCall:
        """``POST {base_url}/messages/count_tokens``: the input tokens ``request`` would use.

        The body is the one :meth:`encode` sends, kept to the fields the endpoint takes
        (``model``, ``system``, ``messages``, ``tools``, ``tool_choice``, ``thinking``);
        ``model`` wins over ``request.model``.
        """
        if model is not None:
            request = attrs.evolve(request, model=model)
        body, _warnings, betas = self.encode_body(request, stream=False)
        keep = ("model", "system", "messages", "tools", "tool_choice", "thinking")
        counted = {k: body[k] for k in keep if k in body}
        headers = {"content-type": "application/json", **self._headers("application/json", betas)}
        return HttpCall("POST", self._url("/messages/count_tokens"), headers, json_body(counted), False, PROVIDER, request.model)

    def decode_count_tokens(self, body: bytes) -> int:
        """``input_tokens`` of a ``{"input_tokens": N}`` body; raises ``malformed_response``."""
        return token_count(PROVIDER, body)
