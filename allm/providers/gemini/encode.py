"""Encoding a :class:`~allm.types.Request` as a Gemini ``GenerateContentRequest``.

Follows the Gemini API reference: https://ai.google.dev/api/generate-content
(``GenerateContentRequest``, ``Content``, ``Part``, ``Tool``, ``ToolConfig``,
``GenerationConfig``), https://ai.google.dev/gemini-api/docs/thought-signatures and
https://ai.google.dev/gemini-api/docs/function-calling. Sans-IO: nothing here touches the network, a clock or randomness.

What maps to what (see ``guides/provider_gemini.md`` for the full table):

- Messages: ``system`` -> ``systemInstruction``; ``user`` -> a ``user`` content;
  ``assistant`` -> a ``model`` content (text, ``thought`` parts, ``functionCall``
  parts); consecutive ``tool`` messages -> one ``user`` content of
  ``functionResponse`` parts, named after the tool call they answer (found by
  ``tool_call_id`` in the thread). Images must be inline bytes (``inlineData``).
- Tools -> ``tools[0].functionDeclarations`` (JSON Schema in
  ``parametersJsonSchema``); ``tool_choice`` -> ``toolConfig.functionCallingConfig``.
- Sampling -> ``generationConfig``; ``response_format`` -> ``responseMimeType`` and
  ``responseJsonSchema``; the adapter's thinking settings -> ``thinkingConfig``.
- The key travels in the ``x-goog-api-key`` header, never in the URL.

Thought signatures (opaque strings Gemini needs back, exactly where they came
from): a signature on a ``thought`` part is the ``signature`` of that
:class:`~allm.types.ReasoningPart` (``provider="gemini"``); one on a
``functionCall`` part goes to ``ToolCall.metadata["gemini"]["thought_signature"]``;
one on an ordinary text part (or an empty trailing part) becomes a
``ReasoningPart(text="", signature=..., provider="gemini")`` placed right after
that text, and is sent back on that text part. Reasoning from other providers is
never sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import ValidationError
from ...types import CallWarning, ImagePart, Message, ReasoningPart, Request, TextPart, Tool, ToolCall
from .._threads import check_request, check_thread
from .._wire import copy_settings, dropped, note, option_settings
from ..media import GEMINI_IMAGES, check_images
from .errors import PROVIDER

__all__ = [
    "DEFAULT_BASE_URL",
    "bare_model",
    "encode_body",
    "encode_contents",
    "encode_tool",
    "encode_tool_choice",
    "find_call",
    "gemini_meta",
    "merge",
    "model_path",
    "sent_id",
]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"

_MODEL_RE = re.compile(r"^(?:(models|tunedModels)/)?([A-Za-z0-9][A-Za-z0-9._\-]*)$")


def model_path(model: str | None) -> str:
    """The resource name of ``model``: ``"gemini-2.5-flash"`` -> ``"models/gemini-2.5-flash"``.

    ``"models/..."`` and ``"tunedModels/..."`` are accepted as they are. Raises
    :class:`~allm.errors.ValidationError` for anything that is not a plain model
    name (it becomes part of the URL path).
    """
    if not model:
        raise ValidationError("no model given", reason="invalid_request")
    m = _MODEL_RE.match(model)
    if m is None:
        raise ValidationError(
            f"{model!r} is not a Gemini model name (letters, digits, '.', '_', '-'; optional 'models/' prefix)",
            reason="invalid_request",
        )
    return f"{m.group(1) or 'models'}/{m.group(2)}"


def bare_model(model: str) -> str:
    """``"models/gemini-2.5-flash"`` -> ``"gemini-2.5-flash"``."""
    return model.split("/", 1)[1] if "/" in model else model


# ------------------------------------------------------------------------------ contents


def gemini_meta(tc: ToolCall) -> Mapping[str, Any]:
    g = tc.metadata.get(PROVIDER) if tc.metadata else None
    return g if isinstance(g, Mapping) else {}


def sent_id(tc: ToolCall) -> str | None:
    """The id to send back on ``functionCall``/``functionResponse``: only one Gemini issued."""
    gid = gemini_meta(tc).get("id")
    return tc.id if isinstance(gid, str) and gid == tc.id else None


def _inline(part: ImagePart, where: str, warnings: list[CallWarning]) -> dict[str, Any]:
    img = part.image
    if img.data is None:
        raise ValidationError(
            f"{where}: Gemini needs inline image bytes, and this image has only a URL ({img.url!r}); "
            "build it with ImagePart.from_file/from_bytes/from_base64 (or fetch the URL first)",
            reason="invalid_image",
        )
    if not img.mime_type:
        raise ValidationError(f"{where}: an inline image needs a mime_type", reason="invalid_image")
    if part.detail is not None:
        note(warnings, dropped("detail", PROVIDER, "Gemini", "unsupported_feature", "image detail"))
    return {"inlineData": {"mimeType": img.mime_type, "data": img.base64}}


def _user_parts(m: Message, i: int, warnings: list[CallWarning]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in m.parts:
        if type(p) is TextPart:
            out.append({"text": p.text})
        elif type(p) is ImagePart:
            out.append(_inline(p, f"messages[{i}]", warnings))
        # Reasoning in a user message means nothing to Gemini: dropped.
    return out


def _model_parts(m: Message, i: int, warnings: list[CallWarning]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in m.parts:
        if type(p) is TextPart:
            if p.text:
                out.append({"text": p.text})
        elif type(p) is ReasoningPart:
            if p.provider != PROVIDER:
                continue  # another provider's reasoning: Gemini cannot read or verify it
            if p.text:
                d: dict[str, Any] = {"text": p.text, "thought": True}
                if p.signature:
                    d["thoughtSignature"] = p.signature
                out.append(d)
            elif p.signature:
                prev = out[-1] if out else None
                if (
                    prev is not None
                    and "text" in prev
                    and not prev.get("thought")
                    and "thoughtSignature" not in prev
                ):
                    prev["thoughtSignature"] = p.signature  # it came on this text part
                else:
                    out.append({"text": "", "thoughtSignature": p.signature})
        elif type(p) is ImagePart:
            out.append(_inline(p, f"messages[{i}]", warnings))
    for tc in m.tool_calls:
        fc: dict[str, Any] = {"name": tc.name, "args": dict(tc.arguments)}
        sent = sent_id(tc)
        if sent is not None:
            fc["id"] = sent
        d = {"functionCall": fc}
        sig = gemini_meta(tc).get("thought_signature")
        if isinstance(sig, str) and sig:
            d["thoughtSignature"] = sig
        out.append(d)
    return out


def find_call(messages: Sequence[Message], before: int, tool_call_id: str) -> ToolCall | None:
    """The most recent tool call with this id in an assistant message before ``before``."""
    for j in range(before - 1, -1, -1):
        m = messages[j]
        if m.role == "assistant":
            for tc in m.tool_calls:
                if tc.id == tool_call_id:
                    return tc
    return None


def encode_contents(
    messages: Sequence[Message], warnings: list[CallWarning]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """``(systemInstruction or None, contents)`` for our messages.

    Raises :class:`~allm.errors.ValidationError`: a thread no provider accepts
    (:func:`~allm.providers._threads.check_thread`), an image given only by URL, a
    tool result whose call has no function name.
    """
    check_thread(messages)
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    tool_turn: dict[str, Any] | None = None  # the user content collecting functionResponse parts
    for i, m in enumerate(messages):
        if m.role == "system":
            system.append({"text": m.text})
            continue
        if m.role == "tool":
            assert m.tool_call_id  # check_thread refused a tool message without one
            tc = find_call(messages, i, m.tool_call_id)
            name = (tc.name if tc is not None else None) or m.name
            if not name:
                raise ValidationError(
                    f"messages[{i}]: the tool call {m.tool_call_id!r} this result answers has no function name, "
                    "and Gemini needs one (set name= on the tool message)",
                    reason="invalid_message",
                )
            fr: dict[str, Any] = {"name": name, "response": {"error" if m.is_error else "output": m.text}}
            sent = sent_id(tc) if tc is not None else None
            if sent is not None:
                fr["id"] = sent
            if tool_turn is None:
                tool_turn = {"role": "user", "parts": []}
                contents.append(tool_turn)
            tool_turn["parts"].append({"functionResponse": fr})
            continue
        tool_turn = None
        if m.role == "user":
            parts = _user_parts(m, i, warnings)
            role = "user"
        else:
            parts = _model_parts(m, i, warnings)
            role = "model"
        if not parts:
            why = f"messages[{i}] has no content Gemini can read and was not sent"
            note(warnings, CallWarning("dropped_content", None, PROVIDER, why))
            continue
        contents.append({"role": role, "parts": parts})
    return ({"parts": system} if system else None), contents


def encode_tool(tool: Tool, warnings: list[CallWarning]) -> dict[str, Any]:
    """A ``FunctionDeclaration``: the tool's JSON Schema goes in ``parametersJsonSchema``."""
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description:
        fn["description"] = tool.description
    fn["parametersJsonSchema"] = dict(tool.schema)
    if tool.strict is not None:
        note(warnings, dropped("strict", PROVIDER, "Gemini", "unsupported_feature", "tool strict"))
    return fn


