"""Every recorded conversation in ``tests/fixtures`` (copied from the shared corpus), by format.

Two kinds of conversation per recorded exchange:

- ``request``: the conversation part of the recorded request body, as sent;
- ``reply``: that conversation with the recorded (non-streamed) answer appended as the
  next assistant turn, the way a client sends it back on the following call. These carry
  what requests rarely do: thinking blocks with signatures, thought signatures, encrypted
  reasoning, parallel tool calls.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from tests.conftest import FIXTURES, capture_names, case_names, load_capture, load_case
from tests.formats.wire import conversation

FOLDERS = {"openai-chat": "openai_chat", "openai-responses": "openai_responses", "anthropic": "anthropic", "gemini": "gemini"}
LLAMA_PATHS = {"/v1/chat/completions": "openai_chat", "/v1/messages": "anthropic", "/v1/responses": "openai_responses"}


@attrs.frozen
class Conversation:
    id: str  # "<folder>/<case>:request" or ":reply"
    format: str
    payload: Any  # the whole recorded request body (reply: with the answer appended)
    status: int


def _reply(fmt: str, request: dict[str, Any], body: bytes) -> dict[str, Any] | None:
    try:
        resp = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(resp, dict):
        return None
    conv = conversation(fmt, request)
    if fmt == "openai_chat" and resp.get("choices"):
        return {**conv, "messages": [*conv["messages"], resp["choices"][0]["message"]]}
    if fmt == "anthropic" and isinstance(resp.get("content"), list) and resp.get("type") == "message":
        return {**conv, "messages": [*conv["messages"], {"role": "assistant", "content": resp["content"]}]}
    if fmt == "gemini" and resp.get("candidates"):
        return {**conv, "contents": [*conv["contents"], resp["candidates"][0]["content"]]}
    if fmt == "openai_responses" and isinstance(resp.get("output"), list):
        inp = conv["input"]
        items = [{"role": "user", "content": inp}] if isinstance(inp, str) else list(inp)
        return {**conv, "input": items + resp["output"]}
    return None


def conversations() -> list[Conversation]:
    out: list[Conversation] = []
    for folder, fmt in FOLDERS.items():
        for name in case_names(folder):
            case = load_case(folder, name)
            if not isinstance(case.request, dict):
                continue
            out.append(Conversation(f"{folder}/{name}:request", fmt, case.request, case.status))
            if case.ok and not case.request.get("stream"):
                reply = _reply(fmt, case.request, case.body)
                if reply is not None:
                    out.append(Conversation(f"{folder}/{name}:reply", fmt, reply, case.status))
    for name in capture_names():
        cap = load_capture(name)
        fmt = LLAMA_PATHS.get(cap.path)
        if fmt is None or not isinstance(cap.request, dict) or not any(k in cap.request for k in ("messages", "input")):
            continue
        out.append(Conversation(f"llama-server/{name}:request", fmt, cap.request, cap.status))
        if cap.status == 200 and not cap.request.get("stream"):
            reply = _reply(fmt, cap.request, cap.body)
            if reply is not None:
                out.append(Conversation(f"llama-server/{name}:reply", fmt, reply, cap.status))
    return out


CONVERSATIONS = conversations()
assert (FIXTURES / "anthropic").is_dir()
