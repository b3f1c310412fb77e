"""The documented normalisations of each wire format (``guides/history_formats.md``), as code.

``normalise(fmt, payload)`` rewrites a conversation payload into the one spelling
allm writes, so that "import, then export" can be compared with what was recorded.
Each rule here is listed in the guide; nothing else may differ.
"""

from __future__ import annotations

from typing import Any

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


def drop_empty(v: Any) -> Any:
    """Keys whose value is ``null``, ``[]`` or ``{}`` carry nothing: removed (all formats)."""
    if isinstance(v, dict):
        out = {k: drop_empty(x) for k, x in v.items()}
        return {k: x for k, x in out.items() if x is not None and x != [] and x != {}}
    if isinstance(v, list):
        return [drop_empty(x) for x in v]
    return v


def _chat(p: dict[str, Any]) -> dict[str, Any]:
    msgs = []
    for m in p.get("messages", []):
        m = dict(m)
        if m["role"] == "developer":  # developer is read as system
            m["role"] = "system"
        if m.get("content") == "" and m.get("tool_calls"):  # "" is written null beside tool calls
            del m["content"]
        c = m.get("content")
        if isinstance(c, list) and all(x.get("type") == "text" for x in c):  # text parts -> one string
            m["content"] = "".join(x["text"] for x in c)
        msgs.append(m)
    return {"messages": msgs}


def _blocks(c: Any) -> Any:
    if isinstance(c, str):  # a string content is one text block; an empty one is no block
        return [{"type": "text", "text": c}] if c else []
    out = []
    for b in c:
        b = dict(b)
        if b.get("type") == "text" and not b.get("text"):
            continue  # empty text blocks are not written
        if b.get("type") == "tool_use" and b.get("caller") == {"type": "direct"}:
            del b["caller"]  # the default caller
        if b.get("type") == "tool_result" and "content" in b:
            b["content"] = _blocks(b["content"])
        out.append(b)
    return out


def _anthropic(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.get("system"):
        out["system"] = _blocks(p["system"])
    out["messages"] = [{**m, "content": _blocks(m["content"])} for m in p.get("messages", [])]
    return out


def _camel(v: Any) -> Any:
    if isinstance(v, dict):
        return {_SNAKE.get(k, k): (x if k in ("args", "response") else _camel(x)) for k, x in v.items()}
    if isinstance(v, list):
        return [_camel(x) for x in v]
    return v


def _gemini(p: dict[str, Any]) -> dict[str, Any]:
    p = _camel(p)
    out: dict[str, Any] = {}
    if p.get("systemInstruction"):
        out["systemInstruction"] = {"parts": p["systemInstruction"]["parts"]}
    contents = []
    for c in p.get("contents", []):
        c = {"role": c.get("role", "user"), "parts": [dict(x) for x in c["parts"]]}
        parts = c["parts"]
        # A signature on an empty part after unsigned calls is written on the first call.
        calls = [x for x in parts if "functionCall" in x]
        for x in list(parts):
            if calls and set(x) == {"text", "thoughtSignature"} and not x["text"] and not any("thoughtSignature" in y for y in calls):
                calls[0]["thoughtSignature"] = x["thoughtSignature"]
                parts.remove(x)
        contents.append(c)
    out["contents"] = contents
    return out


def _responses(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "instructions" in p:
        out["instructions"] = p["instructions"]
    items = p.get("input", [])
    if isinstance(items, str):  # an input string is one user message
        items = [{"role": "user", "content": items}]
    norm = []
    for it in items:
        it = {k: v for k, v in it.items() if k not in ("id", "status")}  # item bookkeeping is not written
        if it.get("type") == "message":
            del it["type"]  # message items are written without their (default) type
        c = it.get("content")
        if it.get("role") == "assistant" and isinstance(c, str):
            it["content"] = [{"type": "output_text", "text": c}]
        elif it.get("role") == "user" and isinstance(c, list):
            if all(x.get("type") == "input_text" for x in c):
                it["content"] = "".join(x["text"] for x in c)
            else:
                it["content"] = [{**x, "detail": x.get("detail", "auto")} if x.get("type") == "input_image" else x for x in c]
        norm.append(it)
    out["input"] = norm
    return out


_RULES = {"openai_chat": _chat, "anthropic": _anthropic, "gemini": _gemini, "openai_responses": _responses}

CONVERSATION_KEYS = {
    "openai_chat": ("messages",),
    "anthropic": ("system", "messages"),
    "gemini": ("systemInstruction", "system_instruction", "contents"),
    "openai_responses": ("instructions", "input"),
}


def conversation(fmt: str, body: dict[str, Any]) -> dict[str, Any]:
    """The conversation keys of a recorded request body."""
    return {k: body[k] for k in CONVERSATION_KEYS[fmt] if k in body}


def normalise(fmt: str, payload: dict[str, Any]) -> Any:
    return drop_empty(_RULES[fmt](drop_empty(payload)))
