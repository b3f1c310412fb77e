"""The OpenAI API and every server that speaks it.

- :class:`OpenAI`: the OpenAI API, routing each call to Chat Completions or the
  Responses API (``api="auto"``, ``"chat"``, ``"responses"``).
- :class:`~allm.providers.openai.chat.OpenAICompatible`: any Chat Completions server
  (OpenRouter, Ollama, llama.cpp, vLLM) as a :class:`Dialect`.
- :class:`~allm.providers.openai.responses.OpenAIResponses`: the Responses API (OpenAI,
  or a compatible server).

Modules, one concern each: ``_shared`` (dialects, errors, tool choice, ``/models``,
``/embeddings``), ``chat`` (Chat Completions), ``responses`` and ``responses_decode``
(the Responses API), ``images`` (the Images API). Sans-IO.
"""

from __future__ import annotations

import re
from typing import Literal

import attrs

from ...events import Event
from ...types import Request
from .._wire import check_base_url, token_count, url_path
from ..base import Decoder, HttpCall
from ._shared import DIALECTS, Dialect, org_headers
from .chat import ChatAdapter, OpenAICompatible
from .responses import OpenAIResponses

__all__ = ["DIALECTS", "Dialect", "OpenAI", "OpenAICompatible", "OpenAIResponses", "prefers_responses"]

# Model families that are reasoning-first: served by the Responses API, which carries their
# reasoning between turns (o1, o3, o4-mini, gpt-5*, codex-mini, computer-use-preview...).
_RESPONSES_MODELS = re.compile(r"(?:o\d+|gpt-5|codex|computer-use)(?![a-z0-9])")
_APIS = ("auto", "chat", "responses")


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
    return url_path(call.url).endswith("/responses")


@attrs.frozen
class OpenAI(ChatAdapter):
    """The OpenAI API. Key: ``OPENAI_API_KEY`` (provider ``openai``).

    ``organization`` and ``project`` become the ``OpenAI-Organization`` and
    ``OpenAI-Project`` headers.

    ``api`` picks the wire API per call: ``"auto"`` (the default) sends reasoning-first
    models (see :func:`prefers_responses`: o-series, gpt-5*, codex, computer-use) to
    the Responses API (``POST /responses``, :class:`OpenAIResponses`) and every other
    model to Chat Completions (``POST /chat/completions``); ``"chat"`` and
    ``"responses"`` force one. ``store``, ``reasoning_effort`` and
    ``reasoning_summary`` configure the Responses calls (see ``OpenAIResponses``);
    ``reasoning_effort``, when set, is also sent as Chat Completions'
    ``reasoning_effort``. Which API a call was encoded for is read back from its
    URL, so ``decoder``/``decode_body`` always match ``encode``; both APIs share the
    same error body shape. Token counts use ``POST /responses/input_tokens`` whatever
    the API.
    """

    base_url: str = "https://api.openai.com/v1"
    organization: str | None = None
    project: str | None = None
    api: Literal["auto", "chat", "responses"] = attrs.field(default="auto", validator=attrs.validators.in_(_APIS))
    store: bool | None = False
    reasoning_effort: str | None = None
    reasoning_summary: str | None = None

    def __attrs_post_init__(self) -> None:
        check_base_url(type(self).__name__, self.base_url)

    def _dialect(self) -> Dialect:
        return DIALECTS["openai"]

    def _base_url(self) -> str:
        return self.base_url

    def _extra_headers(self) -> dict[str, str]:
        return org_headers(self.organization, self.project)

    def api_for(self, model: str | None) -> Literal["chat", "responses"]:
        """``"chat"`` or ``"responses"``: the API a call for ``model`` uses."""
        if self.api == "auto":
            return "responses" if prefers_responses(model) else "chat"
        return self.api

    def responses(self) -> OpenAIResponses:
        """The Responses adapter this one delegates to (same URL, headers and settings)."""
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

    def encode_count_tokens(self, request: Request, model: str | None = None) -> HttpCall:
        """``POST {base_url}/responses/input_tokens`` (see :meth:`OpenAIResponses.encode_count_tokens`)."""
        return self.responses().encode_count_tokens(request, model)

    def decode_count_tokens(self, body: bytes) -> int:
        return token_count(self.provider, body)
