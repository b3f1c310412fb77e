"""The server's configuration: a TOML file read with :mod:`tomllib` into frozen values.

::

    [server]
    store = "sqlite:///var/lib/allm/responses.db"   # default: SQLite in data_dir
    data_dir = "~/.local/share/allm/server"          # default: $XDG_DATA_HOME/allm/server
    max_body_bytes = 10485760                       # 413 above it (default 10 MiB)
    hooks = ["myapp.server:hooks"]                  # functions (config) -> allm.server.Hooks
    retention_max_age = 2592000                     # seconds a stored response is kept (default: forever)
    retention_max_count = 100000                    # newest responses kept (default: no limit)
    access_log = true                               # uvicorn's line per request (default: off)

    [auth]
    tokens = ["secret-1"]                           # bearer tokens clients send
    tokens_env = "ALLM_SERVER_TOKENS"               # or: comma-separated tokens from the environment

    [tools]                                         # hosted tools, run by the server
    get_weather = "myapp.tools:get_weather"

    [[routes]]                                      # tried in order; the first match wins
    match = "^claude-"                              # regex searched in the requested model name
    provider = "anthropic"                          # a name of allm.providers.registry
    api_key_env = "ANTHROPIC_API_KEY"

    [[routes]]
    match = "."
    provider = "compatible"
    base_url = "http://127.0.0.1:8080/v1"
    model = "smollm2"                               # upstream model (default: as requested)

Every error is a :class:`ConfigError` naming the key (``routes[1].provider``) and, when
the file was read, its line. See ``guides/server.md`` for every key.
"""

from __future__ import annotations

import importlib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ..errors import AllmError

__all__ = ["ConfigError", "Route", "ServerConfig", "load_config", "parse_config", "resolve_callable"]

DEFAULT_MAX_BODY = 10 * 1024 * 1024
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class ConfigError(AllmError):
    """A configuration that cannot serve: ``key`` names the bad key (``routes[0].match``),
    ``line`` its line in the file (or ``None``)."""

    reasons = frozenset({"invalid_config"})
    default_reason = "invalid_config"

    def __init__(self, message: str, *, key: str | None = None, line: int | None = None) -> None:
        where = (key or "config") + (f" (line {line})" if line else "") + ": "
        super().__init__(where + message, reason="invalid_config")
        self.key = key
        self.line = line


@attrs.frozen
class Route:
    """One route: requests whose model name matches ``match`` (a regex, searched) go to ``provider``.

    - ``provider``: a name of :mod:`allm.providers.registry` (``openai``, ``anthropic``,
      ``gemini``, ``compatible``, ``ollama``, ``llama.cpp``, ``vllm``, ``openrouter``, ``fake``...).
    - ``base_url``: the upstream's base URL (required by ``compatible`` and ``local``).
    - ``api_key_env``: the environment variable holding the upstream key (read per call).
    - ``key_header``: a request header carrying the caller's own provider key (wins over
      ``api_key_env``; never stored, logged or returned).
    - ``model``: the upstream model name (default: the requested name).
    - ``models``: names listed by ``GET /v1/models`` for this route.
    - ``adapter``: ``"module:callable"`` (or, from Python, the callable) returning an adapter,
      instead of ``provider``; called with ``options`` as keyword arguments.
    - ``options``: keyword arguments for the adapter (``registry.build(provider, **options)``).
    - ``tools``: names of hosted tools offered on this route (default: all of ``[tools]``).
    - ``middleware``: allm middleware specs (:func:`allm.middleware.from_spec`) for this route.
    - ``defaults``: request fields used when the request leaves them unset (``{temperature = 0}``).
    - ``instructions``: a system prompt used when a request gives no ``instructions`` (not
      echoed in the response object).
    - ``retry``: :class:`allm.RetryPolicy` fields (``{max_attempts = 1}`` turns retries off).
    - ``timeouts``: :class:`allm.Timeouts` fields in seconds (``connect``, ``first_event``,
      ``idle``, ``total``).
    """

    match: str
    provider: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    key_header: str | None = None
    model: str | None = None
    models: tuple[str, ...] = ()
    adapter: str | Callable[..., Any] | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)
    tools: tuple[str, ...] | None = None
    middleware: tuple[Any, ...] = ()
    defaults: Mapping[str, Any] = attrs.field(factory=dict)
    retry: Mapping[str, Any] = attrs.field(factory=dict)
    timeouts: Mapping[str, Any] = attrs.field(factory=dict)
    instructions: str | None = None
    pattern: re.Pattern[str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "pattern", re.compile(self.match))

    @property
    def name(self) -> str:
        """What ``owned_by`` reports: the provider name or the adapter factory."""
        if self.provider:
            return self.provider
        return self.adapter if isinstance(self.adapter, str) else "custom"


