"""Encoding a :class:`~allm.types.Request` as an Anthropic Messages API body.

Follows https://docs.anthropic.com/en/api/messages (request body, content blocks,
``tool_use`` / ``tool_result``, ``tool_choice``, extended thinking, prompt caching,
structured outputs). ``guides/provider_anthropic.md`` has the full table:

- system messages -> top-level ``system`` text blocks; user / assistant / tool
  messages -> ``messages`` with content blocks; consecutive tool results -> the
  ``tool_result`` blocks of ONE user message.
- Anthropic's own reasoning (``ReasoningPart(provider="anthropic")``) goes back as
  ``thinking`` / ``redacted_thinking`` blocks exactly as received; other
  providers' reasoning is not sent.
- Tool-call ids outside ``^[a-zA-Z0-9_-]+$`` are rewritten by
  :func:`wire_tool_id` (deterministic, the same for a call and its result).
- ``seed``, ``frequency_penalty``, ``presence_penalty`` (and ``temperature`` /
  ``top_k`` while thinking is on) are not sent; each is reported in
  ``Response.warnings``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ...errors import ValidationError
from ...types import CallWarning, ImagePart, Message, PromptCache, ReasoningPart, Request, TextPart, Tool
from .._threads import check_request, check_thread
from .._wire import copy_settings, dropped, int_or_none, option_settings
from ..media import ANTHROPIC_IMAGES, check_images
from .errors import PROVIDER

__all__ = [
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "IMAGE_MEDIA_TYPES",
    "encode_body",
    "encode_messages",
    "encode_tool",
    "encode_tool_choice",
    "wire_tool_id",
]

ANTHROPIC_BASE_URL = "https://api.anthropic.com/v1"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` sent when a request sets none (the API requires one)."""

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
"""The inline image types the Messages API accepts."""

CACHE_TTLS = (None, "5m", "1h")

_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")
_NOT_TOOL_ID = re.compile(r"[^a-zA-Z0-9_-]")


def wire_tool_id(tool_call_id: str) -> str:
    """``tool_call_id`` as Anthropic accepts it (``^[a-zA-Z0-9_-]+$``).

    A valid id is returned unchanged. Another (``call.1``, ``functions.get:0``, an
    id from another provider) becomes its allowed characters (the others replaced
    by ``_``, at most 48 kept), ``_`` and 12 hex digits of its SHA-256: a pure
    function, so a ``tool_use`` and its ``tool_result`` get the same id, and
    distinct ids stay distinct.
    """
    if _TOOL_ID.fullmatch(tool_call_id):
        return tool_call_id
    digest = hashlib.sha256(tool_call_id.encode("utf-8")).hexdigest()[:12]
    cleaned = _NOT_TOOL_ID.sub("_", tool_call_id)[:48]
    return f"{cleaned}_{digest}" if cleaned else f"toolu_{digest}"


def _cache_control(metadata: Mapping[str, Any]) -> Any:
    """``metadata["anthropic"]["cache_control"]`` of a message or tool, if set."""
    a = metadata.get("anthropic") if metadata else None
    return a.get("cache_control") if isinstance(a, Mapping) else None


def _image_block(part: ImagePart, where: str) -> dict[str, Any]:
    img = part.image
    if img.url is not None:
        return {"type": "image", "source": {"type": "url", "url": img.url}}
    if img.mime_type not in IMAGE_MEDIA_TYPES:
        raise ValidationError(
            f"{where}: Anthropic accepts images of type {', '.join(sorted(IMAGE_MEDIA_TYPES))}, "
            f"not {img.mime_type!r}",
            reason="invalid_image",
        )
    return {"type": "image", "source": {"type": "base64", "media_type": img.mime_type, "data": img.base64}}


