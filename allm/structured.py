"""Structured output: ask for JSON that matches a schema, get a typed, validated value back.

::

    @dataclass
    class Capital:
        city: str
        country: str

    cap = allm.generate_object(engine, "What is the capital of France?", Capital)
    assert isinstance(cap, Capital)

:func:`generate_object` takes a JSON Schema ``dict``, a dataclass, an ``attrs``
class, a ``TypedDict`` or a pydantic model (pydantic is imported only when a
pydantic model is given; allm does not depend on it). For a class it derives a
JSON Schema that strict modes accept (:func:`schema_for`: every object has
``additionalProperties: false`` and lists all its properties as required;
``Optional[X]`` becomes nullable). The schema is sent as the request's
``response_format`` (every adapter maps it natively: Chat Completions
``response_format``, Responses ``text.format``, Anthropic
``output_config.format``, Gemini ``responseJsonSchema``), the answer is parsed and
validated with the ``jsonschema`` library (the ``validation`` extra: ``pip install
'allm[validation]'``; without it :func:`generate_object` raises ``ImportError``), and
the value is returned: an instance of the class (dataclass, attrs, pydantic) or a
``dict`` (TypedDict, dict schema).

An answer that is not JSON, or not valid against the schema, raises
:class:`~allm.errors.InvalidOutputError` (a ``ValidationError``, reason
``invalid_output``) carrying the raw text and the validation errors. With
``reask=True`` the errors are first sent back to the model once, and its second
answer is used.

``return_response=True`` returns an :class:`ObjectResult` instead: the value, the
final :class:`~allm.types.Response`, every response (two after a re-ask) and the
schema that was sent.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types as pytypes
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Unpack, get_args, get_origin, overload

import attrs
import orjson

from . import schema as _schema
from .api import GenerateOptions
from .errors import InvalidOutputError, ValidationError
from .schema import SEQUENCES, SETS, is_pydantic, model_fields, schema_for, strict_problems, unwrap
from .types import Message, Request, Response, Usage, assistant, json_schema, user
from .types import request as make_request

if TYPE_CHECKING:
    from .api import RequestLike
    from .engine import Engine

__all__ = [
    "ObjectResult",
    "agenerate_object",
    "generate_object",
    "parse_object",
    "schema_for",
    "strict_problems",
]

T = TypeVar("T")

_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]")
_MAX_ERRORS = 20
REASK_PROMPT = (
    "Your previous answer was not valid against the required JSON Schema:\n{errors}\n"
    "Reply again with only the corrected JSON, nothing else."
)


@attrs.frozen
class ObjectResult(Generic[T]):
    """What :func:`generate_object` returns with ``return_response=True``.

    - ``value``: the typed value.
    - ``response``: the response the value was read from.
    - ``responses``: every response, first call first (two after a re-ask).
    - ``schema``: the JSON Schema that was sent (``name`` and ``strict`` beside it).
    """

    value: T
    response: Response
    responses: tuple[Response, ...]
    schema: Mapping[str, Any]
    name: str
    strict: bool

    @property
    def usage(self) -> Usage:
        """Token usage summed over every call."""
        total = Usage()
        for r in self.responses:
            total = total + r.usage
        return total

    @property
    def raw_text(self) -> str:
        """The JSON text the value was read from."""
        return self.response.output_text


# ------------------------------------------------------------------------------ reading the answer


def _validator(schema: Mapping[str, Any]) -> Any:
    _schema.require_jsonschema("structured output (allm.generate_object, allm.parse_object)")
    problem = _schema.schema_problem(schema)
    if problem is not None:
        raise ValidationError(f"the schema is not valid JSON Schema: {problem}", reason="invalid_request")
    return _schema.validator(schema)


def _error_lines(validator: Any, value: Any) -> list[str]:
    lines, more = _schema.error_lines(validator, value, limit=_MAX_ERRORS)
    if more:
        lines.append(f"... and {more} more")
    return lines


def _json_text(text: str) -> str:
    """The text with surrounding whitespace and one Markdown code fence removed."""
    t = text.strip()
    if t.startswith("```") and t.endswith("```") and len(t) >= 6:
        first_nl = t.find("\n")
        if first_nl != -1:
            t = t[first_nl + 1 : -3].strip()
    return t


class _Spec:
    """What was asked for: the target type (``None`` for a dict schema), the schema, its name."""

    __slots__ = ("name", "schema", "strict", "target", "validator")

    def __init__(self, schema_or_type: Any, name: str | None, strict: bool | None) -> None:
        if isinstance(schema_or_type, Mapping):
            self.target: Any = None
            self.schema: dict[str, Any] = dict(schema_or_type)
            default_name = str(self.schema.get("title") or "response")
            self.strict = strict if strict is not None else not strict_problems(self.schema)
        elif isinstance(schema_or_type, type):
            self.target = schema_or_type
            self.schema = schema_for(schema_or_type)
            default_name = schema_or_type.__name__
            self.strict = True if strict is None else strict
        else:
            raise TypeError(
                "schema_or_type must be a JSON Schema dict, a dataclass, an attrs class, a TypedDict "
                f"or a pydantic model, not {type(schema_or_type).__name__}"
            )
        self.name = (_NOT_NAME.sub("_", name or default_name) or "response")[:64]
        self.validator = _validator(self.schema)

    def read(self, response: Response) -> Any:
        """The typed value of ``response``; raises :class:`InvalidOutputError` or the call's error."""
        if response.finish_reason == "error":
            err = response.metadata.get("error")
            if isinstance(err, BaseException):
                raise err
        raw = response.output_text
        if response.finish_reason == "content_filter":
            raise InvalidOutputError(
                f"the model declined, or a content filter stopped the answer: {raw[:200]!r}",
                raw_text=raw,
                errors=["refused (finish_reason content_filter)"],
                response=response,
            )
        text = _json_text(raw)
        if not text:
            raise InvalidOutputError(
                f"the model returned no text (finish_reason={response.finish_reason!r})",
                raw_text=raw,
                errors=["no text"],
                response=response,
            )
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            cut = " (the answer was cut off at max_tokens)" if response.finish_reason == "length" else ""
            raise InvalidOutputError(
                f"the answer is not valid JSON{cut}: {exc}", raw_text=raw, errors=[f"$: not valid JSON: {exc}"], response=response
            ) from None
        lines = _error_lines(self.validator, value)
        if lines:
            raise InvalidOutputError(
                f"the answer does not match the schema {self.name!r}: {lines[0]}"
                + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""),
                raw_text=raw,
                errors=lines,
                response=response,
            )
        if self.target is None:
            return value
        try:
            return _build(self.target, value)
        except Exception as exc:  # a class's own validation (attrs validators, pydantic, __post_init__)
            raise InvalidOutputError(
                f"{self.target.__name__} refused the answer: {type(exc).__name__}: {exc}",
                raw_text=raw,
                errors=[f"$: {type(exc).__name__}: {exc}"],
                response=response,
            ) from exc


