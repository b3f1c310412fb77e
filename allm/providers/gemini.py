"""Google Gemini API: ``generateContent`` and ``streamGenerateContent?alt=sse``.

Follows the Gemini API reference: https://ai.google.dev/api/generate-content
(``GenerateContentRequest``, ``GenerateContentResponse``, ``Candidate``, ``Part``,
``UsageMetadata``, ``FinishReason``, ``PromptFeedback``),
https://ai.google.dev/gemini-api/docs/thought-signatures,
https://ai.google.dev/gemini-api/docs/function-calling,
https://ai.google.dev/api/embeddings (``batchEmbedContents``) and
https://ai.google.dev/api/models (``models.list``). Sans-IO: nothing here touches the
network, a clock or randomness.

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

Gemini gives function calls no id on most models: the decoder makes
``call_<responseId>_<n>`` (``n`` counts the calls of one response from 0; characters
outside ``[A-Za-z0-9_-]`` become ``_``). When
Gemini does give an id, it is kept and sent back on ``functionCall`` and
``functionResponse``.

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

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson

from ..errors import AdapterError, ValidationError, from_status, parse_retry_after
from ..events import Error, Event, RawChunk
from ..types import (
    Embeddings,
    GeneratedImage,
    Image,
    ImagePart,
    ImageRequest,
    ImageResponse,
    Message,
    ReasoningPart,
    Request,
    TextPart,
    Tool,
    ToolCall,
    Usage,
)
from .base import Assembler, HttpCall, KeySpec, SSEStreamDecoder, malformed
from .media import GEMINI_IMAGES, check_image, check_images, check_request_size

__all__ = [
    "Gemini",
    "GeminiDecoder",
    "decode_body",
    "encode_body",
    "encode_contents",
    "encode_tool",
    "encode_tool_choice",
    "error_from_body",
    "map_finish_reason",
    "map_usage",
    "model_path",
]

PROVIDER = "gemini"
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
_MODEL_RE = re.compile(r"^(?:(models|tunedModels)/)?([A-Za-z0-9][A-Za-z0-9._\-]*)$")

# The exceptions a wrongly shaped (but valid JSON) body can raise while we read it.
_SHAPE_ERRORS = (KeyError, TypeError, AttributeError, IndexError, ValueError)


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


def _bare(model: str) -> str:
    return model.split("/", 1)[1] if "/" in model else model


# ------------------------------------------------------------------------------ encoding


def _gemini_meta(tc: ToolCall) -> Mapping[str, Any]:
    g = tc.metadata.get(PROVIDER) if tc.metadata else None
    return g if isinstance(g, Mapping) else {}


def _sent_id(tc: ToolCall) -> str | None:
    """The id to send back on ``functionCall``/``functionResponse``: only one Gemini issued."""
    gid = _gemini_meta(tc).get("id")
    return tc.id if isinstance(gid, str) and gid == tc.id else None


def _inline(part: ImagePart, where: str, warnings: list[str]) -> dict[str, Any]:
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
        _warn(warnings, "image detail is not supported by Gemini and was not sent")
    return {"inlineData": {"mimeType": img.mime_type, "data": img.base64}}


def _warn(warnings: list[str], text: str) -> None:
    if text not in warnings:
        warnings.append(text)


def _user_parts(m: Message, i: int, warnings: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in m.parts:
        if type(p) is TextPart:
            out.append({"text": p.text})
        elif type(p) is ImagePart:
            out.append(_inline(p, f"messages[{i}]", warnings))
        # Reasoning in a user message means nothing to Gemini: dropped.
    return out


def _model_parts(m: Message, i: int, warnings: list[str]) -> list[dict[str, Any]]:
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
        sent = _sent_id(tc)
        if sent is not None:
            fc["id"] = sent
        d = {"functionCall": fc}
        sig = _gemini_meta(tc).get("thought_signature")
        if isinstance(sig, str) and sig:
            d["thoughtSignature"] = sig
        out.append(d)
    return out


def _find_call(messages: Sequence[Message], before: int, tool_call_id: str) -> ToolCall | None:
    """The most recent tool call with this id in an assistant message before ``before``."""
    for j in range(before - 1, -1, -1):
        m = messages[j]
        if m.role == "assistant":
            for tc in m.tool_calls:
                if tc.id == tool_call_id:
                    return tc
    return None


def encode_contents(
    messages: Sequence[Message], warnings: list[str]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """``(systemInstruction or None, contents)`` for our messages.

    Raises :class:`~allm.errors.ValidationError`: an image given only by URL, an
    image in a system message, a tool message without ``tool_call_id`` or whose
    call (and so the function name) cannot be found.
    """
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    tool_turn: dict[str, Any] | None = None  # the user content collecting functionResponse parts
    for i, m in enumerate(messages):
        if m.role == "system":
            if any(type(p) is ImagePart for p in m.parts):
                raise ValidationError(
                    f"messages[{i}]: images are not allowed in a system message", reason="invalid_image"
                )
            system.append({"text": m.text})
            continue
        if m.role == "tool":
            if not m.tool_call_id:
                raise ValidationError(f"messages[{i}]: a tool message needs tool_call_id", reason="invalid_message")
            tc = _find_call(messages, i, m.tool_call_id)
            name = tc.name if tc is not None else m.name
            if not name:
                raise ValidationError(
                    f"messages[{i}]: the tool result {m.tool_call_id!r} answers no tool call of an earlier "
                    "assistant message, and Gemini needs the function name (set name= on the tool message)",
                    reason="invalid_message",
                )
            fr: dict[str, Any] = {"name": name, "response": {"error" if m.is_error else "output": m.text}}
            sent = _sent_id(tc) if tc is not None else None
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
            _warn(warnings, f"messages[{i}] has no content Gemini can read and was not sent")
            continue
        contents.append({"role": role, "parts": parts})
    return ({"parts": system} if system else None), contents


def encode_tool(tool: Tool, warnings: list[str]) -> dict[str, Any]:
    """A ``FunctionDeclaration``: the tool's JSON Schema goes in ``parametersJsonSchema``."""
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description:
        fn["description"] = tool.description
    fn["parametersJsonSchema"] = dict(tool.schema)
    if tool.strict is not None:
        _warn(warnings, "tool strict is not supported by Gemini and was not sent")
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


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Deep-merge ``extra`` into ``into`` (objects merge key by key; anything else replaces)."""
    for k, v in extra.items():
        cur = into.get(k)
        if isinstance(cur, dict) and isinstance(v, Mapping):
            _merge(cur, v)
        else:
            into[k] = v


def encode_body(
    request: Request,
    *,
    thinking_budget: int | None = None,
    thinking_level: str | None = None,
    include_thoughts: bool | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The ``GenerateContentRequest`` JSON body and the warnings for settings not sent.

    ``frequency_penalty`` and ``presence_penalty`` are dropped with a warning: the
    API documents them but current models (2.5, 3.x) reject any request that has
    them ("Penalty is not enabled"). ``request.options`` is deep-merged into the
    body last (e.g. ``{"safetySettings": [...]}`` or
    ``{"generationConfig": {"presencePenalty": 0.5}}``).
    """
    warnings = check_images(request.messages, GEMINI_IMAGES)
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
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(request, name) is not None:
            warnings.append(f"{name} is not supported by Gemini models and was not sent")
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
    if request.options:
        _merge(body, request.options)
    return body, warnings


