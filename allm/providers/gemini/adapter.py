"""The :class:`Gemini` adapter: the Google Gemini API (``generateContent``,
``streamGenerateContent?alt=sse``, ``countTokens``, ``batchEmbedContents``, ``models``).

Encoding: :mod:`~allm.providers.gemini.encode`; decoding:
:mod:`~allm.providers.gemini.decode`; errors: :mod:`~allm.providers.gemini.errors`;
image output: :mod:`~allm.providers.gemini.images`. Follows
https://ai.google.dev/api/embeddings (``batchEmbedContents``),
https://ai.google.dev/api/models (``models.list``) and https://ai.google.dev/api/tokens
(``models.countTokens``). Sans-IO.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson

from ...errors import AdapterError, ValidationError
from ...events import Event
from ...types import CallWarning, Embeddings, ImageRequest, ImageResponse, Request, Usage
from .._wire import SHAPE_ERRORS, check_base_url, join_url, json_body, json_headers, malformed, model_ids, token_count
from ..base import HttpCall, KeySpec
from ..media import GEMINI_IMAGES, check_request_size
from .decode import GeminiDecoder, decode_body
from .encode import DEFAULT_BASE_URL, bare_model, encode_body, model_path
from .errors import PROVIDER, error_from_body
from .images import decode_image_body, encode_image_body

__all__ = ["Gemini"]


@attrs.frozen
class Gemini:
    """The Google Gemini API (``generativelanguage.googleapis.com``).

    Key: provider ``gemini``, environment ``GEMINI_API_KEY`` then ``GOOGLE_API_KEY``;
    sent as the ``x-goog-api-key`` header (never in the URL).

    - ``base_url``: API root including the version (``.../v1beta``).
    - ``thinking_budget``: ``thinkingConfig.thinkingBudget`` in tokens (``0`` turns
      thinking off on models that allow it, ``-1`` lets the model decide); Gemini 2.5.
    - ``thinking_level``: ``thinkingConfig.thinkingLevel`` (``"minimal"``, ``"low"``,
      ``"medium"``, ``"high"``); Gemini 3.
    - ``include_thoughts``: ``thinkingConfig.includeThoughts``; ``True`` streams
      thought summaries as reasoning events.

    Unset (``None``) settings are not sent. Model names are accepted with or
    without the ``models/`` prefix; :meth:`decode_list_models` returns them without.
    """

    base_url: str = DEFAULT_BASE_URL
    thinking_budget: int | None = None
    thinking_level: str | None = None
    include_thoughts: bool | None = None

    def __attrs_post_init__(self) -> None:
        check_base_url(type(self).__name__, self.base_url)

    @property
    def key_spec(self) -> KeySpec:
        return KeySpec(PROVIDER, ("GEMINI_API_KEY", "GOOGLE_API_KEY"), True)

    @property
    def provider(self) -> str:
        return PROVIDER

    def _url(self, path: str) -> str:
        """``path`` joined to ``base_url``, whose query string is kept."""
        return join_url(self.base_url, path)

    def _body(self, request: Request) -> tuple[dict[str, Any], list[CallWarning]]:
        return encode_body(
            request,
            thinking_budget=self.thinking_budget,
            thinking_level=self.thinking_level,
            include_thoughts=self.include_thoughts,
        )

    def encode(self, request: Request, *, stream: bool) -> HttpCall:
        """``POST {base}/models/{model}:generateContent`` (or ``:streamGenerateContent?alt=sse``).

        Raises :class:`~allm.errors.ValidationError` for input Gemini cannot take
        (see :func:`encode_contents`) or a malformed model name.
        """
        path = model_path(request.model)
        body, warnings = self._body(request)
        method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        headers = json_headers(stream)
        data = json_body(body)
        check_request_size(len(data), request.messages, GEMINI_IMAGES)
        return HttpCall(
            "POST",
            self._url(f"/{path}{method}"),
            headers,
            data,
            stream,
            PROVIDER,
            bare_model(path),
            tuple(warnings),
        )

    def auth_headers(self, key: str | None) -> dict[str, str]:
        """``{"x-goog-api-key": key}`` (the key never goes in the URL); ``{}`` without a key."""
        return {"x-goog-api-key": key} if key else {}

    def decoder(self, call: HttpCall, *, include_raw: bool = False) -> GeminiDecoder:
        """A fresh :class:`GeminiDecoder` for the SSE answer to ``call``."""
        return GeminiDecoder(call.provider, call.warnings, include_raw)

    def decode_body(self, call: HttpCall, body: bytes, *, include_raw: bool = False) -> list[Event]:
        """A ``generateContent`` body as events (see :func:`decode_body`)."""
        return decode_body(body, provider=call.provider, warnings=call.warnings, include_raw=include_raw)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        """An HTTP error response as a typed error (see :func:`error_from_body`)."""
        return error_from_body(PROVIDER, status, headers, body)

    # -- image output, https://ai.google.dev/gemini-api/docs/image-generation

    image_operations = frozenset({"generate", "edit"})

    def encode_image(self, operation: str, request: ImageRequest) -> HttpCall:
        """``POST {base}/models/{model}:generateContent`` asking for images (see :func:`encode_image_body`)."""
        path = model_path(request.model)
        body, warnings = encode_image_body(operation, request)
        data = json_body(body)
        cap = GEMINI_IMAGES.max_request_bytes
        if cap is not None and len(data) > cap:
            raise ValidationError(
                f"the request with its inline images is {len(data):,} bytes; Gemini accepts at most {cap:,} per request",
                reason="invalid_image",
            )
        return HttpCall(
            "POST", self._url(f"/{path}:generateContent"), json_headers(False), data, False, PROVIDER,
            bare_model(path), tuple(warnings),
        )

    def decode_image(self, call: HttpCall, body: bytes) -> ImageResponse:
        return decode_image_body(call, body)

    def image_error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        return self.error(status, headers, body)

    # -- models (GET /models), https://ai.google.dev/api/models#method:-models.list

    def encode_list_models(self) -> HttpCall:
        """``GET {base}/models?pageSize=1000`` (the documented maximum page, so one call lists all)."""
        return HttpCall("GET", self._url("/models?pageSize=1000"), {"accept": "application/json"}, None, False, PROVIDER)

    def decode_list_models(self, body: bytes) -> list[str]:
        """Model ids without the ``models/`` prefix (``"gemini-2.5-flash"``), as ``model=`` takes them.

        Every listed model is returned, whatever methods it supports. Raises
        :class:`~allm.errors.AdapterError` (``malformed_response``) for a body
        without a ``models`` array.
        """
        return [bare_model(m) for m in model_ids(PROVIDER, body, "models", "name")]

    # -- embeddings (POST {model}:batchEmbedContents), https://ai.google.dev/api/embeddings

    embed_batch_size = 100  # the API rejects more than 100 requests in one batch

    def encode_embed(self, texts: Sequence[str], *, model: str, dimensions: int | None = None) -> HttpCall:
        """One ``batchEmbedContents`` call: ``{"requests": [{"model", "content": {"parts": [{"text"}]},
        "outputDimensionality"?}, ...]}``. Raises :class:`~allm.errors.ValidationError` for a
        non-string text or a malformed model name."""
        path = model_path(model)
        requests: list[dict[str, Any]] = []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValidationError(f"texts[{i}] is {type(t).__name__}, not a string", reason="invalid_request")
            r: dict[str, Any] = {"model": path, "content": {"parts": [{"text": t}]}}
            if dimensions is not None:
                r["outputDimensionality"] = dimensions
            requests.append(r)
        return HttpCall(
            "POST",
            self._url(f"/{path}:batchEmbedContents"),
            json_headers(False),
            json_body({"requests": requests}),
            False,
            PROVIDER,
            bare_model(path),
        )

    def decode_embed(self, body: bytes) -> Embeddings:
        """``{"embeddings": [{"values": [float, ...]}, ...]}`` in input order.

        The API reports no token usage for embeddings (``usage`` stays ``None``)
        and does not echo the model (``model`` is ``None``). Raises
        :class:`~allm.errors.AdapterError` (``malformed_response``) for any other shape.
        """
        try:
            data = orjson.loads(body)
            vectors = tuple(tuple(float(x) for x in item["values"]) for item in data["embeddings"])
        except (orjson.JSONDecodeError, *SHAPE_ERRORS) as exc:
            raise malformed(PROVIDER, f"unexpected embeddings body ({type(exc).__name__}: {exc})") from None
        return Embeddings(vectors, None, Usage())

    # -- token counting (POST {model}:countTokens), https://ai.google.dev/api/tokens

    def encode_count_tokens(self, request: Request, model: str | None = None) -> HttpCall:
        """``POST {base}/models/{model}:countTokens`` with the whole ``generateContentRequest``
        (contents, system instruction, tools), so it is counted as a real call would be.
        ``model`` wins over ``request.model``. Raises :class:`~allm.errors.ValidationError`
        as :meth:`encode` does."""
        path = model_path(model or request.model)
        body, _warnings = self._body(request)
        data = json_body({"generateContentRequest": {"model": path, **body}})
        return HttpCall("POST", self._url(f"/{path}:countTokens"), json_headers(False), data, False, PROVIDER, bare_model(path))

    def decode_count_tokens(self, body: bytes) -> int:
        """``totalTokens`` of a ``CountTokensResponse``; raises ``malformed_response``."""
        return token_count(PROVIDER, body, "totalTokens")
