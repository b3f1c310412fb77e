"""Open Responses <-> allm, as pure functions: no I/O, no clock (times are passed in).

- :func:`parse_create`: a ``POST /v1/responses`` body (or a WebSocket ``response.create``)
  -> :class:`CreateParams`, checked (:class:`ApiError` 400 naming the bad ``param``).
- :func:`input_items` / :func:`items_to_thread`: input items -> an allm
  :class:`~allm.types.Thread` (messages with text and ``input_image`` parts,
  ``function_call``, ``function_call_output``, ``reasoning``, and this server's own
  ``compaction`` items), through :func:`allm.formats.from_openai_responses`.
- :func:`client_tools` / :func:`build_call`: tools, ``tool_choice`` and sampling fields ->
  an allm :class:`~allm.types.Request` and the tool loop's options.
- :class:`EventMapper`: allm events (:mod:`allm.events`) -> Open Responses streaming events,
  each a dict with ``sequence_number`` from 0, gapless; it keeps the output items and
  builds the response object (:func:`response_object`) with every field the
  specification requires (nullable ones as ``null``).
- :func:`sse`: one event as one SSE frame (``event:`` line, one-line JSON ``data:``, blank line).
- :class:`ApiError` / :func:`error_from_allm`: specification-shaped errors with their HTTP status.

Follows the Open Responses specification (2026-04-24) and, where it is silent, OpenAI's
Responses API reference.
"""

from __future__ import annotations

import base64
import re
import secrets
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import orjson

from .. import codec
from ..errors import AdapterError, AllmError, EngineError, ToolError, ValidationError
from ..events import (
    ChatCompleted,
    Error,
    Event,
    MessageCompleted,
    MessageStarted,
    ReasoningCompleted,
    ReasoningDelta,
    TextCompleted,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
    ToolResultEncoded,
)
from ..types import Message, Request, ResponseFormat, Thread, Tool, Usage

__all__ = [
    "TERMINAL_EVENTS",
    "ApiError",
    "CreateParams",
    "EventMapper",
    "InputItemReader",
    "ItemRewriter",
    "ToolTranslator",
    "build_call",
    "client_tools",
    "decode_compaction",
    "encode_compaction",
    "kept_item",
    "transcript",
    "error_from_allm",
    "input_items",
    "item_id",
    "items_to_thread",
    "new_id",
    "response_of_item",
    "parse_create",
    "response_object",
    "sse",
    "usage_object",
]

#: A translator for a non-function tool type (``{"type": "mcp", ...}`` -> allm tools).
ToolTranslator = Callable[[Mapping[str, Any]], Sequence[Tool]]
#: Rewrites an output item as clients see it (``function_call`` of an MCP tool -> ``mcp_call``).
ItemRewriter = Callable[[Mapping[str, Any]], Mapping[str, Any]]
#: Reads a custom input item type back as standard items (``mcp_call`` -> ``function_call`` + output).
InputItemReader = Callable[[Mapping[str, Any]], Sequence[Mapping[str, Any]]]


def new_id(prefix: str) -> str:
    """``prefix_`` and 32 hex characters (128 random bits)."""
    return f"{prefix}_{secrets.token_hex(16)}"


def item_id(prefix: str, response_id: str) -> str:
    """An output item's id: ``prefix_``, the 32 hex characters of its response's id and 8
    random ones, so that an ``item_reference`` to it finds the response holding it
    (:func:`response_of_item`)."""
    return f"{prefix}_{response_id.partition('_')[2]}{secrets.token_hex(4)}"


_ITEM_ID = re.compile(r"^[a-z]+_([0-9a-f]{32})[0-9a-f]{8}$")


def response_of_item(item: str) -> str | None:
    """The id of the response whose output holds item ``item`` (an id :func:`item_id` made), else ``None``."""
    m = _ITEM_ID.match(item)
    return f"resp_{m.group(1)}" if m else None


def dumps(value: Any) -> bytes:
    """Compact one-line JSON."""
    return orjson.dumps(value)


# ------------------------------------------------------------------------------ errors


