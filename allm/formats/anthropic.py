"""Anthropic Messages ``system`` + ``messages`` <-> a :class:`~allm.types.Thread`.

Follows https://docs.anthropic.com/en/api/messages (content blocks ``text``,
``image``, ``tool_use``, ``tool_result``, ``thinking``, ``redacted_thinking``) and
https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking (thinking
blocks go back exactly as received, signature included). The payload is
``{"system": [...], "messages": [...]}`` (``system`` left out when there is none);
a bare array of messages, or a whole request body, is read too.

=====================================  ===============================================
thread                                 Anthropic Messages
=====================================  ===============================================
system messages                        top-level ``system`` text blocks, one per message
                                       (a string ``system`` is read as one)
user text / images                     ``text`` and ``image`` blocks (``base64`` or
                                       ``url`` source)
assistant                              ``thinking`` (``signature``) and
                                       ``redacted_thinking`` blocks from
                                       ``ReasoningPart(provider="anthropic")``,
                                       ``text`` blocks, ``tool_use`` blocks (``input``
                                       object)
tool messages                          ``tool_result`` blocks (``tool_use_id``,
                                       ``content`` blocks, ``is_error``) of one user
                                       message; a user message right after joins it
``metadata["anthropic"]["cache_control"]``  ``cache_control`` on the message's last block
=====================================  ===============================================

Not kept (reported): other providers' reasoning, images outside user and tool
messages, image ``detail``, names, a system message's position after the first
turn (it moves to ``system``), empty messages. Tool-call ids outside
``^[a-zA-Z0-9_-]+$`` are rewritten (reported) the way the adapter does, the same for
a call and its result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..providers.anthropic import wire_tool_id
from ..types import Image, ImagePart, Message, Part, ReasoningPart, TextPart, Thread, ToolCall
from ._base import (
    FormatError,
    FormatWarning,
    Report,
    call_arguments,
    check_call_metadata,
    check_fields,
    check_image_url,
    check_thread_metadata,
    conversation,
    messages_of,
    need,
    need_dict,
    need_list,
    need_str,
    read_parts,
    redundant_tool_name,
    tool_call_from_object,
    unknown_keys,
)

__all__ = ["from_anthropic", "to_anthropic"]

FORMAT = "anthropic"
_NAME = "Anthropic Messages"
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


# ------------------------------------------------------------------------------ export


def _cache_control(m: Message, where: str, report: Report) -> Any:
    """``metadata["anthropic"]["cache_control"]`` of ``m``; anything else under ``anthropic`` is reported."""
    a = m.metadata.get("anthropic")
    if a is None:
        return None
    cc = a.get("cache_control") if isinstance(a, Mapping) else None
    if not isinstance(a, Mapping) or cc is None or len(a) != 1:
        report.add("unsupported_field", where, f"message metadata anthropic={a!r} is not kept by {_NAME} (only cache_control is)")
    return cc


def _image_block(p: ImagePart, where: str, report: Report) -> dict[str, Any] | None:
    if p.detail is not None:
        report.add("unsupported_field", where, f"image detail is not kept by {_NAME}")
    img = p.image
    if img.url is not None:
        check_image_url(p, where, _NAME, report)
        return {"type": "image", "source": {"type": "url", "url": img.url}}
    if img.mime_type not in IMAGE_MEDIA_TYPES:
        report.add(
            "unsupported_content",
            where,
            f"an image of type {img.mime_type!r} is not kept by {_NAME} (it takes {', '.join(sorted(IMAGE_MEDIA_TYPES))})",
        )
        return None
    return {"type": "image", "source": {"type": "base64", "media_type": img.mime_type, "data": img.base64}}


def _reasoning_block(p: ReasoningPart, where: str, report: Report) -> dict[str, Any] | None:
    if p.provider != FORMAT:
        report.add("foreign_reasoning", where, f"reasoning from {p.provider or 'an unnamed provider'} is not kept by {_NAME}")
        return None
    lost = [n for n in ("encrypted_content", "id") if getattr(p, n) is not None]
    if p.redacted_data is not None:
        if p.text or p.signature is not None:
            lost += ["text"] if p.text else []
            lost += ["signature"] if p.signature is not None else []
        block: dict[str, Any] = {"type": "redacted_thinking", "data": p.redacted_data}
    else:
        block = {"type": "thinking", "thinking": p.text}
        if p.signature is not None:
            block["signature"] = p.signature
    if lost:
        report.add("unsupported_field", where, f"reasoning {', '.join(lost)} is not kept by {_NAME}")
    return block


def _blocks(m: Message, where: str, report: Report) -> list[dict[str, Any]]:
    """Content blocks of a user, assistant or tool message (tool_use blocks not included)."""
    out: list[dict[str, Any]] = []
    for j, p in enumerate(m.parts):
        pw = f"{where}.content[{j}]"
        if type(p) is TextPart:
            if p.text:
                out.append({"type": "text", "text": p.text})
        elif type(p) is ImagePart:
            if m.role == "assistant":
                report.add("unsupported_content", pw, f"an image in an assistant message is not kept by {_NAME}")
                continue
            b = _image_block(p, pw, report)
            if b is not None:
                out.append(b)
        else:
            assert type(p) is ReasoningPart
            if m.role != "assistant":
                report.add("unsupported_content", pw, f"reasoning in a {m.role} message is not kept by {_NAME}")
                continue
            b = _reasoning_block(p, pw, report)
            if b is not None:
                out.append(b)
    return out


def _wire_id(id: str, where: str, report: Report) -> str:
    wid = wire_tool_id(id)
    if wid != id:
        report.add("rewritten", where, f"tool-call id {id!r} is written as {wid!r} (Anthropic ids match ^[a-zA-Z0-9_-]+$)")
    return wid


def _tool_use(tc: ToolCall, where: str, report: Report) -> dict[str, Any]:
    check_call_metadata(tc, where, _NAME, report)
    args = call_arguments(tc, where, _NAME, report)
    return {"type": "tool_use", "id": _wire_id(tc.id, where, report), "name": tc.name, "input": args}


def to_anthropic(
    thread: Thread | Iterable[Message], *, strict: bool = False
) -> tuple[dict[str, Any], list[FormatWarning]]:
    """``({"system": [...], "messages": [...]}, warnings)``: the thread as a Messages API conversation.

    The same shape :class:`allm.providers.Anthropic` sends (``system`` is left out
    when empty). Raises :class:`~allm.formats.FormatError` (``unrepresentable``)
    when ``strict`` and something is not kept.
    """
    report = Report(strict)
    msgs = messages_of(thread)
    check_thread_metadata(thread, _NAME, report)
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    in_results = False  # the last wire message is a user turn opened by tool results
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if m.role == "system":
            check_fields(m, where, _NAME, report, metadata_keys=("anthropic",))
            cc = _cache_control(m, where, report)
            for j, p in enumerate(m.parts):
                if type(p) is not TextPart:
                    report.add("unsupported_content", f"{where}.content[{j}]", f"only text is kept in a system message by {_NAME}")
            if not m.text:
                report.add("unsupported_content", where, f"an empty system message is not written to {_NAME}")
                continue
            if out:
                report.add("rewritten", where, "a system message after the first turn is moved to the top-level system prompt")
            block: dict[str, Any] = {"type": "text", "text": m.text}
            if cc is not None:
                block["cache_control"] = cc
            system.append(block)
            continue
        if m.role == "tool":
            if not m.tool_call_id:
                report.add("unsupported_content", where, f"a tool message without tool_call_id cannot be written to {_NAME}")
                continue
            keep = ["tool_call_id", "is_error"] + (["name"] if redundant_tool_name(msgs, i) else [])
            check_fields(m, where, _NAME, report, keep=keep, metadata_keys=("anthropic",))
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": _wire_id(m.tool_call_id, where, report)}
            content = _blocks(m, where, report)
            if content:
                result["content"] = content
            if m.is_error:
                result["is_error"] = True
            blocks = [result]
        elif m.role == "user":
            check_fields(m, where, _NAME, report, metadata_keys=("anthropic",))
            blocks = _blocks(m, where, report)
        else:
            check_fields(m, where, _NAME, report, keep=("tool_calls",), metadata_keys=("anthropic",))
            blocks = _blocks(m, where, report)
            blocks.extend(_tool_use(tc, f"{where}.tool_calls[{k}]", report) for k, tc in enumerate(m.tool_calls))
        cc = _cache_control(m, where, report)
        if not blocks:
            report.add("unsupported_content", where, f"an empty {m.role} message is not written to {_NAME}")
            continue
        if cc is not None:
            blocks[-1]["cache_control"] = cc
        if m.role == "assistant":
            out.append({"role": "assistant", "content": blocks})
            in_results = False
        elif in_results:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": "user", "content": blocks})
            in_results = m.role == "tool"
    payload: dict[str, Any] = {"system": system} if system else {}
    payload["messages"] = out
    return payload, report.warnings


# ------------------------------------------------------------------------------ import


def _meta(block: Mapping[str, Any]) -> dict[str, Any]:
    cc = block.get("cache_control")
    return {"anthropic": {"cache_control": cc}} if cc is not None else {}


def _image_in(b: Mapping[str, Any], where: str, report: Report) -> ImagePart | None:
    src = need_dict(b.get("source"), f"{where}.source")
    t = src.get("type")
    if t == "base64":
        data, media = need_str(src, "data", f"{where}.source"), need_str(src, "media_type", f"{where}.source")
        try:
            return ImagePart(Image.from_base64(data, media))
        except ValueError as exc:
            raise FormatError(f"{where}: {exc}", reason="invalid_payload") from None
    if t == "url":
        url = need_str(src, "url", f"{where}.source")
        if url.startswith("data:"):
            raise FormatError(f"{where}: a url image source holds a data: URL", reason="invalid_payload")
        return ImagePart(Image.from_url(url))
    report.add("unsupported_content", where, f"an image with a {t!r} source is not read (allm keeps base64 and url images)")
    return None


def _text_block(b: Mapping[str, Any], where: str, report: Report) -> TextPart:
    unknown_keys(b, ("type", "text", "cache_control"), where, report, "a text block")
    return TextPart(need_str(b, "text", where))


def _tool_result_content(content: Any, where: str, report: Report) -> str | tuple[Part, ...]:
    def read(t: str, b: Mapping[str, Any], bw: str) -> Part | None:
        if t == "text":
            return _text_block(b, bw, report)
        if t == "image":
            return _image_in(b, bw, report)
        report.add("unsupported_content", bw, f"a {t!r} block in a tool result is not read")
        return None

    return read_parts(content, where, read)


def _cache_meta(b: Mapping[str, Any], last: bool, bw: str, report: Report) -> dict[str, Any]:
    """The message metadata a block's ``cache_control`` stands for: only on a message's last block."""
    if b.get("cache_control") is None:
        return {}
    if not last:
        report.add("unsupported_field", bw, "cache_control on a block that is not the last of its message is not read")
        return {}
    return _meta(b)


def _user_message(blocks: list[tuple[int, Mapping[str, Any]]], where: str, report: Report) -> Message | None:
    parts: list[Part] = []
    meta: dict[str, Any] = {}
    for n, (j, b) in enumerate(blocks):
        bw = f"{where}.content[{j}]"
        t = b.get("type")
        meta = _cache_meta(b, n == len(blocks) - 1, bw, report) or meta
        if t == "text":
            parts.append(_text_block(b, bw, report))
        elif t == "image":
            unknown_keys(b, ("type", "source", "cache_control"), bw, report, "an image block")
            img = _image_in(b, bw, report)
            if img is not None:
                parts.append(img)
        else:
            report.add("unsupported_content", bw, f"a {t!r} block is not read (allm keeps text, image and tool_result)")
    if not parts and not meta:
        return None
    return Message("user", tuple(parts), metadata=meta)


def _user_in(d: Mapping[str, Any], where: str, report: Report) -> list[Message]:
    content = d.get("content")
    if isinstance(content, str):
        return [Message("user", content)]
    out: list[Message] = []
    run: list[tuple[int, Mapping[str, Any]]] = []

    def flush() -> None:
        if run:
            m = _user_message(run, where, report)
            if m is not None:
                out.append(m)
            run.clear()

    for j, b in enumerate(need_list(content, f"{where}.content")):
        bw = f"{where}.content[{j}]"
        b = need_dict(b, bw)
        if b.get("type") == "tool_result":
            flush()
            unknown_keys(b, ("type", "tool_use_id", "content", "is_error", "cache_control"), bw, report, "a tool_result block")
            is_error = b.get("is_error", False)
            need(isinstance(is_error, bool), bw, "'is_error' must be a boolean")
            out.append(
                Message(
                    "tool",
                    _tool_result_content(b.get("content"), bw, report),
                    tool_call_id=need_str(b, "tool_use_id", bw),
                    is_error=bool(is_error),
                    metadata=_meta(b),
                )
            )
        else:
            run.append((j, b))
    flush()
    return out


def _assistant_in(d: Mapping[str, Any], where: str, report: Report) -> Message:
    content = d.get("content")
    if isinstance(content, str):
        return Message("assistant", content)
    parts: list[Part] = []
    calls: list[ToolCall] = []
    meta: dict[str, Any] = {}
    blocks = need_list(content, f"{where}.content")
    for j, b in enumerate(blocks):
        bw = f"{where}.content[{j}]"
        b = need_dict(b, bw)
        t = b.get("type")
        meta = _cache_meta(b, j == len(blocks) - 1, bw, report) or meta
        if t == "text":
            parts.append(_text_block(b, bw, report))
        elif t == "thinking":
            unknown_keys(b, ("type", "thinking", "signature", "cache_control"), bw, report, "a thinking block")
            sig = b.get("signature")
            need(sig is None or isinstance(sig, str), bw, "'signature' must be a string")
            parts.append(ReasoningPart(need_str(b, "thinking", bw), sig, provider=FORMAT))
        elif t == "redacted_thinking":
            unknown_keys(b, ("type", "data", "cache_control"), bw, report, "a redacted_thinking block")
            parts.append(ReasoningPart(redacted_data=need_str(b, "data", bw), provider=FORMAT))
        elif t == "tool_use":
            caller = b.get("caller")
            known = ["type", "id", "name", "input", "cache_control"]
            if isinstance(caller, Mapping) and caller.get("type") == "direct":
                known.append("caller")  # the default: the model called it itself
            unknown_keys(b, known, bw, report, "a tool_use block")
            args = b.get("input")
            args = {} if args is None else need_dict(args, f"{bw}.input")
            calls.append(tool_call_from_object(need_str(b, "id", bw), need_str(b, "name", bw), args))
        else:
            report.add("unsupported_content", bw, f"a {t!r} block is not read (allm keeps text, thinking and tool_use)")
    return Message("assistant", tuple(parts), tool_calls=tuple(calls), metadata=meta)


def _system_in(system: Any, report: Report) -> list[Message]:
    if system is None:
        return []
    if isinstance(system, str):
        return [Message("system", system)] if system else []
    out: list[Message] = []
    for j, b in enumerate(need_list(system, "system")):
        bw = f"system[{j}]"
        b = need_dict(b, bw)
        if b.get("type") != "text":
            report.add("unsupported_content", bw, f"a {b.get('type')!r} block in system is not read")
            continue
        out.append(Message("system", _text_block(b, bw, report).text, metadata=_meta(b)))
    return out


def from_anthropic(payload: Any, *, strict: bool = False) -> tuple[Thread, list[FormatWarning]]:
    """``(thread, warnings)`` from a Messages API ``{"system", "messages"}`` (or a bare messages array).

    A user message's ``tool_result`` blocks become tool messages, in order, and its
    other blocks a user message; ``thinking`` / ``redacted_thinking`` blocks become
    ``ReasoningPart(provider="anthropic")`` with their signature or data. Raises
    :class:`~allm.formats.FormatError`: ``invalid_payload`` for a wrong shape,
    ``unrepresentable`` when ``strict`` and something is skipped.
    """
    report = Report(strict)
    conv = conversation(payload, ("system", "messages"), "messages", _NAME, report)
    msgs = _system_in(conv.get("system"), report)
    for i, raw in enumerate(need_list(conv.get("messages"), "messages")):
        where = f"messages[{i}]"
        d = need_dict(raw, where)
        unknown_keys(d, ("role", "content"), where, report, "a message")
        role = d.get("role")
        if role == "user":
            msgs.extend(_user_in(d, where, report))
        elif role == "assistant":
            msgs.append(_assistant_in(d, where, report))
        else:
            report.add("unknown", where, f"a message with role {role!r} is not read (Anthropic has user and assistant)")
    return Thread(tuple(msgs)), report.warnings
