"""Named models, system prompts and character cards, loaded from TOML.

A registry has three tables::

    [models.smol]                      # a model profile: provider, model, URL, sampler defaults
    provider = "local"                 # a name from allm.providers.registry
    model = "smollm2"
    temperature = 0.0
    top_k = 40
    min_p = 0.05
    repetition_penalty = 1.1
    max_tokens = 256

    [prompts]
    brief = "You are a helpful assistant. Be brief."      # a named system prompt

    [cards.tutor]                      # a character card: a model plus a prompt (and tools by name)
    model = "smol"
    prompt = "brief"                   # or system = "inline prompt text"
    tools = ["lookup"]

:meth:`Profiles.load` reads a file, or a directory (see :meth:`Profiles.load`), and
checks every value: a mistake is a :class:`ProfileError` naming the file, the key and
its line. :meth:`Profiles.resolve` picks a model and a prompt (or a card, which
overrides both) and applies explicit settings; per field, an explicit argument wins
over the model's profile, which wins over leaving the field out. The result, a
:class:`Profile`, builds an :class:`allm.Engine` whose ``defaults`` carry the sampler
settings (``min_p`` and ``repetition_penalty`` go in the request ``options``; see
``guides/profiles.md`` for which providers take which).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import attrs

from .engine import Engine
from .errors import ValidationError
from .providers import registry
from .types import Message, Request, Thread, Tool, request, system, user

_T = TypeVar("_T")

__all__ = ["SAMPLER_FIELDS", "Card", "ModelProfile", "Profile", "ProfileError", "Profiles", "Prompt", "default_location"]

SAMPLER_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "max_tokens",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "stop_sequences",
    "seed",
    "anthropic_beta",
)
"""The per-model settings a profile may set, and an explicit argument may override."""

# Sampler fields that are Request fields (and so Engine defaults); the others travel in options.
_REQUEST_FIELDS = frozenset(
    {"temperature", "top_p", "top_k", "max_tokens", "frequency_penalty", "presence_penalty", "stop_sequences", "seed"}
)
_OPTION_FIELDS = ("min_p", "repetition_penalty", "anthropic_beta")


class ProfileError(ValidationError):
    """A registry that cannot be loaded, or a name or setting that cannot be resolved.

    Reasons: ``invalid_file`` (not TOML, unreadable), ``invalid_value`` (a value of the
    wrong type or range, an unknown key), ``unknown_name`` (a model, prompt, card or tool
    that is not there), ``duplicate`` (one name defined twice). ``file``, ``key`` (the
    dotted key, ``models.smol.temperature``) and ``line`` (1-based) say where, when known;
    the message starts with ``file:line: key:``.
    """

    reasons: ClassVar[frozenset[str]] = frozenset({"invalid_file", "invalid_value", "unknown_name", "duplicate", "unknown"})
    default_reason: ClassVar[str] = "invalid_value"

    def __init__(
        self,
        message: str = "",
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
        reason: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        md = dict(metadata or {})
        md.update({k: v for k, v in (("file", file), ("key", key), ("line", line)) if v is not None})
        where = ":".join(str(x) for x in (file, line) if x is not None)
        prefix = " ".join(x for x in (where + ":" if where else "", key + ":" if key else "") if x)
        super().__init__(f"{prefix} {message}" if prefix else message, reason=reason, metadata=md)

    @property
    def file(self) -> str | None:
        return self.metadata.get("file")

    @property
    def key(self) -> str | None:
        return self.metadata.get("key")

    @property
    def line(self) -> int | None:
        return self.metadata.get("line")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.reason, self.message, dict(self.metadata)))


def _rebuild(reason: str, message: str, metadata: dict[str, Any]) -> ProfileError:
    e = ProfileError(message, reason=reason)
    e.metadata = metadata
    return e


# ------------------------------------------------------------------------------ values


def _tuple_of_str(v: Any) -> tuple[str, ...]:
    return tuple(v) if v is not None else ()


@attrs.frozen
class ModelProfile:
    """A named model: which provider (a name from :mod:`allm.providers.registry`), which
    model, where, and its sampler defaults (``None``: not set).

    Units and ranges: ``temperature`` >= 0; ``top_p``, ``min_p`` in [0, 1]; ``top_k`` and
    ``max_tokens`` (tokens) are positive integers; ``repetition_penalty`` > 0;
    ``frequency_penalty`` and ``presence_penalty`` in [-2, 2]; ``seed`` an integer;
    ``stop_sequences`` strings; ``anthropic_beta`` Anthropic beta names (sent as the
    ``anthropic-beta`` header, joined with ``", "``; only for provider ``anthropic``).
    """

    name: str
    provider: str
    model: str | None = None
    base_url: str | None = None
    description: str = ""
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    max_tokens: int | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop_sequences: tuple[str, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(tuple))
    seed: int | None = None
    anthropic_beta: tuple[str, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(tuple))

    def sampler(self) -> dict[str, Any]:
        """The sampler fields this profile sets."""
        return {f: getattr(self, f) for f in SAMPLER_FIELDS if getattr(self, f) is not None}


@attrs.frozen
class Prompt:
    """A named system prompt."""

    name: str
    text: str
    description: str = ""


@attrs.frozen
class Card:
    """A character card: a model profile name plus a system prompt (a prompt name, or
    inline ``system`` text), and optionally tools by name."""

    name: str
    model: str
    prompt: str | None = None
    system: str | None = None
    tools: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    description: str = ""


@attrs.frozen
class Profile:
    """A resolved choice: one model profile, a system prompt, tool names and the sampler
    settings in force (explicit arguments over the model's profile).

    ``model`` is the :class:`ModelProfile`; ``card`` the card's name when one was used;
    ``sampler`` maps each set field of :data:`SAMPLER_FIELDS` to its value (by default, the
    model profile's).
    """

    model: ModelProfile
    system: str | None = None
    tools: tuple[str, ...] = ()
    sampler: Mapping[str, Any] = attrs.field(default=attrs.Factory(lambda self: self.model.sampler(), takes_self=True))
    card: str | None = None
    prompt: str | None = None

    @property
    def provider(self) -> str:
        return self.model.provider

    def defaults(self) -> dict[str, Any]:
        """``Engine.defaults``: the Request sampler fields, and ``options`` for ``min_p``,
        ``repetition_penalty`` and ``anthropic_beta`` (which are not Request fields)."""
        # JSON-native values (lists, not tuples), so the engine round-trips through allm.codec.
        out: dict[str, Any] = {k: (list(v) if k == "stop_sequences" else v) for k, v in self.sampler.items() if k in _REQUEST_FIELDS}
        options = {k: (list(self.sampler[k]) if k == "anthropic_beta" else self.sampler[k]) for k in _OPTION_FIELDS if k in self.sampler}
        if options:
            out["options"] = options
        return out

    def engine(self, *, tools: Iterable[Tool] = (), base_url: str | None = None, **adapter_options: Any) -> Engine:
        """An :class:`allm.Engine` for this profile (``registry.build(provider, ...)``).

        ``tools``: the tools available; the profile's tool names pick from them (all are
        offered when the profile names none). ``base_url`` overrides the profile's (the
        ``local`` provider needs one: the URL of a running :class:`allm.local.LocalServer`).
        ``adapter_options`` go to the adapter class. Raises :class:`ProfileError`
        (``unknown_name``) for a tool name not in ``tools``, and
        :class:`~allm.errors.ValidationError` when the provider needs a base URL.
        """
        available = list(tools)
        if self.tools:
            by_name = {t.name: t for t in available}
            missing = [n for n in self.tools if n not in by_name]
            if missing:
                raise ProfileError(
                    f"the tools {missing} are not among the tools given ({sorted(by_name) or 'none'})",
                    key=f"cards.{self.card}.tools" if self.card else None,
                    reason="unknown_name",
                )
            available = [by_name[n] for n in self.tools]
        adapter = registry.build(self.model.provider, base_url=base_url or self.model.base_url, **adapter_options)
        model = self.model.model or registry.spec(self.model.provider).default_model
        return Engine(adapter=adapter, model=model, tools=tuple(available), defaults=self.defaults())

    def thread(self, *messages: Message) -> Thread:
        """A thread that starts with this profile's system prompt (if any), then ``messages``."""
        head = (system(self.system),) if self.system else ()
        return Thread(head + messages)

    def request(self, prompt: str | Thread | Iterable[Message], **fields: Any) -> Request:
        """A request for ``prompt`` (text, a thread or messages) with the system prompt first.

        A thread that already starts with a system message keeps its own. ``fields`` are
        Request fields (they win over the engine defaults, as any request field does).
        """
        msgs: tuple[Message, ...]
        if isinstance(prompt, str):
            msgs = (user(prompt),)
        elif isinstance(prompt, Thread):
            msgs = prompt.messages
        else:
            msgs = tuple(prompt)
        if self.system and not (msgs and msgs[0].role == "system"):
            msgs = (system(self.system), *msgs)
        return request(msgs, **fields)


