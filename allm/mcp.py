"""Model Context Protocol servers' tools as allm tools (the ``mcp`` extra: ``pip install 'allm[mcp]'``).

A :class:`Server` says how to reach one MCP server: a command to run (stdio) or a URL
(Streamable HTTP, with headers), which of its tools to offer (``allowed_tools``), which need
approval, and how long a call may take. A :class:`Client` holds the connections: one
background thread runs an event loop that owns every MCP session, and both sync and async
callers reach it (``allm.chat`` runs async handlers in worker threads with their own loops,
``allm.achat`` on the caller's loop; both work)::

    weather = allm.mcp.Server.stdio("weather", [sys.executable, "weather_server.py"])
    with allm.mcp.Client() as mcp:
        result = allm.chat(engine, "Weather in Paris?", tools=mcp.tools(weather))

The model sees each MCP tool as ``<label>__<tool>`` (see :func:`qualified_name`), so a
stored thread or session names the server by label and the tool by name; :meth:`Client.bind`
binds a resumed session's calls again from the server configuration, and raises
:class:`~allm.errors.MCPError` (``unknown_server``) naming a label it lacks.

What a call gives the model follows the MCP ``tools/call`` result
(https://modelcontextprotocol.io/specification/2025-11-25/server/tools): the text of its
``content`` blocks (an image, audio or binary resource as a one-line placeholder naming its
type and size), or ``structuredContent`` as JSON when there is no content; ``isError: true``
is a tool error (``is_error`` on the tool message). The whole result, image bytes included, is
the handler's value (:class:`ToolOutput`, a ``str`` with ``.result``), seen in
``ToolExecutionCompleted``. A server that dies during a call is a tool error the model reads;
the next call starts or reconnects it.

Header values and ``env`` values are secrets: they appear in no repr, error, log line or
stored value. See ``guides/mcp.md``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import hashlib
import re
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TextIO, TypeVar, cast

import attrs
import orjson

import allm

from .errors import AllmError, MCPError, ToolError, scrub
from .types import Image, ImagePart, TextPart, Thread, Tool, ToolCall

try:
    import anyio
    import mcp.types as mt
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
    from mcp.shared.exceptions import McpError as _SdkError
except ImportError as exc:
    from importlib.metadata import PackageNotFoundError, version

    try:
        _found = f" (found mcp {version('mcp')}; the 2.x line renamed these APIs)"
    except PackageNotFoundError:
        _found = ""
    raise ImportError(f"allm.mcp needs the mcp package, 1.24 or a later 1.x: pip install 'allm[mcp]'{_found}") from exc

__all__ = [
    "Audio",
    "CallResult",
    "Client",
    "Content",
    "Resource",
    "ResourceLink",
    "Server",
    "ToolInfo",
    "ToolOutput",
    "parse_name",
    "qualified_name",
]

T = TypeVar("T")

_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_))*$")
_LABEL_MAX = 24
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_NAME_MAX = 64  # the function-name limit OpenAI, Anthropic and Gemini share


# ------------------------------------------------------------------------------ names


def _check_label(label: Any) -> str:
    if (
        not isinstance(label, str)
        or not label
        or len(label) > _LABEL_MAX
        or not _LABEL.match(label)
        or label.endswith("_")
    ):
        raise MCPError(
            f"MCP server label {label!r} must be 1 to {_LABEL_MAX} characters of letters, digits, '-' "
            "and single '_' (not '__', not at either end)",
            reason="invalid_server",
            metadata={"server_label": str(label)},
        )
    return label


def qualified_name(server_label: str, tool_name: str) -> str:
    """The tool name the model sees for ``tool_name`` of the server ``server_label``.

    ``<label>__<tool>``: the label cannot hold ``__``, so the first ``__`` splits the two. (Not
    Claude Code's ``mcp__<label>__<tool>``: small local models fail to call names that start with
    ``mcp``, and the prefix costs 5 of the 64 characters.) A tool name with characters
    providers refuse in function names (anything but ``A-Z a-z 0-9 _ -``), or one that would
    make the whole longer than 64 characters, has them replaced by ``_``, is cut to fit, and
    ends with ``_`` and 8 hex digits of its SHA-256, so distinct names stay distinct.
    Raises :class:`~allm.errors.MCPError` (``invalid_server``) for a bad label.
    """
    base = f"{_check_label(server_label)}__"
    clean = _UNSAFE.sub("_", tool_name)
    name = base + clean
    if clean != tool_name or not clean or len(name) > _NAME_MAX:
        digest = hashlib.sha256(tool_name.encode()).hexdigest()[:8]
        name = base + clean[: _NAME_MAX - len(base) - 9] + "_" + digest
    return name


def parse_name(name: str) -> tuple[str, str] | None:
    """``(server_label, tool part)`` of a name made by :func:`qualified_name`, else ``None``.

    The tool part is the server's tool name unless :func:`qualified_name` had to change it;
    :meth:`Client.bind` finds the tool by listing the server either way.
    """
    label, sep, rest = name.partition("__")
    if not sep or not rest or not _LABEL.match(label) or label.endswith("_") or len(label) > _LABEL_MAX:
        return None
    return label, rest


# ------------------------------------------------------------------------------ configuration


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
        label = _check_label(self.label)

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


# ------------------------------------------------------------------------------ results


@attrs.frozen
class Audio:
    """An MCP audio content block: raw ``data`` bytes and their ``mime_type``."""

    data: bytes
    mime_type: str


@attrs.frozen
class Resource:
    """An MCP embedded resource: ``text`` or raw ``data`` bytes (a blob), with its ``uri``."""

    uri: str
    mime_type: str | None = None
    text: str | None = None
    data: bytes | None = None


@attrs.frozen
class ResourceLink:
    """An MCP resource link: a resource the server offers by ``uri``, not included."""

    uri: str
    name: str
    description: str | None = None
    mime_type: str | None = None


Content = TextPart | ImagePart | Audio | Resource | ResourceLink
"""One content block of a tool result: text, an image, audio, an embedded resource or a link."""


def _render(block: Content) -> str:
    if isinstance(block, TextPart):
        return block.text
    if isinstance(block, ImagePart):
        return f"[image: {block.image.mime_type}, {len(block.image.data or b'')} bytes]"
    if isinstance(block, Audio):
        return f"[audio: {block.mime_type}, {len(block.data)} bytes]"
    if isinstance(block, Resource):
        if block.text is not None:
            return f"[resource: {block.uri}]\n{block.text}"
        return f"[resource: {block.uri}, {block.mime_type or 'application/octet-stream'}, {len(block.data or b'')} bytes]"
    return f"[resource link: {block.name} <{block.uri}>]"


@attrs.frozen
class CallResult:
    """The result of one MCP ``tools/call`` (``CallToolResult``), as allm values.

    - ``content``: the content blocks in order (:data:`Content`; image and audio bytes decoded).
    - ``structured_content``: the ``structuredContent`` object, or ``None``.
    - ``is_error``: the server's ``isError`` (the tool ran and failed).

    :attr:`text` is what the model reads.
    """

    server_label: str
    name: str
    content: tuple[Content, ...] = ()
    structured_content: Mapping[str, Any] | None = None
    is_error: bool = False

    @property
    def text(self) -> str:
        """The content blocks' text joined by newlines (non-text blocks as one-line placeholders,
        ``[image: image/png, 68 bytes]``), or ``structured_content`` as JSON when there is no
        content block; ``""`` for an empty result."""
        if self.content:
            return "\n".join(_render(b) for b in self.content)
        if self.structured_content is not None:
            return orjson.dumps(self.structured_content).decode()
        return ""

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """The image blocks, ready to put in a user message."""
        return tuple(b for b in self.content if isinstance(b, ImagePart))


class ToolOutput(str):
    """What an MCP tool's handler returns: the text the model reads (:attr:`CallResult.text`),
    with the whole :class:`CallResult` at ``.result``.

    A ``str``, so the tool loop sends it as it is; ``ToolExecutionCompleted.result`` carries it,
    so a program reads images and structured content from ``event.value.result``.
    """

    result: CallResult

    def __new__(cls, result: CallResult) -> ToolOutput:
        out = super().__new__(cls, result.text)
        out.result = result
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        return (ToolOutput, (self.result,))


@attrs.frozen
class ToolInfo:
    """One tool a server lists (``tools/list``), after ``allowed_tools``.

    ``name``, ``description``, ``input_schema`` and ``annotations`` are the server's (the
    fields of an Open Responses ``mcp_list_tools`` entry); ``requires_approval`` applies the
    server's ``require_approval``; :attr:`qualified_name` is the name the model sees.
    """

    server_label: str
    name: str
    description: str = ""
    input_schema: Mapping[str, Any] = attrs.field(factory=lambda: {"type": "object", "properties": {}})
    annotations: Mapping[str, Any] | None = None
    title: str | None = None
    requires_approval: bool = False

    @property
    def qualified_name(self) -> str:
        return qualified_name(self.server_label, self.name)


def _content(block: Any, server: Server, tool_name: str) -> Content:
    def b64(data: str, what: str) -> bytes:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise MCPError(
                f"the MCP server {server.label!r} sent {what} that is not base64 in the result of {tool_name}",
                reason="protocol_error",
                metadata={"server_label": server.label, "tool_name": tool_name},
            ) from None

    if isinstance(block, mt.TextContent):
        return TextPart(block.text)
    if isinstance(block, mt.ImageContent):
        return ImagePart(Image.from_bytes(b64(block.data, "an image"), block.mimeType))
    if isinstance(block, mt.AudioContent):
        return Audio(b64(block.data, "audio"), block.mimeType)
    if isinstance(block, mt.EmbeddedResource):
        r = block.resource
        if isinstance(r, mt.TextResourceContents):
            return Resource(str(r.uri), r.mimeType, text=r.text)
        return Resource(str(r.uri), r.mimeType, data=b64(r.blob, "a resource"))
    if isinstance(block, mt.ResourceLink):
        return ResourceLink(str(block.uri), block.name, block.description, block.mimeType)
    raise MCPError(
        f"the MCP server {server.label!r} sent a content block of unknown type {getattr(block, 'type', '?')!r}",
        reason="protocol_error",
        metadata={"server_label": server.label, "tool_name": tool_name},
    )


def _result(res: mt.CallToolResult, server: Server, tool_name: str) -> CallResult:
    return CallResult(
        server.label,
        tool_name,
        tuple(_content(b, server, tool_name) for b in res.content),
        dict(res.structuredContent) if res.structuredContent is not None else None,
        bool(res.isError),
    )


def _info(t: mt.Tool, server: Server) -> ToolInfo:
    schema: dict[str, Any] = dict(t.inputSchema or {})
    schema.setdefault("type", "object")
    if schema["type"] == "object":
        schema.setdefault("properties", {})
    annotations = t.annotations.model_dump(exclude_none=True) if t.annotations is not None else None
    return ToolInfo(
        server.label,
        t.name,
        t.description or t.title or "",
        schema,
        annotations,
        t.title,
        server.requires_approval(t.name),
    )


# ------------------------------------------------------------------------------ errors


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for e in exc.exceptions:
            out.extend(_leaves(e))
        return out
    return [exc]


def _connect_error(exc: BaseException, server: Server) -> MCPError:
    """A typed error for a server that could not be started, reached or initialised."""
    if isinstance(exc, MCPError):
        return exc
    leaves = [e for e in _leaves(exc) if not isinstance(e, asyncio.CancelledError)] or [exc]
    where = f"command {server.command[0]!r}" if server.command else f"URL {server.url}"
    meta: dict[str, Any] = {"server_label": server.label, "transport": server.transport}
    reason = "server_unavailable"
    detail = "; ".join(f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__ for e in leaves)
    for e in leaves:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int):
            meta["status"] = status
            if status in (401, 403):
                reason = "authentication_failed"
        if isinstance(e, _SdkError) and e.error.code == mt.CONNECTION_CLOSED:
            detail = "the server closed the connection before the MCP handshake finished"
    err = MCPError(f"cannot use the MCP server {server.label!r} ({where}): {detail}", reason=reason, metadata=meta)
    return cast(MCPError, scrub(err, *server._secrets()))


def _tool_error(exc: MCPError, call_name: str) -> ToolError:
    err = ToolError(
        exc.message,
        reason="timeout" if exc.reason == "timeout" else "handler_raised",
        metadata={**exc.metadata, "tool_name": call_name, "mcp_reason": exc.reason},
    )
    err.__cause__ = exc
    return err


# ------------------------------------------------------------------------------ connections


class _Connection:
    """One MCP session, owned by a task on the client's loop (the SDK's transports are
    context managers that must be entered and left in one task)."""

    def __init__(self, server: Server, errlog: Any) -> None:
        self.server = server
        self.errlog = errlog
        self.session: ClientSession | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stop = asyncio.Event()
        self.lost = asyncio.Event()
        self.task = asyncio.create_task(self._hold(), name=f"allm-mcp-{server.label}")

    @property
    def alive(self) -> bool:
        return self.ready.done() and self.ready.exception() is None and not self.lost.is_set()

    async def _hold(self) -> None:
        s = self.server
        try:
            async with contextlib.AsyncExitStack() as stack:
                if s.command is not None:
                    params = StdioServerParameters(
                        command=s.command[0], args=list(s.command[1:]), env=dict(s.env) if s.env else None, cwd=s.cwd
                    )
                    read, write = await stack.enter_async_context(stdio_client(params, errlog=self.errlog))
                else:
                    assert s.url is not None
                    http = await stack.enter_async_context(create_mcp_http_client(headers=dict(s.headers or {})))
                    read, write, _ = await stack.enter_async_context(streamable_http_client(s.url, http_client=http))
                tg = await stack.enter_async_context(anyio.create_task_group())
                # The session reads through this pump, so the end of the server's output
                # (a stdio server that exited) is seen at once, not at the next call.
                pump_send, pump_recv = anyio.create_memory_object_stream[Any](0)

                async def pump() -> None:
                    async with pump_send:
                        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                            async for message in read:
                                await pump_send.send(message)
                    self.lost.set()
                    self.stop.set()

                tg.start_soon(pump)
                session = await stack.enter_async_context(
                    ClientSession(pump_recv, write, client_info=mt.Implementation(name="allm", version=allm.__version__))
                )
                await session.initialize()
                self.session = session
                self.ready.set_result(None)
                await self.stop.wait()
                tg.cancel_scope.cancel()
        except BaseException as exc:
            if not self.ready.done():
                self.ready.set_exception(_connect_error(exc, s))
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self.session = None
            self.lost.set()
            if not self.ready.done():
                self.ready.set_exception(_connect_error(ConnectionError("the connection closed"), s))

    async def close(self, grace: float) -> None:
        self.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except (TimeoutError, asyncio.CancelledError):
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


async def _heartbeat(session: ClientSession, interval: float) -> None:
    """Ping every ``interval`` seconds. A ping that fails to reach the server ends the
    connection (the transport's task group fails); a slow answer is not a failure."""
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(session.send_ping(), interval)


def _default_errlog() -> Any:
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return subprocess.DEVNULL
    return sys.stderr


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread, conns: dict[Any, _Connection]) -> None:
    """Close every connection, stop the loop and join its thread (also run at interpreter exit)."""
    if loop.is_closed():
        return
    if thread.is_alive():

        async def close_all() -> None:
            items = list(conns.values())
            conns.clear()
            await asyncio.gather(*(c.close(_CLOSE_GRACE) for c in items), return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), loop).result(_CLOSE_GRACE * 3)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_CLOSE_GRACE * 3)
    if not thread.is_alive():
        loop.close()


