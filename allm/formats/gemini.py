"""Gemini ``systemInstruction`` + ``contents`` <-> a :class:`~allm.types.Thread`.

Follows https://ai.google.dev/api/generate-content (``Content``, ``Part``:
``text``, ``thought``, ``inlineData``, ``fileData``, ``functionCall``,
``functionResponse``), https://ai.google.dev/gemini-api/docs/function-calling and
https://ai.google.dev/gemini-api/docs/thought-signatures (signatures go back on the
part they came on). The payload is ``{"systemInstruction": {"parts": [...]},
"contents": [...]}`` (``systemInstruction`` left out when there is none); a bare
``contents`` array, or a whole request body, is read too. snake_case field names
(``inline_data``, ``function_call``...) are read as their camelCase twins.

=====================================  ===============================================
thread                                 Gemini
=====================================  ===============================================
system messages                        ``systemInstruction.parts``, one text part each
user text / images                     a ``user`` content: ``text``, ``inlineData``
                                       (bytes) or ``fileData`` (URL) parts
assistant                              a ``model`` content: ``text``; thought parts
                                       (``thought: true``) from
                                       ``ReasoningPart(provider="gemini")`` with their
                                       ``thoughtSignature``; a signature-only part
                                       rides on the text part before it;
                                       ``functionCall`` (``args``, ``id`` when Gemini
                                       issued it, ``thoughtSignature`` from
                                       ``ToolCall.metadata["gemini"]``)
tool messages                          ``functionResponse`` parts (``name`` of the call
                                       answered, ``response: {"output"|"error": text}``)
                                       of one ``user`` content
=====================================  ===============================================

Not kept (reported): tool-call ids Gemini did not issue (import makes
``call_<content>_<n>``; a result is paired with its call by ``id``, else by name
and order), other providers' reasoning, image ``detail``, names, message metadata,
a system message's position after the first turn. A ``functionResponse.response``
other than ``{"output": ...}`` / ``{"error": ...}`` is read as its JSON text with
``metadata={"gemini": {"response_object": True}}``, and written back as the object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from ..providers.gemini.encode import find_call, gemini_meta, sent_id
from ..types import Image, ImagePart, Message, Part, ReasoningPart, TextPart, Thread, ToolCall
from ._base import (
    FormatError,
    FormatWarning,
    Report,
    call_arguments,
    check_fields,
    check_thread_metadata,
    conversation,
    dumps,
    messages_of,
    need,
    need_dict,
    need_list,
    need_str,
    tool_call_from_object,
)

__all__ = ["from_gemini", "to_gemini"]

FORMAT = "gemini"
_NAME = "Gemini"


# ------------------------------------------------------------------------------ export


def _image(p: ImagePart, where: str, report: Report) -> dict[str, Any] | None:
    if p.detail is not None:
        report.add("unsupported_field", where, f"image detail is not kept by {_NAME}")
    img = p.image
    if img.url is not None:
        fd: dict[str, Any] = {"fileUri": img.url}
        if img.mime_type:
            fd["mimeType"] = img.mime_type
        return {"fileData": fd}
    if not img.mime_type:
        report.add("unsupported_content", where, f"an image without a mime_type is not kept by {_NAME}")
        return None
    return {"inlineData": {"mimeType": img.mime_type, "data": img.base64}}


def _reasoning(p: ReasoningPart, out: list[dict[str, Any]], where: str, report: Report) -> None:
    if p.provider != FORMAT:
        report.add("foreign_reasoning", where, f"reasoning from {p.provider or 'an unnamed provider'} is not kept by {_NAME}")
        return
    lost = [n for n in ("redacted_data", "encrypted_content", "id") if getattr(p, n) is not None]
    if lost:
        report.add("unsupported_field", where, f"reasoning {', '.join(lost)} is not kept by {_NAME}")
    if p.text:
        d: dict[str, Any] = {"text": p.text, "thought": True}
        if p.signature:
            d["thoughtSignature"] = p.signature
        out.append(d)
    elif p.signature:
        prev = out[-1] if out else None
        if prev is not None and "text" in prev and not prev.get("thought") and "thoughtSignature" not in prev:
            prev["thoughtSignature"] = p.signature  # it came on this text part
        else:
            out.append({"text": "", "thoughtSignature": p.signature})
    else:
        report.add("unsupported_content", where, f"empty reasoning without a signature is not kept by {_NAME}")


def _parts(m: Message, where: str, report: Report) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for j, p in enumerate(m.parts):
        pw = f"{where}.content[{j}]"
        if type(p) is TextPart:
            if p.text or m.role == "user":
                out.append({"text": p.text})
        elif type(p) is ImagePart:
            d = _image(p, pw, report)
            if d is not None:
                out.append(d)
        else:
            assert type(p) is ReasoningPart
            if m.role != "assistant":
                report.add("unsupported_content", pw, f"reasoning in a {m.role} message is not kept by {_NAME}")
            else:
                _reasoning(p, out, pw, report)
    return out


def _function_call(tc: ToolCall, where: str, report: Report) -> dict[str, Any]:
    g = gemini_meta(tc)
    fc: dict[str, Any] = {"name": tc.name, "args": call_arguments(tc, where, _NAME, report)}
    kept: dict[str, Any] = {}
    issued = sent_id(tc)
    if issued is not None:
        fc["id"] = kept["id"] = issued
    d: dict[str, Any] = {"functionCall": fc}
    sig = g.get("thought_signature")
    if isinstance(sig, str) and sig:
        d["thoughtSignature"] = kept["thought_signature"] = sig
    if dict(tc.metadata) != ({FORMAT: kept} if kept else {}):
        report.add(
            "unsupported_field",
            where,
            f"tool call {tc.id!r} metadata {dict(tc.metadata)!r} is not kept by {_NAME} "
            "(only gemini.id when it is the call's id, and gemini.thought_signature)",
        )
    return d


def _response(m: Message, where: str, report: Report) -> dict[str, Any]:
    g = m.metadata.get(FORMAT)
    if isinstance(g, Mapping) and g.get("response_object"):
        try:
            obj = orjson.loads(m.text)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            return obj
        report.add("unsupported_field", where, "metadata gemini.response_object is set but the content is not a JSON object")
    return {"error" if m.is_error else "output": m.text}


def to_gemini(
    thread: Thread | Iterable[Message], *, strict: bool = False
) -> tuple[dict[str, Any], list[FormatWarning]]:
    """``({"systemInstruction": {...}, "contents": [...]}, warnings)``: the thread as Gemini contents.

    The same shape :class:`allm.providers.Gemini` sends, except that an image given
    by URL becomes a ``fileData`` part here (the adapter refuses it: Gemini fetches
    only some URIs). Raises :class:`~allm.formats.FormatError` (``unrepresentable``)
    when ``strict`` and something is not kept.
    """
    report = Report(strict)
    msgs = messages_of(thread)
    check_thread_metadata(thread, _NAME, report)
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    tool_turn: dict[str, Any] | None = None
    pending: list[ToolCall] = []  # the calls of the last model content not yet answered
    ids_dropped = False
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if m.role == "system":
            check_fields(m, where, _NAME, report)
            for j, p in enumerate(m.parts):
                if type(p) is not TextPart:
                    report.add("unsupported_content", f"{where}.content[{j}]", f"only text is kept in a system message by {_NAME}")
            if contents:
                report.add("rewritten", where, "a system message after the first turn is moved to systemInstruction")
            system.append({"text": m.text})
            continue
        if m.role == "tool":
            if not m.tool_call_id:
                report.add("unsupported_content", where, f"a tool message without tool_call_id cannot be written to {_NAME}")
                continue
            tc = find_call(msgs, i, m.tool_call_id)
            name = tc.name if tc is not None else m.name
            if not name:
                report.add(
                    "unsupported_content",
                    where,
                    f"the tool result {m.tool_call_id!r} answers no earlier tool call and has no name; {_NAME} needs the function name",
                )
                continue
            keep = ["tool_call_id", "is_error"]
            if tc is None or m.name == tc.name:
                keep.append("name")  # written as the function name, or derived from the call
            check_fields(m, where, _NAME, report, keep=keep, metadata_keys=(FORMAT,))
            for j, p in enumerate(m.parts):
                if type(p) is not TextPart:
                    report.add("unsupported_content", f"{where}.content[{j}]", f"only text is kept in a tool result by {_NAME}")
            g = m.metadata.get(FORMAT)
            if g is not None and (not isinstance(g, Mapping) or set(g) - {"response_object"}):
                report.add("unsupported_field", where, f"message metadata gemini {g!r} is not kept by {_NAME}")
            fr: dict[str, Any] = {"name": name, "response": _response(m, where, report)}
            issued = sent_id(tc) if tc is not None else None
            if issued is not None:
                fr["id"] = issued
                if tc in pending:
                    pending.remove(tc)
            else:
                # An import pairs this result with the first unanswered call of that name.
                paired = next((c for c in pending if c.name == name), None)
                if paired is not None:
                    pending.remove(paired)
                if tc is not None and paired is not tc:
                    ids_dropped = True
                    report.add("rewritten", where, f"the result of call {tc.id!r} reads back paired with another call")
            if tool_turn is None:
                tool_turn = {"role": "user", "parts": []}
                contents.append(tool_turn)
            if tc is None and issued is None and m.tool_call_id != f"call_{len(contents) - 1}_{len(tool_turn['parts'])}_result":
                ids_dropped = True
            tool_turn["parts"].append({"functionResponse": fr})
            continue
        tool_turn = None
        if m.role == "user":
            check_fields(m, where, _NAME, report)
            parts = _parts(m, where, report)
            role = "user"
        else:
            check_fields(m, where, _NAME, report, keep=("tool_calls",))
            parts = _parts(m, where, report)
            for k, tc in enumerate(m.tool_calls):
                parts.append(_function_call(tc, f"{where}.tool_calls[{k}]", report))
                # An import names a call Gemini gave no id call_<content>_<n>.
                ids_dropped = ids_dropped or (sent_id(tc) is None and tc.id != f"call_{len(contents)}_{k}")
            role = "model"
        if not parts:
            report.add("unsupported_content", where, f"an empty {m.role} message is not written to {_NAME}")
            continue
        if role == "model":
            pending = list(m.tool_calls)
        contents.append({"role": role, "parts": parts})
    if ids_dropped:
        report.add(
            "rewritten",
            "",
            f"tool-call ids that {_NAME} did not issue are not kept; an import pairs each result with its call by "
            "name and order and names it call_<content>_<n>",
        )
    payload: dict[str, Any] = {"systemInstruction": {"parts": system}} if system else {}
    payload["contents"] = contents
    return payload, report.warnings


# ------------------------------------------------------------------------------ import

_SNAKE = {
    "inline_data": "inlineData",
    "file_data": "fileData",
    "function_call": "functionCall",
    "function_response": "functionResponse",
    "thought_signature": "thoughtSignature",
    "mime_type": "mimeType",
    "file_uri": "fileUri",
    "system_instruction": "systemInstruction",
}


def _camel(d: Mapping[str, Any]) -> dict[str, Any]:
    return {_SNAKE.get(k, k): v for k, v in d.items()}


_PART_KEYS = ("text", "thought", "thoughtSignature", "inlineData", "fileData", "functionCall", "functionResponse")


def _image_in(p: Mapping[str, Any], where: str, report: Report) -> ImagePart | None:
    if "inlineData" in p:
        d = _camel(need_dict(p["inlineData"], f"{where}.inlineData"))
        mime = need_str(d, "mimeType", f"{where}.inlineData")
        if not mime.startswith("image/"):
            report.add("unsupported_content", where, f"inline data of type {mime!r} is not read (allm keeps images)")
            return None
        data = need_str(d, "data", f"{where}.inlineData")
        try:
            return ImagePart(Image.from_base64(data, mime))
        except ValueError as exc:
            raise FormatError(f"{where}: {exc}", reason="invalid_payload") from None
    d = _camel(need_dict(p["fileData"], f"{where}.fileData"))
    mime_any = d.get("mimeType")
    need(mime_any is None or isinstance(mime_any, str), f"{where}.fileData", "'mimeType' must be a string")
    if isinstance(mime_any, str) and not mime_any.startswith("image/"):
        report.add("unsupported_content", where, f"file data of type {mime_any!r} is not read (allm keeps images)")
        return None
    return ImagePart(Image(url=need_str(d, "fileUri", f"{where}.fileData"), mime_type=mime_any))


def _unknown_part(p: Mapping[str, Any], where: str, report: Report) -> bool:
    extra = [k for k, v in p.items() if k not in _PART_KEYS and v is not None]
    if extra and not any(k in p for k in _PART_KEYS if k not in ("thought", "thoughtSignature")):
        report.add("unsupported_content", where, f"a {extra[0]!r} part is not read")
        return True
    for k in extra:
        report.add("unknown", where, f"part field {k!r} is not read")
    return False


def _signature(p: Mapping[str, Any], where: str) -> str | None:
    sig = p.get("thoughtSignature")
    need(sig is None or isinstance(sig, str), where, "'thoughtSignature' must be a string")
    return sig


def _model_in(ci: int, parts: Sequence[Any], where: str, report: Report) -> Message:
    out: list[Part] = []
    calls: list[ToolCall] = []
    signed: list[bool] = []
    for j, raw in enumerate(parts):
        pw = f"{where}.parts[{j}]"
        p = _camel(need_dict(raw, pw))
        if _unknown_part(p, pw, report):
            continue
        sig = _signature(p, pw)
        if "functionCall" in p:
            fc = need_dict(p["functionCall"], f"{pw}.functionCall")
            name = need_str(fc, "name", f"{pw}.functionCall")
            args = fc.get("args")
            args = {} if args is None else need_dict(args, f"{pw}.functionCall.args")
            gid = fc.get("id")
            meta: dict[str, Any] = {}
            if isinstance(gid, str) and gid:
                meta["id"] = gid
                cid = gid
            else:
                cid = f"call_{ci}_{len(calls)}"
            if sig:
                meta["thought_signature"] = sig
            calls.append(tool_call_from_object(cid, name, args, {FORMAT: meta} if meta else None))
            signed.append(bool(sig))
            continue
        if "inlineData" in p or "fileData" in p:
            img = _image_in(p, pw, report)
            if img is not None:
                out.append(img)
            if sig:
                out.append(ReasoningPart("", sig, provider=FORMAT))
            continue
        text = p.get("text")
        need(text is None or isinstance(text, str), pw, "'text' must be a string")
        if p.get("thought"):
            out.append(ReasoningPart(text or "", sig, provider=FORMAT))
            continue
        if text:
            out.append(TextPart(text))
        if sig:
            if not text and calls and not any(signed):
                # A signature on an empty part after unsigned calls belongs to the first call.
                first = calls[0]
                calls[0] = ToolCall(
                    first.id, first.name, first.arguments, first.raw_arguments, None,
                    {FORMAT: {**gemini_meta(first), "thought_signature": sig}},
                )
                signed[0] = True
            else:
                out.append(ReasoningPart("", sig, provider=FORMAT))
    return Message("assistant", tuple(out), tool_calls=tuple(calls))


def _response_in(resp: Any, where: str) -> tuple[str, bool, dict[str, Any]]:
    """``(text, is_error, metadata)`` of a ``functionResponse.response``."""
    if resp is None:
        return "", False, {}
    r = need_dict(resp, f"{where}.response")
    if len(r) == 1:
        (k, v), = r.items()
        if k in ("output", "error") and isinstance(v, str):
            return v, k == "error", {}
    return dumps(r), False, {FORMAT: {"response_object": True}}


def _user_in(
    ci: int, parts: Sequence[Any], pending: list[ToolCall], where: str, report: Report
) -> list[Message]:
    out: list[Message] = []
    run: list[Part] = []

    def flush() -> None:
        if run:
            out.append(Message("user", tuple(run)))
            run.clear()

    for j, raw in enumerate(parts):
        pw = f"{where}.parts[{j}]"
        p = _camel(need_dict(raw, pw))
        if _unknown_part(p, pw, report):
            continue
        if "functionResponse" in p:
            flush()
            fr = _camel(need_dict(p["functionResponse"], f"{pw}.functionResponse"))
            for k in fr:
                if k not in ("name", "response", "id") and fr[k] is not None:
                    report.add("unknown", f"{pw}.functionResponse", f"functionResponse field {k!r} is not read")
            name = need_str(fr, "name", f"{pw}.functionResponse")
            gid = fr.get("id")
            call = next((c for c in pending if isinstance(gid, str) and c.id == gid), None)
            if call is None and not gid:
                call = next((c for c in pending if c.name == name), None)
            text, is_error, meta = _response_in(fr.get("response"), f"{pw}.functionResponse")
            if call is not None:
                pending.remove(call)
                out.append(Message("tool", text, tool_call_id=call.id, is_error=is_error, metadata=meta,
                                   name=None if call.name == name else name))
            else:
                tid = gid if isinstance(gid, str) and gid else f"call_{ci}_{j}_result"
                out.append(Message("tool", text, tool_call_id=tid, name=name, is_error=is_error, metadata=meta))
            continue
        if "functionCall" in p:
            report.add("unsupported_content", pw, "a functionCall in a user content is not read")
            continue
        if "inlineData" in p or "fileData" in p:
            img = _image_in(p, pw, report)
            if img is not None:
                run.append(img)
        else:
            ptext = p.get("text")
            need(ptext is None or isinstance(ptext, str), pw, "'text' must be a string")
            if p.get("thought") or p.get("thoughtSignature"):
                report.add("unsupported_content", pw, "a thought or signature in a user content is not read")
                if p.get("thought"):
                    continue
            run.append(TextPart(ptext or ""))
    flush()
    return out


def from_gemini(payload: Any, *, strict: bool = False) -> tuple[Thread, list[FormatWarning]]:
    """``(thread, warnings)`` from Gemini ``{"systemInstruction", "contents"}`` (or a bare contents array).

    ``model`` contents become assistant messages (thought parts and signatures as
    ``ReasoningPart(provider="gemini")``, function calls as tool calls with
    ``metadata["gemini"]`` holding a Gemini-issued ``id`` and the
    ``thought_signature``); ``functionResponse`` parts become tool messages paired
    with their call. Raises :class:`~allm.formats.FormatError`: ``invalid_payload``
    for a wrong shape, ``unrepresentable`` when ``strict`` and something is skipped.
    """
    report = Report(strict)
    if isinstance(payload, Mapping):
        payload = _camel(payload)
    conv = conversation(payload, ("systemInstruction", "contents"), "contents", _NAME, report)
    msgs: list[Message] = []
    si = conv.get("systemInstruction")
    if si is not None:
        if isinstance(si, str):
            msgs.append(Message("system", si))
        else:
            sd = need_dict(si, "systemInstruction")
            for j, raw in enumerate(need_list(sd.get("parts", []), "systemInstruction.parts")):
                pw = f"systemInstruction.parts[{j}]"
                p = need_dict(raw, pw)
                if set(p) - {"text"}:
                    report.add("unsupported_content", pw, "only text parts are read in systemInstruction")
                    if "text" not in p:
                        continue
                msgs.append(Message("system", need_str(p, "text", pw)))
    pending: list[ToolCall] = []
    for ci, raw in enumerate(need_list(conv.get("contents"), "contents")):
        where = f"contents[{ci}]"
        c = need_dict(raw, where)
        for k in c:
            if k not in ("role", "parts") and c[k] is not None:
                report.add("unknown", where, f"content field {k!r} is not read")
        role = c.get("role", "user")
        parts = need_list(c.get("parts", []), f"{where}.parts")
        if role == "model":
            m = _model_in(ci, parts, where, report)
            msgs.append(m)
            pending = list(m.tool_calls)
        elif role in ("user", "function"):
            msgs.extend(_user_in(ci, parts, pending, where, report))
        else:
            report.add("unknown", where, f"a content with role {role!r} is not read (Gemini has user and model)")
    return Thread(tuple(msgs)), report.warnings