# ------------------------------------------------------------------------------ checking


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_RANGES: dict[str, tuple[Any, str]] = {
    "temperature": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "top_p": (lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "min_p": (lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "top_k": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "max_tokens": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (tokens)"),
    "repetition_penalty": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "frequency_penalty": (lambda v: _is_number(v) and -2 <= v <= 2, "a number from -2 to 2"),
    "presence_penalty": (lambda v: _is_number(v) and -2 <= v <= 2, "a number from -2 to 2"),
    "seed": (_is_int, "an integer"),
    "stop_sequences": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v), "a list of strings"),
    "anthropic_beta": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(s, str) and s for s in v), "a list of beta names"),
}


class _Bad(Exception):
    """A sampler value out of range (the message says what was expected)."""


def _sampler_value(name: str, value: Any) -> Any:
    """``value`` checked and normalised for sampler field ``name``; :class:`_Bad` when wrong."""
    if name == "anthropic_beta" and isinstance(value, str):
        value = [s.strip() for s in value.split(",") if s.strip()]
    if isinstance(value, tuple):
        value = list(value)
    ok, what = _RANGES[name]
    if not ok(value):
        raise _Bad(f"must be {what}, got {value!r}")
    if isinstance(value, list):
        return tuple(value)
    return float(value) if name in ("temperature", "top_p", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty") else value


_MODEL_KEYS = ("provider", "model", "base_url", "description", *SAMPLER_FIELDS)
_CARD_KEYS = ("model", "prompt", "system", "tools", "description")
_PROMPT_KEYS = ("text", "description")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class _Source:
    """One TOML text and where it came from, to say which line a key is on."""

    def __init__(self, file: str, text: str, prefix: tuple[str, ...] = ()) -> None:
        self.file = file
        self.text = text
        self.prefix = prefix  # the table this file's top level stands for (models/<name>.toml)

    def fail(self, key: Sequence[str], message: str, reason: str = "invalid_value") -> ProfileError:
        full = (*self.prefix, *key)
        return ProfileError(message, file=self.file, key=".".join(full), line=_line_of(self.text, tuple(key)), reason=reason)


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEYLINE = re.compile(r"^\s*((?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+))*)\s*=")
_PART = re.compile(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_\-]+)")