@attrs.frozen
class ServerConfig:
    """The whole configuration (see the module docstring for the TOML spelling).

    ``routes`` in order; ``tools``: hosted tool name -> ``"module:function"`` (or, from
    Python, the function; sync or async, its schema from its signature); ``store``:
    a store URL (:func:`allm.stores.open_store`; ``None``: SQLite in ``data_dir``);
    ``auth_tokens``: accepted bearer tokens (empty: no auth, loopback only);
    ``max_body_bytes``: largest request body; ``retention_max_age`` (seconds) and
    ``retention_max_count``: the stored responses' retention limit; ``hooks``:
    ``"module:factory"`` names of functions ``(config) -> allm.server.Hooks`` merged into the app
    (metrics, tracing, extra tool types); ``access_log``: whether ``allm serve`` logs a line per
    request (off by default: ``GET /metrics`` counts requests without a write per request).
    """

    routes: tuple[Route, ...] = ()
    tools: Mapping[str, str | Callable[..., Any]] = attrs.field(factory=dict)
    store: str | None = None
    data_dir: str | None = None
    auth_tokens: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY
    retention_max_age: float | None = None
    retention_max_count: int | None = None
    hooks: tuple[str, ...] = ()
    access_log: bool = False
    mcp: Mapping[str, Any] = attrs.field(factory=dict, repr=False)  # [mcp.<label>]: allm.server.mcp_items

    def store_url(self) -> str:
        """The store URL: ``store``, else ``sqlite:///<data_dir>/responses.db`` (the directory is made)."""
        if self.store:
            return self.store
        base = Path(self.data_dir).expanduser() if self.data_dir else _default_data_dir()
        base.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{base.resolve() / 'responses.db'}"

    def check_bind(self, host: str) -> None:
        """Raise :class:`ConfigError` when ``host`` is not loopback and no auth token is set."""
        if not self.auth_tokens and host not in _LOOPBACK:
            raise ConfigError(
                f"serving on {host!r} needs [auth] tokens (a server without auth listens on loopback only)",
                key="auth.tokens",
            )


def _default_data_dir() -> Path:
    root = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(root) / "allm" / "server"


def resolve_callable(spec: str, *, key: str = "", line: int | None = None) -> Callable[..., Any]:
    """The object ``"package.module:attribute"`` names; :class:`ConfigError` when it cannot be imported."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"{spec!r} is not 'module:function'", key=key, line=line)
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {spec!r}: {exc}", key=key, line=line) from None
    if not callable(obj):
        raise ConfigError(f"{spec!r} is not callable", key=key, line=line)
    result: Callable[..., Any] = obj
    return result


# ------------------------------------------------------------------------------ reading


class _Lines:
    """Finds the line of a key in the TOML text (tomllib keeps no positions)."""

    def __init__(self, text: str | None) -> None:
        self.lines = text.splitlines() if text else []

    def of(self, table: str | None, key: str | None, index: int | None = None) -> int | None:
        if not self.lines:
            return None
        start = 0
        if table is not None:
            header = re.compile(r"^\s*\[\[\s*" + re.escape(table) + r"\s*\]\]" if index is not None
                                else r"^\s*\[\s*" + re.escape(table) + r"\s*\]")
            seen = -1
            found = None
            for i, ln in enumerate(self.lines):
                if header.match(ln):
                    seen += 1
                    if index is None or seen == index:
                        found = i
                        break
            if found is None:
                return None
            start = found
            if key is None:
                return start + 1
        if key is None:
            return None
        pat = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for i in range(start + (1 if table is not None else 0), len(self.lines)):
            if table is not None and re.match(r"^\s*\[", self.lines[i]):
                break
            if pat.match(self.lines[i]):
                return i + 1
        return start + 1 if table is not None else None


_SERVER_KEYS = {"store", "data_dir", "max_body_bytes", "retention_max_age", "retention_max_count", "hooks", "access_log"}
_AUTH_KEYS = {"tokens", "tokens_env"}
_ROUTE_KEYS = {f.name for f in attrs.fields(Route) if f.init}
_TOP_KEYS = {"server", "auth", "tools", "routes", "mcp"}


def parse_config(text: str, *, source: str = "<config>") -> ServerConfig:
    """A :class:`ServerConfig` from TOML text; :class:`ConfigError` naming the bad key and line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(f"{source}: not valid TOML: {exc}", line=int(m.group(1)) if m else None) from None
    return _from_data(data, _Lines(text))