class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with HTTP ``status``.

    Types follow the specification's table: ``invalid_request`` (400), ``not_found`` (404),
    ``too_many_requests`` (429), ``server_error`` (500), ``model_error`` (500); upstream
    failures are ``server_error`` with 502 (504 for a timeout).
    """

    def __init__(self, status: int, type: str, message: str, *, code: str | None = None, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def payload(self) -> dict[str, Any]:
        """The error object: ``{"message", "type", "param", "code"}``."""
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def body(self) -> dict[str, Any]:
        """The HTTP body: ``{"error": payload}``."""
        return {"error": self.payload()}


def invalid(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    """A 400 ``invalid_request`` error."""
    return ApiError(400, "invalid_request", message, code=code, param=param)


def error_from_allm(exc: AllmError) -> ApiError:
    """The API error for an allm error: its reason picks status and code; the message is
    allm's own (already free of keys)."""
    r = exc.reason
    msg = exc.message
    if isinstance(exc, ValidationError):
        param = "tools" if r == "invalid_tool" else "input"
        return invalid(msg, param, r)
    if isinstance(exc, EngineError):
        if r in ("missing_key", "invalid_key"):
            return ApiError(500, "server_error", "the route has no usable provider key", code=r)
        if r == "unknown_tool":
            return invalid(msg, "tools", r)
        return ApiError(500, "server_error", msg, code=r)
    if isinstance(exc, ToolError):
        return ApiError(500, "server_error", msg, code=f"tool_{r}")
    if isinstance(exc, AdapterError):
        headers = {"retry-after": str(int(exc.retry_after + 0.999))} if exc.retry_after else None
        if r == "rate_limited":
            where = "" if exc.metadata.get("middleware") else "upstream rate limit: "  # a route's own limit
            return ApiError(429, "too_many_requests", f"{where}{msg}", code="rate_limit_exceeded", headers=headers)
        if r in ("invalid_request", "context_length_exceeded", "unsupported_feature", "content_filter"):
            return ApiError(400, "invalid_request", msg, code=r)
        if r == "not_found":
            return ApiError(404, "not_found", msg, code="model_not_found", param="model")
        if r in ("authentication_failed", "permission_denied"):
            return ApiError(502, "server_error", f"the upstream refused the provider key: {msg}", code="upstream_" + r)
        if r == "timeout":
            return ApiError(504, "server_error", f"upstream timeout: {msg}", code="upstream_timeout")
        if r == "no_scripted_response":
            return ApiError(500, "model_error", msg, code=r)
        return ApiError(502, "server_error", f"upstream failure: {msg}", code="upstream_error")
    return ApiError(500, "server_error", msg, code=r)


# ------------------------------------------------------------------------------ the request


@attrs.frozen
class CreateParams:
    """A checked create request. ``input`` holds the input items (a string input made one
    user message item); ``tools`` the raw tool objects; the rest as the specification names them."""

    model: str
    input: tuple[Mapping[str, Any], ...] = ()
    instructions: str | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    max_tool_calls: int | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    top_logprobs: int | None = None
    store: bool = True
    background: bool = False
    stream: bool = False
    previous_response_id: str | None = None
    metadata: Mapping[str, Any] | None = None
    text: Mapping[str, Any] | None = None
    reasoning: Mapping[str, Any] | None = None
    truncation: str = "disabled"
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    user: str | None = None


_KNOWN = {f.name for f in attrs.fields(CreateParams)} | {"stream_options", "include", "type", "conversation", "prompt"}


def _opt(body: Mapping[str, Any], name: str, types: tuple[type, ...], what: str) -> Any:
    v = body.get(name)
    if v is None:
        return None
    if type(v) is bool and bool not in types:
        raise invalid(f"'{name}' must be {what}", name)
    if not isinstance(v, types):
        raise invalid(f"'{name}' must be {what}", name)
    return v


def parse_create(body: Any, *, websocket: bool = False) -> CreateParams:
    """Check a create body; :class:`ApiError` (400, ``param`` naming the field) when it is wrong.

    ``model`` is required; ``input`` is a string or a list of items; numbers, booleans and
    objects are checked by type. Unknown fields are ignored (the specification lets servers
    extend). With ``websocket``, ``type`` must be ``response.create`` and ``stream`` /
    ``background`` must be absent.
    """
    if not isinstance(body, Mapping):
        raise invalid("the request body must be a JSON object")
    if websocket:
        if body.get("type") != "response.create":
            raise invalid("a WebSocket message must have type 'response.create'", "type")
        for k in ("stream", "stream_options", "background"):
            if k in body:
                raise invalid(f"'{k}' must not be sent on a WebSocket", k)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required (a string)", "model", "missing_required_parameter" if model is None else "invalid_type")
    raw_input = body.get("input")
    items: list[Mapping[str, Any]]
    if raw_input is None:
        items = []
    elif isinstance(raw_input, str):
        items = [{"type": "message", "role": "user", "content": raw_input}]
    elif isinstance(raw_input, list):
        items = []
        for i, it in enumerate(raw_input):
            if not isinstance(it, Mapping):
                raise invalid(f"input[{i}] must be an object", f"input[{i}]")
            items.append(it)
    else:
        raise invalid("'input' must be a string or a list of items", "input")
    kw: dict[str, Any] = {"model": model, "input": tuple(items)}
    kw["instructions"] = _opt(body, "instructions", (str,), "a string")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools):
            raise invalid("'tools' must be a list of tool objects", "tools")
        kw["tools"] = tuple(tools)
    if body.get("tool_choice") is not None:
        tc = body["tool_choice"]
        if not (tc in ("auto", "none", "required") or isinstance(tc, Mapping)):
            raise invalid("'tool_choice' must be auto, none, required or a tool choice object", "tool_choice")
        kw["tool_choice"] = tc
    for name in ("parallel_tool_calls", "store", "background", "stream"):
        v = _opt(body, name, (bool,), "a boolean")
        if v is not None:
            kw[name] = v
    for name in ("max_tool_calls", "max_output_tokens", "top_logprobs"):
        v = _opt(body, name, (int,), "an integer")
        if v is not None:
            if v < (0 if name == "top_logprobs" else 1):
                raise invalid(f"'{name}' is out of range", name)
            kw[name] = v
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        v = _opt(body, name, (int, float), "a number")
        if v is not None:
            kw[name] = float(v)
    for name in ("previous_response_id", "service_tier", "safety_identifier", "prompt_cache_key", "user"):
        v = _opt(body, name, (str,), "a string")
        if v is not None:
            kw[name] = v
    for name in ("metadata", "text", "reasoning"):
        v = _opt(body, name, (Mapping,), "an object")
        if v is not None:
            kw[name] = v
    if body.get("truncation") is not None:
        if body["truncation"] not in ("auto", "disabled"):
            raise invalid("'truncation' must be auto or disabled", "truncation")
        kw["truncation"] = body["truncation"]
    if body.get("conversation") is not None:
        raise invalid("'conversation' is not supported by this server; use previous_response_id", "conversation", "unsupported_parameter")
    return CreateParams(**kw)