# ------------------------------------------------------------------------------ decoding

_CONTENT_FILTER = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)


def map_finish_reason(raw: str | None) -> str | None:
    """Gemini ``FinishReason`` -> ours.

    ``STOP`` -> ``stop``; ``MAX_TOKENS`` -> ``length``; ``SAFETY``, ``RECITATION``,
    ``BLOCKLIST``, ``PROHIBITED_CONTENT``, ``SPII`` and the ``IMAGE_*`` filters ->
    ``content_filter``; everything else (``MALFORMED_FUNCTION_CALL``,
    ``UNEXPECTED_TOOL_CALL``, ``TOO_MANY_TOOL_CALLS``, ``LANGUAGE``, ``OTHER``...)
    -> ``other``. The raw value is kept as ``raw_finish_reason``.
    """
    if raw is None:
        return None
    if raw == "STOP":
        return "stop"
    if raw == "MAX_TOKENS":
        return "length"
    if raw in _CONTENT_FILTER:
        return "content_filter"
    return "other"


def _number(v: Any, name: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise TypeError(f"usageMetadata.{name} is not a number")
    return int(v)


def _add(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


_PLAIN = frozenset((int, type(None)))
_COUNTS = (
    "promptTokenCount",
    "toolUsePromptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
    "totalTokenCount",
)


def map_usage(u: Mapping[str, Any]) -> Usage:
    """``usageMetadata`` -> :class:`Usage` (token counts).

    - ``input_tokens`` = ``promptTokenCount`` (+ ``toolUsePromptTokenCount``); it
      includes ``cachedContentTokenCount`` (-> ``cached_input_tokens``).
    - ``output_tokens`` = ``candidatesTokenCount`` + ``thoughtsTokenCount``: output
      includes thinking, as everywhere in allm; ``reasoning_tokens`` =
      ``thoughtsTokenCount``.
    - ``total_tokens`` = ``totalTokenCount``.

    A counter Gemini did not send stays ``None``. Raises ``TypeError`` for a counter
    that is not a number (or a numeric string).
    """
    get = u.get
    prompt, tool, cand, thoughts, cached, total = map(get, _COUNTS)
    if not {type(prompt), type(tool), type(cand), type(thoughts), type(cached), type(total)} <= _PLAIN:
        prompt, tool, cand, thoughts, cached, total = [_number(get(k), k) for k in _COUNTS]
    # Every stream chunk carries usage: built positionally, the cheapest way.
    return Usage(_add(prompt, tool), _add(cand, thoughts), cached, None, thoughts, total)


class _Reader:
    """Reads ``GenerateContentResponse`` objects (a stream chunk or a whole body) into events."""

    __slots__ = (
        "_calls",
        "_n_reasoning",
        "_open",
        "_raw",
        "_rkey",
        "asm",
        "block_reason",
        "finish",
        "finish_message",
        "provider",
    )

    def __init__(self, provider: str, warnings: tuple[str, ...], include_raw: bool) -> None:
        self.provider = provider
        self.asm = Assembler(provider, warnings)
        self._raw = include_raw
        self.finish: str | None = None
        self.finish_message: str | None = None
        self.block_reason: str | None = None
        self._open: str | None = None  # "text" or "reasoning": the block parts are appended to
        self._rkey: str | None = None
        self._n_reasoning = 0
        self._calls: list[tuple[object, dict[str, Any]]] = []  # (assembler key, gemini metadata)

    @property
    def terminal(self) -> bool:
        """A candidate ``finishReason`` or a ``promptFeedback.blockReason`` was seen."""
        return self.finish is not None or self.block_reason is not None

    def read(self, obj: Any, out: list[Event]) -> AdapterError | None:
        """Append the events of one response object; an ``error`` object is returned instead."""
        if not isinstance(obj, dict):
            raise TypeError("the response is not a JSON object")
        err = obj.get("error")
        if err is not None:
            return _error_from_object(self.provider, err, None, {})
        asm = self.asm
        if not asm.started or asm.id is None or asm.model is None:  # else start() has nothing to do
            rid = obj.get("responseId")
            mv = obj.get("modelVersion")
            out.extend(asm.start(rid if isinstance(rid, str) else None, mv if isinstance(mv, str) else None))
        if self._raw:
            out.append(RawChunk(obj))
        pf = obj.get("promptFeedback")
        if pf:
            br = pf.get("blockReason")
            if br:
                self.block_reason = str(br)
        for cand in obj.get("candidates") or ():
            if cand.get("index", 0) != 0:
                continue  # one candidate is asked for; any other is ignored
            content = cand.get("content") or {}
            parts = content.get("parts") or []
            if not isinstance(parts, list):
                raise TypeError("content.parts is not a list")
            for part in parts:
                self._part(part, out)
            fr = cand.get("finishReason")
            if fr:
                self.finish = str(fr)
            fm = cand.get("finishMessage")
            if fm:
                self.finish_message = str(fm)
        u = obj.get("usageMetadata")
        if u:
            out.append(asm.add_usage(map_usage(u)))
        return None

    # -- parts

    def _close_open(self, out: list[Event]) -> None:
        if self._open == "text":
            out.extend(self.asm.close_block(None, "text"))
        elif self._open == "reasoning":
            out.extend(self.asm.close_block(self._rkey, "reasoning"))
        self._open = None

    def _new_reasoning(self, out: list[Event]) -> str:
        self._close_open(out)
        key = f"thought-{self._n_reasoning}"
        self._n_reasoning += 1
        self._rkey = key
        self._open = "reasoning"
        return key

    def _part(self, part: Any, out: list[Event]) -> None:
        if not isinstance(part, dict):
            raise TypeError("a part is not a JSON object")
        sig = part.get("thoughtSignature")
        if sig is not None and not isinstance(sig, str):
            raise TypeError("thoughtSignature is not a string")
        if "functionCall" in part:
            self._close_open(out)
            self._function_call(part["functionCall"], sig, out)
            return
        text = part.get("text")
        if text is not None and not isinstance(text, str):
            raise TypeError("a part's text is not a string")
        asm = self.asm
        if part.get("thought"):
            if text:
                key = self._rkey if self._open == "reasoning" else self._new_reasoning(out)
                out.append(asm.reasoning(text, key))
            if sig:
                key = self._rkey if self._open == "reasoning" else self._new_reasoning(out)
                asm.reasoning_signature(key, signature=sig)
                self._close_open(out)  # a signature ends its thought block
            return
        if text:
            if self._open != "text":
                self._close_open(out)
                self._open = "text"
            out.append(asm.text(text))
        if sig:
            self._close_open(out)
            if not text and self._sign_unsigned_call(sig):
                return
            key = self._new_reasoning(out)
            asm.reasoning_signature(key, signature=sig)
            self._close_open(out)
        # Other parts (inlineData, executableCode, codeExecutionResult...) are not read.

    def _sign_unsigned_call(self, sig: str) -> bool:
        """A signature on an empty part after this response's function calls, none of them
        signed: it belongs to the first call (Gemini validates the first call of a step)."""
        if not self._calls or any("thought_signature" in meta for _k, meta in self._calls):
            return False
        key, meta = self._calls[0]
        meta["thought_signature"] = sig
        self.asm.tool_call(key, metadata={PROVIDER: dict(meta)})
        return True

    def _function_call(self, fc: Any, sig: str | None, out: list[Event]) -> None:
        if not isinstance(fc, dict):
            raise TypeError("functionCall is not a JSON object")
        name = fc.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("a functionCall has no name")
        args = fc.get("args")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise TypeError("functionCall.args is not a JSON object")
        gid = fc.get("id")
        n = len(self._calls)
        meta: dict[str, Any] = {}
        if isinstance(gid, str) and gid:
            call_id = gid
            meta["id"] = gid
        else:
            rid = _ID_UNSAFE.sub("_", self.asm.id or "")
            call_id = f"call_{rid}_{n}" if rid else f"call_{n}"
        if sig:
            meta["thought_signature"] = sig
        key = ("call", n)
        self._calls.append((key, meta))
        out.extend(self.asm.tool_call(key, id=call_id, name=name, metadata={PROVIDER: dict(meta)} if meta else None))
        out.extend(self.asm.tool_arguments(key, orjson.dumps(args).decode("utf-8")))

    # -- end

    def finish_events(self) -> list[Event]:
        out: list[Event] = []
        self._close_open(out)
        metadata: dict[str, Any] = {}
        if self.finish is None and self.block_reason is not None:
            finish: str | None = "content_filter"
            raw: str | None = self.block_reason
        else:
            raw = self.finish
            finish = map_finish_reason(raw)
        if self.block_reason is not None:
            metadata["block_reason"] = self.block_reason
        if self.finish_message is not None:
            metadata["finish_message"] = self.finish_message
        out.extend(self.asm.finish(finish, raw, metadata))
        return out


_NO_FINISH = "ended without a chunk carrying finishReason (or promptFeedback.blockReason)"


class GeminiDecoder(SSEStreamDecoder):
    """Incremental decoder of a ``streamGenerateContent?alt=sse`` stream.

    Each SSE ``data:`` line (CRLF line ends) holds one ``GenerateContentResponse``.
    Gemini sends no ``[DONE]``: the terminal marker is a candidate's
    ``finishReason`` (or, for a blocked prompt, ``promptFeedback.blockReason``).
    ``MessageCompleted`` is emitted at :meth:`close`; a stream that closes without
    the marker ends in an ``Error`` (``malformed_response``). An ``{"error": ...}``
    chunk becomes an ``Error`` with the mapped reason.
    """

    __slots__ = ("_reader",)

    terminal_marker = "a chunk with finishReason"

    def __init__(self, provider: str = PROVIDER, warnings: tuple[str, ...] = (), include_raw: bool = False) -> None:
        super().__init__(provider)
        self._reader = _Reader(provider, warnings, include_raw)

    def _end(self, out: list[Event]) -> None:
        # No [DONE] in Gemini streams: the message completes when the stream closes.
        self.finished = True
        if not self._reader.terminal:
            self.failed = True
            out.append(Error(malformed(self.provider, f"the stream {_NO_FINISH}")))
            return
        out.extend(self._reader.finish_events())

    def _on_items(self, items: list[tuple[str | None, bytes]], out: list[Event]) -> None:
        # One loop for feed and close, the per-chunk work inline: it runs once per streamed chunk.
        read = self._reader.read
        for _name, data in items:
            if not data or data.isspace():
                continue
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                self._fail(out, malformed(self.provider, f"a stream chunk is not valid JSON: {exc}"))
                return
            try:
                err = read(obj, out)
            except _SHAPE_ERRORS as exc:
                self._fail(out, malformed(self.provider, f"unexpected chunk shape ({type(exc).__name__}: {exc})"))
                return
            if err is not None:
                self._fail(out, err)
                return


def decode_body(
    body: bytes, *, provider: str = PROVIDER, warnings: tuple[str, ...] = (), include_raw: bool = False
) -> list[Event]:
    """A ``generateContent`` body as the same events a stream of it gives.

    A body without ``finishReason`` (or ``promptFeedback.blockReason``) ends in an
    ``Error`` (``malformed_response``), as a stream would.
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [Error(malformed(provider, f"the response body is not valid JSON: {exc}"))]
    reader = _Reader(provider, warnings, include_raw)
    out: list[Event] = []
    try:
        err = reader.read(obj, out)
        if err is not None:
            out.append(Error(err))
        elif not reader.terminal:
            out.append(Error(malformed(provider, f"the response {_NO_FINISH}")))
        else:
            out.extend(reader.finish_events())
    except _SHAPE_ERRORS as exc:
        out.append(Error(malformed(provider, f"unexpected body shape ({type(exc).__name__}: {exc})")))
    return out


# ------------------------------------------------------------------------------ errors

_AUTH_REASONS = frozenset(
    {"API_KEY_INVALID", "API_KEY_EXPIRED", "ACCESS_TOKEN_EXPIRED", "ACCESS_TOKEN_TYPE_UNSUPPORTED", "CREDENTIALS_MISSING"}
)
_STATUS_REASONS = {
    "UNAUTHENTICATED": "authentication_failed",
    "PERMISSION_DENIED": "permission_denied",
    "NOT_FOUND": "not_found",
    "RESOURCE_EXHAUSTED": "rate_limited",
    "DEADLINE_EXCEEDED": "timeout",
    "UNAVAILABLE": "provider_unavailable",
    "INTERNAL": "provider_unavailable",
}
_STATUS_CODES = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def _duration(value: Any) -> float | None:
    """A ``google.protobuf.Duration`` in JSON (``"17s"``, ``"48.9s"``) as seconds."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            return max(0.0, float(value[:-1]))
        except ValueError:
            return None
    return None


def _error_from_object(
    provider: str, err: Any, http_status: int | None, headers: Mapping[str, str]
) -> AdapterError:
    """A Google RPC error object (``{"code", "message", "status", "details"}``) as a typed error."""
    if not isinstance(err, dict):
        msg = str(err) if err else f"HTTP {http_status}"
        return from_status(http_status or 500, msg, provider=provider, retry_after=parse_retry_after(headers))
    message = str(err.get("message") or "")
    status_name = err.get("status") if isinstance(err.get("status"), str) else None
    code = err.get("code")
    status = http_status or (code if isinstance(code, int) and not isinstance(code, bool) else None)
    if status is None:
        status = _STATUS_CODES.get(status_name or "", 500)
    info_reason: str | None = None
    retry_after: float | None = None
    for d in err.get("details") or ():
        if not isinstance(d, dict):
            continue
        kind = str(d.get("@type") or "")
        if kind.endswith("google.rpc.ErrorInfo") and isinstance(d.get("reason"), str):
            info_reason = d["reason"]
        elif kind.endswith("google.rpc.RetryInfo"):
            retry_after = _duration(d.get("retryDelay"))
    if retry_after is None:
        retry_after = parse_retry_after(headers)
    lower = {k.lower(): v for k, v in headers.items()}
    request_id = lower.get("x-request-id") or lower.get("x-goog-request-id")
    e = from_status(
        status,
        message or f"HTTP {status}",
        provider=provider,
        code=" ".join(x for x in (status_name, info_reason) if x) or None,
        retry_after=retry_after,
        request_id=request_id,
    )
    reason = e.reason
    m = message.lower()
    if info_reason in _AUTH_REASONS:
        reason = "authentication_failed"
    elif "input token count" in m and "exceeds the maximum" in m:
        reason = "context_length_exceeded"
    elif status_name in _STATUS_REASONS and reason in ("invalid_request", "unknown", "provider_unavailable"):
        reason = _STATUS_REASONS[status_name]
    metadata = {k: v for k, v in (("google_status", status_name), ("google_reason", info_reason)) if v}
    return AdapterError(
        e.message,
        reason=reason,
        provider=provider,
        status=status,
        retry_after=retry_after,
        request_id=request_id,
        metadata=metadata,
    )


def error_from_body(provider: str, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
    """An HTTP error response of the Gemini API as a typed :class:`~allm.errors.AdapterError`.

    - ``400 INVALID_ARGUMENT`` with ``ErrorInfo.reason`` ``API_KEY_INVALID`` ->
      ``authentication_failed`` (Gemini answers a bad key with 400, not 401);
    - ``403 PERMISSION_DENIED`` -> ``permission_denied``; ``404`` -> ``not_found``;
    - ``429 RESOURCE_EXHAUSTED`` -> ``rate_limited``, ``retry_after`` from
      ``google.rpc.RetryInfo.retryDelay`` (``"17s"``) or else the ``Retry-After``
      header;
    - an input longer than the model's window -> ``context_length_exceeded``;
    - ``500``/``503`` -> ``provider_unavailable``; ``504 DEADLINE_EXCEEDED`` -> ``timeout``.

    The Google ``status`` and ``ErrorInfo.reason`` are kept in ``metadata``
    (``google_status``, ``google_reason``).
    """
    data: Any = None
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # the JSON-array stream format wraps the error in a list
    if isinstance(data, dict) and "error" in data:
        return _error_from_object(provider, data["error"], status, headers)
    text = body[:500].decode("utf-8", "replace").strip()
    return _error_from_object(provider, text or f"HTTP {status}", status, headers)


# ------------------------------------------------------------------------------ image output

_IMAGE_SIZES = frozenset({"1K", "2K", "4K"})


def encode_image_body(operation: str, request: ImageRequest) -> tuple[dict[str, Any], list[str]]:
    """A ``generateContent`` body asking for image output
    (https://ai.google.dev/gemini-api/docs/image-generation): the prompt, then the input
    images as ``inlineData`` (edits), ``generationConfig.responseModalities =
    ["TEXT", "IMAGE"]``, ``aspect_ratio`` -> ``imageConfig.aspectRatio`` and a ``size``
    of ``1K``/``2K``/``4K`` -> ``imageConfig.imageSize``. Other OpenAI-style fields are
    dropped with a warning; ``options`` are deep-merged last.

    Raises :class:`~allm.errors.ValidationError`: no prompt, a mask (Gemini edits
    by instruction: describe the region in the prompt), or an input image Gemini
    cannot take (see :data:`~allm.providers.media.GEMINI_IMAGES`).
    """
    if not request.prompt:
        raise ValidationError(f"an image {operation} needs a prompt", reason="invalid_request")
    if request.mask is not None:
        raise ValidationError(
            "Gemini takes no mask; describe the part of the image to change in the prompt", reason="invalid_request"
        )
    if operation == "edit" and not request.images:
        raise ValidationError("an image edit needs at least one image", reason="invalid_request")
    if operation == "generate" and request.images:
        raise ValidationError("image generation takes no input images; use edit_image", reason="invalid_request")
    warnings: list[str] = []
    parts: list[dict[str, Any]] = [{"text": request.prompt}]
    for i, img in enumerate(request.images):
        check_image(img, GEMINI_IMAGES, f"images[{i}]")
        parts.append({"inlineData": {"mimeType": img.mime_type, "data": img.base64}})
    gc: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
    image_config: dict[str, Any] = {}
    if request.aspect_ratio is not None:
        image_config["aspectRatio"] = request.aspect_ratio
    if request.size is not None:
        if request.size.upper() in _IMAGE_SIZES:
            image_config["imageSize"] = request.size.upper()
        else:
            warnings.append(f"size {request.size!r} is not supported by Gemini (1K, 2K, 4K; or aspect_ratio=) and was not sent")
    if image_config:
        gc["imageConfig"] = image_config
    for name in ("n", "quality", "style", "background", "output_format", "response_format"):
        if getattr(request, name) is not None:
            warnings.append(f"{name} is not supported by Gemini image output and was not sent")
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": parts}], "generationConfig": gc}
    if request.options:
        _merge(body, request.options)
    return body, warnings


def decode_image_body(call: HttpCall, body: bytes) -> ImageResponse:
    """The images (``inlineData`` parts, thoughts skipped) and text of a ``generateContent`` body.

    Raises :class:`~allm.errors.AdapterError`: ``content_filter`` when the prompt
    was blocked or the only candidate stopped on a safety filter without an image;
    the error of an ``{"error": ...}`` body; ``malformed_response`` for any other shape.
    """
    provider = call.provider
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise malformed(provider, f"the response body is not valid JSON: {exc}") from None
    if isinstance(obj, dict) and obj.get("error") is not None:
        raise _error_from_object(provider, obj["error"], None, {})
    try:
        if not isinstance(obj, dict):
            raise TypeError("the response is not a JSON object")
        images: list[GeneratedImage] = []
        text: list[str] = []
        finish: str | None = None
        message: str | None = None
        for cand in obj.get("candidates") or ():
            for part in (cand.get("content") or {}).get("parts") or ():
                if part.get("thought"):
                    continue
                inline = part.get("inlineData") or part.get("inline_data")
                if inline:
                    mime = inline.get("mimeType") or inline.get("mime_type")
                    raw = base64.b64decode(inline["data"], validate=True)
                    images.append(GeneratedImage(Image(data=raw, mime_type=str(mime) if mime else None)))
                elif isinstance(part.get("text"), str):
                    text.append(part["text"])
            finish = cand.get("finishReason") or finish
            message = cand.get("finishMessage") or message
        block = (obj.get("promptFeedback") or {}).get("blockReason")
        usage = map_usage(obj["usageMetadata"]) if obj.get("usageMetadata") else Usage()
    except (binascii.Error, *_SHAPE_ERRORS) as exc:
        raise malformed(provider, f"unexpected body shape ({type(exc).__name__}: {exc})") from None
    if not images and (block or map_finish_reason(finish) == "content_filter"):
        why = f"blocked ({block})" if block else f"stopped by {finish}"
        raise AdapterError(
            f"no image: the request was {why}" + (f": {message}" if message else ""),
            reason="content_filter",
            provider=provider,
            metadata={"block_reason": block} if block else {"finish_reason": finish},
        )
    rid = obj.get("responseId")
    mv = obj.get("modelVersion")
    meta = {"finish_reason": finish} if finish else {}
    return ImageResponse(
        tuple(images),
        mv if isinstance(mv, str) else call.model,
        rid if isinstance(rid, str) else None,
        None,
        "".join(text),
        usage,
        call.warnings,
        meta,
    )


# ------------------------------------------------------------------------------ adapter


@attrs.frozen
class Gemini:
    """The Google Gemini API (``generativelanguage.googleapis.com``).

    Key: provider ``gemini``, environment ``GEMINI_API_KEY`` then ``GOOGLE_API_KEY``;
    sent as the ``x-goog-api-key`` header (never in the URL).

    - ``base_url``: API root including the version (``.../v1beta``).
    - ``thinking_budget``: ``thinkingConfig.thinkingBudget`` in tokens (``0`` turns
      thinking off on models that allow it, ``-1`` lets the model decide); Gemini 2.5.
    - ``thinking_level``: ``thinkingConfig.thinkingLevel`` (``"minimal"``, ``"low"``,
      ``"medium"``, ``"high"``); Gemini 3.
    - ``include_thoughts``: ``thinkingConfig.includeThoughts``; ``True`` streams
      thought summaries as reasoning events.

    Unset (``None``) settings are not sent. Model names are accepted with or
    without the ``models/`` prefix; :meth:`decode_list_models` returns them without.
    """

    base_url: str = DEFAULT_BASE_URL
    thinking_budget: int | None = None
    thinking_level: str | None = None
    include_thoughts: bool | None = None

    @property
    def key_spec(self) -> KeySpec:
        return KeySpec(PROVIDER, ("GEMINI_API_KEY", "GOOGLE_API_KEY"), True)

    @property
    def provider(self) -> str:
        return PROVIDER

    def _root(self) -> str:
        return self.base_url.rstrip("/")

    def encode(self, request: Request, *, stream: bool) -> HttpCall:
        """``POST {base}/models/{model}:generateContent`` (or ``:streamGenerateContent?alt=sse``).

        Raises :class:`~allm.errors.ValidationError` for input Gemini cannot take
        (see :func:`encode_contents`) or a malformed model name.
        """
        path = model_path(request.model)
        body, warnings = encode_body(
            request,
            thinking_budget=self.thinking_budget,
            thinking_level=self.thinking_level,
            include_thoughts=self.include_thoughts,
        )
        method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        headers = {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"}
        data = orjson.dumps(body)
        check_request_size(len(data), request.messages, GEMINI_IMAGES)
        return HttpCall(
            "POST",
            f"{self._root()}/{path}{method}",
            headers,
            data,
            stream,
            PROVIDER,
            _bare(path),
            tuple(warnings),
        )

    def auth_headers(self, key: str | None) -> dict[str, str]:
        """``{"x-goog-api-key": key}`` (the key never goes in the URL); ``{}`` without a key."""
        return {"x-goog-api-key": key} if key else {}

    def decoder(self, call: HttpCall, *, include_raw: bool = False) -> GeminiDecoder:
        """A fresh :class:`GeminiDecoder` for the SSE answer to ``call``."""
        return GeminiDecoder(call.provider, call.warnings, include_raw)

    def decode_body(self, call: HttpCall, body: bytes, *, include_raw: bool = False) -> list[Event]:
        """A ``generateContent`` body as events (see :func:`decode_body`)."""
        return decode_body(body, provider=call.provider, warnings=call.warnings, include_raw=include_raw)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        """An HTTP error response as a typed error (see :func:`error_from_body`)."""
        return error_from_body(PROVIDER, status, headers, body)

    # -- image output, https://ai.google.dev/gemini-api/docs/image-generation

    image_operations = frozenset({"generate", "edit"})

    def encode_image(self, operation: str, request: ImageRequest) -> HttpCall:
        """``POST {base}/models/{model}:generateContent`` asking for images (see :func:`encode_image_body`)."""
        path = model_path(request.model)
        body, warnings = encode_image_body(operation, request)
        data = orjson.dumps(body)
        cap = GEMINI_IMAGES.max_request_bytes
        if cap is not None and len(data) > cap:
            raise ValidationError(
                f"the request with its inline images is {len(data):,} bytes; Gemini accepts at most {cap:,} per request",
                reason="invalid_image",
            )
        headers = {"content-type": "application/json", "accept": "application/json"}
        return HttpCall("POST", f"{self._root()}/{path}:generateContent", headers, data, False, PROVIDER, _bare(path), tuple(warnings))

    def decode_image(self, call: HttpCall, body: bytes) -> ImageResponse:
        return decode_image_body(call, body)

    def image_error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        return self.error(status, headers, body)

    # -- models (GET /models), https://ai.google.dev/api/models#method:-models.list

    def encode_list_models(self) -> HttpCall:
        """``GET {base}/models?pageSize=1000`` (the documented maximum page, so one call lists all)."""
        return HttpCall("GET", f"{self._root()}/models?pageSize=1000", {"accept": "application/json"}, None, False, PROVIDER)

    def decode_list_models(self, body: bytes) -> list[str]:
        """Model ids without the ``models/`` prefix (``"gemini-2.5-flash"``), as ``model=`` takes them.

        Every listed model is returned, whatever methods it supports. Raises
        :class:`~allm.errors.AdapterError` (``malformed_response``) for a body
        without a ``models`` array.
        """
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise malformed(PROVIDER, f"the model list is not valid JSON: {exc}") from None
        items = data.get("models") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise malformed(PROVIDER, "a model list has no models array")
        return [_bare(str(m["name"])) for m in items if isinstance(m, dict) and isinstance(m.get("name"), str)]

    # -- embeddings (POST {model}:batchEmbedContents), https://ai.google.dev/api/embeddings

    embed_batch_size = 100  # the API rejects more than 100 requests in one batch

    def encode_embed(self, texts: Sequence[str], *, model: str, dimensions: int | None = None) -> HttpCall:
        """One ``batchEmbedContents`` call: ``{"requests": [{"model", "content": {"parts": [{"text"}]},
        "outputDimensionality"?}, ...]}``. Raises :class:`~allm.errors.ValidationError` for a
        non-string text or a malformed model name."""
        path = model_path(model)
        requests: list[dict[str, Any]] = []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValidationError(f"texts[{i}] is {type(t).__name__}, not a string", reason="invalid_request")
            r: dict[str, Any] = {"model": path, "content": {"parts": [{"text": t}]}}
            if dimensions is not None:
                r["outputDimensionality"] = dimensions
            requests.append(r)
        headers = {"content-type": "application/json", "accept": "application/json"}
        return HttpCall(
            "POST",
            f"{self._root()}/{path}:batchEmbedContents",
            headers,
            orjson.dumps({"requests": requests}),
            False,
            PROVIDER,
            _bare(path),
        )

    def decode_embed(self, body: bytes) -> Embeddings:
        """``{"embeddings": [{"values": [float, ...]}, ...]}`` in input order.

        The API reports no token usage for embeddings (``usage`` stays ``None``)
        and does not echo the model (``model`` is ``None``). Raises
        :class:`~allm.errors.AdapterError` (``malformed_response``) for any other shape.
        """
        try:
            data = orjson.loads(body)
            vectors = tuple(tuple(float(x) for x in item["values"]) for item in data["embeddings"])
        except (orjson.JSONDecodeError, *_SHAPE_ERRORS) as exc:
            raise malformed(PROVIDER, f"unexpected embeddings body ({type(exc).__name__}: {exc})") from None
        return Embeddings(vectors, None, Usage())