def encode_tool_choice(choice: str) -> dict[str, Any]:
    """``auto``/``none``/``required``/a tool name as ``toolConfig``."""
    if choice == "auto":
        cfg: dict[str, Any] = {"mode": "AUTO"}
    elif choice == "none":
        cfg = {"mode": "NONE"}
    elif choice == "required":
        cfg = {"mode": "ANY"}
    else:
        cfg = {"mode": "ANY", "allowedFunctionNames": [choice]}
    return {"functionCallingConfig": cfg}


def merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Deep-merge ``extra`` into ``into`` (objects merge key by key; anything else replaces)."""
    for k, v in extra.items():
        cur = into.get(k)
        if isinstance(cur, dict) and isinstance(v, Mapping):
            merge(cur, v)
        else:
            into[k] = v


def encode_body(
    request: Request,
    *,
    thinking_budget: int | None = None,
    thinking_level: str | None = None,
    include_thoughts: bool | None = None,
) -> tuple[dict[str, Any], list[CallWarning]]:
    """The ``GenerateContentRequest`` JSON body and the warnings for settings not sent.

    ``frequency_penalty`` and ``presence_penalty`` are dropped with a warning: the
    API documents them but current models (2.5, 3.x) reject any request that has
    them ("Penalty is not enabled"). ``request.options`` is deep-merged into the
    body last (e.g. ``{"safetySettings": [...]}`` or
    ``{"generationConfig": {"presencePenalty": 0.5}}``).
    """
    check_request(request)
    warnings = check_images(request.messages, GEMINI_IMAGES, PROVIDER)
    system, contents = encode_contents(request.messages, warnings)
    body: dict[str, Any] = {"contents": contents}
    if system is not None:
        body["systemInstruction"] = system
    gc: dict[str, Any] = {}
    if request.temperature is not None:
        gc["temperature"] = request.temperature
    if request.top_p is not None:
        gc["topP"] = request.top_p
    if request.top_k is not None:
        gc["topK"] = request.top_k
    if request.max_tokens is not None:
        gc["maxOutputTokens"] = request.max_tokens
    if request.stop_sequences:
        gc["stopSequences"] = list(request.stop_sequences)
    if request.seed is not None:
        gc["seed"] = request.seed
    copy_settings(request, ("frequency_penalty", "presence_penalty"), (), gc, warnings, PROVIDER, "Gemini models")
    rf = request.response_format
    if rf is not None:
        if rf.type == "text":
            gc["responseMimeType"] = "text/plain"
        else:
            gc["responseMimeType"] = "application/json"
            if rf.type == "json_schema" and rf.schema is not None:
                gc["responseJsonSchema"] = dict(rf.schema)
    thinking: dict[str, Any] = {}
    if include_thoughts is not None:
        thinking["includeThoughts"] = include_thoughts
    if thinking_budget is not None:
        thinking["thinkingBudget"] = thinking_budget
    if thinking_level is not None:
        thinking["thinkingLevel"] = thinking_level
    if thinking:
        gc["thinkingConfig"] = thinking
    body["generationConfig"] = gc
    if request.tools:
        body["tools"] = [{"functionDeclarations": [encode_tool(t, warnings) for t in request.tools]}]
    if request.tool_choice is not None:
        body["toolConfig"] = encode_tool_choice(request.tool_choice)
    if request.prompt_cache is not None:
        # No request field: Gemini caches repeated prefixes implicitly; explicit caches are
        # ``cachedContents`` resources made by a call of their own.
        warnings.append(dropped("prompt_cache", PROVIDER, "Gemini"))
    if request.options:
        merge(body, option_settings(request.options, (), {}, warnings, PROVIDER, "Gemini models"))
    return body, warnings