def input_items(params: CreateParams, response_id: str | None = None) -> list[dict[str, Any]]:
    """The input items as stored and listed by ``GET /v1/responses/{id}/input_items``: each
    with ``type`` and an ``id`` (given ones kept; a new one carries ``response_id``, as
    :func:`item_id` makes it, so that an ``item_reference`` finds it)."""
    out: list[dict[str, Any]] = []
    for it in params.input:
        d = dict(it)
        t = d.setdefault("type", "message")
        if "id" not in d:
            prefix = {"message": "msg", "function_call": "fc", "function_call_output": "fco",
                      "reasoning": "rs", "compaction": "cmp"}.get(str(t), "item")
            d["id"] = item_id(prefix, response_id) if response_id else new_id(prefix)
        if t == "message":
            d.setdefault("status", "completed")
            c = d.get("content")
            if isinstance(c, str):
                role = d.get("role")
                d["content"] = [{"type": "output_text" if role == "assistant" else "input_text", "text": c,
                                 **({"annotations": []} if role == "assistant" else {})}]
        out.append(d)
    return out


_COMPACTION_PREFIX = "allm1."


def encode_compaction(thread: Thread) -> str:
    """An opaque ``encrypted_content`` holding ``thread`` (compressed; not encrypted)."""
    raw = zlib.compress(codec.dumps(thread))
    return _COMPACTION_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii")


def decode_compaction(text: Any, where: str) -> Thread:
    """The thread of a ``compaction`` item this server made; :class:`ApiError` 400 otherwise."""
    if not isinstance(text, str) or not text.startswith(_COMPACTION_PREFIX):
        raise invalid(f"{where}: not a compaction item from this server", where, "invalid_compaction")
    try:
        thread = codec.loads(zlib.decompress(base64.urlsafe_b64decode(text[len(_COMPACTION_PREFIX):])), Thread)
    except Exception:
        raise invalid(f"{where}: a damaged compaction item", where, "invalid_compaction") from None
    return thread


def transcript(thread: Thread) -> str:
    """``thread`` as plain text for a model to read (the compaction summary's input): one
    paragraph per message, ``role: text``, tool calls as ``name(arguments)`` and tool
    results with their call's id."""
    lines = []
    for m in thread.messages:
        if m.role == "tool":
            lines.append(f"tool result ({m.tool_call_id}): {m.text}")
            continue
        text = m.text
        if text:
            lines.append(f"{m.role}: {text}")
        for tc in m.tool_calls:
            lines.append(f"{m.role} called {tc.name}({tc.raw_arguments}) [{tc.id}]")
    return "\n\n".join(lines)


def kept_item(message: Message) -> dict[str, Any]:
    """A user or system message as a compacted window keeps it: an input ``message`` item
    (``input_text`` and ``input_image`` parts)."""
    if message.role == "user":
        from ..formats import to_openai_responses

        payload, _ = to_openai_responses(Thread((message,)))
        d = dict(payload["input"][0])
    else:
        d = {"role": message.role, "content": message.text}
    content = d["content"]
    if isinstance(content, str):
        content = [{"type": "input_text", "text": content}]
    return {"type": "message", "id": new_id("msg"), "status": "completed", "role": d["role"], "content": content}


