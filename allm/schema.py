"""JSON Schema: derived from Python types, and values checked against it.

Two users share this module, with one switch between them:

- structured output (:mod:`allm.structured`) derives with ``strict=True``: the
  schemas strict modes accept (OpenAI ``strict: true``, Anthropic, Gemini). Every
  object lists all its properties in ``required`` and has
  ``additionalProperties: false``; ``Optional[X]`` is nullable; free-form
  mappings, ``Any``, bare containers and fixed-length tuples raise ``TypeError``.
- tool arguments (:mod:`allm.tools`) derive with ``strict=False``: the looser
  forms a tool's parameters may take. ``Any`` is ``{}``; ``dict[str, X]`` is an
  object with ``additionalProperties``; fixed tuples use ``prefixItems``; sets add
  ``uniqueItems``; ``Annotated[X, "text"]`` gives a ``description``; a
  ``TypedDict`` key that may be absent is not required. Classes (dataclass, attrs,
  pydantic) are refused: a handler receives plain JSON values.

Checking values needs the ``jsonschema`` package, the ``validation`` extra
(``pip install 'allm[validation]'``). It is imported on first use, so ``import
allm`` does not load it. :func:`jsonschema_module` is ``None`` without it;
:func:`require_jsonschema` raises ``ImportError`` naming the extra;
:func:`optional_validator` returns ``None`` and warns once.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import types
import typing
import warnings
from collections import abc
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

import attrs
import orjson

__all__ = [
    "EXTRA",
    "SEQUENCES",
    "SETS",
    "ModelField",
    "derive",
    "error_lines",
    "is_model",
    "is_pydantic",
    "jsonschema_module",
    "model_fields",
    "optional_validator",
    "plainly_valid",
    "require_jsonschema",
    "schema_for",
    "schema_problem",
    "strict_problems",
    "unwrap",
    "validator",
]

EXTRA = "pip install 'allm[validation]'"
"""How to install what checking values against a schema needs."""

SEQUENCES = (list, abc.Sequence, abc.MutableSequence, abc.Collection, abc.Iterable)
"""Generic origins read as a JSON array (``list[X]``, ``Sequence[X]``...)."""

SETS = (set, frozenset, abc.Set, abc.MutableSet)
"""Generic origins read as a JSON array of distinct items (``set[X]``...)."""

_NONE_TYPE = type(None)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)
_WRAPPERS = ("Required", "NotRequired", "ReadOnly")


# ------------------------------------------------------------------------------ model classes


def is_pydantic(tp: Any) -> bool:
    """``tp`` is a pydantic model class (recognised by its methods; pydantic is never imported)."""
    return isinstance(tp, type) and callable(getattr(tp, "model_json_schema", None)) and callable(getattr(tp, "model_validate", None))


def is_model(tp: Any) -> bool:
    """``tp`` is a dataclass, an attrs class, a ``TypedDict`` or a pydantic model."""
    return isinstance(tp, type) and (
        dataclasses.is_dataclass(tp) or attrs.has(tp) or typing.is_typeddict(tp) or is_pydantic(tp)
    )


def unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]``, ``Required[X]``, ``NotRequired[X]``, ``ReadOnly[X]`` -> ``X``."""
    while True:
        origin = get_origin(tp)
        if origin is typing.Annotated or (origin is not None and getattr(origin, "_name", None) in _WRAPPERS):
            tp = get_args(tp)[0]
        else:
            return tp