def _matches(tp: Any, value: Any) -> bool:
    try:
        schema = _schema.derive(tp, strict=True)
    except TypeError:
        return False
    return bool(_schema.validator(schema).is_valid(value))


def _build(tp: Any, value: Any) -> Any:
    """``value`` (validated JSON) as an instance of ``tp``."""
    tp = unwrap(tp)
    if value is None:
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is typing.Union or origin is pytypes.UnionType:
        rest = [a for a in args if a is not type(None) and a is not None]
        if len(rest) == 1:
            return _build(rest[0], value)
        for a in rest:
            if _matches(a, value):
                return _build(a, value)
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if origin is tuple:
        return tuple(_build(args[0], v) for v in value)
    if origin in SETS:
        items = [_build(args[0], v) for v in value]
        return frozenset(items) if origin is frozenset else set(items)
    if origin in SEQUENCES:
        return [_build(args[0], v) for v in value]
    if is_pydantic(tp):
        return tp.model_validate(value)
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or attrs.has(tp)):
        return tp(**{f.arg: _build(f.hint, value[f.key]) for f in model_fields(tp)})
    if typing.is_typeddict(tp):
        out: dict[str, Any] = {}
        for f in model_fields(tp):
            v = value.get(f.key)
            if f.optional and v is None:
                continue
            out[f.key] = _build(f.hint, v)
        return out
    return value


