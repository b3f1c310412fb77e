"""The OpenAI Responses API (``POST /responses``), and servers that speak it (llama.cpp's ``llama-server``).

Follows https://platform.openai.com/docs/api-reference/responses (request body,
the ``response`` object, the streaming events) and the Open Responses
specification. Sans-IO: nothing here touches the network.

Mapping of a :class:`~allm.types.Request` to the request body:

- leading ``system`` messages -> ``instructions`` (joined with a blank line); a
  later system message stays in ``input`` as a ``system`` message item.
- ``user`` -> ``{"role": "user", "content": ...}`` (a string, or ``input_text`` /
  ``input_image`` parts); ``assistant`` text -> ``output_text``; an assistant's
  tool calls -> ``function_call`` items (``call_id``, ``name``, ``arguments``);
  ``tool`` messages -> ``function_call_output`` items.
- An assistant's :class:`~allm.types.ReasoningPart` with ``provider`` equal to this
  adapter's provider and ``encrypted_content`` -> a ``reasoning`` item (summary and
  encrypted content, *no* item id: ids only resolve against stored responses and
  trip the API's item-pairing checks). Other reasoning is not sent.
- ``tools`` -> function tools (``strict`` sent as given; ``None`` is sent as
  ``false`` because the Responses API otherwise defaults to strict schemas);
  ``tool_choice``; ``response_format`` -> ``text.format``; ``max_tokens`` ->
  ``max_output_tokens``; ``temperature``/``top_p``. ``top_k``, ``seed``,
  ``frequency_penalty``, ``presence_penalty`` and ``stop_sequences`` do not exist
  in this API: they are dropped and reported in ``HttpCall.warnings``.
- ``store`` and ``reasoning`` (``effort``, ``summary``) come from the adapter; with
  ``store=False`` the body asks for ``include: ["reasoning.encrypted_content"]`` so
  reasoning can be carried back statelessly. ``Request.options`` are merged into
  the body last (e.g. ``{"previous_response_id": "resp_..."}``), except a Chat
  Completions style ``reasoning_effort``, which becomes ``reasoning.effort``.
- llama.cpp's ``llama-server`` ignores ``text.format`` on ``/responses``; with the
  ``"llama.cpp"`` dialect a JSON format is also sent as a Chat Completions style
  ``response_format``, which it does honour.

Decoding: :mod:`allm.providers.openai.responses_decode`. Token counting:
``POST /responses/input_tokens`` (:meth:`OpenAIResponses.encode_count_tokens`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ...errors import ValidationError
from ...events import Event
from ...types import CallWarning, ImagePart, Message, ReasoningPart, Request, TextPart, Tool
from .._threads import check_request, check_thread
from .._wire import copy_settings, dropped, json_body, option_settings, token_count
from ..base import HttpCall
from ..media import COMPATIBLE_IMAGES, OPENAI_IMAGES, check_images
from ._shared import (
    CompatibleServer,
    Dialect,
    content_parts,
    dialect_of,
    encode_prompt_cache,
    encode_tool_choice,
    org_headers,
)
from .responses_decode import ResponsesDecoder, decode_body, failure_error, map_usage

__all__ = [
    "CHAT_RESPONSE_FORMAT_DIALECTS",
    "OpenAIResponses",
    "ResponsesDecoder",
    "decode_body",
    "encode_body",
    "encode_input",
    "failure_error",
    "map_usage",
]

_SAMPLING = ("temperature", "top_p")
# Servers whose /responses ignores ``text.format`` but honours a Chat Completions style
# ``response_format`` passed through to their sampler (llama.cpp's llama-server, checked
# against a live server): for them the format is sent both ways.
CHAT_RESPONSE_FORMAT_DIALECTS = frozenset({"llama.cpp"})
_UNSUPPORTED = ("top_k", "seed", "frequency_penalty", "presence_penalty")
_ENCRYPTED = "reasoning.encrypted_content"
_API = "the Responses API"
# The body fields ``POST /responses/input_tokens`` takes (the rest of a create body is refused).
_COUNTED = (
    "model",
    "instructions",
    "input",
    "tools",
    "tool_choice",
    "text",
    "reasoning",
    "conversation",
    "previous_response_id",
    "parallel_tool_calls",
    "truncation",
)

# ------------------------------------------------------------------------------ encoding


def _input_image(p: ImagePart) -> dict[str, Any]:
    return {"type": "input_image", "image_url": p.image.data_url(), "detail": p.detail or "auto"}


def _input_parts(msg: Message) -> str | list[dict[str, Any]]:
    return content_parts(msg, lambda t: {"type": "input_text", "text": t}, _input_image)


def _reasoning_item(part: ReasoningPart) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": part.text}] if part.text else []
    return {"type": "reasoning", "summary": summary, "encrypted_content": part.encrypted_content}


def _assistant_items(msg: Message, provider: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    text: list[str] = []

    def flush() -> None:
        joined = "".join(text)
        text.clear()
        if joined:
            items.append({"role": "assistant", "content": [{"type": "output_text", "text": joined}]})

    for p in msg.parts:
        if type(p) is TextPart:
            text.append(p.text)
        elif type(p) is ReasoningPart and p.provider == provider and p.encrypted_content:
            flush()
            items.append(_reasoning_item(p))
    flush()
    for tc in msg.tool_calls:
        items.append(
            {"type": "function_call", "call_id": tc.id, "name": tc.name, "arguments": tc.raw_arguments or "{}"}
        )
    return items


def encode_input(
    messages: tuple[Message, ...], provider: str = "openai"
) -> tuple[str | None, list[dict[str, Any]], list[CallWarning]]:
    """``(instructions, input items, warnings)`` for ``messages``.

    ``provider`` is the family whose reasoning is carried back (see the module
    docstring). Raises :class:`~allm.errors.ValidationError` for a thread no provider
    accepts (:func:`~allm.providers._threads.check_thread`) or an image outside a user
    message.
    """
    check_thread(messages)
    warnings: list[CallWarning] = []
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    leading = True
    for i, m in enumerate(messages):
        role = m.role
        if role != "system":
            leading = False
        if m.name and role == "user":
            warnings.append(dropped("name", provider, _API, "unsupported_feature", "message name"))
        if role in ("system", "assistant") and any(type(p) is ImagePart for p in m.parts):
            raise ValidationError(f"messages[{i}]: images are only allowed in user messages", reason="invalid_image")
        if role == "system":
            if leading:
                instructions.append(m.text)
            else:
                items.append({"role": "system", "content": m.text})
        elif role == "user":
            items.append({"role": "user", "content": _input_parts(m)})
        elif role == "assistant":
            items.extend(_assistant_items(m, provider))
        else:  # tool (check_thread made sure it answers an earlier call)
            items.append({"type": "function_call_output", "call_id": m.tool_call_id, "output": m.text})
    return ("\n\n".join(instructions) if instructions else None), items, warnings


def encode_tool(tool: Tool) -> dict[str, Any]:
    """A function tool. ``strict=None`` is sent as ``false`` (the Responses API defaults to ``true``)."""
    d: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description:
        d["description"] = tool.description
    d["parameters"] = dict(tool.schema)
    d["strict"] = bool(tool.strict)
    return d


def _tool_choice(choice: str) -> str | dict[str, Any]:
    c = encode_tool_choice(choice)
    return c if isinstance(c, str) else {"type": "function", "name": choice}


def encode_body(
    request: Request,
    *,
    stream: bool,
    provider: str = "openai",
    store: bool | None = False,
    reasoning_effort: str | None = None,
    reasoning_summary: str | None = None,
    chat_response_format: bool = False,
    dialect: str | Dialect = "openai",
) -> tuple[dict[str, Any], list[CallWarning]]:
    """The JSON body of ``POST /responses`` and the warnings for settings that were dropped.

    ``chat_response_format`` also sends a JSON ``response_format`` in the Chat
    Completions shape (see :data:`CHAT_RESPONSE_FORMAT_DIALECTS`). ``dialect`` says
    whether the server takes ``prompt_cache_key`` / ``prompt_cache_retention``.
    """
    check_request(request)
    image_warnings = check_images(request.messages, OPENAI_IMAGES if provider == "openai" else COMPATIBLE_IMAGES, provider)
    instructions, items, warnings = encode_input(request.messages, provider)
    warnings[:0] = image_warnings
    body: dict[str, Any] = {"model": request.model}
    if instructions is not None:
        body["instructions"] = instructions
    body["input"] = items
    body["stream"] = stream
    if store is not None:
        body["store"] = store
        if store is False:
            body["include"] = [_ENCRYPTED]
    copy_settings(request, (*_SAMPLING, *_UNSUPPORTED), _SAMPLING, body, warnings, provider, _API)
    if request.stop_sequences:
        warnings.append(dropped("stop_sequences", provider, _API))
    if request.max_tokens is not None:
        body["max_output_tokens"] = request.max_tokens
    if request.tools:
        body["tools"] = [encode_tool(t) for t in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    encode_prompt_cache(request, dialect_of(dialect), body, warnings, _API)
    rf = request.response_format
    if rf is not None:
        if rf.type == "json_schema":
            fmt: dict[str, Any] = {
                "type": "json_schema",
                "name": rf.name or "response",
                "schema": dict(rf.schema or {}),
                "strict": rf.strict,
            }
        else:
            fmt = {"type": rf.type}
        body["text"] = {"format": fmt}
        if chat_response_format and rf.type != "text":
            if rf.type == "json_schema":
                js = {"name": fmt["name"], "schema": fmt["schema"], "strict": rf.strict}
                body["response_format"] = {"type": "json_schema", "json_schema": js}
            else:
                body["response_format"] = {"type": rf.type}
    options = option_settings(request.options, (), body, warnings, provider, _API)
    # Chat Completions' ``reasoning_effort`` (an engine-wide option may reach either API
    # through the OpenAI router) is this API's ``reasoning.effort``.
    effort = options.pop("reasoning_effort", None)
    if effort is not None:
        reasoning_effort = effort
    if reasoning_effort is not None or reasoning_summary is not None:
        r: dict[str, Any] = {}
        if reasoning_effort is not None:
            r["effort"] = reasoning_effort
        if reasoning_summary is not None:
            r["summary"] = reasoning_summary
        body["reasoning"] = r
    body.update(options)
    return body, warnings


# ------------------------------------------------------------------------------ adapter


@attrs.frozen
class OpenAIResponses(CompatibleServer):
    """The Responses API (``POST {base_url}/responses``) as a sans-IO adapter.

    - ``base_url``: defaults to the dialect's (``https://api.openai.com/v1``).
    - ``organization`` / ``project``: the ``OpenAI-Organization`` / ``OpenAI-Project``
      headers.
    - ``store``: sent as ``store``; ``False`` (the default) keeps nothing on the
      server and asks for ``include: ["reasoning.encrypted_content"]`` so reasoning
      travels back with the thread; ``True`` lets ``previous_response_id`` work;
      ``None`` sends neither field (the server's default).
    - ``reasoning_effort`` (``"minimal"``, ``"low"``, ``"medium"``, ``"high"``...) and
      ``reasoning_summary`` (``"auto"``, ``"concise"``, ``"detailed"``): the
      ``reasoning`` object, sent when set.
    - ``dialect``: ``"openai"`` (key ``OPENAI_API_KEY``, required) or an
      OpenAI-compatible server from :data:`allm.providers.openai.DIALECTS`
      (``"llama.cpp"``, ``"vllm"``, ``"ollama"``, ``"generic"``...), which needs no
      key; only its provider name, key variables, default URL and headers are used.
      :meth:`compatible` builds one.
    - ``headers``: added to every call (never a key: use ``api_key=`` or
      :mod:`allm.keys`).

    Besides ``/responses`` it speaks ``/responses/input_tokens`` (token counts),
    ``/models``, ``/embeddings`` and ``/images/...`` of the same server.
    """

    base_url: str | None = None
    organization: str | None = None
    project: str | None = None
    store: bool | None = False
    reasoning_effort: str | None = None
    reasoning_summary: str | None = None
    dialect: str | Dialect = "openai"
    headers: Mapping[str, str] = attrs.field(factory=dict)

    @classmethod
    def compatible(
        cls, base_url: str | None = None, dialect: str | Dialect = "generic", *, store: bool | None = None
    ) -> OpenAIResponses:
        """Another server's ``/responses`` (llama-server, vLLM...): no key needed, ``store`` not sent.

        ``base_url`` includes ``/v1`` (``http://127.0.0.1:8080/v1``); with a named
        dialect it defaults to that server's usual address.
        """
        return cls(base_url=base_url, store=store, dialect=dialect)

    def _extra_headers(self) -> dict[str, str]:
        return {**org_headers(self.organization, self.project), **self.headers}

    def encode_body(self, request: Request, *, stream: bool) -> tuple[dict[str, Any], list[CallWarning]]:
        """The body of ``POST /responses`` with this adapter's settings (see :func:`encode_body`)."""
        d = self._dialect()
        return encode_body(
            request,
            stream=stream,
            provider=d.provider,
            store=self.store,
            reasoning_effort=self.reasoning_effort,
            reasoning_summary=self.reasoning_summary,
            chat_response_format=d.name in CHAT_RESPONSE_FORMAT_DIALECTS,
            dialect=d,
        )

    def encode(self, request: Request, *, stream: bool) -> HttpCall:
        """``POST {base_url}/responses``. Raises :class:`~allm.errors.ValidationError` for bad messages."""
        body, warnings = self.encode_body(request, stream=stream)
        return HttpCall(
            "POST", self._url("/responses"), self._headers(stream), json_body(body), stream, self.provider,
            request.model, tuple(warnings),
        )

    def decoder(self, call: HttpCall, *, include_raw: bool = False) -> ResponsesDecoder:
        return ResponsesDecoder(call.provider, call.warnings, include_raw)

    def decode_body(self, call: HttpCall, body: bytes, *, include_raw: bool = False) -> list[Event]:
        return decode_body(call.provider, body, call.warnings, include_raw)

    # -- token counting, https://platform.openai.com/docs/api-reference/responses/input-tokens

    def encode_count_tokens(self, request: Request, model: str | None = None) -> HttpCall:
        """``POST {base_url}/responses/input_tokens``: the input tokens ``request`` would use.

        The body is the one :meth:`encode` sends, kept to the fields the endpoint takes
        (``model``, ``instructions``, ``input``, ``tools``, ``tool_choice``, ``text``,
        ``reasoning``, and ``conversation`` / ``previous_response_id`` /
        ``parallel_tool_calls`` / ``truncation`` from ``Request.options``).
        """
        if model is not None:
            request = attrs.evolve(request, model=model)
        body, _warnings = self.encode_body(request, stream=False)
        counted = {k: body[k] for k in _COUNTED if k in body}
        return HttpCall(
            "POST", self._url("/responses/input_tokens"), self._headers(False), json_body(counted), False,
            self.provider, request.model,
        )

    def decode_count_tokens(self, body: bytes) -> int:
        """``input_tokens`` of a ``{"object": "response.input_tokens", "input_tokens": N}`` body;
        raises ``malformed_response``."""
        return token_count(self.provider, body)

