"""OpenAI Chat Completions ``messages`` <-> a :class:`~allm.types.Thread`.

Follows https://platform.openai.com/docs/api-reference/chat/create (the
``messages`` array: ``system`` / ``developer``, ``user``, ``assistant``, ``tool``).
The payload is ``{"messages": [...]}``; a bare array of messages, or a whole
request body (its other fields are reported as ``not_history``), is read too.

=====================================  ===============================================
thread                                 Chat Completions
=====================================  ===============================================
system message                         ``{"role": "system", "content": text}``
                                       (``developer`` is read as system)
user text / images                     ``content``: a string, or ``text`` and
                                       ``image_url`` parts (URL or ``data:`` URL,
                                       ``detail``); ``name`` kept
assistant text + tool calls            ``content`` (``null`` when only tool calls),
                                       ``tool_calls`` (``id``, ``function.name``,
                                       ``function.arguments`` as JSON text)
tool message                           ``{"role": "tool", "tool_call_id", "content"}``
=====================================  ===============================================

Not kept (reported): reasoning (read from ``reasoning_content`` / ``reasoning``
on import, never written: Chat Completions does not take it back), images outside
user messages, ``is_error``, names other than a user's, metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..types import Image, ImagePart, Message, Part, ReasoningPart, TextPart, Thread, ToolCall
from ._base import (
    FormatError,
    FormatWarning,
    Report,
    arguments_text,
    check_call_metadata,
    check_fields,
    check_image_url,
    check_thread_metadata,
    conversation,
    dumps,
    messages_of,
    need,
    need_dict,
    need_list,
    need_str,
    read_parts,
    redundant_tool_name,
    tool_call_from_object,
    tool_call_from_text,
    unknown_keys,
)

__all__ = ["from_openai_chat", "to_openai_chat"]

FORMAT = "openai_chat"
_NAME = "Chat Completions"


# ------------------------------------------------------------------------------ export


def _image_url(part: ImagePart) -> dict[str, Any]:
    img: dict[str, Any] = {"url": part.image.data_url()}
    if part.detail is not None:
        img["detail"] = part.detail
    return {"type": "image_url", "image_url": img}


def _text_only(m: Message, where: str, report: Report) -> str:
    for j, p in enumerate(m.parts):
        if type(p) is ImagePart:
            report.add("unsupported_content", f"{where}.content[{j}]", f"an image in a {m.role} message is not kept by {_NAME}")
        elif type(p) is ReasoningPart:
            report.add("unsupported_content", f"{where}.content[{j}]", f"reasoning is not kept by {_NAME}")
    return m.text


def _user_content(m: Message, where: str, report: Report) -> str | list[dict[str, Any]]:
    if isinstance(m.content, str):
        return m.content
    out: list[dict[str, Any]] = []
    for j, p in enumerate(m.content):
        if type(p) is TextPart:
            out.append({"type": "text", "text": p.text})
        elif type(p) is ImagePart:
            check_image_url(p, f"{where}.content[{j}]", _NAME, report)
            out.append(_image_url(p))
        else:
            report.add("unsupported_content", f"{where}.content[{j}]", f"reasoning is not kept by {_NAME}")
    if all(d["type"] == "text" for d in out):
        return "".join(d["text"] for d in out)
    return out


def to_openai_chat(
    thread: Thread | Iterable[Message], *, strict: bool = False
) -> tuple[dict[str, Any], list[FormatWarning]]:
    """``({"messages": [...]}, warnings)``: the thread as Chat Completions messages.

    The same shape :class:`allm.providers.OpenAI` sends. Raises
    :class:`~allm.formats.FormatError` (``unrepresentable``) when ``strict`` and
    something is not kept; otherwise each loss is a :class:`~allm.formats.FormatWarning`.
    """
    report = Report(strict)
    msgs = messages_of(thread)
    check_thread_metadata(thread, _NAME, report)
    out: list[dict[str, Any]] = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if m.role == "system":
            check_fields(m, where, _NAME, report)
            out.append({"role": "system", "content": _text_only(m, where, report)})
        elif m.role == "user":
            check_fields(m, where, _NAME, report, keep=("name",))
            d: dict[str, Any] = {"role": "user", "content": _user_content(m, where, report)}
            if m.name:
                d["name"] = m.name
            out.append(d)
        elif m.role == "assistant":
            check_fields(m, where, _NAME, report, keep=("tool_calls",))
            text = _text_only(m, where, report)
            d = {"role": "assistant", "content": text if text or not m.tool_calls else None}
            if m.tool_calls:
                calls = []
                for k, tc in enumerate(m.tool_calls):
                    check_call_metadata(tc, f"{where}.tool_calls[{k}]", _NAME, report)
                    calls.append(
                        {"id": tc.id, "type": "function", "function": {"name": tc.name, "arguments": arguments_text(tc)}}
                    )
                d["tool_calls"] = calls
            out.append(d)
        else:
            if not m.tool_call_id:
                report.add("unsupported_content", where, f"a tool message without tool_call_id cannot be written to {_NAME}")
                continue
            keep = ["tool_call_id"] + (["name"] if redundant_tool_name(msgs, i) else [])
            check_fields(m, where, _NAME, report, keep=keep)
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": _text_only(m, where, report)})
    return {"messages": out}, report.warnings


# ------------------------------------------------------------------------------ import


def _text_parts(content: Any, where: str, report: Report, kinds: tuple[str, ...] = ("text",)) -> str:
    """A string, or an array of text parts, as one string."""

    def read(t: str, p: Mapping[str, Any], pw: str) -> Part | None:
        if t not in kinds:
            report.add("unsupported_content", pw, f"a {t!r} part is not read here")
            return None
        if t == "refusal":
            report.add("rewritten", pw, "a refusal part is read as text")
        return TextPart(need_str(p, t, pw))

    c = read_parts(content, where, read)
    return c if isinstance(c, str) else "".join(p.text for p in c if type(p) is TextPart)


def image_from_url(url: str, detail: Any, where: str) -> ImagePart:
    """An :class:`ImagePart` from a URL or ``data:`` URL; :class:`FormatError` when the data is bad."""
    need(detail in (None, "auto", "low", "high"), where, f"image detail must be auto, low or high, got {detail!r}")
    try:
        return ImagePart(Image.from_url(url), detail)
    except ValueError as exc:
        raise FormatError(f"{where}: {exc}", reason="invalid_payload") from None


def _user_content_in(content: Any, where: str, report: Report) -> str | tuple[Part, ...]:
    def read(t: str, p: Mapping[str, Any], pw: str) -> Part | None:
        if t == "text":
            return TextPart(need_str(p, "text", pw))
        if t == "image_url":
            iu = p.get("image_url")
            if isinstance(iu, str):
                return image_from_url(iu, None, pw)
            iu = need_dict(iu, f"{pw}.image_url")
            return image_from_url(need_str(iu, "url", f"{pw}.image_url"), iu.get("detail"), pw)
        report.add("unsupported_content", pw, f"a {t!r} content part is not read (allm keeps text and images)")
        return None

    return read_parts(content, where, read)


def _tool_calls_in(calls: Any, where: str, report: Report) -> list[ToolCall]:
    out: list[ToolCall] = []
    for k, c in enumerate(need_list(calls, f"{where}.tool_calls")):
        cw = f"{where}.tool_calls[{k}]"
        c = need_dict(c, cw)
        if c.get("type", "function") != "function":
            report.add("unsupported_content", cw, f"a {c.get('type')!r} tool call is not read (allm keeps function calls)")
            continue
        fn = need_dict(c.get("function"), f"{cw}.function")
        name = need_str(fn, "name", f"{cw}.function")
        cid = need_str(c, "id", cw)
        args = fn.get("arguments")
        if isinstance(args, Mapping):
            out.append(tool_call_from_object(cid, name, args))
        else:
            out.append(tool_call_from_text(cid, name, args if isinstance(args, str) else dumps(args)))
    return out


def message_from_openai_chat(raw: Any, where: str, report: Report) -> Message | None:
    """One Chat Completions message as a :class:`Message`, or ``None`` (reported) when skipped."""
    d = need_dict(raw, where)
    role = d.get("role")
    name = d.get("name")
    need(name is None or isinstance(name, str), where, "'name' must be a string")
    if role in ("system", "developer"):
        unknown_keys(d, ("role", "content", "name"), where, report, f"a {role} message")
        return Message("system", _text_parts(d.get("content"), where, report), name=name)
    if role == "user":
        unknown_keys(d, ("role", "content", "name"), where, report, "a user message")
        return Message("user", _user_content_in(d.get("content"), where, report), name=name)
    if role == "assistant":
        unknown_keys(
            d,
            ("role", "content", "name", "tool_calls", "refusal", "reasoning_content", "reasoning"),
            where,
            report,
            "an assistant message",
        )
        parts: list[Part] = []
        for key in ("reasoning_content", "reasoning"):
            r = d.get(key)
            if isinstance(r, str) and r:
                parts.append(ReasoningPart(r))
        text = _text_parts(d.get("content"), where, report, ("text", "refusal"))
        refusal = d.get("refusal")
        if isinstance(refusal, str) and refusal and not text:
            report.add("rewritten", where, "a refusal is read as the message's text")
            text = refusal
        if text:
            parts.append(TextPart(text))
        calls = _tool_calls_in(d["tool_calls"], where, report) if d.get("tool_calls") else []
        content: str | tuple[Part, ...] = text if not parts or parts == [TextPart(text)] else tuple(parts)
        return Message("assistant", content, tool_calls=tuple(calls), name=name)
    if role == "tool":
        unknown_keys(d, ("role", "content", "tool_call_id", "name"), where, report, "a tool message")
        return Message(
            "tool", _text_parts(d.get("content"), where, report), tool_call_id=need_str(d, "tool_call_id", where), name=name
        )
    report.add("unknown", where, f"a message with role {role!r} is not read")
    return None


def from_openai_chat(payload: Any, *, strict: bool = False) -> tuple[Thread, list[FormatWarning]]:
    """``(thread, warnings)`` from Chat Completions ``{"messages": [...]}`` (or a bare array).

    Reads ``system``/``developer``, ``user`` (text and ``image_url`` parts),
    ``assistant`` (text, ``tool_calls``, ``reasoning_content``/``reasoning``,
    ``refusal``) and ``tool`` messages. Raises :class:`~allm.formats.FormatError`:
    ``invalid_payload`` for a wrong shape (the message names the path),
    ``unrepresentable`` when ``strict`` and something is skipped.
    """
    report = Report(strict)
    conv = conversation(payload, ("messages",), "messages", _NAME, report)
    msgs: list[Message] = []
    for i, raw in enumerate(need_list(conv.get("messages"), "messages")):
        m = message_from_openai_chat(raw, f"messages[{i}]", report)
        if m is not None:
            msgs.append(m)
    return Thread(tuple(msgs)), report.warnings