def items_to_thread(
    items: Sequence[Mapping[str, Any]], readers: Mapping[str, InputItemReader] | None = None
) -> Thread:
    """An allm thread from input items (see the module docstring); :class:`ApiError` 400 for
    an item of the wrong shape. ``readers`` turn custom item types into standard items first.
    ``item_reference`` items must have been resolved before (the service does: 400 otherwise)."""
    from ..formats import FormatError, from_openai_responses

    if readers:
        expanded: list[Mapping[str, Any]] = []
        for it in items:
            reader = readers.get(str(it.get("type")))
            expanded.extend(reader(it) if reader is not None else (it,))
        items = expanded

    messages: list[Message] = []
    segment: list[Mapping[str, Any]] = []

    def flush(offset: int) -> None:
        if not segment:
            return
        try:
            thread, _ = from_openai_responses({"input": list(segment)})
        except FormatError as exc:
            raise invalid(_shift(exc.message, offset), "input") from None
        messages.extend(thread.messages)
        segment.clear()

    start = 0
    for i, it in enumerate(items):
        t = it.get("type", "message")
        if t == "compaction":
            flush(start)
            messages.extend(decode_compaction(it.get("encrypted_content"), f"input[{i}].encrypted_content").messages)
            start = i + 1
        elif t == "item_reference":  # resolved by the service before; one left here names nothing
            raise ApiError(400, "invalid_request", f"input[{i}]: item {it.get('id')!r} not found.", code="item_not_found",
                           param=f"input[{i}].id")
        elif t not in ("message", "function_call", "function_call_output", "reasoning"):
            raise invalid(f"input[{i}]: unsupported item type {t!r}", f"input[{i}].type")
        else:
            if t == "message" and it.get("role") not in ("user", "assistant", "system", "developer"):
                raise invalid(f"input[{i}]: role must be user, assistant, system or developer", f"input[{i}].role")
            segment.append(it)
    flush(start)
    try:
        return Thread(tuple(messages))
    except ValidationError as exc:
        raise invalid(exc.message, "input") from None


def _shift(message: str, offset: int) -> str:
    if not offset:
        return message
    import re

    return re.sub(r"input\[(\d+)\]", lambda m: f"input[{int(m.group(1)) + offset}]", message)


def client_tools(params: CreateParams, tool_types: Mapping[str, ToolTranslator] | None = None) -> list[Tool]:
    """The request's tools as allm tools: ``function`` tools are handed back to the client
    (``manual``); other types go through ``tool_types`` (a hook; 400 when none knows them).
    Raises :class:`ApiError` 400 (``param`` ``tools[i]``) for an invalid tool."""
    from ..tools import tool as make_tool

    out: list[Tool] = []
    for i, t in enumerate(params.tools):
        typ = t.get("type")
        if typ == "function":
            name = t.get("name")
            if not isinstance(name, str):
                raise invalid(f"tools[{i}].name is required (a string)", f"tools[{i}].name", "invalid_tool")
            params_schema = t.get("parameters")
            if params_schema is None:
                params_schema = {"type": "object", "properties": {}}
            if not isinstance(params_schema, Mapping) or (params_schema.get("type", "object") != "object"):
                raise invalid(f"tools[{i}].parameters must be a JSON Schema object with type 'object'", f"tools[{i}].parameters", "invalid_tool")
            desc = t.get("description")
            strict = t.get("strict")
            try:
                out.append(make_tool(name, desc if isinstance(desc, str) else "", dict(params_schema), manual=True,
                                     strict=strict if isinstance(strict, bool) else None))
            except ValidationError as exc:
                raise invalid(f"tools[{i}]: {exc.message}", f"tools[{i}]", "invalid_tool") from None
        elif tool_types and typ in tool_types:
            try:
                out.extend(tool_types[str(typ)](t))
            except ValidationError as exc:
                raise invalid(f"tools[{i}]: {exc.message}", f"tools[{i}]", "invalid_tool") from None
        else:
            raise invalid(f"tools[{i}]: unsupported tool type {typ!r}", f"tools[{i}].type", "unsupported_tool_type")
    return out


def _tool_choice(tc: Any, names: set[str]) -> str | None:
    if tc is None or tc == "auto":
        return None if not names else "auto"
    if tc in ("none", "required"):
        return str(tc)
    if isinstance(tc, Mapping):
        if tc.get("type") == "function" and isinstance(tc.get("name"), str):
            if tc["name"] not in names:
                raise invalid(f"tool_choice names {tc['name']!r}, which is not among the tools", "tool_choice")
            return str(tc["name"])
        if tc.get("type") == "allowed_tools":
            mode = tc.get("mode", "auto")
            return str(mode) if mode in ("none", "required") else "auto"
    raise invalid("unsupported tool_choice", "tool_choice")


