"""Tools: building them, checking the arguments a model sent, running handlers, encoding results.

Build a tool from a JSON Schema and a handler::

    weather = allm.tool(
        "get_weather",
        "Current weather for a city.",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        handler=lambda args: {"city": args["city"], "temp_c": 18},
    )

or from a typed function, whose signature and docstring give the schema::

    @allm.function_tool
    def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict:
        '''Current weather for a city.

        Args:
            city: The city name, e.g. Paris.
            unit: Temperature unit.
        '''

A handler takes ``(args)`` or ``(args, ctx)`` (``ctx`` is a :class:`ToolContext`),
may be sync or async, and

- returns a value: the tool's result, encoded for the model by a
  :class:`ResultEncoder` (JSON by default; a string is sent as it is);
- raises: a tool error the model reads (``{"error": "..."}``, ``is_error=True``);
- returns :class:`AskUser`: the loop stops and asks the user a question;
- returns :class:`Halt`: the loop stops with the handler's own reason.

Arguments are checked before the handler runs: text that is not a JSON object
(``ToolCall.parse_error``) and arguments that fail the tool's schema become a
:class:`~allm.errors.ToolError` (``invalid_arguments``) the model sees. Schema
checks use the ``jsonschema`` package (``pip install 'allm[validation]'``); without
it, arguments are not checked against the schema and a ``RuntimeWarning`` says so once.

The runners (:mod:`allm.runner`) run the calls of one step concurrently, each
with a timeout; the decisions about their outcomes are in :mod:`allm.loop`. See
``guides/tools.md``.
"""

from __future__ import annotations

import enum
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, Union, overload

import attrs
import orjson

from . import schema as _schema
from .errors import ToolError, ValidationError
from .types import Tool, ToolCall

if TYPE_CHECKING:
    from .engine import Engine

__all__ = [
    "ASK_USER_PLACEHOLDER",
    "RESERVED_HALT_REASONS",
    "AskUser",
    "Halt",
    "JsonResultEncoder",
    "ResultEncoder",
    "ToolContext",
    "ToolJob",
    "ToolOutcome",
    "as_encoder",
    "function_tool",
    "schema_from_function",
    "tool",
    "validate_arguments",
]

ASK_USER_PLACEHOLDER = "<awaiting user response>"
"""The tool result the model reads for a call whose handler asked the user a question."""

RESERVED_HALT_REASONS = frozenset(
    {"completed", "error", "max_turns", "halt_when", "ask_user", "tool_error", "manual_tool_calls", "cancelled", "time_budget"}
)
"""``halted_reason`` values the loop itself uses; a handler's :class:`Halt` may not use them."""

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _empty() -> dict[str, Any]:
    return {}


# ------------------------------------------------------------------------------ handler returns


@attrs.frozen
class AskUser:
    """Returned by a handler to stop the loop and ask the user ``question``.

    ``choices`` and ``options`` are hints for the interface that shows the question
    (``options`` JSON-native, e.g. ``{"mask": True}``); nothing enforces them. The
    model reads ``"<awaiting user response>"`` as this call's result, the question
    is appended to the thread as an assistant message, and the chat halts with
    ``halted_reason="ask_user"``; the user's reply continues it.
    """

    question: str
    choices: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    options: Mapping[str, Any] = attrs.field(factory=_empty)


@attrs.frozen
class Halt:
    """Returned by a handler to stop the loop with its own ``reason`` (a short string).

    ``result`` is still encoded as the call's result and appended to the thread;
    the chat halts with ``halted_reason=reason`` and ``metadata["halt_result"]``.
    The reasons in :data:`RESERVED_HALT_REASONS` belong to the loop: returning one
    is a tool error (``invalid_return``).
    """

    reason: str
    result: Any = None