def parse_object(response: Response, schema_or_type: Any, *, name: str | None = None) -> Any:
    """Read a response already made (e.g. with ``response_format=allm.json_schema(...)``)
    as :func:`generate_object` would: the typed value, or :class:`InvalidOutputError`."""
    return _Spec(schema_or_type, name, None).read(response)


# ------------------------------------------------------------------------------ the calls


def _with_format(request: RequestLike, spec: _Spec) -> Request:
    req = request if isinstance(request, Request) else make_request(request)
    if req.response_format is not None:
        raise ValidationError(
            "the request already has a response_format; generate_object sets it from the schema",
            reason="invalid_request",
        )
    return attrs.evolve(req, response_format=json_schema(spec.name, spec.schema, spec.strict))


def _reask(request: Request, response: Response, err: InvalidOutputError) -> Request:
    said: Message = response.message if response.message.parts else assistant(response.output_text or "")
    lines = "\n".join(f"- {e}" for e in err.errors)
    return attrs.evolve(request, messages=(*request.messages, said, user(REASK_PROMPT.format(errors=lines))))


def _again(err: InvalidOutputError) -> InvalidOutputError:
    return InvalidOutputError(
        f"{err.message} (after one re-ask)",
        raw_text=err.raw_text,
        errors=err.errors,
        response=err.response,
        metadata={"attempts": 2},
    )


class _Attempts:
    """The decisions of ``generate_object``: which request to send next (the first, then one
    re-ask when allowed), how to read each response, and the result. Both calls perform it."""

    __slots__ = ("next", "options", "reask", "responses", "result", "return_response", "spec")

    def __init__(self, schema_or_type: Any, request: RequestLike, return_response: bool, options: Mapping[str, Any]) -> None:
        opts = dict(options)
        self.spec = spec = _Spec(schema_or_type, opts.pop("name", None), opts.pop("strict", None))
        self.reask = bool(opts.pop("reask", False))
        self.options: dict[str, Any] = opts  # what each call takes (allm.generate's options)
        self.next: Request | None = _with_format(request, spec)
        self.return_response = return_response
        self.responses: list[Response] = []
        self.result: Any = None

    def answer(self, resp: Response) -> None:
        """Read ``resp``: set :attr:`result`, or the re-ask as :attr:`next`; raises
        :class:`~allm.errors.InvalidOutputError` when no attempt is left."""
        req, self.next = self.next, None
        assert req is not None
        self.responses.append(resp)
        spec = self.spec
        try:
            value = spec.read(resp)
        except InvalidOutputError as err:
            if len(self.responses) > 1:
                raise _again(err) from None
            if not self.reask:
                raise
            self.next = _reask(req, resp, err)
            return
        if self.return_response:
            value = ObjectResult(value, resp, tuple(self.responses), spec.schema, spec.name, spec.strict)
        self.result = value


class ObjectOptions(GenerateOptions, total=False):
    """Keyword options of :func:`generate_object` and :func:`agenerate_object`: ``name``,
    ``strict``, ``reask`` (see :func:`generate_object`) and those of :func:`allm.generate`."""

    name: str | None
    strict: bool | None
    reask: bool