def _dotted(text: str) -> tuple[str, ...]:
    return tuple(a or b or c for a, b, c in _PART.findall(text))


def _line_of(text: str, key: tuple[str, ...]) -> int | None:
    """The 1-based line where ``key`` (a path of table names and a key) is defined, or the
    line of its nearest defined parent; ``None`` when nothing matches."""
    best: tuple[int, int] | None = None  # (matched length, line)
    table: tuple[str, ...] = ()
    for n, line in enumerate(text.splitlines(), 1):
        h = _HEADER.match(line)
        if h and not _KEYLINE.match(line):
            table = _dotted(h.group(1))
            path = table
        else:
            k = _KEYLINE.match(line)
            if not k:
                continue
            path = table + _dotted(k.group(1))
        common = 0
        for a, b in zip(path, key, strict=False):
            if a != b:
                break
            common += 1
        if common == len(key):
            return n  # the key itself, or the first table inside it
        if common == len(path) and (best is None or common > best[0]):
            best = (common, n)
    return best[1] if best else None


def _check_name(src: _Source, key: Sequence[str], name: str) -> None:
    if not _NAME.match(name):
        raise src.fail(key, f"{name!r} is not a usable name (letters, digits, '_', '-', '.')")


def _table(src: _Source, path: tuple[str, ...], raw: Any, what: str, keys: Sequence[str]) -> dict[str, Any]:
    """``raw`` checked to be a table with only ``keys``."""
    if not isinstance(raw, dict):
        raise src.fail(path, f"{what} must be a table, got {type(raw).__name__}")
    for k in raw:
        if k not in keys:
            raise src.fail((*path, k), f"unknown key; {what} has {', '.join(keys)}")
    return raw


