"""Where :mod:`allm.testing` meets HTTP: one hook on allm's transport.

``allm._transport.set_exchange_hook`` routes every HTTP exchange of the process (sync and
async, every adapter) through one object. While a guard or a recording is active, that
object is :data:`DISPATCHER`: the innermost active recording answers (replays, or records
through the real network), else the innermost guard decides whether the request may go
out. With neither active, no hook is installed and allm talks to the network untouched.

This module and :mod:`allm.testing.recorder` are the only ones of :mod:`allm.testing`
that see httpx values.
"""

from __future__ import annotations

import ipaddress
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs
import httpx

from .. import _transport
from ..errors import redact

if TYPE_CHECKING:
    from .recorder import Recording

__all__ = ["Guard", "RequestBlocked", "provider_of", "safe_url"]


class RequestBlocked(RuntimeError):
    """A real HTTP request was about to leave the process while requests are blocked.

    Attributes: ``provider`` (a name such as ``"openai"``, guessed from the URL; see
    :func:`provider_of`), ``method``, ``url`` (without credentials or key-carrying query
    parameters). Deliberately not an :class:`~allm.errors.AllmError`: no retry, fallback
    or tool-loop error handling turns it into a result; it reaches the test.
    """

    def __init__(self, message: str, *, provider: str, method: str, url: str) -> None:
        super().__init__(message)
        self.provider = provider
        self.method = method
        self.url = url

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), str(self), self.provider, self.method, self.url))


RequestBlocked.__module__ = "allm.testing"  # where users import it from (tracebacks, pickle)


def _rebuild(cls: type[RequestBlocked], message: str, provider: str, method: str, url: str) -> RequestBlocked:
    err = RuntimeError.__new__(cls)
    RuntimeError.__init__(err, message)
    err.provider, err.method, err.url = provider, method, url
    return err


@attrs.frozen
class Guard:
    """One level of the guard: ``blocked`` or not, the hosts let through anyway (and loopback
    unless ``allow_loopback`` is false), and ``why`` (ends the error: what blocked the
    request and how to allow it)."""

    blocked: bool
    allow_hosts: frozenset[str] = frozenset()
    why: str = ""
    allow_loopback: bool = True


# ------------------------------------------------------------------------------ naming providers

_HOSTS = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "gemini",
    "openrouter.ai": "openrouter",
    "api.together.xyz": "together",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral",
    "api.deepseek.com": "deepseek",
    "api.x.ai": "xai",
}


def provider_of(url: str) -> str:
    """The provider a URL belongs to: its known API host (``api.openai.com`` -> ``openai``),
    else the wire API its path speaks (``an OpenAI Chat Completions server at HOST``)."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    for known, name in _HOSTS.items():
        if host == known or host.endswith("." + known):
            return name
    path = parts.path
    if path.endswith("/chat/completions"):
        api = "an OpenAI Chat Completions server"
    elif path.endswith("/responses") or "/responses/" in path:
        api = "an OpenAI Responses server"
    elif path.endswith("/messages"):
        api = "an Anthropic Messages server"
    elif ":generateContent" in path or ":streamGenerateContent" in path:
        api = "a Gemini server"
    elif path.endswith(("/embeddings", "/models")) or "/images/" in path:
        api = "an OpenAI-style server"
    else:
        api = "a server"
    return f"{api} at {host or '?'}"


_KEY_PARAMS = frozenset({"key", "api_key", "apikey", "api-key", "access_token", "token", "sig", "signature", "code"})


def safe_url(url: str, *secrets: str | None) -> str:
    """``url`` without user info, without key-carrying query parameters (``key``, ``api_key``,
    ``access_token``...) and with ``secrets`` and key shapes redacted."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    query = urllib.parse.urlencode(
        [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k.lower() not in _KEY_PARAMS]
    )
    return redact(urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, "")), *secrets)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------------ the dispatcher


class _State:
    def __init__(self) -> None:
        self.guards: list[Guard] = []
        self.recordings: list[Recording] = []
        self.previous: _transport.ExchangeHook | None = None
        self.installed = False
        self.lock = threading.Lock()

    def _sync_install(self) -> None:
        active = bool(self.guards or self.recordings)
        if active and not self.installed:
            self.previous = _transport.set_exchange_hook(DISPATCHER)
            self.installed = True
        elif not active and self.installed:
            _transport.set_exchange_hook(self.previous)
            self.previous = None
            self.installed = False


STATE = _State()


def push(item: Guard | Recording) -> None:
    with STATE.lock:
        (STATE.guards if isinstance(item, Guard) else STATE.recordings).append(item)  # type: ignore[arg-type]
        STATE._sync_install()


def pop(item: Guard | Recording) -> None:
    with STATE.lock:
        stack: list[Any] = STATE.guards if isinstance(item, Guard) else STATE.recordings
        for i in range(len(stack) - 1, -1, -1):  # the latest entry of this very item
            if stack[i] is item:
                del stack[i]
                break
        STATE._sync_install()


def current_guard() -> Guard | None:
    return STATE.guards[-1] if STATE.guards else None


def check(request: httpx.Request) -> None:
    """Raise :class:`RequestBlocked` if the innermost guard blocks ``request``."""
    guard = current_guard()
    if guard is None or not guard.blocked:
        return
    host = request.url.host
    if (guard.allow_loopback and is_loopback(host)) or host.lower().strip("[]") in guard.allow_hosts:
        return
    url = safe_url(str(request.url))
    provider = provider_of(url)
    raise RequestBlocked(
        f"a real request to {provider} was blocked: {request.method} {url}\n{guard.why}".rstrip(),
        provider=provider,
        method=request.method,
        url=url,
    )


class _Dispatcher:
    """The exchange hook installed while a guard or recording is active."""

    def handle(self, request: httpx.Request, send: Callable[[httpx.Request], httpx.Response]) -> httpx.Response:
        rec = STATE.recordings[-1] if STATE.recordings else None
        if rec is not None:
            return rec.handle(request, send)
        check(request)
        return send(request)

    async def ahandle(
        self, request: httpx.Request, send: Callable[[httpx.Request], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        rec = STATE.recordings[-1] if STATE.recordings else None
        if rec is not None:
            return await rec.ahandle(request, send)
        check(request)
        return await send(request)


DISPATCHER = _Dispatcher()


def hosts(values: Iterable[str]) -> frozenset[str]:
    return frozenset(h.strip().lower().strip("[]") for h in values if h.strip())
