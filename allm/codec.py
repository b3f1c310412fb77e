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

The codec knows the values of :mod:`allm.types` and imports nothing above them. A module
with values of its own registers them (:func:`register`, with hooks for a class that is
not plain attrs data): ``allm.session`` registers ``Session``, ``allm.engine`` the
``Engine`` and its adapter field, an adapter module its settings (the Fake its scripts).
The modules above the codec that hold stored values are named here with the type names
they store; on first need the codec imports such a module and calls its
``_register_stored()``, so ``loads`` works in a fresh process and ``import allm`` does
not load the codec.

``pickle.dumps`` works on every value directly (no key is ever inside one).
"""

from __future__ import annotations

import base64
import importlib
import sys
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, TypeVar, Union, get_args, get_origin

import orjson

from .errors import AllmError, ValidationError

__all__ = ["SCHEMA_VERSION", "dumps", "from_dict", "loads", "register", "structure", "to_dict", "unstructure"]

SCHEMA_VERSION = 1
#: The schema versions this allm reads (every one it ever wrote).
KNOWN_VERSIONS = frozenset({1})
T = TypeVar("T")

_registry: dict[str, type[Any]] = {}
_names: dict[type[Any], str] = {}
_hooks: dict[Any, tuple[Callable[[Any], Any] | None, Callable[[Any], Any] | None]] = {}
_required: dict[type[Any], tuple[str, ...]] = {}  # fields a stored value must carry
_reasons: dict[type[Any], str] = {}  # the ValidationError reason of a stored value that does not load
_ERR = "__allm_error__"

# Stored type names of values defined above the codec, and the module that registers each
# (its ``_register_stored()``, called once on first need).
_HOMES = {
    "Session": "allm.session",
    "Engine": "allm.engine",
    "RetryPolicy": "allm.engine",
    "Timeouts": "allm.engine",
}


def register(
    tp: Any,
    name: str | None = None,
    *,
    unstructure: Callable[[Any], Any] | None = None,
    structure: Callable[[Any], Any] | None = None,
    storable: bool = True,
    required: tuple[str, ...] = (),
    reason: str | None = None,
) -> Any:
    """Teach the codec a type; returns ``tp``.

    - A class is storable with :func:`dumps` under ``name`` (its class name by default)
      unless ``storable=False``; an attrs class needs nothing else.
    - ``unstructure(value) -> JSON-native data`` and ``structure(data) -> value``
      replace the default handling of ``tp`` wherever it occurs (a field, a list
      item...). ``tp`` may also be a union (``str | Dialect``), which is never
      storable by itself. Hooks may call :func:`unstructure` / :func:`structure` for
      the values inside.
    - ``required``: fields stored data must carry even though the class has a default
      for them (a session's ``id``: a new one made up on load would be another session).
    - ``reason``: the :class:`~allm.errors.ValidationError` reason when a stored ``tp``
      does not load (``invalid_session``; default ``invalid_request``).
    """
    if isinstance(tp, type) and storable:
        _registry[name or tp.__name__] = tp
        _names[tp] = name or tp.__name__
    if unstructure is not None or structure is not None:
        _hooks[tp] = (unstructure, structure)
    if required:
        _required[tp] = tuple(required)
    if reason is not None:
        _reasons[tp] = reason
    _converter.cache_clear()
    return tp


def unstructure(value: Any, tp: Any = None) -> Any:
    """``value`` as JSON-native data (no envelope), as it is stored inside a value of :func:`dumps`."""
    return _converter().unstructure(value, tp if tp is not None else type(value))


def structure(data: Any, tp: type[T]) -> T:
    """The ``tp`` value of data :func:`unstructure` gave (no envelope)."""
    value: T = _converter().structure(data, tp)
    return value


_homes_done: set[str] = set()


def _home(module: str) -> None:
    """Import ``module`` and let it register its values (once)."""
    if module in _homes_done:
        return
    _homes_done.add(module)
    register_stored = getattr(importlib.import_module(module), "_register_stored", None)
    if register_stored is not None:
        register_stored()


def _stored_type(name: str) -> type[Any] | None:
    cls = _registry.get(name)
    if cls is None and name in _HOMES:
        _home(_HOMES[name])
        cls = _registry.get(name)
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


# Values that need no walk: most metadata and tool arguments hold only these, and one C-level
# test of their types spares a Python call per value.
_SCALARS = frozenset((str, int, float, bool, type(None)))


def _enc_mapping(m: Mapping[str, Any]) -> dict[str, Any]:
    if not m:
        return {}
    if _SCALARS.issuperset(map(type, m.values())):
        return dict(m)
    return {k: _encode_json_value(v) for k, v in m.items()}


def _dec_mapping(v: Any, _t: Any) -> dict[str, Any]:
    if not v:
        return {}
    if type(v) is dict and _SCALARS.issuperset(map(type, v.values())):
        return dict(v)
    return {k: _decode_json_value(x) for k, x in v.items()}


@lru_cache(maxsize=1)
def _converter() -> Any:
    for module in set(_HOMES.values()):  # values inside values: their hooks must be known
        if module in sys.modules:
            _home(module)
    import cattrs
    from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
    from cattrs.strategies import configure_tagged_union

    from . import types as t

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

    # Warnings: stored as objects; the first stored form was the message text.
    warning_fn = make_dict_structure_fn(t.CallWarning, c)
    c.register_structure_hook(
        t.CallWarning, lambda v, _: t.CallWarning.from_text(v) if isinstance(v, str) else warning_fn(v, t.CallWarning)
    )

    _hot_values(c, t, unstructure_content, structure_content)

    for tp, (unstructure_fn, structure_fn) in _hooks.items():
        if unstructure_fn is not None:
            c.register_unstructure_hook(tp, unstructure_fn)
        if structure_fn is not None:
            c.register_structure_hook(tp, _ignoring_type(structure_fn))

    for tp, fields in _required.items():
        c.register_structure_hook(tp, _requiring(tp, fields, c.get_structure_hook(tp)))

    return c


def _hot_values(c: Any, t: Any, unstructure_content: Callable[[Any], Any], structure_content: Callable[[Any, Any], Any]) -> None:
    """Hand-written hooks for the values a long thread is made of (``Thread``, ``Message``,
    ``ToolCall``): the same data as cattrs' generated hooks (field order, fields equal to
    their default omitted), at a third of the cost. Loading takes the quick road only for
    data of exactly the stored shape (the right types, no parts); anything else goes through
    cattrs' own hook, so odd data converts and bad data fails as before."""
    Message, ToolCall, Thread = t.Message, t.ToolCall, t.Thread
    message_slow = c.get_structure_hook(Message)
    call_slow = c.get_structure_hook(ToolCall)
    thread_slow = c.get_structure_hook(Thread)
    enc = _enc_mapping
    str_or_none = (str, type(None))
    roles = t._ROLES
    # The quick road has checked what the classes' converters and validators would, so it
    # builds the values without running them again.
    make_call, make_message, make_thread = t.unchecked(ToolCall), t.unchecked(Message), t.unchecked(Thread)

    def unstructure_call(v: Any) -> dict[str, Any]:
        d: dict[str, Any] = {"id": v.id, "name": v.name}
        if v.arguments != {}:
            d["arguments"] = enc(v.arguments)
        if v.raw_arguments != "{}":
            d["raw_arguments"] = v.raw_arguments
        if v.parse_error is not None:
            d["parse_error"] = v.parse_error
        if v.metadata != {}:
            d["metadata"] = enc(v.metadata)
        return d

    def unstructure_message(v: Any) -> dict[str, Any]:
        d: dict[str, Any] = {"role": v.role}
        content = v.content
        if type(content) is not str:
            d["content"] = unstructure_content(content)
        elif content != "":
            d["content"] = content
        if v.tool_calls != ():
            d["tool_calls"] = [unstructure_call(x) for x in v.tool_calls]
        if v.tool_call_id is not None:
            d["tool_call_id"] = v.tool_call_id
        if v.name is not None:
            d["name"] = v.name
        if v.is_error != False:  # noqa: E712 (cattrs' omit-if-default test, exactly)
            d["is_error"] = v.is_error
        if v.metadata != {}:
            d["metadata"] = enc(v.metadata)
        return d

    def unstructure_thread(v: Any) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if v.messages != ():
            d["messages"] = [unstructure_message(m) for m in v.messages]
        if v.metadata != {}:
            d["metadata"] = enc(v.metadata)
        return d

    def mapping(v: Any) -> dict[str, Any]:
        if type(v) is not dict:
            raise TypeError
        return _dec_mapping(v, None)

    def structure_call(v: Any, tp: Any = ToolCall) -> Any:
        try:
            get = v.get
            id_, name = v["id"], v["name"]
            raw, err = get("raw_arguments", "{}"), get("parse_error")
            if type(id_) is not str or type(name) is not str or type(raw) is not str or type(err) not in str_or_none:
                raise TypeError
            return make_call(id_, name, mapping(get("arguments", {})), raw, err, mapping(get("metadata", {})))
        except Exception:
            return call_slow(v, tp)

    def structure_message(v: Any, tp: Any = Message) -> Any:
        try:
            role = v["role"]
            if len(v) == 2:  # {"role", "content"}: most messages
                content = v.get("content")
                if type(content) is str and role in roles:
                    return make_message(role, content, (), None, None, False, {})
            get = v.get
            content, calls = get("content", ""), get("tool_calls", ())
            call_id, name, is_error = get("tool_call_id"), get("name"), get("is_error", False)
            if (
                role not in roles
                or type(content) is not str
                or type(call_id) not in str_or_none
                or type(name) not in str_or_none
                or type(is_error) is not bool
                or (calls and (role != "assistant" or type(calls) is not list))
            ):
                raise TypeError
            calls = tuple([structure_call(x) for x in calls]) if calls else ()
            meta = get("metadata")
            return make_message(role, content, calls, call_id, name, is_error, mapping(meta) if meta is not None else {})
        except Exception:
            return message_slow(v, tp)

    def structure_thread(v: Any, tp: Any = Thread) -> Any:
        try:
            msgs = v.get("messages", ())
            if type(msgs) is not list:
                raise TypeError
            return make_thread(tuple([structure_message(m) for m in msgs]), mapping(v.get("metadata", {})))
        except Exception:
            return thread_slow(v, tp)

    c.register_unstructure_hook(ToolCall, unstructure_call)
    c.register_unstructure_hook(Message, unstructure_message)
    c.register_unstructure_hook(Thread, unstructure_thread)
    c.register_structure_hook(ToolCall, structure_call)
    c.register_structure_hook(Message, structure_message)
    c.register_structure_hook(Thread, structure_thread)