def _model(src: _Source, path: tuple[str, ...], name: str, raw: Any) -> ModelProfile:
    raw = _table(src, path, raw, "a model profile", _MODEL_KEYS)
    provider = raw.get("provider")
    if not isinstance(provider, str):
        raise src.fail((*path, "provider") if "provider" in raw else path, f"needs provider = one of {', '.join(registry.names())}")
    if provider not in registry.names():
        raise src.fail((*path, "provider"), f"unknown provider {provider!r}; known: {', '.join(registry.names())}")
    spec = registry.spec(provider)
    fields: dict[str, Any] = {}
    for k in ("model", "base_url", "description"):
        if k in raw:
            if not isinstance(raw[k], str) or (k != "description" and not raw[k]):
                raise src.fail((*path, k), f"must be a non-empty string, got {raw[k]!r}")
            fields[k] = raw[k]
    if "base_url" in fields and spec.base_url == "none":
        raise src.fail((*path, "base_url"), f"provider {provider!r} takes no base_url")
    if spec.base_url == "required" and not spec.local and "base_url" not in fields:
        raise src.fail(path, f"provider {provider!r} needs base_url")
    if "model" not in fields and spec.default_model is None and not spec.local:
        raise src.fail(path, f"provider {provider!r} has no default model: set model")
    for k in SAMPLER_FIELDS:
        if k in raw:
            try:
                fields[k] = _sampler_value(k, raw[k])
            except _Bad as exc:
                raise src.fail((*path, k), str(exc)) from None
    if "anthropic_beta" in fields and spec.tag != "Anthropic":
        raise src.fail((*path, "anthropic_beta"), f"anthropic_beta is for provider anthropic, not {provider!r}")
    return ModelProfile(name=name, provider=provider, **fields)


def _prompt(src: _Source, path: tuple[str, ...], name: str, raw: Any) -> Prompt:
    if isinstance(raw, str):
        return Prompt(name, raw)
    raw = _table(src, path, raw, "a prompt (a string, or a table with text)", _PROMPT_KEYS)
    text = raw.get("text")
    if not isinstance(text, str):
        raise src.fail((*path, "text") if "text" in raw else path, "needs text = the prompt")
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        raise src.fail((*path, "description"), "must be a string")
    return Prompt(name, text, desc)


def _card(src: _Source, path: tuple[str, ...], name: str, raw: Any) -> Card:
    raw = _table(src, path, raw, "a card", _CARD_KEYS)
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise src.fail((*path, "model") if "model" in raw else path, "needs model = the name of a model profile")
    for k in ("prompt", "system", "description"):
        if k in raw and not isinstance(raw[k], str):
            raise src.fail((*path, k), f"must be a string, got {raw[k]!r}")
    if "prompt" in raw and "system" in raw:
        raise src.fail((*path, "system"), "a card has a prompt name or inline system text, not both")
    tools = raw.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, str) and t for t in tools):
        raise src.fail((*path, "tools"), f"must be a list of tool names, got {tools!r}")
    return Card(name, model, raw.get("prompt"), raw.get("system"), tuple(tools), raw.get("description", ""))


# ------------------------------------------------------------------------------ the registry


