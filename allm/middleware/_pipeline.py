"""Pipelines and the registry of named middleware factories: what an engine, a call and a
session name. Loaded with :mod:`allm.engine` at ``import allm``, so it stays small (no attrs
classes); the per-run machinery is :mod:`allm.middleware._core`, loaded with the loop."""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import EngineError

__all__ = [
    "HOOKS",
    "Pipeline",
    "as_pipeline",
    "check_name",
    "entry_name",
    "factory",
    "make",
    "register",
    "registered",
    "unregister",
]

#: The hook names a middleware may define (each optional). ``before_model``, ``after_model``
#: and ``before_tool`` may be ``async def`` or have an ``a``-prefixed async twin.
HOOKS = ("before_model", "after_model", "before_tool", "after_tool", "on_event")
TWINS = ("abefore_model", "aafter_model", "abefore_tool")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def check_name(name: Any, what: str = "middleware name") -> str:
    """``name`` if it is a usable middleware name (1-64 of ``A-Z a-z 0-9 _ . : -``), else ``ValueError``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"a {what} is 1 to 64 characters of A-Z a-z 0-9 _ . : -, not {name!r}")
    return name


def _is_middleware(obj: Any) -> bool:
    return not isinstance(obj, type) and any(callable(getattr(obj, h, None)) for h in (*HOOKS, *TWINS))


def entry_name(entry: Any) -> str:
    """The name an entry of a pipeline is known (and stored) by: the string itself, else its
    ``name`` attribute, else its class's (or function's) name."""
    if isinstance(entry, str):
        return entry
    name = getattr(entry, "name", None)
    if isinstance(name, str) and name:
        return name
    if isinstance(entry, type) or inspect.isroutine(entry):
        return str(getattr(entry, "__name__", type(entry).__name__))
    return type(entry).__name__


def _check_entry(entry: Any) -> Any:
    if isinstance(entry, str):
        return check_name(entry)
    if _is_middleware(entry) or callable(entry):
        return entry
    raise TypeError(
        f"a pipeline entry is a registered name, a middleware (an object with any of {', '.join(HOOKS)}) "
        f"or a factory making one, not {type(entry).__name__}"
    )


def _entries(value: Any) -> tuple[Any, ...]:
    if isinstance(value, Pipeline):
        return value.entries
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"middleware is a sequence of entries (names, middleware, factories), not {type(value).__name__}")
    return tuple(_check_entry(e) for e in value)


class Pipeline:
    """An ordered list of middleware entries, a value: ``Engine(middleware=...)``, the
    ``middleware=`` option of a call and a session's names become one per run, in that order
    (the engine's run first around each point).

    Each entry is a **name** (a string: the factory registered under it with
    :func:`allm.middleware.register` makes the run's middleware), a **middleware** (an object
    with any of the hooks; shared by every run that uses it) or a **factory** (a class or a
    zero-argument function; called once per run). Pipelines compare and are stored by their
    names (:attr:`names`): a stored engine keeps the names, and resuming needs them registered.

    Raises ``TypeError`` for an entry that is none of those and ``ValueError`` for a bad name.
    """

    __slots__ = ("entries",)
    entries: tuple[Any, ...]

    def __init__(self, entries: Any = ()) -> None:
        object.__setattr__(self, "entries", _entries(entries))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Pipeline is immutable: add pipelines with +")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pipeline, (self.entries,))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(entry_name(e) for e in self.entries)

    def __add__(self, other: Any) -> Pipeline:
        more = as_pipeline(other)
        if not more.entries:
            return self
        if not self.entries:
            return more
        return Pipeline(self.entries + more.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pipeline):
            return NotImplemented
        return self.names == other.names

    def __hash__(self) -> int:
        return hash(self.names)

    def __repr__(self) -> str:
        return f"Pipeline({list(self.names)!r})"


_EMPTY = Pipeline()


def as_pipeline(value: Any) -> Pipeline:
    """``value`` as a :class:`Pipeline`: ``None`` is empty; a pipeline is itself; a sequence of
    entries makes one. Raises ``TypeError`` (a bare string included: write ``[name]``)."""
    if value is None:
        return _EMPTY
    if isinstance(value, Pipeline):
        return value
    return Pipeline(_entries(value))


# ------------------------------------------------------------------------------ the registry

_lock = threading.Lock()
_factories: dict[str, Callable[[], Any]] = {}
_given: dict[str, Any] = {}  # what register() was given, to accept the same registration twice


def register(name: str, factory: Any, *, replace: bool = False) -> None:
    """Register ``factory`` (a class or zero-argument function making a middleware, or a
    middleware object, then shared by every run) under ``name``.

    Stored sessions and engines keep names only, so every process that runs or resumes a
    pipeline registers the same names (at start-up, beside its tool handlers). Registering a
    name again raises ``ValueError`` unless ``replace=True``; a bad name raises ``ValueError``
    and anything not callable nor a middleware ``TypeError``.
    """
    check_name(name)
    if _is_middleware(factory):
        shared = factory

        def make() -> Any:
            return shared

        made: Callable[[], Any] = make
    elif callable(factory):
        made = factory
    else:
        raise TypeError(f"register({name!r}, ...) takes a factory or a middleware, not {type(factory).__name__}")
    with _lock:
        if name in _factories and not replace and _given[name] is not factory:
            raise ValueError(f"a middleware is already registered as {name!r} (pass replace=True to replace it)")
        _factories[name] = made
        _given[name] = factory


def unregister(name: str) -> bool:
    """Remove ``name`` from the registry; whether it was there."""
    with _lock:
        _given.pop(name, None)
        return _factories.pop(name, None) is not None


def registered() -> tuple[str, ...]:
    """The registered names, sorted."""
    with _lock:
        return tuple(sorted(_factories))


def factory(name: str) -> Callable[[], Any]:
    """The factory registered under ``name``. Raises :class:`~allm.errors.EngineError`
    (``unknown_middleware``, ``metadata["middleware"]`` the name) when there is none."""
    with _lock:
        made = _factories.get(name)
        known = sorted(_factories)
    if made is None:
        raise EngineError(
            f"no middleware is registered as {name!r} (registered: {', '.join(known) or 'none'}); "
            f"register it with allm.middleware.register({name!r}, factory) in every process that runs "
            "or resumes this pipeline",
            reason="unknown_middleware",
            metadata={"middleware": name, "registered": known},
        )
    return made


def make(entry: Any) -> Any:
    """The middleware of one entry for one run."""
    if isinstance(entry, str):
        mw = factory(entry)()
        what = f"the factory registered as {entry!r}"
    elif _is_middleware(entry):
        return entry
    else:
        mw = entry()
        what = f"the factory {entry_name(entry)!r}"
    if not _is_middleware(mw):
        raise TypeError(f"{what} returned {type(mw).__name__}, which has none of the hooks {', '.join(HOOKS)}")
    return mw



class _Builtin:
    """A built-in registered by name that needs no settings, loaded on first use (the built-ins
    sit above the tools; this module is loaded with the engine)."""

    def __init__(self, cls: str) -> None:
        self.cls = cls

    def __call__(self) -> Any:
        import importlib

        return getattr(importlib.import_module("allm.middleware._builtins"), self.cls)()


register("request_log", _Builtin("RequestLog"))