def load_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Read and check the TOML file at ``path`` (:class:`ConfigError`, or ``OSError`` when unreadable)."""
    p = Path(path)
    return parse_config(p.read_text(encoding="utf-8"), source=str(p))


# The [server] table's scalar settings: (key, check, what the error says, conversion).
_SCALARS: tuple[tuple[str, Callable[[Any], bool], str, Callable[[Any], Any]], ...] = (
    ("max_body_bytes", lambda v: type(v) is int and v >= 1, "must be a positive integer (bytes)", int),
    ("retention_max_age", lambda v: type(v) in (int, float) and v > 0, "must be a positive number of seconds", float),
    ("retention_max_count", lambda v: type(v) is int and v >= 1, "must be a positive integer", int),
    ("access_log", lambda v: type(v) is bool, "must be true or false", bool),
)


def _from_data(data: Mapping[str, Any], lines: _Lines) -> ServerConfig:
    def fail(msg: str, key: str, table: str | None = None, name: str | None = None, index: int | None = None) -> ConfigError:
        return ConfigError(msg, key=key, line=lines.of(table, name, index))

    for k in data:
        if k not in _TOP_KEYS:
            raise fail(f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})", k, None, k)
    server = data.get("server", {})
    if not isinstance(server, Mapping):
        raise fail("must be a table", "server", None, None)
    for k in server:
        if k not in _SERVER_KEYS:
            raise fail(f"unknown key (known: {', '.join(sorted(_SERVER_KEYS))})", f"server.{k}", "server", k)
    kw: dict[str, Any] = {}
    for k in ("store", "data_dir"):
        if k in server:
            if not isinstance(server[k], str) or not server[k]:
                raise fail("must be a non-empty string", f"server.{k}", "server", k)
            kw[k] = server[k]
    if "store" in kw and not re.match(r"^(memory|sqlite|redis|rediss)://", kw["store"]):
        raise fail("must be a store URL (memory://, sqlite:///path.db, redis://host:port/db)", "server.store", "server", "store")
    for k, ok, msg, convert in _SCALARS:
        if k in server:
            v = server[k]
            if not ok(v):
                raise fail(msg, f"server.{k}", "server", k)
            kw[k] = convert(v)

    if "hooks" in server:
        v = server["hooks"]
        if not isinstance(v, list) or not all(isinstance(x, str) and ":" in x for x in v):
            raise fail('must be a list of "module:factory"', "server.hooks", "server", "hooks")
        kw["hooks"] = tuple(v)
    auth = data.get("auth", {})
    if not isinstance(auth, Mapping):
        raise fail("must be a table", "auth", None, None)
    tokens: list[str] = []
    for k in auth:
        if k not in _AUTH_KEYS:
            raise fail(f"unknown key (known: {', '.join(sorted(_AUTH_KEYS))})", f"auth.{k}", "auth", k)
    if "tokens" in auth:
        t = auth["tokens"]
        if not isinstance(t, list) or not all(isinstance(x, str) and x for x in t):
            raise fail("must be a list of non-empty strings", "auth.tokens", "auth", "tokens")
        tokens.extend(t)
    if "tokens_env" in auth:
        name = auth["tokens_env"]
        if not isinstance(name, str) or not name:
            raise fail("must be an environment variable name", "auth.tokens_env", "auth", "tokens_env")
        tokens.extend(x.strip() for x in os.environ.get(name, "").split(",") if x.strip())
    kw["auth_tokens"] = tuple(tokens)

    tools = data.get("tools", {})
    if not isinstance(tools, Mapping):
        raise fail("must be a table of name = \"module:function\"", "tools", None, None)
    for name, spec in tools.items():
        if not isinstance(spec, str) or ":" not in spec:
            raise fail("must be \"module:function\"", f"tools.{name}", "tools", name)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise fail("a tool name is 1 to 64 of A-Z a-z 0-9 _ -", f"tools.{name}", "tools", name)
    kw["tools"] = dict(tools)

    routes_data = data.get("routes", [])
    if not isinstance(routes_data, list):
        raise fail("must be an array of tables ([[routes]])", "routes", None, None)
    routes: list[Route] = []
    for i, r in enumerate(routes_data):
        routes.append(_route(r, i, fail, set(tools)))
    kw["routes"] = tuple(routes)
    if "mcp" in data:
        from .mcp_items import servers_from_config

        try:
            servers_from_config(data["mcp"])
        except ValueError as exc:
            raise fail(str(exc), "mcp", "mcp", None) from None
        kw["mcp"] = dict(data["mcp"])
    return ServerConfig(**kw)


def _route(r: Any, i: int, fail: Callable[..., ConfigError], tool_names: set[str]) -> Route:
    from ..providers import registry

    def bad(msg: str, name: str | None) -> ConfigError:
        return fail(msg, f"routes[{i}]" + (f".{name}" if name else ""), "routes", name, i)

    if not isinstance(r, Mapping):
        raise bad("must be a table", None)
    for k in r:
        if k not in _ROUTE_KEYS:
            raise bad(f"unknown key (known: {', '.join(sorted(_ROUTE_KEYS))})", k)
    if "match" not in r:
        raise bad("a route needs 'match' (a regex searched in the model name; '.' matches all)", None)
    kw: dict[str, Any] = {}
    for k in ("match", "provider", "base_url", "api_key_env", "key_header", "model", "adapter", "instructions"):
        if k in r:
            if not isinstance(r[k], str) or not r[k]:
                raise bad("must be a non-empty string", k)
            kw[k] = r[k]
    try:
        re.compile(kw["match"])
    except re.error as exc:
        raise bad(f"not a regular expression: {exc}", "match") from None
    if ("provider" in kw) == ("adapter" in kw):
        raise bad("a route needs exactly one of 'provider' or 'adapter'", "provider" if "provider" in kw else None)
    if "provider" in kw:
        if kw["provider"] not in registry.PROVIDERS:
            raise bad(f"unknown provider {kw['provider']!r}; known: {', '.join(registry.names())}", "provider")
        ps = registry.spec(kw["provider"])
        if ps.base_url == "required" and "base_url" not in kw:
            raise bad(f"provider {kw['provider']!r} needs base_url", "provider")
        if ps.base_url == "none" and "base_url" in kw:
            raise bad(f"provider {kw['provider']!r} takes no base_url", "base_url")
    if "key_header" in kw and not re.fullmatch(r"[A-Za-z0-9-]+", kw["key_header"]):
        raise bad("must be an HTTP header name", "key_header")
    for k in ("models", "tools"):
        if k in r:
            v = r[k]
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                raise bad("must be a list of strings", k)
            kw[k] = tuple(v)
    if "tools" in kw:
        unknown = [t for t in kw["tools"] if t not in tool_names]
        if unknown:
            raise bad(f"unknown hosted tool(s) {unknown}; define them under [tools]", "tools")
    for k in ("options", "defaults", "retry", "timeouts"):
        if k in r:
            if not isinstance(r[k], Mapping):
                raise bad("must be a table", k)
            kw[k] = dict(r[k])
    if "defaults" in kw:
        from ..types import Request

        try:
            Request(**kw["defaults"])
        except (TypeError, ValueError) as exc:
            raise bad(f"not request fields: {exc}", "defaults") from None
    if "retry" in kw or "timeouts" in kw:
        from ..policy import RetryPolicy, Timeouts

        for k, cls in (("retry", RetryPolicy), ("timeouts", Timeouts)):
            try:
                cls(**kw.get(k, {}))
            except (TypeError, ValueError) as exc:
                raise bad(f"not {cls.__name__} fields: {exc}", k) from None
    if "middleware" in r:
        spec = r["middleware"]
        if not isinstance(spec, list):
            raise bad("must be a list of middleware specs", "middleware")
        from ..middleware import from_spec

        try:
            from_spec(spec)
        except (TypeError, ValueError) as exc:
            raise bad(str(exc), "middleware") from None
        kw["middleware"] = tuple(spec)
    return Route(**kw)
