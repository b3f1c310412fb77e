"""JSON and pickle for every value, losslessly and versioned.

``dumps(value) -> bytes`` writes an envelope ``{"allm_schema": N, "type": "<Name>",
"value": {...}}``; ``loads(data)`` reads it back to the same value (``==``). The
schema version lets a later allm read what this one stored: a stored value is never
re-interpreted silently, and a version newer than this allm raises.

Rules that keep stored data readable: fields equal to their default are omitted, so
a default is never changed once released; ``metadata`` / ``options`` / ``context``
mappings must hold JSON-native values; an :class:`~allm.errors.AllmError` inside them
is stored in a tagged form and comes back typed; bytes (image data) are base64.
A tool's ``handler`` is not data and is not stored: tools are found again by name on
the engine that resumes the value.

``pickle.dumps`` works on every value directly (no key is ever inside one).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, TypeVar, Union, get_args, get_origin

import attrs
import orjson

from .errors import AllmError, ValidationError

__all__ = ["SCHEMA_VERSION", "dumps", "from_dict", "loads", "register", "to_dict"]

SCHEMA_VERSION = 1
T = TypeVar("T")

_registry: dict[str, type[Any]] = {}
_ERR = "__allm_error__"


def register(cls: type[T], name: str | None = None) -> type[T]:
    """Make ``cls`` (an attrs class) storable with :func:`dumps` under ``name``."""
    _registry[name or cls.__name__] = cls
    _converter.cache_clear()
    return cls


def _encode_json_value(v: Any) -> Any:
    if isinstance(v, AllmError):
        return {_ERR: v.to_dict()}
    if isinstance(v, dict):
        return {k: _encode_json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_encode_json_value(x) for x in v]
    return v


def _decode_json_value(v: Any) -> Any:
    if isinstance(v, dict):
        if len(v) == 1 and _ERR in v:
            return AllmError.from_dict(v[_ERR])
        return {k: _decode_json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode_json_value(x) for x in v]
    return v


def _enc_mapping(m: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _encode_json_value(v) for k, v in m.items()} if m else {}


def _dec_mapping(v: Any, _t: Any) -> dict[str, Any]:
    if not v:
        return {}
    return {k: _decode_json_value(x) for k, x in v.items()}


@lru_cache(maxsize=1)
def _converter() -> Any:
    import cattrs
    from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
    from cattrs.strategies import configure_tagged_union

    from . import types as t
    from .providers import fake as fk
    from .providers import registry
    from .providers.openai_chat import Dialect

    c = cattrs.Converter(omit_if_default=True)

    c.register_unstructure_hook(bytes, lambda b: base64.b64encode(b).decode("ascii"))
    c.register_structure_hook(bytes, lambda v, _: base64.b64decode(v))
    def is_frozenset(tp: Any) -> bool:
        return get_origin(tp) is frozenset

    def is_meta(tp: Any) -> bool:
        return bool(tp == Mapping[str, Any])

    c.register_unstructure_hook_func(is_frozenset, lambda s: sorted(s))
    c.register_structure_hook_func(is_frozenset, lambda v, tp: frozenset(c.structure(x, get_args(tp)[0]) for x in v))
    c.register_unstructure_hook_func(is_meta, _enc_mapping)
    c.register_structure_hook_func(is_meta, _dec_mapping)

    # Parts: tagged by "type".
    part_tags = {t.TextPart: "text", t.ImagePart: "image", t.ReasoningPart: "reasoning"}
    part_union: Any = t.Part
    configure_tagged_union(part_union, c, tag_generator=lambda cls: part_tags[cls], tag_name="type")

    def unstructure_content(v: Any) -> Any:
        return v if isinstance(v, str) else [c.unstructure(p, part_union) for p in v]

    def structure_content(v: Any, _: Any) -> Any:
        return v if isinstance(v, str) else tuple(c.structure(p, part_union) for p in v)

    content_type = Union[str, tuple[t.Part, ...]]
    c.register_unstructure_hook(content_type, unstructure_content)
    c.register_structure_hook(content_type, structure_content)

    # A tool's handler is behaviour, not data.
    c.register_unstructure_hook(t.Tool, make_dict_unstructure_fn(t.Tool, c, handler=override(omit=True)))
    c.register_structure_hook(t.Tool, make_dict_structure_fn(t.Tool, c, handler=override(omit=True)))

    # Adapters, tagged by class name.

    def unstructure_dialect(v: Any) -> Any:
        return v if isinstance(v, str) else {"dialect": c.unstructure(v, Dialect)}

    def structure_dialect(v: Any, _: Any) -> Any:
        return v if isinstance(v, str) else c.structure(v["dialect"], Dialect)

    c.register_unstructure_hook(Union[str, Dialect], unstructure_dialect)
    c.register_structure_hook(Union[str, Dialect], structure_dialect)

    entry_types = {cls.__name__: cls for cls in (*fk._ENTRY_TYPES, fk.ImageEntry)}

    def unstructure_scripts(scripts: Any) -> Any:
        return [[{"entry": type(e).__name__, **c.unstructure(e)} for e in s] for s in scripts]

    def structure_scripts(scripts: Any) -> Any:
        return [[c.structure({k: x for k, x in e.items() if k != "entry"}, entry_types[e["entry"]]) for e in s] for s in scripts]

    def unstructure_adapter(a: Any) -> Any:
        name = type(a).__name__
        if isinstance(a, fk.Fake):
            if a._scripts is None:
                raise ValidationError("a Fake built with function= cannot be stored", reason="invalid_request")
            out = {"adapter": "Fake", "model": a.model, "calls": a.calls, "scripts": unstructure_scripts(a._scripts)}
            if a._image_scripts:
                out["image_scripts"] = unstructure_scripts(a._image_scripts)
            return out
        if registry.tag_of(a) is None or not attrs.has(type(a)):
            raise ValidationError(f"the adapter {name} cannot be stored", reason="invalid_request")
        return {"adapter": name, **c.unstructure(a, type(a))}

    def structure_adapter(v: Any, _: Any) -> Any:
        v = dict(v)
        name = v.pop("adapter")
        if name == "Fake":
            images = structure_scripts(v["image_scripts"]) if "image_scripts" in v else None
            fake = fk.Fake(scripts=structure_scripts(v["scripts"]), model=v.get("model", "fake"), image_scripts=images)
            fake.requests.extend([t.Request()] * int(v.get("calls", 0)))
            return fake
        try:
            cls = registry.class_for_tag(name)
        except KeyError:
            raise ValidationError(f"unknown stored adapter {name!r}", reason="invalid_request") from None
        return c.structure(v, cls)

    from .providers.base import Adapter

    c.register_unstructure_hook(Adapter, unstructure_adapter)
    c.register_structure_hook(Adapter, structure_adapter)

    return c


def _type_name(value: Any) -> str:
    cls = type(value)
    name = cls.__name__
    if _registry.get(name) is not cls:
        raise TypeError(f"{name} is not a storable allm value")
    return name


def to_dict(value: Any) -> dict[str, Any]:
    """The JSON-native envelope of ``value`` (see the module docstring)."""
    name = _type_name(value)
    return {"allm_schema": SCHEMA_VERSION, "type": name, "value": _converter().unstructure(value, type(value))}


def from_dict(data: Mapping[str, Any], cls: type[T] | None = None) -> T:
    """Rebuild a value from :func:`to_dict` output. Raises :class:`ValidationError` when
    the data is not an allm envelope, is from a newer schema, or has the wrong type."""
    if not isinstance(data, Mapping) or "allm_schema" not in data or "type" not in data:
        raise ValidationError("not a stored allm value (no allm_schema/type)", reason="invalid_request")
    version = data["allm_schema"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValidationError(
            f"stored with allm schema {version!r}; this allm reads up to {SCHEMA_VERSION}", reason="invalid_request"
        )
    target = _registry.get(str(data["type"]))
    if target is None:
        raise ValidationError(f"unknown stored type {data['type']!r}", reason="invalid_request")
    if cls is not None and target is not cls:
        raise ValidationError(f"expected a stored {cls.__name__}, found {target.__name__}", reason="invalid_request")
    import cattrs

    try:
        value: T = _converter().structure(_upgrade(version, target, data["value"]), target)
    except (cattrs.BaseValidationError, KeyError, TypeError, ValueError) as exc:
        raise ValidationError(f"stored {target.__name__} is invalid: {exc}", reason="invalid_request") from None
    return value


def _upgrade(version: int, target: type[Any], value: Any) -> Any:
    """Bring data stored by an older schema to the current one (none yet: version 1 is the first)."""
    return value


def dumps(value: Any) -> bytes:
    """JSON bytes of a stored value (UTF-8)."""
    return orjson.dumps(to_dict(value))


def loads(data: bytes | str, cls: type[T] | None = None) -> T:
    """The value stored in ``data`` by :func:`dumps`; ``cls`` checks its type."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"stored data is not JSON: {exc}", reason="invalid_request") from None
    return from_dict(parsed, cls)


def _register_core() -> None:
    from . import types as t
    from .engine import Engine
    from .policy import RetryPolicy, Timeouts
    from .session import Session

    for cls in (
        t.Message,
        t.Thread,
        t.Request,
        t.Response,
        t.Usage,
        t.ToolCall,
        t.Tool,
        t.ResponseFormat,
        t.TextPart,
        t.ImagePart,
        t.Image,
        t.ReasoningPart,
        t.Step,
        t.ChatResult,
        t.Embeddings,
        t.ImageRequest,
        t.ImageResponse,
        t.GeneratedImage,
        Engine,
        RetryPolicy,
        Timeouts,
        Session,
    ):
        _registry[cls.__name__] = cls


_register_core()