@overload
def generate_object(engine: Engine, request: RequestLike, schema_or_type: type[T], *, return_response: Literal[False] = ..., **options: Unpack[ObjectOptions]) -> T: ...
@overload
def generate_object(engine: Engine, request: RequestLike, schema_or_type: Mapping[str, Any], *, return_response: Literal[False] = ..., **options: Unpack[ObjectOptions]) -> dict[str, Any]: ...
@overload
def generate_object(engine: Engine, request: RequestLike, schema_or_type: type[T], *, return_response: Literal[True], **options: Unpack[ObjectOptions]) -> ObjectResult[T]: ...
@overload
def generate_object(engine: Engine, request: RequestLike, schema_or_type: Mapping[str, Any], *, return_response: Literal[True], **options: Unpack[ObjectOptions]) -> ObjectResult[dict[str, Any]]: ...
def generate_object(
    engine: Engine, request: RequestLike, schema_or_type: Any, *, return_response: bool = False, **options: Unpack[ObjectOptions]
) -> Any:
    """One model call whose answer is JSON matching a schema, returned as a typed value.

    - ``schema_or_type``: a JSON Schema ``dict``, a dataclass, an attrs class, a
      ``TypedDict`` or a pydantic model (see :func:`schema_for` for the mapping).
    - ``name``: the schema's name sent to the provider (default: the class name,
      or the dict's ``title``, or ``"response"``; characters outside
      ``[A-Za-z0-9_-]`` become ``_``).
    - ``strict``: the provider's strict mode; default ``True`` for a class, and for
      a dict schema ``True`` only if it is strict-compatible (:func:`strict_problems`).
    - ``reask``: on invalid output, send the errors back once and use the second
      answer (off by default: it costs a second call).
    - ``return_response``: return an :class:`ObjectResult` (value, response, every
      response, schema) instead of the bare value.
    - ``options``: what :func:`allm.generate` takes (``http_streaming``, ``retry``...).

    Returns an instance of the class (dataclass, attrs, pydantic) or a ``dict``
    (TypedDict, dict schema). Raises ``TypeError`` for a type no strict schema can
    express, :class:`~allm.errors.ValidationError` (``invalid_request``) for a
    request that already has a ``response_format`` or a schema that is not valid
    JSON Schema, :class:`~allm.errors.InvalidOutputError` when the answer is not
    valid JSON for the schema (``raw_text``, ``errors``, ``response``), and what
    :func:`allm.generate` raises; a call that failed mid-stream raises its error.
    """
    from .api import generate

    run = _Attempts(schema_or_type, request, return_response, options)
    while run.next is not None:
        run.answer(generate(engine, run.next, **run.options))
    return run.result


@overload
async def agenerate_object(engine: Engine, request: RequestLike, schema_or_type: type[T], *, return_response: Literal[False] = ..., **options: Unpack[ObjectOptions]) -> T: ...
@overload
async def agenerate_object(engine: Engine, request: RequestLike, schema_or_type: Mapping[str, Any], *, return_response: Literal[False] = ..., **options: Unpack[ObjectOptions]) -> dict[str, Any]: ...
@overload
async def agenerate_object(engine: Engine, request: RequestLike, schema_or_type: type[T], *, return_response: Literal[True], **options: Unpack[ObjectOptions]) -> ObjectResult[T]: ...
@overload
async def agenerate_object(engine: Engine, request: RequestLike, schema_or_type: Mapping[str, Any], *, return_response: Literal[True], **options: Unpack[ObjectOptions]) -> ObjectResult[dict[str, Any]]: ...
async def agenerate_object(
    engine: Engine, request: RequestLike, schema_or_type: Any, *, return_response: bool = False, **options: Unpack[ObjectOptions]
) -> Any:
    """The async twin of :func:`generate_object` (same arguments, result and errors)."""
    from .api import agenerate

    run = _Attempts(schema_or_type, request, return_response, options)
    while run.next is not None:
        run.answer(await agenerate(engine, run.next, **run.options))
    return run.result