@attrs.frozen
class ToolContext:
    """What a two-argument handler receives as ``ctx``.

    - ``tool_call``: the :class:`~allm.types.ToolCall` being run.
    - ``context``: the caller's context, merged ``engine.context`` <
      ``session.context`` < the call's ``context=`` (the caller wins, key by key).
    - ``session_id``: the session's id (or the call's ``session_id=``), else ``None``.
    - ``request_id``: the id of the model call that asked for this tool call.
    - ``engine``: the engine running the loop (for handlers that call a model).
    """

    tool_call: ToolCall
    context: Mapping[str, Any] = attrs.field(factory=_empty)
    session_id: str | None = None
    request_id: str | None = None
    engine: Engine | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def tool_name(self) -> str:
        return self.tool_call.name


# ------------------------------------------------------------------------------ construction


def _check_handler(name: str, handler: Any) -> None:
    if handler is None:
        return
    if not callable(handler):
        raise ValidationError(f"tool {name!r}: handler must be callable", reason="invalid_tool")
    try:
        arity = handler_arity(handler)
    except ValueError as exc:
        raise ValidationError(f"tool {name!r}: {exc}", reason="invalid_tool") from None
    if arity not in (1, 2):
        raise ValidationError(
            f"tool {name!r}: a handler takes (args) or (args, ctx), not {arity} positional arguments",
            reason="invalid_tool",
        )


@functools.lru_cache(maxsize=1024)
def handler_arity(handler: Callable[..., Any]) -> int:
    """How many positional arguments ``handler`` takes: 2 when it takes the tool context, else 1.

    The arguments go to the first positional parameter. The context goes to the second
    only if that parameter is meant for it: it has no default, or it is annotated
    :class:`ToolContext` (a parameter such as ``limit=10`` or ``v=i`` keeps its default),
    or the handler takes ``*args``. Raises ``ValueError`` when the signature cannot be
    read or has a required keyword-only parameter.
    """
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot read the handler's signature: {exc}") from None
    positional: list[inspect.Parameter] = []
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            return 2 if len(positional) < 2 else len([q for q in positional if q.default is q.empty])
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append(p)
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            raise ValueError(f"the handler has a required keyword-only parameter {p.name!r}")
    required = sum(1 for p in positional if p.default is p.empty)
    if required > 2 or (required == 0 and not positional):
        return required
    if required == 2:
        return 2
    if len(positional) >= 2 and _is_context_parameter(handler, positional[1]):
        return 2
    return 1


def _is_context_parameter(handler: Callable[..., Any], p: inspect.Parameter) -> bool:
    ann = p.annotation
    if ann is p.empty:
        return False
    if isinstance(ann, str):
        try:
            ann = typing.get_type_hints(handler).get(p.name, ann)
        except Exception:
            return ann.split(".")[-1].strip() in ("ToolContext", "ToolContext | None", "Optional[ToolContext]")
    return _is_context_annotation(ann)