def build_call(
    params: CreateParams, core: Thread, tools: Sequence[Tool], *, defaults: Mapping[str, Any] | None = None,
    instructions: str | None = None,
) -> tuple[Thread, Request, dict[str, Any]]:
    """``(thread, request, loop options)`` for :func:`allm.astream`.

    ``core`` is the conversation so far (a previous response's thread plus this input);
    ``instructions`` (or, when the request has none, the route's ``instructions``) become a
    leading system message (not carried to continuations);
    ``tools`` are every tool offered (client and hosted). ``max_output_tokens`` is
    ``max_tokens``; ``text.format`` a :class:`~allm.types.ResponseFormat`;
    ``max_tool_calls`` halts the loop once that many tool calls ran. An ``allowed_tools``
    choice offers only the tools it names (the specification's hard constraint).
    """
    msgs = core.messages
    system = params.instructions or instructions
    if system:
        msgs = (Message("system", system), *msgs)
    thread = Thread(msgs)
    tc_raw = params.tool_choice
    if isinstance(tc_raw, Mapping) and tc_raw.get("type") == "allowed_tools":
        allowed = tc_raw.get("tools")
        if not isinstance(allowed, list) or not all(isinstance(a, Mapping) and isinstance(a.get("name"), str) for a in allowed):
            raise invalid("allowed_tools.tools must be a list of {type, name}", "tool_choice.tools")
        keep = {a["name"] for a in allowed}
        unknown = keep - {t.name for t in tools}
        if unknown:
            raise invalid(f"allowed_tools names tools that are not offered: {sorted(unknown)}", "tool_choice.tools")
        tools = [t for t in tools if t.name in keep]  # enforced: only these can be called
    names = {t.name for t in tools}
    fields: dict[str, Any] = dict(defaults or {})
    fields.update({k: v for k, v in {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_output_tokens,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }.items() if v is not None})
    tc = _tool_choice(params.tool_choice, names) if names else None
    if tc is not None and tc != "auto":
        fields["tool_choice"] = tc
    fmt = (params.text or {}).get("format") if params.text else None
    if isinstance(fmt, Mapping):
        ft = fmt.get("type")
        if ft == "json_schema":
            schema = fmt.get("schema")
            if not isinstance(schema, Mapping) or not isinstance(fmt.get("name"), str):
                raise invalid("text.format json_schema needs 'name' and 'schema'", "text.format")
            fields["response_format"] = ResponseFormat("json_schema", fmt["name"], dict(schema), bool(fmt.get("strict", True)))
        elif ft == "json_object":
            fields["response_format"] = ResponseFormat("json_object", None, None)
        elif ft not in (None, "text"):
            raise invalid(f"unsupported text.format type {ft!r}", "text.format.type")
    if not params.parallel_tool_calls and names:
        fields["options"] = {**fields.get("options", {}), "parallel_tool_calls": False}
    try:
        req = Request(thread.messages, tools=tuple(tools), **fields)
    except ValidationError as exc:
        raise invalid(exc.message, None, exc.reason) from None
    options: dict[str, Any] = {"max_turns": 16}
    if params.max_tool_calls is not None:
        limit = params.max_tool_calls

        def halt(step: Any, _limit: int = limit) -> bool:
            ran = sum(len(m.tool_calls) for m in step.thread.messages[len(thread.messages):] if m.role == "assistant")
            return ran >= _limit

        options["halt_when"] = halt
        options["middleware"] = [ToolCallLimit(limit)]
    return thread, req, options


class ToolCallLimit:
    """The tool loop's middleware for ``max_tool_calls``: the calls past ``limit`` in one
    response (several in the turn that reaches it) are refused, their handlers never run
    (the specification: further calls are ignored). Their ``function_call_output`` says so."""

    name = "max_tool_calls"

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def before_tool(self, run: Any, call: Any) -> Any:
        from ..middleware import Refuse

        ran = run.state.get(self.name, 0)
        if ran >= self.limit:
            return Refuse(f"max_tool_calls is {self.limit}: this call was not run", {"max_tool_calls": self.limit})
        run.state[self.name] = ran + 1
        return None


# ------------------------------------------------------------------------------ the response


def usage_object(usage: Usage | None) -> dict[str, Any]:
    """Responses ``usage``: counters not reported are 0 here (the schema has no nulls)."""
    u = usage or Usage()
    i, o = u.input_tokens or 0, u.output_tokens or 0
    return {
        "input_tokens": i,
        "output_tokens": o,
        "total_tokens": u.total_tokens if u.total_tokens is not None else i + o,
        "input_tokens_details": {"cached_tokens": u.cached_input_tokens or 0,
                                 "cache_write_tokens": u.cache_write_input_tokens or 0},
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens or 0},
    }


def _tool_object(t: Mapping[str, Any]) -> dict[str, Any]:
    if t.get("type") == "function":
        return {"type": "function", "name": t.get("name"), "description": t.get("description"),
                "parameters": t.get("parameters"), "strict": t.get("strict")}
    return dict(t)


