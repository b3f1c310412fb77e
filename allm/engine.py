"""The :class:`Engine`: which adapter, which model, which tools and policies. A value."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .errors import ValidationError
from .middleware._pipeline import Pipeline, as_pipeline
from .policy import RetryPolicy, Timeouts, _engine_retry
from .providers.base import Adapter
from .types import PromptCache, Request, Tool

__all__ = ["Engine", "RequestDefaults"]

_DEFAULTABLE = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "stop_sequences",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "tool_choice",
        "response_format",
        "options",
        "prompt_cache",
    }
)


class RequestDefaults(dict[str, Any]):
    """An engine's default request fields (a ``dict``), stored as the request fields they are,
    so a default that is a value (``response_format``, ``prompt_cache``) round-trips."""


def _as_defaults(value: Mapping[str, Any] | None) -> RequestDefaults:
    """``value`` checked: only the names of :data:`_DEFAULTABLE`, each value checked as that
    request field is. Raises :class:`~allm.errors.ValidationError`."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ValidationError(f"Engine(defaults=...) is a mapping of request fields, not {type(value).__name__}")
    unknown = set(value) - _DEFAULTABLE
    if unknown:
        raise ValidationError(f"Engine(defaults=...) accepts {sorted(_DEFAULTABLE)}, not {sorted(unknown)}")
    Request(**value)  # each value is checked as a request field is (ValidationError naming it)
    return value if type(value) is RequestDefaults else RequestDefaults(value)


def merge_tools(base: Iterable[Tool], override: Iterable[Tool] = ()) -> tuple[Tool, ...]:
    """Tools of ``base`` with same-named ones replaced in place by ``override``; new ones appended.

    Within each, a later tool replaces an earlier one of the same name (so a name is never
    offered twice). Raises :class:`~allm.errors.ValidationError` (``invalid_tool``) for an
    item that is not a :class:`~allm.types.Tool`.
    """
    out: dict[str, Tool] = {}
    for group in (base, override):
        for t in group:
            if not isinstance(t, Tool):
                raise ValidationError(
                    f"tools must be allm.Tool values (allm.tool, allm.function_tool), not {type(t).__name__}",
                    reason="invalid_tool",
                )
            out[t.name] = t
    return tuple(out.values())


@attrs.frozen
class Engine:
    """What every call made with it shares; an immutable value, safe to share across tenants.

    - ``adapter``: a provider adapter (``allm.providers.OpenAI()``, ``Fake(...)``...).
    - ``model``: the default model; a request's own ``model`` wins.
    - ``tools``: tools offered on every call (a request's tool of the same name wins).
    - ``defaults``: request fields used when the request leaves them unset
      (``{"temperature": 0, "max_tokens": 512}``), checked as request fields are
      (:class:`~allm.errors.ValidationError`). ``options`` (provider body fields such as
      ``{"reasoning_effort": "low"}`` or Anthropic's ``{"thinking": {...}}``) merge key by
      key, the request's keys winning; ``prompt_cache`` merges field by field (a request
      that sets only ``key`` keeps the engine's ``retention``). See :meth:`defaults_for`.
    - ``retry``, ``timeouts``: see :class:`~allm.policy.RetryPolicy` and
      :class:`~allm.policy.Timeouts`; each call may override them.
    - ``context``: handed to tool handlers that take a context argument.
    - ``middleware``: a :class:`~allm.middleware.Pipeline` (or a sequence of names, middleware
      and factories) run around every tool-loop call, before the call's own (see
      :mod:`allm.middleware`). Stored by name.

    An engine never holds a key: pass ``api_key=`` per call or use :mod:`allm.keys`.
    """

    adapter: Adapter
    model: str | None = None
    tools: tuple[Tool, ...] = attrs.field(default=(), converter=merge_tools)
    defaults: RequestDefaults = attrs.field(factory=RequestDefaults, converter=_as_defaults)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy, converter=_engine_retry)
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    context: Mapping[str, Any] = attrs.field(factory=dict)
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    middleware: Pipeline = attrs.field(factory=Pipeline, converter=as_pipeline)

    def defaults_for(self, request: Request) -> dict[str, Any]:
        """The fields :attr:`defaults` fill in on ``request``, as ``attrs.evolve`` takes them.

        A field the request leaves unset (``None`` or empty) takes the engine's value;
        ``options`` merge key by key (the request's keys win); ``prompt_cache`` merges
        field by field (the request's ``key`` / ``retention`` win where set). Empty when
        nothing changes.
        """
        changes: dict[str, Any] = {}
        for name, value in self.defaults.items():
            current = getattr(request, name)
            if name == "options":
                merged = {**value, **current}
                if merged != current:
                    changes[name] = merged
            elif name == "prompt_cache" and current is not None and value is not None:
                pc = PromptCache(current.key or value.key, current.retention or value.retention)
                if pc != current:
                    changes[name] = pc
            elif current is None or current == ():
                changes[name] = value
        return changes

    def with_model(self, model: str) -> Engine:
        return attrs.evolve(self, model=model)

    def with_tools(self, *tools: Tool) -> Engine:
        """A new engine whose tools are these plus the current ones (same name: the new one wins)."""
        return attrs.evolve(self, tools=merge_tools(self.tools, tools))

    def with_adapter(self, adapter: Adapter) -> Engine:
        return attrs.evolve(self, adapter=adapter)

    def tool(self, name: str) -> Tool | None:
        for t in self.tools:
            if t.name == name:
                return t
        return None


def _store_defaults(defaults: RequestDefaults) -> Any:
    from . import codec

    return codec.unstructure(Request(**defaults), Request)


_VALUE_DEFAULTS = frozenset({"response_format", "prompt_cache"})  # stored as objects, loaded as values


def _load_defaults(data: Any) -> RequestDefaults:
    from . import codec

    request = codec.structure(data, Request)  # checks every field
    return RequestDefaults({name: getattr(request, name) if name in _VALUE_DEFAULTS else data[name] for name in data})


def _store_adapter(adapter: Adapter) -> Any:
    from .providers import registry

    return registry.store(adapter)


def _load_adapter(data: Any) -> Adapter:
    from .providers import registry

    adapter: Adapter = registry.load(data)
    return adapter


def _register_stored() -> None:
    """Make the engine's values storable; :mod:`allm.codec` calls this on first need, so
    ``import allm`` does not load the codec."""
    from . import codec

    codec.register(Engine)
    codec.register(RequestDefaults, unstructure=_store_defaults, structure=_load_defaults, storable=False)
    codec.register(RetryPolicy)
    codec.register(Timeouts)
    codec.register(Adapter, unstructure=_store_adapter, structure=_load_adapter)  # tagged by class name
    codec.register(Pipeline, unstructure=_store_pipeline, structure=_load_pipeline, storable=False)


def _store_pipeline(pipeline: Pipeline) -> list[str]:
    return list(pipeline.names)  # middleware are behaviour: stored by name, made again from the registry


def _load_pipeline(data: Any) -> Pipeline:
    if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
        raise ValidationError("a stored pipeline is a list of middleware names", reason="invalid_request")
    try:
        return Pipeline(tuple(data))
    except ValueError as exc:
        raise ValidationError(f"a stored pipeline has a bad name: {exc}", reason="invalid_request") from exc