@attrs.frozen
class Profiles:
    """Registries of model profiles, system prompts and character cards (by name).

    Build one with :meth:`load` (TOML) or directly. ``where`` maps ``"models.NAME"``,
    ``"prompts.NAME"``, ``"cards.NAME"`` to ``(file, line)`` for error messages.
    """

    models: Mapping[str, ModelProfile] = attrs.field(factory=dict)
    prompts: Mapping[str, Prompt] = attrs.field(factory=dict)
    cards: Mapping[str, Card] = attrs.field(factory=dict)
    where: Mapping[str, tuple[str, int | None]] = attrs.field(factory=dict, eq=False, repr=False)

    # -- loading

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Profiles:
        """Read a registry from a TOML file or a directory.

        A file has ``[models.NAME]``, ``[prompts]`` / ``[prompts.NAME]`` and
        ``[cards.NAME]`` tables. A directory is every ``*.toml`` file in it (each such a
        file), plus one entry per file in ``models/NAME.toml``, ``cards/NAME.toml`` and
        ``prompts/NAME.toml`` (a table with ``text``) or ``prompts/NAME.txt`` /
        ``prompts/NAME.md`` (the text itself). Raises :class:`ProfileError`: an unreadable
        or invalid TOML file (with the parser's line), an invalid value, an unknown key,
        a name defined twice, or a card that names a missing model or prompt.
        """
        p = Path(path)
        b = _Builder()
        if p.is_dir():
            for f in sorted(p.glob("*.toml")):
                b.add_file(f)
            for kind in ("models", "prompts", "cards"):
                d = p / kind
                if not d.is_dir():
                    continue
                for f in sorted(d.iterdir()):
                    if f.suffix == ".toml":
                        b.add_entry_file(kind, f)
                    elif kind == "prompts" and f.suffix in (".txt", ".md"):
                        b.add_prompt_text(f)
        elif p.is_file():
            b.add_file(p)
        else:
            raise ProfileError("no such file or directory", file=str(p), reason="invalid_file")
        return b.build()

    @classmethod
    def load_default(cls) -> Profiles:
        """The user's registry: ``$ALLM_PROFILES`` (a file or directory), else ``profiles.toml``
        or ``profiles/`` in the user's config directory (``platformdirs``: ``~/.config/allm`` on
        Linux); an empty registry when there is none. Errors as :meth:`load`."""
        where = default_location()
        return cls.load(where) if where is not None else cls()

    @classmethod
    def loads(cls, text: str, file: str = "<string>") -> Profiles:
        """:meth:`load` for TOML text; ``file`` names it in errors."""
        b = _Builder()
        b.add_text(file, text)
        return b.build()

    def merge(self, other: Profiles) -> Profiles:
        """A registry with ``other``'s entries added; a name in both is a ``duplicate`` error."""
        b = _Builder()
        b.take(self)
        b.take(other)
        return b.build()

    # -- names

    def names(self) -> dict[str, list[str]]:
        """``{"models": [...], "prompts": [...], "cards": [...]}``, each sorted."""
        return {"models": sorted(self.models), "prompts": sorted(self.prompts), "cards": sorted(self.cards)}

    def model(self, name: str) -> ModelProfile:
        """The model profile ``name``; :class:`ProfileError` (``unknown_name``) naming the known ones."""
        return _get(self.models, "model", name)

    def prompt(self, name: str) -> Prompt:
        return _get(self.prompts, "prompt", name)

    def card(self, name: str) -> Card:
        return _get(self.cards, "card", name)

    # -- resolving

    def resolve(
        self,
        model: str | None = None,
        prompt: str | None = None,
        *,
        card: str | None = None,
        system_prompt: str | None = None,
        **settings: Any,
    ) -> Profile:
        """The profile in force for a call.

        ``card`` overrides ``model`` and ``prompt`` with the card's. ``system_prompt`` is
        inline text instead of a prompt name. ``settings`` are sampler fields
        (:data:`SAMPLER_FIELDS`); each given (not ``None``) wins over the model's profile;
        a field neither sets is left out. Raises :class:`ProfileError`: ``unknown_name``
        for a missing model, prompt or card, or no model at all; ``invalid_value`` for an
        unknown setting or a value out of range.
        """
        card_v: Card | None = None
        if card is not None:
            card_v = self.card(card)
            model, prompt = card_v.model, card_v.prompt
            system_prompt = card_v.system
        if model is None:
            raise ProfileError("no model given (pass model= or card=)", reason="unknown_name")
        mp = self.model(model)
        text = self.prompt(prompt).text if prompt is not None else system_prompt
        unknown = sorted(set(settings) - set(SAMPLER_FIELDS))
        if unknown:
            raise ProfileError(f"unknown settings {unknown}; known: {', '.join(SAMPLER_FIELDS)}", reason="invalid_value")
        sampler = mp.sampler()
        for k, v in settings.items():
            if v is None:
                continue
            try:
                sampler[k] = _sampler_value(k, v)
            except _Bad as exc:
                raise ProfileError(str(exc), key=k) from None
        if "anthropic_beta" in sampler and registry.spec(mp.provider).tag != "Anthropic":
            raise ProfileError(f"anthropic_beta is for provider anthropic, not {mp.provider!r}", key="anthropic_beta")
        return Profile(mp, text, card_v.tools if card_v else (), sampler, card, prompt)


def default_location() -> Path | None:
    """Where :meth:`Profiles.load_default` reads: ``$ALLM_PROFILES`` (which must exist), else the
    first of ``profiles.toml`` and ``profiles/`` that exists in the user config directory."""
    env = os.environ.get("ALLM_PROFILES")
    if env:
        if not Path(env).exists():
            raise ProfileError("ALLM_PROFILES names no file or directory", file=env, reason="invalid_file")
        return Path(env)
    try:
        import platformdirs
    except ImportError:  # the terminal extra is not installed: no per-user registry
        return None
    base = Path(platformdirs.user_config_dir("allm"))
    for candidate in (base / "profiles.toml", base / "profiles"):
        if candidate.exists():
            return candidate
    return None


