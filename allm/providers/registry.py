"""The one table of providers: a name -> the adapter class that serves it and its preset.

The CLI's ``--provider``, the codec's stored adapter tags, ``allm.providers``' lazy
names and the server's routes all read this table. Adding a provider is one new
adapter module and one :class:`ProviderSpec` line here.

::

    from allm.providers import registry

    registry.names()                                   # ('openai', 'anthropic', ...)
    adapter = registry.build("ollama")                 # OpenAICompatible(dialect="ollama")
    adapter = registry.build("compatible", base_url="http://127.0.0.1:8080/v1")

Nothing here imports an adapter module until a class is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any

import attrs

from ..errors import ValidationError

__all__ = [
    "ADAPTER_CLASSES",
    "PROVIDERS",
    "VALUES",
    "ProviderSpec",
    "adapter_class",
    "build",
    "class_for_tag",
    "load",
    "names",
    "spec",
    "store",
    "tag_of",
]

#: Adapter classes by their stored tag (the class name): ``tag -> (module, attribute)``.
#: Modules are relative to :mod:`allm.providers`.
ADAPTER_CLASSES: Mapping[str, tuple[str, str]] = {
    "OpenAI": (".openai", "OpenAI"),
    "OpenAICompatible": (".openai.chat", "OpenAICompatible"),
    "OpenAIResponses": (".openai.responses", "OpenAIResponses"),
    "Anthropic": (".anthropic.adapter", "Anthropic"),
    "Gemini": (".gemini.adapter", "Gemini"),
    "Fake": (".fake", "Fake"),
}

#: Other names :mod:`allm.providers` loads on first use: ``name -> (module, attribute)``.
VALUES: Mapping[str, tuple[str, str]] = {"Dialect": (".openai._shared", "Dialect")}


@attrs.frozen
class ProviderSpec:
    """One provider name and how to build its adapter.

    - ``name``: what users type (``allm chat --provider NAME``, a server route's ``provider``).
    - ``tag``: the adapter class (a key of :data:`ADAPTER_CLASSES`).
    - ``preset``: keyword arguments given to the class (``{"dialect": "ollama"}``).
    - ``base_url``: ``"required"``, ``"optional"`` (the class has a default) or ``"none"``
      (the class takes no base URL, like the Fake).
    - ``default_model``: used when no model is given (``None``: a model is required).
    - ``key_env``: environment variables the key chain reads for this provider (documentation;
      the adapter's own ``key_spec`` is what is used).
    - ``local``: the name stands for allm's local ``llama-server`` (:mod:`allm.local`): the caller
      starts it and passes its ``base_url``.
    """

    name: str
    tag: str
    description: str
    preset: Mapping[str, Any] = attrs.field(factory=dict)
    base_url: str = "optional"
    default_model: str | None = None
    key_env: tuple[str, ...] = ()
    local: bool = False


PROVIDERS: Mapping[str, ProviderSpec] = {
    s.name: s
    for s in (
        ProviderSpec("openai", "OpenAI", "OpenAI (Chat Completions, or Responses for reasoning models)",
                     default_model="gpt-4.1-mini", key_env=("OPENAI_API_KEY",)),
        ProviderSpec("responses", "OpenAIResponses", "the OpenAI Responses API, or any server that speaks it",
                     key_env=("OPENAI_API_KEY",)),
        ProviderSpec("anthropic", "Anthropic", "Anthropic Messages (or any /v1/messages server)",
                     default_model="claude-sonnet-4-5", key_env=("ANTHROPIC_API_KEY",)),
        ProviderSpec("gemini", "Gemini", "Google Gemini (generateContent)",
                     default_model="gemini-2.5-flash", key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY")),
        ProviderSpec("openrouter", "OpenAICompatible", "OpenRouter (Chat Completions)", {"dialect": "openrouter"},
                     default_model="openai/gpt-4.1-mini", key_env=("OPENROUTER_API_KEY",)),
        ProviderSpec("ollama", "OpenAICompatible", "Ollama (Chat Completions)", {"dialect": "ollama"},
                     key_env=("OLLAMA_API_KEY",)),
        ProviderSpec("llama.cpp", "OpenAICompatible", "llama.cpp's llama-server (Chat Completions)",
                     {"dialect": "llama.cpp"}, key_env=("LLAMA_API_KEY",)),
        ProviderSpec("vllm", "OpenAICompatible", "vLLM (Chat Completions)", {"dialect": "vllm"},
                     key_env=("VLLM_API_KEY",)),
        ProviderSpec("compatible", "OpenAICompatible", "any Chat Completions server (needs a base URL)",
                     base_url="required", key_env=("OPENAI_COMPATIBLE_API_KEY",)),
        ProviderSpec("local", "OpenAICompatible", "the local SmolLM2 llama-server that allm.local starts",
                     {"dialect": "llama.cpp"}, base_url="required", default_model="smollm2", local=True),
        ProviderSpec("fake", "Fake", "the scripted Fake (echoes the last user message unless scripted)",
                     base_url="none", default_model="fake"),
    )
}


def names() -> tuple[str, ...]:
    """Every provider name, in table order."""
    return tuple(PROVIDERS)


def spec(name: str) -> ProviderSpec:
    """The :class:`ProviderSpec` of ``name``; :class:`~allm.errors.ValidationError` (``invalid_request``)
    naming the known providers when there is none."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ValidationError(
            f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}", reason="invalid_request"
        ) from None