def _requiring(tp: type[Any], fields: tuple[str, ...], inner: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """A structure hook refusing data of ``tp`` without each of ``fields``, then ``inner``."""

    def hook(v: Any, t: Any) -> Any:
        if isinstance(v, Mapping):
            missing = [f for f in fields if f not in v]
            if missing:
                raise ValidationError(
                    f"a stored {tp.__name__} has no {', '.join(missing)}",
                    reason=_reasons.get(tp, "invalid_request"),
                )
        return inner(v, t)

    return hook


def _ignoring_type(fn: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    """A cattrs structure hook (data, type) calling ``fn(data)``."""
    return lambda v, _: fn(v)


def _type_name(value: Any) -> str:
    name = _names.get(type(value))
    if name is None and type(value).__name__ in _HOMES:
        _home(_HOMES[type(value).__name__])
        name = _names.get(type(value))
    if name is None:
        raise TypeError(f"{type(value).__name__} is not a storable allm value")
    return name


def to_dict(value: Any) -> dict[str, Any]:
    """The JSON-native envelope of ``value`` (see the module docstring)."""
    name = _type_name(value)
    return {"allm_schema": SCHEMA_VERSION, "type": name, "value": _converter().unstructure(value, type(value))}


def from_dict(data: Mapping[str, Any], cls: type[T] | None = None) -> T:
    """Rebuild a value from :func:`to_dict` output.

    Raises :class:`ValidationError` when the data is not an allm envelope, names a schema
    version this allm does not know (newer, or not one ever written: ``-1``), has the
    wrong type, lacks a required field (a session's ``id``) or holds a value its class
    refuses. The reason is the one the type was registered with (``invalid_session``
    for a :class:`~allm.session.Session`), else ``invalid_request``; the message names
    what is wrong, as deep as it lies (``stored Session is invalid: ...``).
    """
    if cls is not None and type(cls) is type:
        _stored_type(cls.__name__)  # a type registered above the codec: its reason is known
    reason = _reasons.get(cls, "invalid_request") if cls is not None else "invalid_request"
    if not isinstance(data, Mapping) or "allm_schema" not in data or "type" not in data:
        raise ValidationError("not a stored allm value (no allm_schema/type)", reason=reason)
    version = data["allm_schema"]
    if type(version) is not int or version not in KNOWN_VERSIONS:
        newest = max(KNOWN_VERSIONS)
        why = "a newer allm" if type(version) is int and version > newest else "no allm schema"
        raise ValidationError(
            f"stored with allm schema {version!r} ({why}); this allm reads schema "
            f"{', '.join(str(v) for v in sorted(KNOWN_VERSIONS))}",
            reason=reason,
        )
    target = _stored_type(str(data["type"]))
    if target is None:
        raise ValidationError(f"unknown stored type {data['type']!r}", reason=reason)
    if cls is not None and target is not cls:
        raise ValidationError(f"expected a stored {cls.__name__}, found {target.__name__}", reason=reason)
    reason = _reasons.get(target, reason)
    import cattrs

    try:
        value: T = _converter().structure(_upgrade(version, target, data["value"]), target)
    except (cattrs.BaseValidationError, KeyError, TypeError, ValueError) as exc:
        raise ValidationError(f"stored {target.__name__} is invalid: {_why(exc)}", reason=reason) from None
    return value


def _why(exc: BaseException) -> str:
    """What is wrong, from the innermost error (cattrs wraps the real one in groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, AllmError):
        return exc.message
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, (KeyError, TypeError)) else str(exc)


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


def _register_values() -> None:
    from . import types as t

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
        t.CallWarning,
        t.PromptCache,
        t.ToolChoice,
    ):
        _registry[cls.__name__] = cls
        _names[cls] = cls.__name__


_register_values()