def response_object(
    params: CreateParams,
    *,
    id: str,
    created_at: int,
    status: str,
    output: Sequence[Mapping[str, Any]] = (),
    usage: Mapping[str, Any] | None = None,
    error: Mapping[str, Any] | None = None,
    incomplete_reason: str | None = None,
    completed_at: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The response resource with every field the specification requires (nullable ones ``null``)."""
    text = dict(params.text) if params.text else {}
    text.setdefault("format", {"type": "text"})
    return {
        "id": id,
        "object": "response",
        "created_at": created_at,
        "completed_at": completed_at,
        "status": status,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "model": params.model,
        "previous_response_id": params.previous_response_id,
        "instructions": params.instructions,
        "output": list(output),
        "error": dict(error) if error else None,
        "tools": [_tool_object(t) for t in params.tools],
        "tool_choice": params.tool_choice if params.tool_choice is not None else "auto",
        "truncation": params.truncation,
        "parallel_tool_calls": params.parallel_tool_calls,
        "text": text,
        "top_p": params.top_p if params.top_p is not None else 1.0,
        "presence_penalty": params.presence_penalty or 0.0,
        "frequency_penalty": params.frequency_penalty or 0.0,
        "top_logprobs": params.top_logprobs or 0,
        "temperature": params.temperature if params.temperature is not None else 1.0,
        "reasoning": {"effort": (params.reasoning or {}).get("effort"), "summary": (params.reasoning or {}).get("summary")}
        if params.reasoning else None,
        "usage": dict(usage) if usage is not None else None,
        "max_output_tokens": params.max_output_tokens,
        "max_tool_calls": params.max_tool_calls,
        "store": params.store,
        "background": params.background,
        "service_tier": params.service_tier or "default",
        "metadata": dict(metadata if metadata is not None else (params.metadata or {})),
        "safety_identifier": params.safety_identifier,
        "prompt_cache_key": params.prompt_cache_key,
        "user": params.user,
    }


def sse(event: Mapping[str, Any]) -> bytes:
    """One SSE frame: ``event: <type>``, a one-line JSON ``data:``, a blank line."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + dumps(event) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"

_TERMINAL = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed",
             "cancelled": "response.incomplete"}
#: The types of the events that end a response.
TERMINAL_EVENTS = frozenset(_TERMINAL.values())


