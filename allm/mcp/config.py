"""How to reach an MCP server, and what of it to offer: :class:`Server`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, cast

import attrs

from ..errors import MCPError
from .names import check_label

__all__ = ["ApprovalRule", "Server"]


def _masked(values: Mapping[str, str] | None) -> str:
    if values is None:
        return "None"
    return "{" + ", ".join(f"{k!r}: '***'" for k in values) + "}"


def _str_map(name: str, label: str) -> Callable[[Any], dict[str, str] | None]:
    def convert(value: Any) -> dict[str, str] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise MCPError(
                f"MCP server {label!r}: {name} must map strings to strings",
                reason="invalid_server",
                metadata={"server_label": label},
            )
        return dict(value)

    return convert


ApprovalRule = Literal["always", "never"] | Mapping[str, Any]


@attrs.frozen
class Server:
    """How to reach one MCP server, and what of it to offer. Build one with :meth:`stdio` or :meth:`http`.

    - ``label``: the server's name in tool names and stored data: 1 to 24 characters of
      letters, digits, ``-`` and single ``_`` (not ``__``, not at either end).
    - ``command`` (stdio): the program and its arguments; ``env`` (added to a minimal default
      environment: ``PATH``, ``HOME``...), ``cwd``.
    - ``url`` (Streamable HTTP) and ``headers`` (sent with every request, for example
      ``{"Authorization": "Bearer ..."}``).
    - ``allowed_tools``: the names of the server's tools to offer; ``None`` offers all.
    - ``require_approval``: ``"never"`` (default), ``"always"``, or
      ``{"always": [names], "never": [names]}`` (each list may also be written
      ``{"tool_names": [names]}``, as the Open Responses ``mcp`` tool does); a tool in
      neither list needs approval. A tool that needs approval is a ``manual=True`` allm tool.
    - ``timeout``: seconds one tool call may take (``None``: no limit); ``connect_timeout``:
      seconds to start or reach the server and finish the MCP handshake.

    ``headers`` and ``env`` values are shown as ``'***'`` in the repr and never stored or
    logged by allm. Raises :class:`~allm.errors.MCPError` (``invalid_server``) for a bad value.
    """

    label: str
    command: tuple[str, ...] | None = None
    url: str | None = None
    headers: Mapping[str, str] | None = attrs.field(default=None, repr=_masked)
    env: Mapping[str, str] | None = attrs.field(default=None, repr=_masked)
    cwd: str | None = None
    allowed_tools: tuple[str, ...] | None = None
    require_approval: ApprovalRule = "never"
    timeout: float | None = 30.0
    connect_timeout: float = 30.0

    def __attrs_post_init__(self) -> None:
        label = check_label(self.label)

        def bad(message: str) -> MCPError:
            return MCPError(f"MCP server {label!r}: {message}", reason="invalid_server", metadata={"server_label": label})

        if (self.command is None) == (self.url is None):
            raise bad("give exactly one of command= (stdio) or url= (Streamable HTTP)")
        if self.command is not None:
            cmd = tuple(self.command) if not isinstance(self.command, str) else ()
            if not cmd or not all(isinstance(c, str) and c for c in cmd):
                raise bad("command must be a non-empty sequence of strings: the program, then its arguments")
            object.__setattr__(self, "command", cmd)
            if self.headers:
                raise bad("headers= is for a Streamable HTTP server (url=)")
        else:
            if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
                raise bad("url must be an http:// or https:// URL")
            if self.env is not None or self.cwd is not None:
                raise bad("env= and cwd= are for a stdio server (command=)")
        object.__setattr__(self, "headers", _str_map("headers", label)(self.headers))
        object.__setattr__(self, "env", _str_map("env", label)(self.env))
        if self.allowed_tools is not None:
            names = (self.allowed_tools,) if isinstance(self.allowed_tools, str) else tuple(self.allowed_tools)
            if not all(isinstance(n, str) for n in names):
                raise bad("allowed_tools must be tool names (strings)")
            object.__setattr__(self, "allowed_tools", names)
        object.__setattr__(self, "require_approval", _approval_rule(self.require_approval, bad))
        for name in ("timeout", "connect_timeout"):
            v = getattr(self, name)
            if v is None and name == "timeout":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise bad(f"{name} must be a positive number of seconds")

    @classmethod
    def stdio(
        cls,
        label: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        allowed_tools: Iterable[str] | None = None,
        require_approval: ApprovalRule = "never",
        timeout: float | None = 30.0,
        connect_timeout: float = 30.0,
    ) -> Server:
        """A server run as a subprocess, speaking MCP over its stdin and stdout."""
        common = _common(allowed_tools, require_approval, timeout, connect_timeout)
        return cls(label, command=tuple(command), env=env, cwd=cwd, **common)

    @classmethod
    def http(
        cls,
        label: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        allowed_tools: Iterable[str] | None = None,
        require_approval: ApprovalRule = "never",
        timeout: float | None = 30.0,
        connect_timeout: float = 30.0,
    ) -> Server:
        """A server reached over Streamable HTTP at ``url`` (for example ``http://127.0.0.1:8000/mcp``)."""
        return cls(label, url=url, headers=headers, **_common(allowed_tools, require_approval, timeout, connect_timeout))

    @property
    def transport(self) -> Literal["stdio", "streamable_http"]:
        return "stdio" if self.command is not None else "streamable_http"

    def allows(self, tool_name: str) -> bool:
        """Whether ``allowed_tools`` lets ``tool_name`` (the server's name for it) through."""
        return self.allowed_tools is None or tool_name in self.allowed_tools

    def requires_approval(self, tool_name: str) -> bool:
        """Whether a call of ``tool_name`` (the server's name for it) waits for approval."""
        rule = self.require_approval
        if rule == "never":
            return False
        if rule == "always":
            return True
        assert isinstance(rule, Mapping)
        return tool_name not in rule.get("never", ())

    def _key(self) -> tuple[Any, ...]:
        # Connections are shared by equal configurations (headers included: two tenants'
        # tokens never share a connection).
        return (
            self.label,
            self.command,
            self.url,
            tuple(sorted((self.headers or {}).items())),
            tuple(sorted((self.env or {}).items())) if self.env is not None else None,
            self.cwd,
        )

    def _secrets(self) -> tuple[str, ...]:
        return tuple((self.headers or {}).values()) + tuple((self.env or {}).values())


def _common(
    allowed_tools: Iterable[str] | None, require_approval: ApprovalRule, timeout: float | None, connect_timeout: float
) -> dict[str, Any]:
    """The options :meth:`Server.stdio` and :meth:`Server.http` share, as :class:`Server` fields."""
    return {
        "allowed_tools": tuple(allowed_tools) if allowed_tools is not None else None,
        "require_approval": require_approval,
        "timeout": timeout,
        "connect_timeout": connect_timeout,
    }


def _approval_rule(rule: Any, bad: Callable[[str], MCPError]) -> ApprovalRule:
    if rule in ("always", "never"):
        return cast(ApprovalRule, rule)
    if not isinstance(rule, Mapping) or not rule or set(rule) - {"always", "never"}:
        raise bad('require_approval must be "always", "never" or {"always": [names], "never": [names]}')
    out: dict[str, tuple[str, ...]] = {}
    for key, names in rule.items():
        if isinstance(names, Mapping):
            names = names.get("tool_names", ())
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise bad(f"require_approval[{key!r}] must be a list of tool names")
        out[key] = tuple(names)
    return out