def _get(table: Mapping[str, _T], kind: str, name: str) -> _T:
    try:
        return table[name]
    except KeyError:
        raise ProfileError(f"no {kind} named {name!r}; known: {', '.join(sorted(table)) or 'none'}", reason="unknown_name") from None


class _Builder:
    def __init__(self) -> None:
        self.models: dict[str, ModelProfile] = {}
        self.prompts: dict[str, Prompt] = {}
        self.cards: dict[str, Card] = {}
        self.where: dict[str, tuple[str, int | None]] = {}
        self.card_sources: dict[str, _Source] = {}

    def _put(self, kind: str, name: str, value: Any, src: _Source, key: tuple[str, ...]) -> None:
        full = f"{kind}.{name}"
        if full in self.where:
            f, line = self.where[full]
            raise src.fail(key, f"{full} is already defined at {f}:{line}", reason="duplicate")
        getattr(self, kind)[name] = value
        self.where[full] = (src.file, _line_of(src.text, key))

    def _read(self, f: Path) -> str:
        try:
            return f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(f"cannot read: {exc}", file=str(f), reason="invalid_file") from None

    def _parse(self, file: str, text: str) -> dict[str, Any]:
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
            raise ProfileError(f"not valid TOML: {exc}", file=file, line=int(m.group(1)) if m else None, reason="invalid_file") from None

    def add_file(self, f: Path) -> None:
        self.add_text(str(f), self._read(f))

    def add_text(self, file: str, text: str) -> None:
        data = self._parse(file, text)
        src = _Source(file, text)
        for k in data:
            if k not in ("models", "prompts", "cards"):
                raise src.fail((k,), "unknown table; a registry has models, prompts and cards")
        for kind, reader in (("models", _model), ("prompts", _prompt), ("cards", _card)):
            table = data.get(kind, {})
            if not isinstance(table, dict):
                raise src.fail((kind,), "must be a table")
            for name, raw in table.items():
                _check_name(src, (kind, name), name)
                self._put(kind, name, reader(src, (kind, name), name, raw), src, (kind, name))
                if kind == "cards":
                    self.card_sources[name] = src

    def add_entry_file(self, kind: str, f: Path) -> None:
        text = self._read(f)
        data = self._parse(str(f), text)
        name = f.stem
        src = _Source(str(f), text, (kind, name))
        _check_name(src, (), name)
        reader = {"models": _model, "prompts": _prompt, "cards": _card}[kind]
        self._put(kind, name, reader(src, (), name, data), src, ())
        if kind == "cards":
            self.card_sources[name] = src

    def add_prompt_text(self, f: Path) -> None:
        src = _Source(str(f), "", ("prompts", f.stem))
        _check_name(src, (), f.stem)
        self._put("prompts", f.stem, Prompt(f.stem, self._read(f).strip("\n")), src, ())

    def take(self, p: Profiles) -> None:
        for kind in ("models", "prompts", "cards"):
            for name, v in getattr(p, kind).items():
                file, line = p.where.get(f"{kind}.{name}", ("<merged>", None))
                src = _Source(file, "")
                if f"{kind}.{name}" in self.where:
                    f0, l0 = self.where[f"{kind}.{name}"]
                    raise ProfileError(f"{kind}.{name} is already defined at {f0}:{l0}", file=file, key=f"{kind}.{name}", line=line, reason="duplicate")
                getattr(self, kind)[name] = v
                self.where[f"{kind}.{name}"] = (file, line)
                if kind == "cards":
                    self.card_sources[name] = src

    def build(self) -> Profiles:
        for name, c in self.cards.items():
            src = self.card_sources.get(name, _Source("<merged>", ""))
            key = ("cards", name) if not src.prefix else ()
            if c.model not in self.models:
                raise src.fail((*key, "model"), f"no model profile named {c.model!r}; known: {', '.join(sorted(self.models)) or 'none'}", "unknown_name")
            if c.prompt is not None and c.prompt not in self.prompts:
                raise src.fail((*key, "prompt"), f"no prompt named {c.prompt!r}; known: {', '.join(sorted(self.prompts)) or 'none'}", "unknown_name")
        return Profiles(dict(self.models), dict(self.prompts), dict(self.cards), dict(self.where))