def _hints(tp: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(tp, include_extras=True)
    except NameError as exc:
        raise TypeError(f"cannot resolve the annotations of {tp.__name__}: {exc}") from None


@attrs.frozen
class ModelField:
    """One field of a model class, as JSON sees it."""

    key: str  # the JSON property name
    arg: str  # the constructor argument
    hint: Any
    description: str | None
    optional: bool  # a TypedDict key that may be absent


def model_fields(tp: type) -> list[ModelField]:
    """The fields of a dataclass, attrs class or ``TypedDict``, in declaration order.

    Fields with ``init=False`` are left out; an attrs field is named by its alias
    (``_age`` -> ``age``). Raises ``TypeError`` when an annotation cannot be resolved.
    """
    hints = _hints(tp)
    if dataclasses.is_dataclass(tp):
        return [
            ModelField(f.name, f.name, hints[f.name], f.metadata.get("description"), False)
            for f in dataclasses.fields(tp)
            if f.init
        ]
    if attrs.has(tp):
        out = []
        for a in attrs.fields(tp):
            if not a.init:
                continue
            alias = getattr(a, "alias", None) or a.name.lstrip("_")
            out.append(ModelField(alias, alias, hints.get(a.name, a.type), a.metadata.get("description"), False))
        return out
    required = getattr(tp, "__required_keys__", frozenset(hints))
    return [ModelField(k, k, h, None, _not_required(h, k in required)) for k, h in hints.items()]


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


# ------------------------------------------------------------------------------ enums and null


def _json_type(value: Any) -> str | None:
    """The JSON Schema type of an enum value; ``None`` for a value JSON has no type for."""
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
    return None


def _enum(values: list[Any], strict: bool) -> dict[str, Any]:
    """``enum`` with its ``type``.

    Strict: the one type, or the sorted list of types for mixed values (``null``
    included); a value with no JSON type raises ``TypeError``. Not strict: a
    ``type`` only when every value has the same non-null type.
    """
    kinds = [_json_type(v) for v in values]
    if strict:
        for v, k in zip(values, kinds, strict=True):
            if k is None:
                raise TypeError(f"the value {v!r} cannot be a JSON Schema enum member")
        names = sorted({k for k in kinds if k is not None})
        return {"type": names[0] if len(names) == 1 else names, "enum": values}
    distinct = set(kinds)
    if len(distinct) == 1:
        (kind,) = distinct
        if kind is not None and kind != "null":
            return {"type": kind, "enum": values}
    return {"enum": values}


def _nullable(schema: dict[str, Any], strict: bool) -> dict[str, Any]:
    """``schema`` or ``null``.

    Strict: a scalar ``type`` becomes ``[type, "null"]`` (``None`` joins its
    ``enum``), a type list gains ``"null"``; objects, arrays and unions become
    ``anyOf [schema, null]``. Not strict: any single ``type`` without ``enum``
    becomes ``[type, "null"]``; everything else ``anyOf [schema, null]``.
    """
    t = schema.get("type")
    if not strict:
        if isinstance(t, str) and "enum" not in schema:
            return {**schema, "type": [t, "null"]}
        return {"anyOf": [schema, {"type": "null"}]}
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
    if t == "null":
        return schema
    return {"anyOf": [schema, {"type": "null"}]}


# ------------------------------------------------------------------------------ the deriver


class _Deriver:
    """Python type -> JSON Schema; ``strict`` chooses between the two sets of rules
    described in the module docstring. ``where`` names the value in error messages
    (tool arguments: ``"fn(param)"``, ``"fn(param).key"``)."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.stack: list[Any] = []

    def schema(self, tp: Any, where: str) -> dict[str, Any]:
        if not self.strict and (tp is Any or tp is inspect.Parameter.empty or tp is object):
            return {}
        origin = get_origin(tp)
        args = get_args(tp)
        if origin is typing.Annotated:
            inner = self.schema(args[0], where)
            if not self.strict:
                for extra in args[1:]:
                    if isinstance(extra, str):
                        inner = {**inner, "description": extra}
            return inner
        if origin is not None and getattr(origin, "_name", None) in _WRAPPERS:
            return self.schema(args[0], where)
        if tp is None or tp is _NONE_TYPE:
            return {"type": "null"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str:
            return {"type": "string"}
        if origin is Literal:
            return _enum(list(args), self.strict)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return _enum([m.value for m in tp], self.strict)
        if origin is typing.Union or origin is types.UnionType:
            return self.union(args, where)
        if origin is tuple:
            return self.tuple_schema(tp, args, where)
        if origin in SEQUENCES or origin in SETS or tp in (list, tuple, set, frozenset):
            return self.array(tp, origin, args, where)
        if origin in _MAPPINGS or tp in (dict, abc.Mapping):
            return self.mapping(tp, args, where)
        if typing.is_typeddict(tp) or (self.strict and is_model(tp)):
            return self.object_schema(tp, where)
        if self.strict:
            raise TypeError(f"cannot derive a JSON Schema for {tp!r}")
        raise TypeError(
            f"{where}: cannot describe {tp!r} as JSON Schema; use str, int, float, bool, None, "
            "list, tuple, dict, Literal, an Enum, a TypedDict or a union of these (or write the schema with allm.tool)"
        )

    def union(self, args: tuple[Any, ...], where: str) -> dict[str, Any]:
        members = [a for a in args if a is not _NONE_TYPE and a is not None]
        nullable = len(members) < len(args)
        if len(members) == 1:
            inner = self.schema(members[0], where)
            return _nullable(inner, self.strict) if nullable else inner
        options = [self.schema(a, where) for a in members]
        if nullable:
            options.append({"type": "null"})
        return {"anyOf": options}

    def tuple_schema(self, tp: Any, args: tuple[Any, ...], where: str) -> dict[str, Any]:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": self.schema(args[0], where)}
        if self.strict:
            raise TypeError(f"fixed-length tuples ({tp!r}) are not supported; use tuple[X, ...] or a dataclass")
        return {
            "type": "array",
            "prefixItems": [self.schema(a, where) for a in args],
            "minItems": len(args),
            "maxItems": len(args),
        }

    def array(self, tp: Any, origin: Any, args: tuple[Any, ...], where: str) -> dict[str, Any]:
        if not args and self.strict:
            if origin is None:
                raise TypeError(f"{tp.__name__} needs an item type, e.g. {tp.__name__}[str]")
            raise TypeError(f"{tp!r} needs an item type, e.g. list[str]")
        out: dict[str, Any] = {"type": "array"}
        if args:
            out["items"] = self.schema(args[0], where)
        if not self.strict and (origin in SETS or tp in (set, frozenset)):
            out["uniqueItems"] = True
        return out

    def mapping(self, tp: Any, args: tuple[Any, ...], where: str) -> dict[str, Any]:
        if self.strict:
            raise TypeError(
                f"{tp!r}: free-form mappings cannot be expressed in strict mode (every object lists its keys); "
                "use a dataclass, or a list of key/value objects"
            )
        out: dict[str, Any] = {"type": "object"}
        if args:
            if args[0] is not str:
                raise TypeError(f"{where}: JSON objects have string keys, not {args[0]!r}")
            value = self.schema(args[1], where)
            if value:
                out["additionalProperties"] = value
        return out

    def object_schema(self, tp: type, where: str) -> dict[str, Any]:
        if tp in self.stack:
            prefix = "" if self.strict else f"{where}: "
            raise TypeError(f"{prefix}{tp.__name__} refers to itself; recursive types are not supported")
        self.stack.append(tp)
        try:
            if is_pydantic(tp):
                derived: dict[str, Any] = _strictify(_inline_refs(tp.model_json_schema()))  # type: ignore[attr-defined]
                return derived
            props: dict[str, Any] = {}
            required: list[str] = []
            for f in model_fields(tp):
                s = self.schema(f.hint, f"{where}.{f.key}")
                if self.strict and f.optional:
                    s = _nullable(s, strict=True)
                if f.description:
                    s = {**s, "description": f.description}
                props[f.key] = s
                if self.strict or not f.optional:
                    required.append(f.key)
            out: dict[str, Any] = {"type": "object"}
            doc = _doc(tp) if self.strict else None
            if doc:
                out["description"] = doc
            out.update({"properties": props, "required": required, "additionalProperties": False})
            return out
        finally:
            self.stack.pop()


def derive(tp: Any, *, strict: bool, where: str = "the value") -> dict[str, Any]:
    """The JSON Schema (a ``dict``) of the Python type ``tp``.

    ``strict=True``: the rules of structured output (see :func:`schema_for`).
    ``strict=False``: the rules of tool arguments (see
    :func:`allm.tools.schema_from_function`). The module docstring lists how the
    two differ. ``where`` names the value in the messages of tool-argument errors.

    Raises ``TypeError`` for a type the chosen rules cannot express.
    """
    return _Deriver(strict).schema(tp, where)


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
    if not is_model(tp):
        raise TypeError(
            f"expected a dataclass, an attrs class, a TypedDict or a pydantic model, not {tp!r} "
            "(a JSON Schema dict is also accepted by generate_object)"
        )
    return _Deriver(strict=True).object_schema(tp, tp.__name__)


def strict_problems(schema: Mapping[str, Any]) -> list[str]:
    """Why ``schema`` would be refused in strict mode (empty when it would not).

    Checks that every object schema has ``additionalProperties: false`` and lists
    all of its properties in ``required``. Each problem reads ``"<path>: <what>"``,
    the path starting at ``$``.
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


# ------------------------------------------------------------------------------ checking values

_js_module: Any = None  # None: not tried yet; False: not installed; else the module
_js_missing_warned = False
_validators: dict[bytes, Any] = {}
_MAX_CACHED = 512


def jsonschema_module() -> Any:
    """The ``jsonschema`` module, imported on first use; ``None`` when it is not installed."""
    global _js_module
    if _js_module is None:
        try:
            _js_module = importlib.import_module("jsonschema")
        except ImportError:
            _js_module = False
    return _js_module or None


def require_jsonschema(needed_by: str) -> Any:
    """The ``jsonschema`` module; ``ImportError`` naming ``needed_by`` and the
    ``validation`` extra when it is not installed."""
    js = jsonschema_module()
    if js is None:
        raise ImportError(f"{needed_by} needs the jsonschema package: {EXTRA}")
    return js


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why ``schema`` is not valid JSON Schema (the ``jsonschema`` message), else ``None``.

    Checked against the meta-schema of its ``$schema`` (default: draft 2020-12).
    Raises ``ImportError`` without ``jsonschema``.
    """
    js = require_jsonschema("checking a JSON Schema")
    cls = js.validators.validator_for(schema, default=js.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except js.exceptions.SchemaError as exc:
        return str(exc.message)
    return None


def validator(schema: Mapping[str, Any]) -> Any:
    """A ``jsonschema`` validator for ``schema`` (its ``$schema`` draft, default 2020-12).

    Validators are cached by the schema's JSON text (up to 512; a schema with no
    JSON form is not cached). The schema itself is not checked (see
    :func:`schema_problem`). Raises ``ImportError`` without ``jsonschema``.
    """
    js = require_jsonschema("checking values against a JSON Schema")
    try:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return js.validators.validator_for(schema, default=js.Draft202012Validator)(schema)
    v = _validators.get(key)
    if v is None:
        cls = js.validators.validator_for(schema, default=js.Draft202012Validator)
        v = cls(schema)
        if len(_validators) > _MAX_CACHED:
            _validators.clear()
        _validators[key] = v
    return v


def optional_validator(schema: Mapping[str, Any], *, unchecked: str, stacklevel: int = 1) -> Any:
    """:func:`validator`, or ``None`` when ``jsonschema`` is not installed.

    Then a ``RuntimeWarning`` (once per process) says that ``unchecked`` (e.g.
    ``"tool arguments"``) are not checked and names the ``validation`` extra;
    ``stacklevel`` counts from the caller of this function.
    """
    global _js_missing_warned
    if jsonschema_module() is None:
        if not _js_missing_warned:
            _js_missing_warned = True
            warnings.warn(
                f"jsonschema is not installed: {unchecked} are not checked against their schemas ({EXTRA} to check them)",
                RuntimeWarning,
                stacklevel=stacklevel + 1,
            )
        return None
    return validator(schema)


# The keywords :func:`plainly_valid` reads, and those that assert nothing (annotations, and
# ``format``, which a validator made without a format checker ignores). Any other key in a
# schema sends the value to jsonschema.
_PLAIN_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "enum", "const", "items",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
        "minItems", "maxItems", "format", "title", "description", "default", "examples",
        "$comment", "deprecated", "readOnly", "writeOnly",
    }
)  # fmt: skip
# The JSON type of each plain value's exact Python type (``bool`` is not an ``int`` here).
_JSON_KINDS: dict[type, str] = {
    dict: "object", list: "array", str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"
}


def plainly_valid(schema: Any, instance: Any) -> bool:
    """Whether ``instance`` certainly satisfies ``schema`` as a draft 2020-12 :func:`validator`
    checks it; ``False`` means "not known here" (ask the validator), not "invalid".

    It reads ``type``, ``properties``, ``required``, ``additionalProperties``, ``enum``,
    ``const``, ``items`` and the length and range bounds of plain values (``dict``, ``list``,
    ``str``, ``int``, ``float``, ``bool``, ``None``); any other keyword (``$ref``,
    ``anyOf``, ``pattern``, ``$schema``...) or value answers ``False``. Needs no jsonschema,
    and is several times quicker than a validator on the small objects tool calls send.
    """
    if schema is True:
        return True
    if type(schema) is not dict or not _PLAIN_KEYWORDS.issuperset(schema):
        return False
    kind = _JSON_KINDS.get(type(instance))
    if kind is None:
        return False
    want = schema.get("type")
    if want is not None and not _of_type(want, kind):
        return False
    if "enum" in schema:
        options = schema["enum"]
        if type(options) is not list or not any(_same(o, instance) for o in options):
            return False
    if "const" in schema and not _same(schema["const"], instance):
        return False
    if kind == "object":
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        required = schema.get("required", ())
        if type(props) is not dict or type(required) not in (list, tuple):
            return False
        for key in required:
            if type(key) is not str or key not in instance:
                return False
        for key, value in instance.items():
            sub = props.get(key) if type(key) is str else None
            if sub is None:
                if type(key) is not str or (extra is not True and not plainly_valid(extra, value)):
                    return False
            elif not plainly_valid(sub, value):
                return False
    elif kind == "string":
        return _within(schema, len(instance), "minLength", "maxLength")
    elif kind == "array":
        if not _within(schema, len(instance), "minItems", "maxItems"):
            return False
        items = schema.get("items", True)
        if items is not True:
            return all(plainly_valid(items, x) for x in instance)
    elif kind != "null" and kind != "boolean":  # a number
        return _within(schema, instance, "minimum", "maximum") and _within(
            schema, instance, "exclusiveMinimum", "exclusiveMaximum", exclusive=True
        )
    return True


def _of_type(want: Any, kind: str) -> bool:
    if want == kind or (want == "number" and kind == "integer"):
        return True
    return type(want) is list and any(w == kind or (w == "number" and kind == "integer") for w in want)


def _same(option: Any, instance: Any) -> bool:
    # Equal and of the same plain type (so True is not 1); anything else is left to jsonschema.
    return type(option) is type(instance) and type(instance) in (str, int, float, bool, type(None)) and option == instance


def _within(schema: dict[str, Any], n: Any, low: str, high: str, *, exclusive: bool = False) -> bool:
    lo = schema.get(low)
    hi = schema.get(high)
    for bound in (lo, hi):
        if bound is not None and type(bound) not in (int, float):
            return False
    if exclusive:
        return (lo is None or n > lo) and (hi is None or n < hi)
    return (lo is None or n >= lo) and (hi is None or n <= hi)


def _quoted(error: Any) -> str:
    parts = list(error.absolute_path)
    if not parts:
        return "the arguments"
    return "'" + ".".join(str(p) for p in parts) + "'"


def error_lines(
    checker: Any, instance: Any, *, limit: int, paths: Literal["json", "quoted"] = "json"
) -> tuple[list[str], int]:
    """What is wrong with ``instance`` according to ``checker`` (a :func:`validator`):
    at most ``limit`` readable lines, and how many more errors there were.

    ``paths="json"`` (structured output): ``"$.items[0].name: 'x' is not of type
    'integer'"``, sorted by the path's text, then the message. ``paths="quoted"`` (tool
    arguments): ``"at 'items.0.name': ..."`` (``"at the arguments: ..."`` for the
    whole value), sorted by the path with array indices as numbers, then the message.
    """
    errors = list(checker.iter_errors(instance))
    if paths == "json":
        errors.sort(key=lambda e: (list(map(str, e.absolute_path)), e.message))
        lines = [f"{e.json_path}: {e.message}" for e in errors[:limit]]
    else:
        errors.sort(key=lambda e: (list(e.absolute_path), e.message))
        lines = [f"at {_quoted(e)}: {e.message}" for e in errors[:limit]]
    return lines, max(0, len(errors) - limit)