_CLOSE_GRACE = 10.0  # seconds a connection gets to close (stdio servers: 2 s, then SIGTERM, then SIGKILL)


class Client:
    """Connections to MCP servers, shared by sync and async callers.

    One daemon thread (``allm-mcp``) runs an event loop that owns every MCP session; sync
    methods wait on it and async methods (``a...``) await it from any event loop. A
    connection opens on first use of a server and is kept for later calls (equal
    :class:`Server` values share one; different headers never do). Use it as a context
    manager, or call :meth:`close` (:meth:`aclose`): that ends every session, stops stdio
    servers (stdin closed, then SIGTERM, then SIGKILL) and the thread. A client that is
    garbage-collected or still open at interpreter exit is closed then.

    - ``errlog``: where stdio servers' stderr goes (a file with a descriptor; default
      ``sys.stderr``, or nowhere when it has no descriptor).
    - ``ping_interval``: seconds between MCP pings while a call to a Streamable HTTP server
      is waiting, so a server that died mid-call is noticed (a stdio server's exit is seen at once).
    """

    def __init__(self, *, errlog: TextIO | None = None, ping_interval: float = 1.0) -> None:
        if isinstance(ping_interval, bool) or not isinstance(ping_interval, (int, float)) or not ping_interval > 0:
            raise ValueError("ping_interval must be a positive number of seconds")
        self._errlog = errlog if errlog is not None else _default_errlog()
        self._ping_interval = float(ping_interval)
        self._conns: dict[Any, _Connection] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="allm-mcp", daemon=True)
        self._closed = False
        self._lock = threading.Lock()
        self._thread.start()
        self._finalizer = weakref.finalize(self, _stop_loop, self._loop, self._thread, self._conns)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._conns)} connection(s)"
        return f"<allm.mcp.Client {state}>"

    # -- plumbing

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._closed:
                coro.close()
                raise MCPError("the MCP client is closed", reason="closed")
            return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync allm.mcp.Client method was called on the client's own loop; use the a... form")
        fut = self._submit(coro)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()
            raise

    async def _arun(self, coro: Coroutine[Any, Any, T]) -> T:
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is self._loop:
                return await coro
        return await asyncio.wrap_future(self._submit(coro))

    async def _connection(self, server: Server) -> _Connection:
        key = server._key()
        conn = self._conns.get(key)
        if conn is None or (conn.ready.done() and not conn.alive):
            if conn is not None:
                self._conns.pop(key, None)
                await conn.close(_CLOSE_GRACE)  # already ended, or ending: quick
            conn = _Connection(server, self._errlog)
            self._conns[key] = conn
        try:
            await asyncio.wait_for(asyncio.shield(conn.ready), server.connect_timeout)
        except TimeoutError:
            self._conns.pop(key, None)
            await conn.close(1.0)
            raise MCPError(
                f"the MCP server {server.label!r} did not finish the MCP handshake within {server.connect_timeout:g} s",
                reason="timeout",
                metadata={"server_label": server.label, "phase": "connect"},
            ) from None
        except MCPError:
            if self._conns.get(key) is conn:
                self._conns.pop(key, None)
            raise
        return conn

    async def _list(self, server: Server) -> tuple[ToolInfo, ...]:
        conn = await self._connection(server)
        assert conn.session is not None
        tools: list[mt.Tool] = []
        cursor: str | None = None
        try:
            while True:
                params = mt.PaginatedRequestParams(cursor=cursor) if cursor else None
                page = await asyncio.wait_for(conn.session.list_tools(params=params), server.connect_timeout)
                tools.extend(page.tools)
                cursor = page.nextCursor
                if not cursor:
                    break
        except TimeoutError:
            raise MCPError(
                f"the MCP server {server.label!r} did not list its tools within {server.connect_timeout:g} s",
                reason="timeout",
                metadata={"server_label": server.label, "phase": "tools/list"},
            ) from None
        except _SdkError as exc:
            raise self._sdk_error(exc, server, "tools/list") from None
        return tuple(_info(t, server) for t in tools if server.allows(t.name))

    @staticmethod
    def _sdk_error(exc: _SdkError, server: Server, what: str) -> MCPError:
        meta = {"server_label": server.label, "code": exc.error.code}
        if exc.error.code == mt.CONNECTION_CLOSED:
            return MCPError(
                f"the MCP server {server.label!r} went away during {what}", reason="connection_lost", metadata=meta
            )
        return cast(
            MCPError,
            scrub(
                MCPError(
                    f"the MCP server {server.label!r} refused {what}: {exc.error.message}",
                    reason="protocol_error",
                    metadata=meta,
                ),
                *server._secrets(),
            ),
        )

    async def _call(self, server: Server, name: str, arguments: Mapping[str, Any] | None) -> CallResult:
        meta = {"server_label": server.label, "tool_name": name}
        if not server.allows(name):
            raise MCPError(
                f"the tool {name!r} of the MCP server {server.label!r} is not in its allowed_tools",
                reason="tool_not_allowed",
                metadata=meta,
            )
        for attempt in (1, 2):
            conn = await self._connection(server)
            session = conn.session
            if session is None:  # lost between the handshake and now
                continue
            call = asyncio.ensure_future(session.call_tool(name, dict(arguments or {})))
            lost = asyncio.ensure_future(conn.lost.wait())
            # Over HTTP, the SDK does not report a response stream that broke (a server that
            # died mid-call); a failed ping does end the connection, so ping while waiting.
            beat = asyncio.ensure_future(_heartbeat(session, self._ping_interval)) if conn.server.url else None
            try:
                done, _ = await asyncio.wait({call, lost}, timeout=server.timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
                if beat is not None:
                    beat.cancel()
                if not call.done():
                    call.cancel()
                    with contextlib.suppress(BaseException):
                        await call
            if call in done:
                try:
                    res = call.result()
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    # The request was never handed to the transport: the connection had
                    # closed before it. Safe to send once more on a new connection.
                    conn.lost.set()
                    if attempt == 1:
                        continue
                    raise MCPError(
                        f"the MCP server {server.label!r} closed the connection", reason="connection_lost", metadata=meta
                    ) from None
                except _SdkError as exc:
                    if exc.error.code == mt.CONNECTION_CLOSED:
                        conn.lost.set()
                    raise self._sdk_error(exc, server, f"the call to {name}") from None
                except RuntimeError as exc:  # the SDK's check of structured content against outputSchema
                    raise MCPError(
                        f"the MCP server {server.label!r} returned an invalid result for {name}: {exc}",
                        reason="protocol_error",
                        metadata=meta,
                    ) from None
                return _result(res, server, name)
            if lost in done:
                raise MCPError(
                    f"the connection to the MCP server {server.label!r} was lost during the call to {name} "
                    "(the tool may or may not have run)",
                    reason="connection_lost",
                    metadata=meta,
                )
            raise MCPError(
                f"the call to {name} on the MCP server {server.label!r} did not finish within {server.timeout:g} s",
                reason="timeout",
                metadata={**meta, "timeout": server.timeout},
            )
        raise MCPError(  # pragma: no cover - the loop returns or raises
            f"the MCP server {server.label!r} closed the connection", reason="connection_lost", metadata=meta
        )

    def _tool(self, server: Server, info: ToolInfo) -> Tool:
        client = self
        exposed = info.qualified_name

        async def call_mcp_tool(args: dict[str, Any]) -> ToolOutput:
            try:
                result = await client.acall_tool(server, info.name, args)
            except MCPError as exc:
                raise _tool_error(exc, exposed) from exc
            if result.is_error:
                raise ToolError(
                    result.text or f"{info.name} reported an error",
                    reason="handler_raised",
                    metadata={"server_label": server.label, "tool_name": exposed, "is_error": True},
                )
            return ToolOutput(result)

        call_mcp_tool.__name__ = call_mcp_tool.__qualname__ = exposed
        try:
            return allm.tool(
                exposed,
                info.description,
                info.input_schema,
                handler=call_mcp_tool,
                manual=info.requires_approval,
                metadata={"mcp": {"server_label": server.label, "name": info.name}},
            )
        except AllmError as exc:
            raise MCPError(
                f"the MCP server {server.label!r} lists the tool {info.name!r} with a schema allm cannot offer: {exc.message}",
                reason="protocol_error",
                metadata={"server_label": server.label, "tool_name": info.name},
            ) from None

    async def _tools(self, servers: Sequence[Server]) -> list[Tool]:
        labels = [s.label for s in servers]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise MCPError(
                f"two MCP servers share the label {dup[0]!r}; labels name tools, so each must be unique",
                reason="invalid_server",
                metadata={"server_label": dup[0]},
            )
        listed = await asyncio.gather(*(self._list(s) for s in servers))
        return [self._tool(s, info) for s, infos in zip(servers, listed, strict=True) for info in infos]

    # -- public, sync

    def list_tools(self, server: Server) -> tuple[ToolInfo, ...]:
        """The tools ``server`` lists (all pages), after ``allowed_tools``; connects first if needed.

        Raises :class:`~allm.errors.MCPError`: ``server_unavailable``, ``authentication_failed``,
        ``timeout`` (``connect_timeout``), ``protocol_error``, ``closed``.
        """
        return self._run(self._list(server))

    def call_tool(self, server: Server, name: str, arguments: Mapping[str, Any] | None = None) -> CallResult:
        """Call the tool ``name`` (the server's name for it) with ``arguments``; at most
        ``server.timeout`` seconds.

        A result with ``isError`` is returned (``is_error=True``), not raised. Raises
        :class:`~allm.errors.MCPError`: ``tool_not_allowed``, ``connection_lost`` (the server
        went away during the call: not retried, as the tool may have run), ``timeout``,
        ``protocol_error``, and what :meth:`list_tools` raises when connecting. A connection
        found closed before the request was sent is opened again and the request sent once.
        """
        return self._run(self._call(server, name, arguments))

    def tools(self, *servers: Server) -> list[Tool]:
        """allm tools for every allowed tool of ``servers``: ``<label>__<tool>``, the
        server's description and input schema, ``manual=True`` where approval is required,
        ``metadata={"mcp": {"server_label": ..., "name": ...}}``, and an async handler that
        calls the server (see :class:`ToolOutput` for what it returns and the module docstring
        for errors). Lists each server now; raises what :meth:`list_tools` raises, and
        :class:`~allm.errors.MCPError` (``invalid_server``) for two servers with one label.
        """
        return self._run(self._tools(servers))

    def bind(self, stored: Any, *servers: Server, tools: Sequence[Tool] = ()) -> list[Tool]:
        """``tools`` and the tools of ``servers`` (as :meth:`tools`), checked against a stored
        conversation: pass the result as ``tools=`` to ``approve`` and ``continue_``.

        ``stored`` is a :class:`~allm.Session`, a :class:`~allm.types.Thread`, a
        :class:`~allm.types.ChatResult` or a sequence of messages. Every tool call it holds
        (pending calls included) whose name has the form ``<label>__<tool>`` and is not the
        name of one of ``tools`` (your own tools, which may have ``__`` in their names too)
        must name a label among ``servers``: else :class:`~allm.errors.MCPError`
        (``unknown_server``; ``metadata["server_labels"]`` lists the missing labels,
        ``metadata["tool_names"]`` the calls' names). Each pending call to an MCP tool must
        name a tool its server still offers: else ``unknown_tool``.
        """
        self._check_labels(stored, servers, tools)
        bound = [*tools, *self.tools(*servers)]
        _check_pending(stored, bound)
        return bound

    def disconnect(self, server: Server) -> None:
        """Close the connection to ``server`` if there is one (stops a stdio server)."""
        self._run(self._disconnect(server))

    def close(self) -> None:
        """Close every connection, stop stdio servers, stop the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()

    # -- public, async

    async def alist_tools(self, server: Server) -> tuple[ToolInfo, ...]:
        """The async twin of :meth:`list_tools`."""
        return await self._arun(self._list(server))

    async def acall_tool(self, server: Server, name: str, arguments: Mapping[str, Any] | None = None) -> CallResult:
        """The async twin of :meth:`call_tool`; cancelling it cancels the call."""
        return await self._arun(self._call(server, name, arguments))

    async def atools(self, *servers: Server) -> list[Tool]:
        """The async twin of :meth:`tools`."""
        return await self._arun(self._tools(servers))

    async def abind(self, stored: Any, *servers: Server, tools: Sequence[Tool] = ()) -> list[Tool]:
        """The async twin of :meth:`bind`."""
        self._check_labels(stored, servers, tools)
        bound = [*tools, *(await self.atools(*servers))]
        _check_pending(stored, bound)
        return bound

    async def adisconnect(self, server: Server) -> None:
        """The async twin of :meth:`disconnect`."""
        await self._arun(self._disconnect(server))

    async def aclose(self) -> None:
        """The async twin of :meth:`close` (the wait runs in a worker thread)."""
        await asyncio.to_thread(self.close)

    async def _disconnect(self, server: Server) -> None:
        conn = self._conns.pop(server._key(), None)
        if conn is not None:
            await conn.close(_CLOSE_GRACE)

    @staticmethod
    def _check_labels(stored: Any, servers: Sequence[Server], tools: Sequence[Tool]) -> None:
        given = {s.label for s in servers}
        own = {t.name for t in tools}
        missing: dict[str, list[str]] = {}
        for call in _calls(stored):
            parsed = parse_name(call.name)
            if parsed is not None and parsed[0] not in given and call.name not in own:
                missing.setdefault(parsed[0], []).append(call.name)
        if missing:
            labels = sorted(missing)
            raise MCPError(
                f"the stored conversation calls tools of the MCP server(s) {', '.join(map(repr, labels))}, "
                "which the servers given do not include",
                reason="unknown_server",
                metadata={
                    "server_label": labels[0],
                    "server_labels": labels,
                    "tool_names": sorted({n for v in missing.values() for n in v}),
                },
            )

    # -- context managers

    def __enter__(self) -> Client:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


def _messages(stored: Any) -> tuple[Any, ...]:
    thread = getattr(stored, "thread", stored)
    if isinstance(thread, Thread):
        return thread.messages
    if isinstance(thread, Iterable) and not isinstance(thread, (str, bytes, Mapping)):
        return tuple(thread)
    raise TypeError(f"expected a Session, Thread, ChatResult or messages, not {type(stored).__name__}")


def _pending(stored: Any) -> tuple[ToolCall, ...]:
    return tuple(getattr(stored, "pending_tool_calls", ()) or ())


def _calls(stored: Any) -> list[ToolCall]:
    calls = [c for m in _messages(stored) for c in getattr(m, "tool_calls", ())]
    return calls + list(_pending(stored))


def _check_pending(stored: Any, tools: Sequence[Tool]) -> None:
    offered = {t.name for t in tools}
    for call in _pending(stored):
        parsed = parse_name(call.name)
        if parsed is not None and call.name not in offered:
            raise MCPError(
                f"the pending call {call.id} names {call.name}, which the MCP server {parsed[0]!r} no longer offers "
                "(not listed, or left out by allowed_tools)",
                reason="unknown_tool",
                metadata={"server_label": parsed[0], "tool_name": call.name, "tool_call_id": call.id},
            )
