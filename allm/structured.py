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
validated with the ``jsonschema`` library, and the value is returned: an instance
of the class (dataclass, attrs, pydantic) or a ``dict`` (TypedDict, dict schema).

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
from collections import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, get_args, get_origin, overload

import attrs
import orjson

from .errors import InvalidOutputError, ValidationError
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


# ------------------------------------------------------------------------------ schemas from types


def _is_pydantic(tp: Any) -> bool:
    return isinstance(tp, type) and callable(getattr(tp, "model_json_schema", None)) and callable(getattr(tp, "model_validate", None))


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and (
        dataclasses.is_dataclass(tp) or attrs.has(tp) or typing.is_typeddict(tp) or _is_pydantic(tp)
    )


def _strip(tp: Any) -> Any:
    """``Annotated[X, ...]``, ``Required[X]``, ``NotRequired[X]``, ``ReadOnly[X]`` -> ``X``."""
    while True:
        origin = get_origin(tp)
        if origin is typing.Annotated or (origin is not None and getattr(origin, "_name", None) in ("Required", "NotRequired", "ReadOnly")):
            tp = get_args(tp)[0]
        else:
            return tp


def _hints(tp: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(tp, include_extras=True)
    except NameError as exc:
        raise TypeError(f"cannot resolve the annotations of {tp.__name__}: {exc}") from None


@attrs.frozen
class _Field:
    key: str  # the JSON property name
    arg: str  # the constructor argument
    hint: Any
    description: str | None
    optional: bool  # a TypedDict key that may be absent


def _fields(tp: type) -> list[_Field]:
    hints = _hints(tp)
    if dataclasses.is_dataclass(tp):
        return [
            _Field(f.name, f.name, hints[f.name], f.metadata.get("description"), False)
            for f in dataclasses.fields(tp)
            if f.init
        ]
    if attrs.has(tp):
        out = []
        for a in attrs.fields(tp):
            if not a.init:
                continue
            alias = getattr(a, "alias", None) or a.name.lstrip("_")
            out.append(_Field(alias, alias, hints.get(a.name, a.type), a.metadata.get("description"), False))
        return out
    required = getattr(tp, "__required_keys__", frozenset(hints))
    return [_Field(k, k, h, None, _not_required(h, k in required)) for k, h in hints.items()]


def _not_required(hint: Any, listed_required: bool) -> bool:
    """A TypedDict key that may be absent. ``Required``/``NotRequired`` are read from the
    annotation too: with postponed annotations Python 3.11 lists every key as required."""
    tp = hint
    while get_origin(tp) is typing.Annotated:
        tp = get_args(tp)[0]
    name = getattr(get_origin(tp), "_name", None)
    if name == "NotRequired":
        return True
    if name == "Required":
        return False
    return not listed_required


def _doc(tp: type) -> str | None:
    doc = tp.__doc__
    if not doc or (dataclasses.is_dataclass(tp) and doc.startswith(tp.__name__ + "(")):
        return None  # the signature dataclasses writes when there is no docstring
    if typing.is_typeddict(tp) and doc.startswith(tp.__name__ + "("):
        return None
    return " ".join(doc.split())


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise TypeError(f"the value {value!r} cannot be a JSON Schema enum member")


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    kinds = sorted({_json_type(v) for v in values})
    return {"type": kinds[0] if len(kinds) == 1 else kinds, "enum": values}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    t = schema.get("type")
    if isinstance(t, str) and t not in ("object", "array") and not ({"anyOf", "oneOf", "allOf"} & set(schema)):
        out = dict(schema)
        out["type"] = [t, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    if isinstance(t, list):
        out = dict(schema)
        if "null" not in t:
            out["type"] = [*t, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    if schema.get("type") == "null":
        return schema
    return {"anyOf": [schema, {"type": "null"}]}


_SEQUENCES = (list, abc.Sequence, abc.MutableSequence, abc.Collection, abc.Iterable)
_SETS = (set, frozenset, abc.Set, abc.MutableSet)


class _Deriver:
    def __init__(self) -> None:
        self.stack: list[Any] = []

    def object_schema(self, tp: type) -> dict[str, Any]:
        if tp in self.stack:
            raise TypeError(f"{tp.__name__} refers to itself; recursive types are not supported")
        self.stack.append(tp)
        try:
            if _is_pydantic(tp):
                derived: dict[str, Any] = _strictify(_inline_refs(tp.model_json_schema()))  # type: ignore[attr-defined]
                return derived
            props: dict[str, Any] = {}
            for f in _fields(tp):
                s = self.schema(f.hint)
                if f.optional:
                    s = _nullable(s)
                if f.description:
                    s = {**s, "description": f.description}
                props[f.key] = s
            out: dict[str, Any] = {"type": "object"}
            doc = _doc(tp)
            if doc:
                out["description"] = doc
            out.update({"properties": props, "required": list(props), "additionalProperties": False})
            return out
        finally:
            self.stack.pop()

    def schema(self, tp: Any) -> dict[str, Any]:
        tp = _strip(tp)
        if tp is type(None) or tp is None:
            return {"type": "null"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str:
            return {"type": "string"}
        origin = get_origin(tp)
        args = get_args(tp)
        if origin is Literal:
            return _enum_schema(list(args))
        if origin is typing.Union or origin is pytypes.UnionType:
            return self.union(args)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return _enum_schema([m.value for m in tp])
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return {"type": "array", "items": self.schema(args[0])}
            raise TypeError(f"fixed-length tuples ({tp!r}) are not supported; use tuple[X, ...] or a dataclass")
        if origin in _SEQUENCES or origin in _SETS:
            if not args:
                raise TypeError(f"{tp!r} needs an item type, e.g. list[str]")
            return {"type": "array", "items": self.schema(args[0])}
        if tp in (list, tuple, set, frozenset):
            raise TypeError(f"{tp.__name__} needs an item type, e.g. {tp.__name__}[str]")
        if origin in (dict, abc.Mapping, abc.MutableMapping) or tp in (dict, abc.Mapping):
            raise TypeError(
                f"{tp!r}: free-form mappings cannot be expressed in strict mode (every object lists its keys); "
                "use a dataclass, or a list of key/value objects"
            )
        if _is_model(tp):
            return self.object_schema(tp)
        raise TypeError(f"cannot derive a JSON Schema for {tp!r}")

    def union(self, args: tuple[Any, ...]) -> dict[str, Any]:
        has_none = any(a is type(None) or a is None for a in args)
        rest = [a for a in args if a is not type(None) and a is not None]
        if len(rest) == 1:
            s = self.schema(rest[0])
            return _nullable(s) if has_none else s
        options = [self.schema(a) for a in rest]
        if has_none:
            options.append({"type": "null"})
        return {"anyOf": options}


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace local ``$ref``s (``#/$defs/X``, ``#/definitions/X``) by their targets."""
    defs: dict[str, Any] = {**schema.get("definitions", {}), **schema.get("$defs", {})}

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [walk(x, seen) for x in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if not ref.startswith("#/") or name not in defs:
                raise TypeError(f"cannot resolve {ref!r}")
            if name in seen:
                raise TypeError(f"{name} refers to itself; recursive types are not supported")
            target = walk(defs[name], (*seen, name))
            extra = {k: walk(v, seen) for k, v in node.items() if k != "$ref"}
            return {**target, **extra}
        return {k: walk(v, seen) for k, v in node.items() if k not in ("$defs", "definitions")}

    out = walk(schema, ())
    assert isinstance(out, dict)
    return out


def _strictify(node: Any) -> Any:
    """Every object closed (``additionalProperties: false``) with all properties required;
    ``default`` removed (strict modes require every key, so a default never applies)."""
    if isinstance(node, list):
        return [_strictify(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strictify(v) for k, v in node.items() if k != "default"}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _strictify(v) for k, v in node["properties"].items()}
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    return out


def schema_for(tp: type) -> dict[str, Any]:
    """The JSON Schema (a ``dict``) of a dataclass, attrs class, TypedDict or pydantic model.

    The schema is what strict modes (OpenAI ``strict: true``, Anthropic, Gemini)
    accept: every object has ``additionalProperties: false`` and lists all its
    properties in ``required``; nested classes are inlined (no ``$ref``).

    Types: ``str``, ``int``, ``float``, ``bool``, ``None``; ``Literal[...]`` and
    ``Enum`` -> ``enum``; ``Optional[X]`` / ``X | None`` -> nullable (``"type":
    ["string", "null"]`` or ``anyOf`` with ``null``); other unions -> ``anyOf``;
    ``list[X]``, ``tuple[X, ...]``, ``set[X]`` -> ``array``; nested models ->
    objects. A dataclass or attrs field's ``metadata={"description": ...}`` and a
    class docstring become ``description``. A ``TypedDict`` key that is not required
    becomes required and nullable (``None`` means absent; it is left out of the
    returned ``dict``).

    Raises ``TypeError`` for what strict schemas cannot say: free-form ``dict``
    fields, ``Any``, fixed-length tuples, recursive types, or a type that is not one
    of the four model kinds.
    """
    if not _is_model(tp):
        raise TypeError(
            f"expected a dataclass, an attrs class, a TypedDict or a pydantic model, not {tp!r} "
            "(a JSON Schema dict is also accepted by generate_object)"
        )
    return _Deriver().object_schema(tp)


def strict_problems(schema: Mapping[str, Any]) -> list[str]:
    """Why ``schema`` would be refused in strict mode (empty when it would not).

    Checks that every object schema has ``additionalProperties: false`` and lists
    all of its properties in ``required``.
    """
    problems: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, list):
            for i, x in enumerate(node):
                walk(x, f"{path}[{i}]")
            return
        if not isinstance(node, Mapping):
            return
        is_object = node.get("type") == "object" or (isinstance(node.get("type"), list) and "object" in node["type"])
        if is_object or "properties" in node:
            props = node.get("properties") or {}
            if node.get("additionalProperties") is not False:
                problems.append(f"{path}: additionalProperties is not false")
            missing = [k for k in props if k not in (node.get("required") or [])]
            if missing:
                problems.append(f"{path}: not required: {', '.join(missing)}")
        for key, value in node.items():
            if key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(value, Mapping):
                for k, v in value.items():
                    walk(v, f"{path}.{k}" if key == "properties" else f"{path}.{key}.{k}")
            elif key in ("items", "anyOf", "oneOf", "allOf", "prefixItems", "not", "additionalProperties"):
                walk(value, f"{path}.{key}" if key != "items" else f"{path}[]")

    walk(schema, "$")
    return problems


# ------------------------------------------------------------------------------ reading the answer


def _jsonschema() -> Any:
    """The ``jsonschema`` module, imported on first use (``import allm`` stays fast)."""
    import importlib

    try:
        return importlib.import_module("jsonschema")
    except ImportError:  # pragma: no cover - jsonschema is a dependency of allm
        raise ImportError("allm.generate_object needs the jsonschema package: pip install jsonschema") from None


def _validator(schema: Mapping[str, Any]) -> Any:
    jsonschema = _jsonschema()
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValidationError(f"the schema is not valid JSON Schema: {exc.message}", reason="invalid_request") from None
    return cls(schema)


def _error_lines(validator: Any, value: Any) -> list[str]:
    errors = sorted(validator.iter_errors(value), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    lines = [f"{e.json_path}: {e.message}" for e in errors[:_MAX_ERRORS]]
    if len(errors) > _MAX_ERRORS:
        lines.append(f"... and {len(errors) - _MAX_ERRORS} more")
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
    jsonschema = _jsonschema()
    try:
        schema = _Deriver().schema(tp)
    except TypeError:
        return False
    return bool(jsonschema.Draft202012Validator(schema).is_valid(value))


def _build(tp: Any, value: Any) -> Any:
    """``value`` (validated JSON) as an instance of ``tp``."""
    tp = _strip(tp)
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
    if origin in _SETS:
        items = [_build(args[0], v) for v in value]
        return frozenset(items) if origin is frozenset else set(items)
    if origin in _SEQUENCES:
        return [_build(args[0], v) for v in value]
    if _is_pydantic(tp):
        return tp.model_validate(value)
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or attrs.has(tp)):
        return tp(**{f.arg: _build(f.hint, value[f.key]) for f in _fields(tp)})
    if typing.is_typeddict(tp):
        out: dict[str, Any] = {}
        for f in _fields(tp):
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


@overload
def generate_object(
    engine: Engine,
    request: RequestLike,
    schema_or_type: type[T],
    *,
    name: str | None = ...,
    strict: bool | None = ...,
    reask: bool = ...,
    return_response: Literal[False] = ...,
    api_key: str | None = ...,
    **options: Any,
) -> T: ...
@overload
def generate_object(
    engine: Engine,
    request: RequestLike,
    schema_or_type: Mapping[str, Any],
    *,
    name: str | None = ...,
    strict: bool | None = ...,
    reask: bool = ...,
    return_response: Literal[False] = ...,
    api_key: str | None = ...,
    **options: Any,
) -> dict[str, Any]: ...
@overload
def generate_object(
    engine: Engine,
    request: RequestLike,
    schema_or_type: type[T],
    *,
    name: str | None = ...,
    strict: bool | None = ...,
    reask: bool = ...,
    return_response: Literal[True],
    api_key: str | None = ...,
    **options: Any,
) -> ObjectResult[T]: ...
@overload
def generate_object(
    engine: Engine,
    request: RequestLike,
    schema_or_type: Mapping[str, Any],
    *,
    name: str | None = ...,
    strict: bool | None = ...,
    reask: bool = ...,
    return_response: Literal[True],
    api_key: str | None = ...,
    **options: Any,
) -> ObjectResult[dict[str, Any]]: ...
def generate_object(
    engine: Engine,
    request: RequestLike,
    schema_or_type: Any,
    *,
    name: str | None = None,
    strict: bool | None = None,
    reask: bool = False,
    return_response: bool = False,
    api_key: str | None = None,
    **options: Any,
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

    spec = _Spec(schema_or_type, name, strict)
    req = _with_format(request, spec)
    resp = generate(engine, req, api_key=api_key, **options)
    responses = [resp]
    try:
        value = spec.read(resp)
    except InvalidOutputError as err:
        if not reask:
            raise
        req = _reask(req, resp, err)
        resp = generate(engine, req, api_key=api_key, **options)
        responses.append(resp)
        try:
            value = spec.read(resp)
        except InvalidOutputError as again:
            raise _again(again) from None
    if return_response:
        return ObjectResult(value, resp, tuple(responses), spec.schema, spec.name, spec.strict)
    return value


@overload
async def agenerate_object(
    engine: Engine,
    request: RequestLike,
    schema_or_type: type[T],
    *,
    name: str | None = ...,
    strict: bool | None = ...,
    reask: bool = ...,
    return_response: Literal[False] = ...,
    api_key: str | None = ...,
    **options: Any,
) -> T: ...
@overload
async def agenerate_object(
    engine: Engine,
    request: RequestLike,
    schema_or_type: Mapping[str, Any],
    *,
    name: str | None = ...,
    strict: bool | None = ...,
    reask: bool = ...,
    return_response: Literal[False] = ...,
    api_key: str | None = ...,
    **options: Any,
) -> dict[str, Any]: ...
@overload
async def agenerate_object(
    engine: Engine,
    request: RequestLike,
    schema_or_type: type[T],
    *,
    name: str | None = ...,
    strict: bool | None = ...,
    reask: bool = ...,
    return_response: Literal[True],
    api_key: str | None = ...,
    **options: Any,
) -> ObjectResult[T]: ...
@overload
async def agenerate_object(
    engine: Engine,
    request: RequestLike,
    schema_or_type: Mapping[str, Any],
    *,
    name: str | None = ...,
    strict: bool | None = ...,
    reask: bool = ...,
    return_response: Literal[True],
    api_key: str | None = ...,
    **options: Any,
) -> ObjectResult[dict[str, Any]]: ...
async def agenerate_object(
    engine: Engine,
    request: RequestLike,
    schema_or_type: Any,
    *,
    name: str | None = None,
    strict: bool | None = None,
    reask: bool = False,
    return_response: bool = False,
    api_key: str | None = None,
    **options: Any,
) -> Any:
    """The async twin of :func:`generate_object` (same arguments, result and errors)."""
    from .api import agenerate

    spec = _Spec(schema_or_type, name, strict)
    req = _with_format(request, spec)
    resp = await agenerate(engine, req, api_key=api_key, **options)
    responses = [resp]
    try:
        value = spec.read(resp)
    except InvalidOutputError as err:
        if not reask:
            raise
        req = _reask(req, resp, err)
        resp = await agenerate(engine, req, api_key=api_key, **options)
        responses.append(resp)
        try:
            value = spec.read(resp)
        except InvalidOutputError as again:
            raise _again(again) from None
    if return_response:
        return ObjectResult(value, resp, tuple(responses), spec.schema, spec.name, spec.strict)
    return value
