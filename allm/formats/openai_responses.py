"""OpenAI Responses ``instructions`` + ``input`` items <-> a :class:`~allm.types.Thread`.

Follows https://platform.openai.com/docs/api-reference/responses/create (input
items: messages with ``input_text`` / ``input_image`` / ``output_text`` parts,
``reasoning``, ``function_call``, ``function_call_output``) and the Open Responses
specification. The payload is ``{"instructions": ..., "input": [...]}``
(``instructions`` left out when the thread does not start with a system message);
a bare ``input`` array, an ``input`` string, or a whole request body is read too.

=====================================  ===============================================
thread                                 Responses
=====================================  ===============================================
leading system messages                ``instructions`` (joined by a blank line); a
                                       later one is a ``system`` message item
user text / images                     ``content``: a string, or ``input_text`` and
                                       ``input_image`` parts (URL or ``data:`` URL,
                                       ``detail``)
assistant text                         a message item with ``output_text`` parts
assistant reasoning                    a ``reasoning`` item (``summary``,
                                       ``encrypted_content``) from a
                                       ``ReasoningPart`` of this provider family with
                                       ``encrypted_content``
assistant tool calls                   ``function_call`` items (``call_id``,
                                       ``name``, ``arguments`` text)
tool messages                          ``function_call_output`` items
=====================================  ===============================================

Consecutive assistant-side items (reasoning, message, function_call) read back as
one assistant message; a message item right after another message item starts a
new one. Item ``id`` and ``status`` fields are not written (ids resolve only
against responses stored by OpenAI, and refuse replays with ``store=false``); the
``id`` of a function call is read into ``ToolCall.metadata["openai"]["item_id"]``
and of a reasoning item into ``ReasoningPart.id``.

Not kept (reported): other providers' reasoning, reasoning without
``encrypted_content``, signatures, ``is_error``, names, images outside user
messages, message metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..types import ImagePart, Message, Part, ReasoningPart, TextPart, Thread, ToolCall
from ._base import (
    FormatWarning,
    Report,
    arguments_text,
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
    tool_call_from_text,
    unknown_keys,
)
from .openai_chat import image_from_url

__all__ = ["from_openai_responses", "to_openai_responses"]

FORMAT = "openai_responses"
_NAME = "the Responses API"
_ITEM_BOOKKEEPING = ("id", "status")


# ------------------------------------------------------------------------------ export


def _input_parts(m: Message, where: str, report: Report) -> str | list[dict[str, Any]]:
    if isinstance(m.content, str):
        return m.content
    out: list[dict[str, Any]] = []
    for j, p in enumerate(m.content):
        if type(p) is TextPart:
            out.append({"type": "input_text", "text": p.text})
        elif type(p) is ImagePart:
            check_image_url(p, f"{where}.content[{j}]", _NAME, report)
            out.append({"type": "input_image", "image_url": p.image.data_url(), "detail": p.detail or "auto"})
        else:
            report.add("unsupported_content", f"{where}.content[{j}]", f"reasoning in a user message is not kept by {_NAME}")
    if all(d["type"] == "input_text" for d in out):
        return "".join(d["text"] for d in out)
    return out


def _reasoning_item(p: ReasoningPart, provider: str, where: str, report: Report) -> dict[str, Any] | None:
    if p.provider != provider:
        report.add("foreign_reasoning", where, f"reasoning from {p.provider or 'an unnamed provider'} is not kept by {_NAME}")
        return None
    if not p.encrypted_content:
        report.add("unsupported_content", where, f"reasoning without encrypted_content is not kept by {_NAME}")
        return None
    lost = [n for n in ("signature", "redacted_data") if getattr(p, n) is not None]
    if lost:
        report.add("unsupported_field", where, f"reasoning {', '.join(lost)} is not kept by {_NAME}")
    summary = [{"type": "summary_text", "text": p.text}] if p.text else []
    return {"type": "reasoning", "summary": summary, "encrypted_content": p.encrypted_content}


def _phase(m: Message, where: str, report: Report) -> str | None:
    """``metadata["openai"]["phase"]`` (``commentary`` / ``final_answer``), written on the message items."""
    o = m.metadata.get("openai")
    if o is None:
        return None
    phase = o.get("phase") if isinstance(o, Mapping) else None
    if not isinstance(phase, str) or len(o) != 1:
        report.add("unsupported_field", where, f"message metadata openai={o!r} is not kept by {_NAME} (only phase is)")
    return phase if isinstance(phase, str) else None


def _assistant_items(m: Message, provider: str, where: str, report: Report) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    text: list[str] = []
    phase = _phase(m, where, report)

    def flush() -> None:
        joined = "".join(text)
        text.clear()
        if joined:
            item: dict[str, Any] = {"role": "assistant", "content": [{"type": "output_text", "text": joined}]}
            if phase is not None:
                item["phase"] = phase
            items.append(item)

    for j, p in enumerate(m.parts):
        pw = f"{where}.content[{j}]"
        if type(p) is TextPart:
            text.append(p.text)
        elif type(p) is ReasoningPart:
            item = _reasoning_item(p, provider, pw, report)
            if item is not None:
                flush()
                items.append(item)
        else:
            report.add("unsupported_content", pw, f"an image in an assistant message is not kept by {_NAME}")
    flush()
    if phase is not None and not any("role" in it for it in items):
        report.add("unsupported_field", where, f"the phase of an assistant message without text is not kept by {_NAME}")
    for k, tc in enumerate(m.tool_calls):
        extra = sorted(k2 for k2 in tc.metadata if k2 != "openai")
        o = tc.metadata.get("openai")
        if isinstance(o, Mapping):
            extra += sorted(f"openai.{k2}" for k2 in o if k2 != "item_id")
        elif o is not None:
            extra.append("openai")
        if extra:
            report.add("unsupported_field", f"{where}.tool_calls[{k}]", f"tool call {tc.id!r} metadata {extra} is not kept by {_NAME}")
        items.append({"type": "function_call", "call_id": tc.id, "name": tc.name, "arguments": arguments_text(tc)})
    return items


def to_openai_responses(
    thread: Thread | Iterable[Message], *, provider: str = "openai", strict: bool = False
) -> tuple[dict[str, Any], list[FormatWarning]]:
    """``({"instructions": ..., "input": [...]}, warnings)``: the thread as Responses input items.

    The same shape :class:`allm.providers.OpenAIResponses` sends. ``provider`` is
    the family whose reasoning is written (``ReasoningPart.provider``). Raises
    :class:`~allm.formats.FormatError` (``unrepresentable``) when ``strict`` and
    something is not kept.
    """
    report = Report(strict)
    msgs = messages_of(thread)
    check_thread_metadata(thread, _NAME, report)
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    leading = True
    last_assistant: tuple[int, bool] | None = None  # (index in items after it, ends with a message item)
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if m.role != "system":
            leading = False
        if m.role in ("system", "tool"):
            for j, p in enumerate(m.parts):
                if type(p) is not TextPart:
                    report.add("unsupported_content", f"{where}.content[{j}]", f"only text is kept in a {m.role} message by {_NAME}")
        if m.role == "system":
            check_fields(m, where, _NAME, report)
            if leading:
                if instructions:
                    report.add("rewritten", where, "leading system messages are joined into one instructions text")
                instructions.append(m.text)
            else:
                items.append({"role": "system", "content": m.text})
        elif m.role == "user":
            check_fields(m, where, _NAME, report)
            items.append({"role": "user", "content": _input_parts(m, where, report)})
        elif m.role == "assistant":
            check_fields(m, where, _NAME, report, keep=("tool_calls",), metadata_keys=("openai",))
            new = _assistant_items(m, provider, where, report)
            if not new:
                report.add("unsupported_content", where, f"an assistant message with nothing {_NAME} keeps is not written")
                continue
            if last_assistant is not None and last_assistant[0] == len(items) and not (last_assistant[1] and "role" in new[0]):
                report.add("rewritten", where, "this assistant message reads back joined to the one before it")
            items.extend(new)
            last_assistant = (len(items), "role" in new[-1] and not m.tool_calls)
        else:
            if not m.tool_call_id:
                report.add("unsupported_content", where, f"a tool message without tool_call_id cannot be written to {_NAME}")
                continue
            keep = ["tool_call_id"] + (["name"] if redundant_tool_name(msgs, i) else [])
            check_fields(m, where, _NAME, report, keep=keep)
            items.append({"type": "function_call_output", "call_id": m.tool_call_id, "output": m.text})
    payload: dict[str, Any] = {"instructions": "\n\n".join(instructions)} if instructions else {}
    payload["input"] = items
    return payload, report.warnings


# ------------------------------------------------------------------------------ import


def _content_in(content: Any, role: str, where: str, report: Report) -> str | tuple[Part, ...]:
    def read(t: str, p: Mapping[str, Any], pw: str) -> Part | None:
        if t in ("input_text", "output_text", "text"):
            unknown_keys(p, ("type", "text", "annotations"), pw, report, f"an {t} part")
            if p.get("annotations"):
                report.add("unsupported_field", pw, "annotations are not read")
            return TextPart(need_str(p, "text", pw))
        if t == "refusal":
            report.add("rewritten", pw, "a refusal is read as text")
            return TextPart(need_str(p, "refusal", pw))
        if t == "input_image" and role == "user" and isinstance(p.get("image_url"), str):
            unknown_keys(p, ("type", "image_url", "detail"), pw, report, "an input_image part")
            detail = p.get("detail")
            return image_from_url(p["image_url"], None if detail == "auto" else detail, pw)
        report.add("unsupported_content", pw, f"a {t!r} part is not read (allm keeps text and image URLs)")
        return None

    return read_parts(content, where, read)


def _reasoning_in(d: Mapping[str, Any], provider: str, where: str, report: Report) -> ReasoningPart:
    unknown_keys(d, ("type", "summary", "encrypted_content", "content", *_ITEM_BOOKKEEPING), where, report, "a reasoning item")
    summary = [need_str(need_dict(s, f"{where}.summary[{k}]"), "text", f"{where}.summary[{k}]")
               for k, s in enumerate(need_list(d.get("summary") or [], f"{where}.summary"))]
    content = [need_str(need_dict(c, f"{where}.content[{k}]"), "text", f"{where}.content[{k}]")
               for k, c in enumerate(need_list(d.get("content") or [], f"{where}.content"))]
    text = "\n\n".join(summary)
    if content:
        if summary:
            report.add("unsupported_content", f"{where}.content", "reasoning text beside a summary is not read (the summary is)")
        else:
            report.add("rewritten", f"{where}.content", "reasoning text is read as the summary")
            text = "\n\n".join(content)
    enc = d.get("encrypted_content")
    need(enc is None or isinstance(enc, str), where, "'encrypted_content' must be a string")
    rid = d.get("id")
    return ReasoningPart(text, encrypted_content=enc, id=rid if isinstance(rid, str) else None, provider=provider)


def _function_call_in(d: Mapping[str, Any], where: str, report: Report) -> ToolCall:
    unknown_keys(d, ("type", "call_id", "name", "arguments", *_ITEM_BOOKKEEPING), where, report, "a function_call item")
    args = d.get("arguments")
    raw = args if isinstance(args, str) else dumps(args if args is not None else {})
    iid = d.get("id")
    meta = {"openai": {"item_id": iid}} if isinstance(iid, str) and iid else None
    return tool_call_from_text(need_str(d, "call_id", where), need_str(d, "name", where), raw, meta)


def _output_in(output: Any, where: str, report: Report) -> str:
    if output is None or isinstance(output, str):
        return output or ""
    texts: list[str] = []
    for j, raw in enumerate(need_list(output, f"{where}.output")):
        pw = f"{where}.output[{j}]"
        p = need_dict(raw, pw)
        if p.get("type") in ("input_text", "output_text"):
            texts.append(need_str(p, "text", pw))
        else:
            report.add("unsupported_content", pw, f"a {p.get('type')!r} part in a tool output is not read")
    return "".join(texts)


class _Assistant:
    """The assistant message being gathered from consecutive items."""

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self.calls: list[ToolCall] = []
        self.last: str = ""
        self.phase: str | None = None
        self.has_text = False

    def message(self) -> Message:
        meta = {"openai": {"phase": self.phase}} if self.phase is not None else {}
        return Message("assistant", tuple(self.parts), tool_calls=tuple(self.calls), metadata=meta)


def from_openai_responses(
    payload: Any, *, provider: str = "openai", strict: bool = False
) -> tuple[Thread, list[FormatWarning]]:
    """``(thread, warnings)`` from Responses ``{"instructions", "input"}`` (an array, or a string).

    ``provider`` names the family of the reasoning read (``ReasoningPart.provider``).
    Raises :class:`~allm.formats.FormatError`: ``invalid_payload`` for a wrong
    shape, ``unrepresentable`` when ``strict`` and something is skipped.
    """
    report = Report(strict)
    if isinstance(payload, str):
        payload = {"input": payload}
    conv = conversation(payload, ("instructions", "input"), "input", _NAME, report)
    msgs: list[Message] = []
    instr = conv.get("instructions")
    if instr is not None:
        need(isinstance(instr, str), "instructions", "'instructions' must be a string")
        msgs.append(Message("system", instr))
    inp = conv.get("input")
    if isinstance(inp, str):
        msgs.append(Message("user", inp))
        return Thread(tuple(msgs)), report.warnings
    asst: _Assistant | None = None

    def close() -> None:
        nonlocal asst
        if asst is not None:
            msgs.append(asst.message())
            asst = None

    for i, raw in enumerate(need_list(inp, "input")):
        where = f"input[{i}]"
        d = need_dict(raw, where)
        t = d.get("type", "message")
        if t == "message":
            role = d.get("role")
            if role == "assistant":
                unknown_keys(d, ("type", "role", "content", "phase", *_ITEM_BOOKKEEPING), where, report, "a message item")
                phase = d.get("phase")
                need(phase is None or isinstance(phase, str), where, "'phase' must be a string")
                if asst is not None and (asst.last == "message" or (asst.has_text and phase != asst.phase)):
                    close()
                if asst is None:
                    asst = _Assistant()
                asst.phase = phase
                asst.has_text = True
                c = _content_in(d.get("content"), role, where, report)
                asst.parts.extend((TextPart(c),) if isinstance(c, str) else c)
                asst.last = "message"
                continue
            close()
            unknown_keys(d, ("type", "role", "content", *_ITEM_BOOKKEEPING), where, report, "a message item")
            if role in ("system", "developer"):
                c = _content_in(d.get("content"), role, where, report)
                msgs.append(Message("system", c if isinstance(c, str) else "".join(p.text for p in c if type(p) is TextPart)))
            elif role == "user":
                msgs.append(Message("user", _content_in(d.get("content"), role, where, report)))
            else:
                report.add("unknown", where, f"a message with role {role!r} is not read")
        elif t in ("reasoning", "function_call"):
            if asst is None:
                asst = _Assistant()
            if t == "reasoning":
                asst.parts.append(_reasoning_in(d, provider, where, report))
            else:
                asst.calls.append(_function_call_in(d, where, report))
            asst.last = t
        elif t == "function_call_output":
            close()
            unknown_keys(d, ("type", "call_id", "output", *_ITEM_BOOKKEEPING), where, report, "a function_call_output item")
            msgs.append(Message("tool", _output_in(d.get("output"), where, report), tool_call_id=need_str(d, "call_id", where)))
        else:
            close()
            report.add("unsupported_content", where, f"a {t!r} item is not read (allm keeps messages, reasoning and function calls)")
    close()
    return Thread(tuple(msgs)), report.warnings