def _check_schema(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(schema, Mapping):
        raise ValidationError(f"tool {name!r}: schema must be a JSON Schema object (a dict)", reason="invalid_tool")
    try:
        plain: dict[str, Any] = orjson.loads(orjson.dumps(schema))
    except TypeError as exc:
        raise ValidationError(f"tool {name!r}: schema is not JSON: {exc}", reason="invalid_tool") from None
    if plain.get("type") != "object":
        raise ValidationError(
            f"tool {name!r}: the arguments schema must have \"type\": \"object\" (providers send arguments as an object)",
            reason="invalid_tool",
        )
    if _schema.jsonschema_module() is not None:
        problem = _schema.schema_problem(plain)
        if problem is not None:
            raise ValidationError(f"tool {name!r}: invalid JSON Schema: {problem}", reason="invalid_tool")
    return plain


def tool(
    name: str,
    description: str = "",
    schema: Mapping[str, Any] | None = None,
    handler: Callable[..., Any] | None = None,
    *,
    manual: bool = False,
    strict: bool | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Tool:
    """A :class:`~allm.types.Tool`, checked.

    - ``name``: 1 to 64 characters of ``A-Z a-z 0-9 _ -`` (the rule OpenAI,
      Anthropic and Gemini share).
    - ``schema``: JSON Schema of the arguments, ``{"type": "object", ...}``
      (default: no arguments). Checked as a schema when ``jsonschema`` is installed.
    - ``handler``: ``fn(args)`` or ``fn(args, ctx)``, sync or async (see the module
      docstring); ``None`` for a tool that is only ever handed back (``manual``).
    - ``manual``: the loop stops and hands calls of this tool back instead of
      running them (``halted_reason="manual_tool_calls"``).
    - ``strict``: ask providers that support it to follow the schema exactly.

    Raises :class:`~allm.errors.ValidationError` (``invalid_tool``) for a bad name,
    schema, handler or ``manual`` value.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            f"tool name {name!r} must be 1 to 64 characters of letters, digits, '_' or '-'", reason="invalid_tool"
        )
    if not isinstance(manual, bool):
        raise ValidationError(f"tool {name!r}: manual must be True or False", reason="invalid_tool")
    if not isinstance(description, str):
        raise ValidationError(f"tool {name!r}: description must be a string", reason="invalid_tool")
    plain = _check_schema(name, schema if schema is not None else {"type": "object", "properties": {}})
    _check_handler(name, handler)
    return Tool(name, description, plain, manual, strict, handler, dict(metadata) if metadata else {})


# ------------------------------------------------------------------------------ schema from a function


def _is_context_annotation(tp: Any) -> bool:
    if tp is ToolContext:
        return True
    if typing.get_origin(tp) in (Union, types.UnionType):
        return any(a is ToolContext for a in typing.get_args(tp))
    return False


_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Params|Returns?|Yields?|Raises|Examples?|Notes?)\s*:?\s*$")
_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")
_SPHINX = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")
_GOOGLE = re.compile(r"^\s*\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY = re.compile(r"^\s*(\w+)\s*(?::\s*.*)?$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """``(description, {parameter: description})`` from a Google, Sphinx or NumPy docstring."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    desc: list[str] = []
    params: dict[str, str] = {}
    i = 0
    n = len(lines)
    section: str | None = None
    current: str | None = None
    params_indent = 0
    while i < n:
        line = lines[i]
        m_sphinx = _SPHINX.match(line)
        if m_sphinx:
            current = m_sphinx.group(1)
            params[current] = m_sphinx.group(2).strip()
            section = "sphinx"
            i += 1
            continue
        if line.strip().startswith(":"):  # :returns:, :raises: ...
            section = "other"
            current = None
            i += 1
            continue
        m_sec = _SECTION.match(line)
        numpy_header = i + 1 < n and _UNDERLINE.match(lines[i + 1]) is not None
        if m_sec and (line.rstrip().endswith(":") or numpy_header):
            name = m_sec.group(1).lower()
            section = "params" if name in ("args", "arguments", "parameters", "params") else "other"
            section += "_numpy" if numpy_header else ""
            current = None
            i += 2 if numpy_header else 1
            continue
        if section is None:
            desc.append(line)
        elif section == "params":
            m = _GOOGLE.match(line)
            indent = len(line) - len(line.lstrip())
            if m and (current is None or indent <= params_indent):
                current = m.group(1)
                params[current] = m.group(2).strip()
                params_indent = indent
            elif current is not None and line.strip():
                params[current] = (params[current] + " " + line.strip()).strip()
        elif section == "params_numpy":
            indent = len(line) - len(line.lstrip())
            m2 = _NUMPY.match(line)
            if indent == 0 and m2 and line.strip():
                current = m2.group(1)
                params[current] = ""
            elif current is not None and line.strip():
                params[current] = (params[current] + " " + line.strip()).strip()
        elif section == "sphinx" and current is not None and line.startswith((" ", "\t")) and line.strip():
            params[current] = (params[current] + " " + line.strip()).strip()
        i += 1
    text = "\n".join(desc).strip()
    text = re.sub(r"\n\s*\n", "\n\n", text)
    return text, params


def schema_from_function(fn: Callable[..., Any]) -> tuple[dict[str, Any], str | None]:
    """``(JSON Schema of fn's parameters, name of its ToolContext parameter or None)``.

    Each parameter's schema is :func:`allm.schema.derive` with ``strict=False`` (the
    tool-argument rules). Parameters without a default are required. A parameter
    annotated :class:`ToolContext` receives the context and is not in the schema.
    ``Annotated[T, "text"]`` and the docstring's ``Args:`` / ``:param:`` entries give
    descriptions. Raises ``TypeError`` for ``*args``/``**kwargs`` or an annotation
    with no JSON form.
    """
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise TypeError(f"cannot resolve the annotations of {fn!r}: {exc}") from None
    _desc, param_docs = parse_docstring(fn.__doc__)
    props: dict[str, Any] = {}
    required: list[str] = []
    ctx_param: str | None = None
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{fn.__name__}: *args and **kwargs cannot be described as tool arguments")
        if p.kind is p.POSITIONAL_ONLY:
            raise TypeError(f"{fn.__name__}: positional-only parameter {p.name!r} cannot be passed by name")
        tp = hints.get(p.name, inspect.Parameter.empty)
        if _is_context_annotation(tp):
            ctx_param = p.name
            continue
        s = _schema.derive(tp, strict=False, where=f"{fn.__name__}({p.name})")
        doc = param_docs.get(p.name)
        if doc and "description" not in s:
            s = {**s, "description": doc}
        props[p.name] = s
        if p.default is p.empty:
            required.append(p.name)
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema, ctx_param


def _enum_params(fn: Callable[..., Any]) -> dict[str, type[enum.Enum]]:
    hints = typing.get_type_hints(fn)
    out: dict[str, type[enum.Enum]] = {}
    for name, tp in hints.items():
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            out[name] = tp
    return out


@overload
def function_tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def function_tool(
    *, name: str | None = None, description: str | None = None, manual: bool = False, strict: bool | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...


def function_tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    manual: bool = False,
    strict: bool | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """A :class:`~allm.types.Tool` from a typed function: ``function_tool(fn)`` or ``@function_tool``.

    The name is the function's (or ``name=``); the description is the docstring's
    text before its sections (or ``description=``); the schema comes from the
    parameters (see :func:`schema_from_function`). The model's arguments are passed
    as keyword arguments (an ``Enum`` parameter receives the member); a parameter
    annotated :class:`ToolContext` receives the context. ``async def`` works.
    Use ``@function_tool(manual=True)`` for options. The decorated name is bound to
    the ``Tool``; the original function stays reachable as ``tool.handler.function``.

    Raises ``TypeError`` for a signature with no JSON form and
    :class:`~allm.errors.ValidationError` for a bad name.
    """

    def build(f: Callable[..., Any]) -> Tool:
        schema, ctx_param = schema_from_function(f)
        doc_desc, _ = parse_docstring(f.__doc__)
        enums = _enum_params(f)

        def convert(args: Mapping[str, Any]) -> dict[str, Any]:
            kwargs = dict(args)
            for k, cls in enums.items():
                if k in kwargs and not isinstance(kwargs[k], cls):
                    kwargs[k] = cls(kwargs[k])
            return kwargs

        handler: Callable[..., Any]
        if inspect.iscoroutinefunction(f):

            async def ahandler(args: Mapping[str, Any], ctx: ToolContext) -> Any:
                kwargs = convert(args)
                if ctx_param is not None:
                    kwargs[ctx_param] = ctx
                return await f(**kwargs)

            handler = ahandler
        else:

            def shandler(args: Mapping[str, Any], ctx: ToolContext) -> Any:
                kwargs = convert(args)
                if ctx_param is not None:
                    kwargs[ctx_param] = ctx
                return f(**kwargs)

            handler = shandler
        # Not functools.update_wrapper: its __wrapped__ would make inspect.signature
        # report f's parameters instead of (args, ctx).
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(handler, attr, getattr(f, attr, None))
        setattr(handler, "function", f)  # noqa: B010
        return tool(
            name or f.__name__,
            description if description is not None else doc_desc,
            schema,
            handler,
            manual=manual,
            strict=strict,
        )

    if fn is not None:
        return build(fn)
    return build


# ------------------------------------------------------------------------------ argument checks

def validate_arguments(tool: Tool, call: ToolCall) -> ToolError | None:
    """The :class:`~allm.errors.ToolError` (``invalid_arguments``) for a call whose
    arguments are not a JSON object or do not match ``tool.schema``, else ``None``.

    The message is written for the model to read and correct its call.
    """
    if call.parse_error is not None:
        return ToolError(
            f"the arguments of {call.name} could not be read ({call.parse_error}); "
            "send a JSON object that matches the tool's schema",
            reason="invalid_arguments",
            metadata={"tool_name": call.name, "tool_call_id": call.id},
        )
    schema = tool.schema
    if not schema:
        return None
    args = call.arguments if type(call.arguments) is dict else dict(call.arguments)
    # The quick check first: arguments it passes, jsonschema passes too (a tenth of the cost
    # on the small objects models send). Only with jsonschema installed, so that its absence
    # is still reported the same way; anything the quick check is unsure of is checked (and
    # the errors worded) by jsonschema.
    if _schema.jsonschema_module() is not None and _schema.plainly_valid(schema, args):
        return None
    v = _schema.optional_validator(schema, unchecked="tool arguments", stacklevel=3)
    if v is None:
        return None
    lines, more = _schema.error_lines(v, args, limit=5, paths="quoted")
    if not lines:
        return None
    left_off = f" (and {more} more)" if more else ""
    return ToolError(
        f"the arguments of {call.name} do not match its schema: {'; '.join(lines)}{left_off}",
        reason="invalid_arguments",
        metadata={"tool_name": call.name, "tool_call_id": call.id},
    )


# ------------------------------------------------------------------------------ result encoding


class ResultEncoder(Protocol):
    """Turns tool results and tool errors into the text of the tool message the model reads."""

    def encode_result(self, value: Any, call: ToolCall) -> str: ...

    def encode_error(self, error: ToolError, call: ToolCall) -> str: ...


def _json_default(value: Any) -> Any:
    if attrs.has(type(value)):
        return attrs.asdict(value)
    dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@attrs.frozen
class JsonResultEncoder:
    """The default encoder: a string is sent as it is; any other value as JSON.

    JSON covers dicts, lists, numbers, booleans, ``None``, dataclasses, attrs
    classes, enums, datetimes and pydantic models. An error becomes
    ``{"error": "<reason>: <message>"}``. A value with no JSON form raises
    ``TypeError``, which the loop reports as a tool error (``encoding_failed``).
    """

    def encode_result(self, value: Any, call: ToolCall) -> str:
        if isinstance(value, str):
            return str(value)  # a plain str, also for a str subclass (the thread keeps text only)
        return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()

    def encode_error(self, error: ToolError, call: ToolCall) -> str:
        return orjson.dumps({"error": str(error)}).decode()


@attrs.frozen
class _FunctionEncoder:
    fn: Callable[[Any], str]
    errors: JsonResultEncoder = attrs.field(factory=JsonResultEncoder)

    def encode_result(self, value: Any, call: ToolCall) -> str:
        out = self.fn(value)
        if not isinstance(out, str):
            raise TypeError(f"the result encoder returned {type(out).__name__}, not str")
        return out

    def encode_error(self, error: ToolError, call: ToolCall) -> str:
        return self.errors.encode_error(error, call)


def as_encoder(encoder: ResultEncoder | Callable[[Any], str] | None) -> ResultEncoder:
    """An encoder from ``None`` (JSON), a :class:`ResultEncoder`, or a function ``value -> str``
    (errors then use the JSON form)."""
    if encoder is None:
        return JsonResultEncoder()
    if hasattr(encoder, "encode_result") and hasattr(encoder, "encode_error"):
        return encoder
    if callable(encoder):
        return _FunctionEncoder(encoder)
    raise TypeError("result_encoder must be a ResultEncoder or a function value -> str")


# ------------------------------------------------------------------------------ running handlers


@attrs.frozen
class ToolJob:
    """One call the loop decided to run: the call, its tool and its context.

    ``error`` is set when the call fails before its handler could run (arguments
    invalid, no handler): the runners report it at once without running anything.
    """

    call: ToolCall
    tool: Tool | None
    context: ToolContext
    error: ToolError | None = None


@attrs.frozen
class ToolOutcome:
    """What running one call gave: the handler's ``value`` or a :class:`~allm.errors.ToolError`."""

    call: ToolCall
    value: Any = None
    error: ToolError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None