def _user_blocks(msg: Message, where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in msg.parts:
        if type(p) is TextPart:
            if p.text:  # the API rejects empty text blocks
                out.append({"type": "text", "text": p.text})
        elif type(p) is ImagePart:
            out.append(_image_block(p, where))
        # Reasoning has no place in a user turn: nothing to send.
    return out


def _reasoning_block(p: ReasoningPart) -> dict[str, Any]:
    if p.redacted_data is not None:
        return {"type": "redacted_thinking", "data": p.redacted_data}
    block: dict[str, Any] = {"type": "thinking", "thinking": p.text}
    if p.signature is not None:
        block["signature"] = p.signature
    return block


def _assistant_blocks(msg: Message, where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in msg.parts:
        if type(p) is ReasoningPart:
            # Only Anthropic's own reasoning, exactly as received; other providers'
            # signatures would be rejected.
            if p.provider == PROVIDER:
                out.append(_reasoning_block(p))
        elif type(p) is TextPart:
            if p.text:
                out.append({"type": "text", "text": p.text})
        else:
            raise ValidationError(f"{where}: an assistant message cannot carry images", reason="invalid_message")
    for tc in msg.tool_calls:
        out.append({"type": "tool_use", "id": wire_tool_id(tc.id), "name": tc.name, "input": dict(tc.arguments)})
    return out


def _tool_result_block(msg: Message, where: str) -> dict[str, Any]:
    assert msg.tool_call_id  # check_thread refused a tool message without one
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": wire_tool_id(msg.tool_call_id)}
    content = _user_blocks(msg, where)
    if content:
        block["content"] = content
    if msg.is_error:
        block["is_error"] = True
    return block


def encode_messages(
    messages: Iterable[Message], warnings: list[CallWarning] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Our messages as ``(system, messages)`` of a Messages API body.

    ``system`` is a list of text blocks, one per system message (Anthropic has no
    system role inside ``messages``; a system message after the first turn is moved
    there too, with a note added to ``warnings``). Consecutive tool messages become
    the ``tool_result`` blocks of one user message, and a user message right after
    them joins it (tool results first, as the API requires). Empty text blocks and
    messages left with no blocks are not sent. ``metadata={"anthropic":
    {"cache_control": {...}}}`` on a message puts that cache breakpoint on its last
    block. Raises :class:`ValidationError` for a thread no provider accepts
    (:func:`~allm.providers._threads.check_thread`), an image in an assistant message or
    an image type Anthropic does not take.
    """
    messages = tuple(messages)
    check_thread(messages)
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    in_results = False  # the last wire message is a user turn opened by tool results
    moved = False
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        cc = _cache_control(m.metadata)
        if m.role == "system":
            if out and not moved and warnings is not None:
                why = (
                    "a system message after the first turn was moved to the top-level system prompt "
                    "(Anthropic has no system role inside messages)"
                )
                warnings.append(CallWarning("moved_content", "system", PROVIDER, why))
                moved = True
            if m.text:
                block: dict[str, Any] = {"type": "text", "text": m.text}
                if cc:
                    block["cache_control"] = cc
                system.append(block)
            continue
        if m.role == "tool":
            blocks = [_tool_result_block(m, where)]
        elif m.role == "user":
            blocks = _user_blocks(m, where)
        else:
            blocks = _assistant_blocks(m, where)
        if not blocks:
            continue
        if cc:
            blocks[-1]["cache_control"] = cc
        if m.role == "assistant":
            out.append({"role": "assistant", "content": blocks})
            in_results = False
        elif in_results:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": "user", "content": blocks})
            in_results = m.role == "tool"
    return system, out


def encode_tool(tool: Tool) -> dict[str, Any]:
    """A :class:`Tool` as a Messages API tool (``name``, ``description``, ``input_schema``).

    ``strict`` is sent when set; ``metadata={"anthropic": {"cache_control": {...}}}``
    adds a cache breakpoint on the tool.
    """
    d: dict[str, Any] = {"name": tool.name}
    if tool.description:
        d["description"] = tool.description
    d["input_schema"] = dict(tool.schema)
    if tool.strict is not None:
        d["strict"] = tool.strict
    cc = _cache_control(tool.metadata)
    if cc:
        d["cache_control"] = cc
    return d


def encode_tool_choice(choice: str) -> dict[str, Any]:
    """``auto`` / ``none`` / ``required`` (Anthropic ``any``) / a tool name (``{"type": "tool"}``)."""
    if choice == "required":
        return {"type": "any"}
    if choice in ("auto", "none"):
        return {"type": choice}
    return {"type": "tool", "name": choice}


_MAX_BREAKPOINTS = 4  # the API refuses more cache_control blocks in one request
_NOT_CACHEABLE = frozenset({"thinking", "redacted_thinking"})


def encode_prompt_cache(pc: PromptCache, body: dict[str, Any], warnings: list[CallWarning]) -> None:
    """A :class:`~allm.types.PromptCache` as a ``cache_control`` breakpoint on the last block
    of the prompt (the last cacheable block of the last message, else of ``system``, else
    the last tool), so the whole prompt is cached, as Anthropic's prompt caching guide
    places a conversation's breakpoint. ``retention`` is the ``ttl`` (``"5m"``, ``"1h"``;
    ``"24h"`` is longer than Anthropic keeps a cache: ``"1h"`` is sent, with a warning).
    The ``key`` has no Anthropic field and needs none (the cache is found by the prompt's
    prefix). With the adapter's automatic caching on (a top-level ``cache_control``),
    that breakpoint takes the ``ttl`` instead; a request that already holds 4
    breakpoints gets no fifth (a warning says so).
    """
    ttl = pc.retention
    if ttl == "24h":
        why = "prompt_cache retention 24h is longer than Anthropic keeps a cache; 1h was sent"
        warnings.append(CallWarning("unsupported_feature", "prompt_cache", PROVIDER, why))
        ttl = "1h"
    top = body.get("cache_control")
    if isinstance(top, dict):
        if ttl is not None:
            top["ttl"] = ttl
        return
    cc: dict[str, Any] = {"type": "ephemeral"}
    if ttl is not None:
        cc["ttl"] = ttl
    tools = body.get("tools") or []
    blocks = [b for m in body["messages"] for b in m["content"]]
    marked = [b for b in (*tools, *body.get("system", ()), *blocks) if "cache_control" in b]
    last = next(
        (b for group in (blocks, body.get("system", ()), tools) for b in reversed(group) if b.get("type") not in _NOT_CACHEABLE),
        None,
    )
    if last is None:
        return
    if "cache_control" in last:
        last["cache_control"] = {**last["cache_control"], **({"ttl": ttl} if ttl else {})}
    elif len(marked) >= _MAX_BREAKPOINTS:
        why = f"the request already has {_MAX_BREAKPOINTS} cache breakpoints (the API's limit); prompt_cache was not sent"
        warnings.append(CallWarning("dropped_setting", "prompt_cache", PROVIDER, why))
    else:
        last["cache_control"] = cc


def parse_betas(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split(",") if s.strip())
    if isinstance(value, Iterable):
        return tuple(str(s) for s in value)
    raise ValidationError("anthropic_beta must be a string or a list of strings", reason="invalid_request")


def encode_body(
    request: Request,
    *,
    stream: bool,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    thinking_budget: int | None = None,
    cache_control: bool = False,
    cache_ttl: str | None = None,
) -> tuple[dict[str, Any], list[CallWarning], tuple[str, ...]]:
    """``(body, warnings, betas from the request)`` for ``POST /messages``.

    Raises :class:`ValidationError` for messages Anthropic cannot take (see
    :func:`encode_messages`), a ``json_schema`` format without a schema, or a
    ``max_tokens`` not above the thinking budget. The keyword settings are the
    :class:`~allm.providers.Anthropic` adapter's (see there).
    """
    check_request(request)
    warnings = check_images(request.messages, ANTHROPIC_IMAGES, PROVIDER)
    system, messages = encode_messages(request.messages, warnings)
    options = option_settings(request.options, (), {}, warnings, PROVIDER, "Anthropic")
    extra_betas = parse_betas(options.pop("anthropic_beta", None))
    if "thinking" in options:
        thinking = options.pop("thinking")
    elif thinking_budget is not None:
        thinking = {"type": "enabled", "budget_tokens": thinking_budget}
    else:
        thinking = None
    thinking_on = isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")
    budget = int_or_none(thinking.get("budget_tokens")) if thinking_on and isinstance(thinking, Mapping) else None

    max_tokens = request.max_tokens
    if max_tokens is None:
        max_tokens = default_max_tokens + (budget or 0)
    elif budget is not None and max_tokens <= budget:
        raise ValidationError(
            f"max_tokens ({max_tokens}) must be greater than the thinking budget ({budget} tokens)",
            reason="invalid_request",
        )
    body: dict[str, Any] = {"model": request.model, "max_tokens": max_tokens}
    if system:
        body["system"] = system
    body["messages"] = messages
    if request.stop_sequences:
        body["stop_sequences"] = list(request.stop_sequences)
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(request, name)
        if value is None:
            continue
        if thinking_on and (name != "top_p" or value < 0.95):
            warnings.append(dropped(name, PROVIDER, "Anthropic with extended thinking"))
            continue
        body[name] = value
    copy_settings(request, ("seed", "frequency_penalty", "presence_penalty"), (), body, warnings, PROVIDER, "Anthropic")
    if request.tools:
        body["tools"] = [encode_tool(t) for t in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = encode_tool_choice(request.tool_choice)
    rf = request.response_format
    if rf is not None:
        if rf.type == "json_schema":
            if rf.schema is None:
                raise ValidationError("response_format json_schema needs a schema", reason="invalid_request")
            body["output_config"] = {"format": {"type": "json_schema", "schema": dict(rf.schema)}}
        elif rf.type == "json_object":
            why = (
                "response_format json_object is not supported by Anthropic (it has no JSON mode) "
                "and was not sent; use a json_schema response format"
            )
            warnings.append(CallWarning("unsupported_feature", "response_format", PROVIDER, why))
    if thinking is not None:
        body["thinking"] = thinking
    if cache_control:
        cc = {"type": "ephemeral"}
        if cache_ttl:
            cc["ttl"] = cache_ttl
        body["cache_control"] = cc
    if request.prompt_cache is not None:
        encode_prompt_cache(request.prompt_cache, body, warnings)
    if stream:
        body["stream"] = True
    body.update(options)
    return body, warnings, extra_betas