class EventMapper:
    """allm events -> Open Responses streaming events for one response.

    ``start()`` gives ``response.created`` and ``response.in_progress``; ``feed(event)`` the
    events one allm event makes (output item / content part added and done, text, reasoning
    and function call argument deltas, hosted tools' ``function_call_output`` items);
    ``finish(...)`` closes open items and gives the one terminal event. Every event has
    ``sequence_number`` (0, 1, 2 ... gapless). ``output``, ``usage`` and ``result`` hold what
    was gathered; ``thread`` is the conversation after the response (from ``ChatCompleted``).
    """

    def __init__(self, params: CreateParams, response_id: str, created_at: int,
                 rewrite: Sequence[ItemRewriter] = ()) -> None:
        self.params = params
        self.rewrite = tuple(rewrite)
        self.id = response_id
        self.created_at = created_at
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self.usage = Usage()
        self.result: Any = None
        self.error: dict[str, Any] | None = None
        self.warnings: list[str] = []
        self.finish_reason: str | None = None
        self.terminal: dict[str, Any] | None = None
        self._text: dict[str | None, tuple[int, str]] = {}  # text block id -> (output index, text so far)
        self._reasoning: dict[str | None, tuple[int, str]] = {}
        self._calls: dict[str, tuple[int, str]] = {}  # tool_call_id -> (output index, arguments so far)

    # -- helpers

    def _ev(self, type: str, **fields: Any) -> dict[str, Any]:
        ev = {"type": type, "sequence_number": self.seq, **fields}
        self.seq += 1
        return ev

    def snapshot(self, status: str, **kw: Any) -> dict[str, Any]:
        """The response object as it stands, with ``status``."""
        meta = dict(self.params.metadata or {})
        if self.warnings:
            meta["allm_warnings"] = "; ".join(self.warnings)
        return response_object(self.params, id=self.id, created_at=self.created_at, status=status,
                               output=[self._view(i) for i in self.output], metadata=meta, **kw)

    def start(self, status: str = "in_progress") -> list[dict[str, Any]]:
        """``response.created`` then ``response.in_progress`` (or ``response.queued``)."""
        snap = self.snapshot(status)
        out = [self._ev("response.created", response=snap)]
        out.append(self._ev("response.queued" if status == "queued" else "response.in_progress", response=snap))
        return out

    def in_progress(self) -> list[dict[str, Any]]:
        """``response.in_progress`` (a queued background response starting)."""
        return [self._ev("response.in_progress", response=self.snapshot("in_progress"))]

    def _view(self, item: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``item`` as clients see it (after the ``rewrite`` hooks)."""
        out = dict(item)
        for fn in self.rewrite:
            out = dict(fn(out))
        return out

    def _add_item(self, item: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.output.append(item)
        idx = len(self.output) - 1
        return idx, self._ev("response.output_item.added", output_index=idx, item=self._view(item))

    def _open_text(self, block: str | None) -> list[dict[str, Any]]:
        item = {"type": "message", "id": item_id("msg", self.id), "status": "in_progress", "role": "assistant", "content": []}
        idx, added = self._add_item(item)
        self._text[block] = (idx, "")
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [added, self._ev("response.content_part.added", item_id=item["id"], output_index=idx, content_index=0, part=part)]

    def _close_text(self, block: str | None, text: str | None = None) -> list[dict[str, Any]]:
        idx, so_far = self._text.pop(block)
        full = so_far if text is None else text
        item = self.output[idx]
        part = {"type": "output_text", "text": full, "annotations": [], "logprobs": []}
        item["content"] = [part]
        item["status"] = "completed"
        iid = item["id"]
        return [
            self._ev("response.output_text.done", item_id=iid, output_index=idx, content_index=0, text=full, logprobs=[]),
            self._ev("response.content_part.done", item_id=iid, output_index=idx, content_index=0, part=part),
            self._ev("response.output_item.done", output_index=idx, item=self._view(item)),
        ]

    def _open_reasoning(self, block: str | None) -> list[dict[str, Any]]:
        item = {"type": "reasoning", "id": item_id("rs", self.id), "summary": [], "content": []}
        idx, added = self._add_item(item)
        self._reasoning[block] = (idx, "")
        part = {"type": "reasoning_text", "text": ""}
        return [added, self._ev("response.content_part.added", item_id=item["id"], output_index=idx, content_index=0, part=part)]

    def _close_reasoning(self, block: str | None, text: str | None, encrypted: str | None = None) -> list[dict[str, Any]]:
        idx, so_far = self._reasoning.pop(block)
        full = so_far if text is None else text
        item = self.output[idx]
        part = {"type": "reasoning_text", "text": full}
        item["content"] = [part]
        if encrypted:
            item["encrypted_content"] = encrypted
        iid = item["id"]
        return [
            self._ev("response.reasoning.done", item_id=iid, output_index=idx, content_index=0, text=full),
            self._ev("response.content_part.done", item_id=iid, output_index=idx, content_index=0, part=part),
            self._ev("response.output_item.done", output_index=idx, item=self._view(item)),
        ]

    def _open_call(self, call_id: str, name: str) -> list[dict[str, Any]]:
        item = {"type": "function_call", "id": item_id("fc", self.id), "call_id": call_id, "name": name, "arguments": "",
                "status": "in_progress"}
        idx, added = self._add_item(item)
        self._calls[call_id] = (idx, "")
        return [added]

    def close_open(self) -> list[dict[str, Any]]:
        """Close every item still open (at a message's end or an early stop)."""
        out: list[dict[str, Any]] = []
        for b in list(self._text):
            out += self._close_text(b)
        for b in list(self._reasoning):
            out += self._close_reasoning(b, None)
        for cid in list(self._calls):
            idx, args = self._calls.pop(cid)
            item = self.output[idx]
            item.update(arguments=args, status="incomplete")
            out.append(self._ev("response.output_item.done", output_index=idx, item=self._view(item)))
        return out

    # -- the mapping

    def feed(self, ev: Event) -> list[dict[str, Any]]:
        """The streaming events for one allm event (often none)."""
        t = type(ev)
        if t is TextDelta:
            assert isinstance(ev, TextDelta)
            out = [] if ev.id in self._text else self._open_text(ev.id)
            idx, so_far = self._text[ev.id]
            self._text[ev.id] = (idx, so_far + ev.delta)
            iid = self.output[idx]["id"]
            out.append(self._ev("response.output_text.delta", item_id=iid, output_index=idx, content_index=0,
                                delta=ev.delta, logprobs=[]))
            return out
        if t is TextCompleted:
            assert isinstance(ev, TextCompleted)
            out = []
            if ev.id not in self._text:
                if not ev.text:
                    return []
                out = self._open_text(ev.id)
                idx, _ = self._text[ev.id]
                out.append(self._ev("response.output_text.delta", item_id=self.output[idx]["id"], output_index=idx,
                                    content_index=0, delta=ev.text, logprobs=[]))
            return out + self._close_text(ev.id, ev.text)
        if t is ReasoningDelta:
            assert isinstance(ev, ReasoningDelta)
            out = [] if ev.id in self._reasoning else self._open_reasoning(ev.id)
            idx, so_far = self._reasoning[ev.id]
            self._reasoning[ev.id] = (idx, so_far + ev.delta)
            out.append(self._ev("response.reasoning.delta", item_id=self.output[idx]["id"], output_index=idx,
                                content_index=0, delta=ev.delta))
            return out
        if t is ReasoningCompleted:
            assert isinstance(ev, ReasoningCompleted)
            out = [] if ev.id in self._reasoning else self._open_reasoning(ev.id)
            return out + self._close_reasoning(ev.id, ev.part.text, ev.part.encrypted_content)
        if t is ToolCallStarted:
            assert isinstance(ev, ToolCallStarted)
            return [] if ev.tool_call_id in self._calls else self._open_call(ev.tool_call_id, ev.name)
        if t is ToolCallDelta:
            assert isinstance(ev, ToolCallDelta)
            if ev.tool_call_id not in self._calls:
                return []
            idx, args = self._calls[ev.tool_call_id]
            self._calls[ev.tool_call_id] = (idx, args + ev.arguments_delta)
            return [self._ev("response.function_call_arguments.delta", item_id=self.output[idx]["id"], output_index=idx,
                             delta=ev.arguments_delta)]
        if t is ToolCallCompleted:
            assert isinstance(ev, ToolCallCompleted)
            tc = ev.tool_call
            out = [] if tc.id in self._calls else self._open_call(tc.id, tc.name)
            idx, _ = self._calls.pop(tc.id)
            item = self.output[idx]
            item.update(arguments=tc.raw_arguments, name=tc.name, status="completed")
            return [*out, self._ev("response.function_call_arguments.done", item_id=item["id"], output_index=idx, name=tc.name, arguments=tc.raw_arguments), self._ev("response.output_item.done", output_index=idx, item=self._view(item))]
        if t is ToolResultEncoded:
            assert isinstance(ev, ToolResultEncoded)
            item = {"type": "function_call_output", "id": item_id("fco", self.id), "call_id": ev.tool_call_id,
                    "output": ev.content, "status": "completed"}
            idx, added = self._add_item(item)
            return [added, self._ev("response.output_item.done", output_index=idx, item=self._view(item))]
        if t is MessageStarted:
            assert isinstance(ev, MessageStarted)
            self.warnings.extend(w.message or str(w.setting) for w in ev.warnings)
            return []
        if t is MessageCompleted:
            assert isinstance(ev, MessageCompleted)
            if ev.usage is not None:
                self.usage = _add_usage(self.usage, ev.usage)
            self.finish_reason = ev.finish_reason
            return self.close_open()
        if t is Error:
            assert isinstance(ev, Error)
            api = error_from_allm(ev.error)
            self.error = {"code": api.code or api.type, "message": api.message}
            return [*self.close_open(), self.error_event(api)]
        if t is ChatCompleted:
            assert isinstance(ev, ChatCompleted)
            self.result = ev.result
            return []
        return []

    def finish(self, status: str | None = None, reason: str | None = None, *, now: int) -> list[dict[str, Any]]:
        """Close what is open and emit the terminal event. Without ``status``, it is read from the
        chat: an error -> ``failed``; ``finish_reason`` ``length`` -> ``incomplete``
        (``max_output_tokens``), ``content_filter`` -> ``incomplete``; a ``max_turns`` or
        ``max_tool_calls`` stop -> ``incomplete`` (``max_tool_calls``/``max_turns``); else ``completed``."""
        out = self.close_open()
        if status is None:
            halted = getattr(self.result, "halted_reason", None)
            if self.error is not None or halted == "error":
                status = "failed"
                if self.error is None:
                    self.error = {"code": "server_error", "message": "the model call failed"}
            elif self.finish_reason == "length":
                status, reason = "incomplete", "max_output_tokens"
            elif self.finish_reason == "content_filter":
                status, reason = "incomplete", "content_filter"
            elif halted == "max_turns":
                status, reason = "incomplete", "max_turns"
            elif halted == "halt_when":
                status, reason = "incomplete", "max_tool_calls"
            else:
                status = "completed"
        if status == "failed" and self.error is None:
            self.error = {"code": "server_error", "message": reason or "failed"}
        snap = self.snapshot(
            status,
            usage=usage_object(self.usage),
            error=self.error if status == "failed" else None,
            incomplete_reason=reason if status in ("incomplete", "cancelled") else None,
            completed_at=now if status == "completed" else None,
        )
        self.terminal = snap
        return [*out, self._ev(_TERMINAL[status], response=snap)]

    def error_event(self, api: ApiError) -> dict[str, Any]:
        """An ``error`` streaming event (sent before ``response.failed``)."""
        return self._ev("error", error={"type": api.type, "code": api.code, "message": api.message, "param": api.param})


def _add_usage(a: Usage, b: Usage) -> Usage:
    def s(x: int | None, y: int | None) -> int | None:
        return None if x is None and y is None else (x or 0) + (y or 0)

    return Usage(
        input_tokens=s(a.input_tokens, b.input_tokens),
        output_tokens=s(a.output_tokens, b.output_tokens),
        cached_input_tokens=s(a.cached_input_tokens, b.cached_input_tokens),
        cache_write_input_tokens=s(a.cache_write_input_tokens, b.cache_write_input_tokens),
        reasoning_tokens=s(a.reasoning_tokens, b.reasoning_tokens),
        total_tokens=s(a.total_tokens, b.total_tokens),
    )