def class_for_tag(tag: str) -> type[Any]:
    """The adapter class stored under ``tag`` (its class name); ``KeyError`` for an unknown tag."""
    module, attr = ADAPTER_CLASSES[tag]
    cls: type[Any] = getattr(importlib.import_module(module, __package__), attr)
    return cls


def adapter_class(name: str) -> type[Any]:
    """The adapter class serving provider ``name`` (see :func:`spec` for the error)."""
    return class_for_tag(spec(name).tag)


def tag_of(adapter: object) -> str | None:
    """The stored tag of ``adapter``'s class, or ``None`` when it is not a registered adapter class."""
    cls = type(adapter)
    entry = ADAPTER_CLASSES.get(cls.__name__)
    if entry is None or cls.__module__ != importlib.util.resolve_name(entry[0], __package__ or "allm.providers"):
        return None
    return cls.__name__


def store(adapter: object) -> dict[str, Any]:
    """The stored (JSON-native) form of ``adapter``: ``{"adapter": <tag>, **its fields}``.

    Raises :class:`~allm.errors.ValidationError` (``invalid_request``) for an adapter whose
    class is not in :data:`ADAPTER_CLASSES`, or one that cannot be stored (a Fake built
    with ``function=``).
    """
    from .. import codec

    tag = tag_of(adapter)
    if tag is None:
        raise ValidationError(f"the adapter {type(adapter).__name__} cannot be stored", reason="invalid_request")
    return {"adapter": tag, **codec.unstructure(adapter, type(adapter))}


def load(data: Mapping[str, Any]) -> Any:
    """The adapter :func:`store` gave ``data`` for; :class:`~allm.errors.ValidationError` for an unknown tag."""
    from .. import codec

    fields = dict(data)
    tag = fields.pop("adapter")
    try:
        cls = class_for_tag(tag)
    except KeyError:
        raise ValidationError(f"unknown stored adapter {tag!r}", reason="invalid_request") from None
    return codec.structure(fields, cls)


def build(name: str, *, base_url: str | None = None, **options: Any) -> Any:
    """An adapter for provider ``name``: its class called with the preset, ``base_url`` and ``options``.

    ``options`` win over the preset (``build("openai", api="responses")``). Raises
    :class:`~allm.errors.ValidationError` (``invalid_request``) for an unknown name, a
    provider that needs ``base_url`` without one, or one that takes none given one.
    For ``"fake"`` with no ``script``/``scripts``/``function``, the Fake echoes the last
    user message.
    """
    s = spec(name)
    if s.base_url == "required" and not base_url:
        raise ValidationError(f"provider {name!r} needs a base_url (e.g. http://127.0.0.1:8080/v1)", reason="invalid_request")
    if s.base_url == "none" and base_url:
        raise ValidationError(f"provider {name!r} takes no base_url", reason="invalid_request")
    kwargs: dict[str, Any] = {**s.preset, **options}
    if base_url:
        kwargs["base_url"] = base_url
    if s.tag == "Fake" and not ({"script", "scripts", "function"} & set(kwargs)):
        kwargs["function"] = _echo
    return adapter_class(name)(**kwargs)


def _echo(req: Any) -> str:
    return f"(fake) you said: {req.messages[-1].text if req.messages else ''}"
