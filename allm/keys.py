"""API keys: where they come from, and how they stay out of everything else.

Resolution for a provider (``"openai"``, ``"anthropic"``, ``"gemini"``,
``"openrouter"``...), first non-empty value wins (``""`` counts as missing):

1. ``api_key=`` passed to the call;
2. :func:`scope` — a context variable, so each asyncio task or thread (one per
   tenant request) sees its own key;
3. the runtime store, :func:`put` / :func:`delete` / :func:`clear` (process-wide:
   not for per-tenant keys);
4. explicit configuration, :func:`configure` (process-wide defaults, e.g. from an
   application's settings);
5. the environment (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``,
   ``GEMINI_API_KEY``/``GOOGLE_API_KEY``, ``OPENROUTER_API_KEY``...).

A key is never a field of any value, never in a repr, log line, exception,
serialised session or event. It exists as a local variable of the call and as a
header of the HTTP request, nothing else. A key must be printable ASCII without
spaces (what an HTTP header can carry): anything else (a trailing newline read from
a file, a non-ASCII character) is refused with ``EngineError(reason="invalid_key")``
before anything is sent, and the message never quotes the key.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import threading
from collections.abc import Iterator, Mapping

from .errors import EngineError

__all__ = ["check", "clear", "configure", "delete", "put", "resolve", "scope"]

_ANY = "*"
_scoped: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("allm_keys_scope", default=None)
_store: dict[str, str] = {}
_config: dict[str, str] = {}
_lock = threading.Lock()
_VALID = re.compile(r"[\x21-\x7e]+")


@contextlib.contextmanager
def scope(key: str | None = None, /, **by_provider: str) -> Iterator[None]:
    """Use these keys inside the ``with`` block, in this task or thread only.

    ``scope("sk-...")`` applies to every provider; ``scope(openai="sk-...",
    anthropic="sk-ant-...")`` per provider (a provider-specific key wins). Scopes
    nest: an inner scope adds to and overrides the outer one. Safe under asyncio:
    tasks started inside the block inherit it; concurrent tasks do not share it.
    """
    outer = _scoped.get() or {}
    merged = dict(outer)
    if key:
        merged[_ANY] = key
    for provider, value in by_provider.items():
        if value:
            merged[_norm(provider)] = value
    token = _scoped.set(merged)
    try:
        yield
    finally:
        _scoped.reset(token)


def put(provider: str, key: str) -> None:
    """Store ``key`` for ``provider`` for the whole process (not per tenant)."""
    with _lock:
        _store[_norm(provider)] = key


def delete(provider: str) -> None:
    with _lock:
        _store.pop(_norm(provider), None)


def clear() -> None:
    """Forget every stored and configured key."""
    with _lock:
        _store.clear()
        _config.clear()


def configure(keys: Mapping[str, str] | None = None, /, **by_provider: str) -> None:
    """Set process-wide default keys by provider (below the runtime store, above the environment)."""
    with _lock:
        for provider, value in {**(keys or {}), **by_provider}.items():
            if value:
                _config[_norm(provider)] = value
            else:
                _config.pop(_norm(provider), None)


def _norm(provider: str) -> str:
    return provider.lower().replace("-", "_").replace(".", "_")


def env_names(provider: str) -> tuple[str, ...]:
    """Environment variables read for ``provider`` when an adapter does not name its own."""
    return (f"{_norm(provider).upper()}_API_KEY",)


def lookup(
    provider: str, env: tuple[str, ...] = (), api_key: str | None = None
) -> tuple[str | None, str | None]:
    """``(key, source)`` or ``(None, None)``. ``source`` is ``call``, ``scope``,
    ``store``, ``config`` or ``env:NAME``."""
    if api_key:
        return api_key, "call"
    p = _norm(provider)
    scoped = _scoped.get()
    if scoped:
        v = scoped.get(p) or scoped.get(_ANY)
        if v:
            return v, "scope"
    v = _store.get(p)
    if v:
        return v, "store"
    v = _config.get(p)
    if v:
        return v, "config"
    for name in env or env_names(provider):
        v = os.environ.get(name)
        if v:
            return v, f"env:{name}"
    return None, None


def check(key: str, provider: str, source: str | None = None) -> str:
    """``key`` if an HTTP header can carry it (printable ASCII, no spaces), else raise.

    Raises :class:`~allm.errors.EngineError` (``invalid_key``) naming the provider,
    where the key came from and what is wrong with it, never the key itself.
    """
    if _VALID.fullmatch(key):
        return key
    if key != key.strip():
        why = "starts or ends with whitespace (a newline read from a file?)"
    elif any(ord(c) > 0x7E for c in key):
        why = "contains non-ASCII characters"
    else:
        why = "contains spaces or control characters"
    where = f" (from {source})" if source else ""
    raise EngineError(
        f"the API key for {provider}{where} {why}; an HTTP header cannot carry it, so nothing was sent",
        reason="invalid_key",
        provider=provider,
        metadata={"source": source} if source else None,
    )


def resolve(provider: str, env: tuple[str, ...] = (), api_key: str | None = None, *, required: bool = True) -> str | None:
    """The key for ``provider``, or ``None`` when not ``required``.

    Raises :class:`~allm.errors.EngineError`: ``missing_key`` naming every place
    that was checked, when ``required`` and none holds a key; ``invalid_key`` when
    the key found cannot be sent in an HTTP header (see :func:`check`).
    """
    key, source = lookup(provider, env, api_key)
    if key is None:
        if required:
            names = ", ".join(env or env_names(provider))
            raise EngineError(
                f"no API key for {provider}: checked api_key=, allm.keys.scope(), allm.keys.put(), "
                f"allm.keys.configure() and the environment ({names})",
                reason="missing_key",
                provider=provider,
                metadata={"checked": ["call", "scope", "store", "config", *(env or env_names(provider))]},
            )
        return None
    return check(key, provider, source)
