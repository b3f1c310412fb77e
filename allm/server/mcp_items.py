"""The Open Responses ``mcp`` tool type, on :mod:`allm.mcp` (the ``mcp`` extra).

A request offers an MCP server's tools with::

    {"type": "mcp", "server_label": "weather", "server_url": "https://mcp.example/mcp",
     "headers": {"Authorization": "Bearer ..."}, "allowed_tools": ["get_weather"],
     "require_approval": "never"}

or names a server of the configuration (``[mcp.weather]``, see :func:`servers_from_config`)
by ``server_label`` alone. ``require_approval`` is ``"always"``, ``"never"`` (the default
here) or ``{"always": {"tool_names": [...]}, "never": {"tool_names": [...]}}``; a configured
server's own rule applies when the request gives none.

The server lists the tools (once per server and header set, kept ``LIST_TTL`` seconds), the
model sees each as ``<label>__<tool>`` and the tool loop calls them server-side. The
response's output then holds, in order (OpenAI's Responses API reference for the shapes):

- ``mcp_list_tools`` (``server_label``, ``tools``: ``name``, ``description``,
  ``input_schema``, ``annotations``), one per server, with the events
  ``response.mcp_list_tools.in_progress`` / ``.completed``;
- ``mcp_call`` (``server_label``, ``name``, ``arguments``, ``output``, ``error``, ``status``),
  with ``response.mcp_call.in_progress``, ``response.mcp_call_arguments.delta`` / ``.done``
  and ``response.mcp_call.completed`` (``.failed`` when the tool reported an error);
- ``mcp_approval_request`` (``id``, ``server_label``, ``name``, ``arguments``) for a tool that
  needs approval: the response ends there. The client continues with
  ``previous_response_id`` and an input item ``{"type": "mcp_approval_response",
  "approval_request_id": <id>, "approve": true|false}`` (and the ``mcp`` tool again); an
  approved call runs and the continuation's output starts with its ``mcp_call`` (with
  ``approval_request_id``); a refused one tells the model so.

``mcp_list_tools`` and ``mcp_call`` items sent back as input (a client that keeps the
conversation itself) become the calls and results they stand for.

Header values are secrets: the response object (returned and stored) shows each as
``"***"``, and they reach no log line, error or metric. A server that cannot be listed
answers HTTP 424 (``mcp_list_tools_failed``).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson

from ..errors import MCPError
from ..events import Event, ToolCallCompleted, ToolCallDelta, ToolCallStarted, ToolResultEncoded
from ..types import Thread, Tool
from .translate import ApiError, CreateParams, EventMapper, invalid, new_id

__all__ = ["LIST_TTL", "McpTools", "McpEventMapper", "servers_from_config"]

#: Seconds a server's tool list is reused before it is listed again.
LIST_TTL = 60.0
_MAX_LISTS = 1024
_APPROVAL_PREFIX = "mcpr_"
_SERVER_KEYS = {"url", "command", "headers", "env", "allowed_tools", "require_approval", "timeout"}


def servers_from_config(data: Any) -> dict[str, Any]:
    """``label -> allm.mcp.Server`` from the ``[mcp]`` table of a server config::

        [mcp.weather]
        url = "http://127.0.0.1:9000/mcp"            # Streamable HTTP, or:
        # command = ["python", "weather_server.py"]  # stdio
        headers = {Authorization = "Bearer ..."}    # sent to the server, never shown
        allowed_tools = ["get_weather"]
        require_approval = "never"
        timeout = 30

    Raises ``ValueError`` naming the bad key (``mcp.weather.url``).
    """
    from ..mcp import Server

    if not isinstance(data, Mapping):
        raise ValueError("mcp: must be a table of servers ([mcp.<label>])")
    out: dict[str, Any] = {}
    for label, spec in data.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"mcp.{label}: must be a table")
        unknown = set(spec) - _SERVER_KEYS
        if unknown:
            raise ValueError(f"mcp.{label}.{sorted(unknown)[0]}: unknown key (known: {', '.join(sorted(_SERVER_KEYS))})")
        kw = {k: v for k, v in spec.items() if k in ("headers", "env", "allowed_tools", "require_approval", "timeout")}
        try:
            if "url" in spec:
                out[label] = Server(label, url=spec["url"], **kw)
            elif "command" in spec:
                cmd = spec["command"]
                out[label] = Server(label, command=tuple(cmd) if isinstance(cmd, list) else cmd, **kw)
            else:
                raise ValueError(f"mcp.{label}: give url (Streamable HTTP) or command (stdio)")
        except MCPError as exc:
            raise ValueError(f"mcp.{label}: {exc.message}") from None
    return out


def _redacted(tool: Mapping[str, Any]) -> dict[str, Any]:
    d = dict(tool)
    if isinstance(d.get("headers"), Mapping):
        d["headers"] = {str(k): "***" for k in d["headers"]}
    return d


def _approval(rule: Any, where: str) -> Any:
    if rule is None or rule in ("always", "never"):
        return rule
    if isinstance(rule, Mapping) and rule and not set(rule) - {"always", "never"}:
        return rule
    raise invalid(f"{where}.require_approval must be 'always', 'never' or {{always: {{tool_names}}, never: {{tool_names}}}}",
                  f"{where}.require_approval")


class McpTools:
    """The ``mcp`` tool type for one app: servers from the configuration (``label -> Server``),
    one :class:`allm.mcp.Client` (started on first use, closed by :meth:`aclose`), the tool
    lists and the approved calls waiting for their response."""

    def __init__(self, servers: Mapping[str, Any] | None = None) -> None:
        self.servers = dict(servers or {})
        self._client: Any = None
        self._lists: dict[Any, tuple[float, tuple[Any, ...]]] = {}
        self._approved: dict[int, list[dict[str, Any]]] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            from ..mcp import Client

            self._client = Client()
        return self._client

    async def aclose(self, app: Any = None) -> None:
        """Close the MCP connections (an ``on_shutdown`` hook)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- the request's servers

    def server(self, tool: Mapping[str, Any], where: str = "tools[]") -> Any:
        """The :class:`allm.mcp.Server` an ``mcp`` tool object names; :class:`ApiError` 400 when it is wrong."""
        from ..mcp import Server

        label = tool.get("server_label")
        if not isinstance(label, str) or not label:
            raise invalid(f"{where}.server_label is required (a string)", f"{where}.server_label")
        url = tool.get("server_url")
        rule = _approval(tool.get("require_approval"), where)
        allowed = tool.get("allowed_tools")
        if isinstance(allowed, Mapping):
            allowed = allowed.get("tool_names")
        if allowed is not None and (not isinstance(allowed, list) or not all(isinstance(n, str) for n in allowed)):
            raise invalid(f"{where}.allowed_tools must be a list of tool names", f"{where}.allowed_tools")
        headers = tool.get("headers")
        if headers is not None and (not isinstance(headers, Mapping)
                                    or not all(isinstance(v, str) for v in headers.values())):
            raise invalid(f"{where}.headers must be an object of strings", f"{where}.headers")
        try:
            if url is None:
                base = self.servers.get(label)
                if base is None:
                    raise invalid(f"{where}: no server_url, and no configured MCP server is labelled {label!r}",
                                  f"{where}.server_url")
                changes: dict[str, Any] = {}
                if rule is not None:
                    changes["require_approval"] = rule
                if allowed is not None:
                    changes["allowed_tools"] = tuple(allowed)
                return attrs.evolve(base, **changes) if changes else base
            if not isinstance(url, str):
                raise invalid(f"{where}.server_url must be a URL", f"{where}.server_url")
            return Server.http(label, url, headers=dict(headers) if headers else None,
                               allowed_tools=allowed, require_approval=rule or "never")
        except MCPError as exc:
            raise invalid(f"{where}: {exc.message}", where, "invalid_tool") from None

    async def _listed(self, server: Any) -> tuple[Any, ...]:
        key = (server._key(), server.allowed_tools, repr(server.require_approval))
        hit = self._lists.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < LIST_TTL:
            return hit[1]
        try:
            infos = await self.client.alist_tools(server)
        except MCPError as exc:
            raise ApiError(424, "server_error", f"Error retrieving tool list from MCP server {server.label!r}: {exc.reason}",
                           code="mcp_list_tools_failed", param="tools") from None
        if len(self._lists) >= _MAX_LISTS:  # one entry per server and header set: drop the stale ones
            for k in [k for k, (t, _) in self._lists.items() if now - t >= LIST_TTL] or list(self._lists)[: _MAX_LISTS // 2]:
                self._lists.pop(k, None)
        self._lists[key] = (now, tuple(infos))
        return tuple(infos)

    def translate(self, tool: Mapping[str, Any]) -> list[Tool]:
        """The allm tools of one ``mcp`` tool object (the ``tool_types["mcp"]`` translator).

        Runs on the server's event loop thread, so the listing it needs is taken from the
        list :meth:`prepare` made for this request (listed there without blocking)."""
        server = self.server(tool)
        key = (server._key(), server.allowed_tools, repr(server.require_approval))
        hit = self._lists.get(key)
        if hit is None:  # not prepared (a caller of the service without prepare): list now
            infos = self.client.list_tools(server)
            self._lists[key] = (time.monotonic(), tuple(infos))
        else:
            infos = hit[1]
        return [self.client._tool(server, info) for info in infos]

    def _servers(self, params: CreateParams) -> list[Any]:
        return [self.server(t, f"tools[{i}]") for i, t in enumerate(params.tools) if t.get("type") == "mcp"]

    # -- input: approvals and echoed items

    async def prepare(self, params: CreateParams, items: list[dict[str, Any]], core: Thread) -> list[dict[str, Any]]:
        """List the request's MCP servers (concurrently, on the client's loop), run the calls
        approved by ``mcp_approval_response`` items, and turn MCP items into the calls and
        results they stand for. Raises :class:`ApiError` (400 for an unknown approval request,
        424 for a server that cannot be listed)."""
        servers = self._servers(params)
        if not servers and not any(str(it.get("type", "")).startswith("mcp_") for it in items):
            return items
        listed = await asyncio.gather(*(self._listed(s) for s in servers))
        by_label = {s.label: (s, infos) for s, infos in zip(servers, listed, strict=True)}
        pending = {c.id: c for m in core.messages for c in m.tool_calls}
        answered = {m.tool_call_id for m in core.messages if m.tool_call_id}
        out: list[dict[str, Any]] = []
        made: list[dict[str, Any]] = []
        for i, it in enumerate(items):
            t = it.get("type")
            if t == "mcp_list_tools":
                continue
            if t == "mcp_call":
                call_id = str(it.get("id"))
                name = f"{it.get('server_label')}__{it.get('name')}"
                out.append({"type": "function_call", "call_id": call_id, "name": name,
                            "arguments": it.get("arguments") or "{}", "id": new_id("fc")})
                result = it.get("output") if it.get("error") is None else f"error: {it.get('error')}"
                out.append({"type": "function_call_output", "call_id": call_id, "output": str(result or ""),
                            "id": new_id("fco")})
                continue
            if t == "mcp_approval_request":
                call_id = str(it.get("id", ""))[len(_APPROVAL_PREFIX):]
                out.append({"type": "function_call", "call_id": call_id, "id": new_id("fc"),
                            "name": f"{it.get('server_label')}__{it.get('name')}", "arguments": it.get("arguments") or "{}"})
                pending.setdefault(call_id, None)  # type: ignore[arg-type]
                continue
            if t != "mcp_approval_response":
                out.append(it)
                continue
            rid = it.get("approval_request_id")
            if not isinstance(rid, str) or not rid.startswith(_APPROVAL_PREFIX):
                raise invalid(f"input[{i}].approval_request_id must name an mcp_approval_request",
                              f"input[{i}].approval_request_id")
            call_id = rid[len(_APPROVAL_PREFIX):]
            call = pending.get(call_id)
            if call_id not in pending or call_id in answered:
                raise invalid(f"input[{i}]: no pending mcp_approval_request {rid!r}", f"input[{i}].approval_request_id")
            if call is None:  # the request came as an input item just before
                echoed = next((c for c in _calls_in(out) if c["call_id"] == call_id), None)
                name, arguments = (str(echoed["name"]), str(echoed["arguments"])) if echoed else ("", "{}")
            else:
                name, arguments = call.name, call.raw_arguments
            label, _, tool_name = name.partition("__")
            item = {"type": "mcp_call", "id": new_id("mcp"), "server_label": label, "name": tool_name,
                    "arguments": arguments, "output": None, "error": None, "status": "completed",
                    "approval_request_id": rid}
            if it.get("approve") is True:
                found = by_label.get(label)
                if found is None:
                    raise invalid(f"input[{i}]: the approved call needs the mcp tool {label!r} in tools",
                                  f"input[{i}].approval_request_id")
                output, error = await self._call(found[0], found[1], tool_name, arguments)
                item.update(output=output, error=error, status="failed" if error is not None else "completed")
                content = output if error is None else f"error: {error}"
            else:
                reason = it.get("reason")
                item.update(error="the user did not approve this call", status="failed")
                content = "The user did not approve this call" + (f": {reason}" if isinstance(reason, str) else ".")
            made.append(item)
            answered.add(call_id)
            out.append({"type": "function_call_output", "call_id": call_id, "output": content, "id": new_id("fco")})
        if made:
            self._approved[id(params)] = made
            weakref.finalize(params, self._approved.pop, id(params), None)
        return out

    async def _call(self, server: Any, infos: Sequence[Any], tool_name: str, arguments: str) -> tuple[str | None, str | None]:
        known = {info.qualified_name.partition("__")[2]: info.name for info in infos}
        name = known.get(tool_name, tool_name)
        try:
            args = orjson.loads(arguments or "{}")
            result = await self.client.acall_tool(server, name, args)
        except orjson.JSONDecodeError:
            return None, "the call's arguments are not JSON"
        except MCPError as exc:
            return None, f"{exc.reason}: {exc.message}"
        if result.is_error:
            return None, result.text or "the tool reported an error"
        return str(result.text), None

    # -- output

    def mapper(self, params: CreateParams, response_id: str, created_at: int,
               rewrite: Sequence[Any] = ()) -> EventMapper:
        """The event mapper of one response (the service's ``mapper_factory``): an
        :class:`McpEventMapper` when the request has ``mcp`` tools or approvals, else the plain one."""
        approved = self._approved.pop(id(params), [])
        servers = [(t, self.server(t)) for t in params.tools if t.get("type") == "mcp"]
        if not servers and not approved:
            return EventMapper(params, response_id, created_at, rewrite)
        shown = attrs.evolve(params, tools=tuple(_redacted(t) if t.get("type") == "mcp" else t for t in params.tools))
        lists = []
        for _, server in servers:
            hit = self._lists.get((server._key(), server.allowed_tools, repr(server.require_approval)))
            lists.append((server, hit[1] if hit else ()))
        return McpEventMapper(shown, response_id, created_at, lists, approved, rewrite)


def _calls_in(items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [it for it in items if it.get("type") == "function_call"]


class McpEventMapper(EventMapper):
    """:class:`~allm.server.translate.EventMapper` with MCP items: the listed servers'
    ``mcp_list_tools`` and the approved calls' ``mcp_call`` first, then ``mcp_call`` or
    ``mcp_approval_request`` for each call of an MCP tool (see the module docstring)."""

    def __init__(self, params: CreateParams, response_id: str, created_at: int,
                 lists: Sequence[tuple[Any, Sequence[Any]]], approved: Sequence[dict[str, Any]] = (),
                 rewrite: Sequence[Any] = ()) -> None:
        super().__init__(params, response_id, created_at, rewrite)
        self._lists = list(lists)
        self._approved_items = [dict(x) for x in approved]
        # qualified name -> (label, tool name, needs approval)
        self._mcp: dict[str, tuple[str, str, bool]] = {
            info.qualified_name: (server.label, info.name, bool(info.requires_approval))
            for server, infos in lists for info in infos
        }
        self._open_mcp: dict[str, int] = {}  # tool_call_id -> output index
        self._finishing = False

    def start(self, status: str = "in_progress") -> list[dict[str, Any]]:
        out = super().start(status)
        for server, infos in self._lists:
            tools = [{"name": i.name, "description": i.description or None, "input_schema": dict(i.input_schema),
                      "annotations": dict(i.annotations) if getattr(i, "annotations", None) else None} for i in infos]
            item = {"type": "mcp_list_tools", "id": new_id("mcpl"), "server_label": server.label, "tools": []}
            idx, added = self._add_item(item)
            out += [added, self._ev("response.mcp_list_tools.in_progress", item_id=item["id"], output_index=idx)]
            item["tools"] = tools
            out += [self._ev("response.mcp_list_tools.completed", item_id=item["id"], output_index=idx),
                    self._ev("response.output_item.done", output_index=idx, item=dict(item))]
        for done in self._approved_items:
            item = {**done, "status": "in_progress", "output": None, "error": None}
            idx, added = self._add_item(item)
            out += [added, self._ev("response.mcp_call.in_progress", item_id=item["id"], output_index=idx)]
            item.update(done)
            end = "response.mcp_call.failed" if done["status"] == "failed" else "response.mcp_call.completed"
            out += [self._ev(end, item_id=item["id"], output_index=idx),
                    self._ev("response.output_item.done", output_index=idx, item=dict(item))]
        return out

    def _open_mcp_call(self, call_id: str, name: str) -> list[dict[str, Any]]:
        label, tool, approval = self._mcp[name]
        if approval:
            request: dict[str, Any] = {"type": "mcp_approval_request", "id": _APPROVAL_PREFIX + call_id, "server_label": label,
                    "name": tool, "arguments": ""}
            idx, added = self._add_item(request)
            self._open_mcp[call_id] = idx
            return [added]
        item: dict[str, Any] = {"type": "mcp_call", "id": new_id("mcp"), "server_label": label, "name": tool, "arguments": "",
                "output": None, "error": None, "status": "in_progress"}
        idx, added = self._add_item(item)
        self._open_mcp[call_id] = idx
        return [added, self._ev("response.mcp_call.in_progress", item_id=item["id"], output_index=idx)]

    def feed(self, ev: Event) -> list[dict[str, Any]]:
        t = type(ev)
        if t is ToolCallStarted:
            assert isinstance(ev, ToolCallStarted)
            if ev.name in self._mcp:
                return [] if ev.tool_call_id in self._open_mcp else self._open_mcp_call(ev.tool_call_id, ev.name)
        elif t is ToolCallDelta:
            assert isinstance(ev, ToolCallDelta)
            idx = self._open_mcp.get(ev.tool_call_id)
            if idx is not None:
                item = self.output[idx]
                item["arguments"] += ev.arguments_delta
                if item["type"] != "mcp_call":
                    return []
                return [self._ev("response.mcp_call_arguments.delta", item_id=item["id"], output_index=idx,
                                 delta=ev.arguments_delta)]
        elif t is ToolCallCompleted:
            assert isinstance(ev, ToolCallCompleted)
            tc = ev.tool_call
            if tc.name in self._mcp:
                out = [] if tc.id in self._open_mcp else self._open_mcp_call(tc.id, tc.name)
                idx = self._open_mcp[tc.id]
                item = self.output[idx]
                item["arguments"] = tc.raw_arguments
                if item["type"] == "mcp_approval_request":
                    del self._open_mcp[tc.id]
                    return [*out, self._ev("response.output_item.done", output_index=idx, item=dict(item))]
                return [*out, self._ev("response.mcp_call_arguments.done", item_id=item["id"], output_index=idx,
                                       arguments=tc.raw_arguments)]
        elif t is ToolResultEncoded:
            assert isinstance(ev, ToolResultEncoded)
            idx = self._open_mcp.pop(ev.tool_call_id, None)
            if idx is not None:
                item = self.output[idx]
                if ev.is_error:
                    item.update(error=ev.content, status="failed")
                else:
                    item.update(output=ev.content, status="completed")
                end = "response.mcp_call.failed" if ev.is_error else "response.mcp_call.completed"
                return [self._ev(end, item_id=item["id"], output_index=idx),
                        self._ev("response.output_item.done", output_index=idx, item=dict(item))]
        return super().feed(ev)

    def finish(self, status: str | None = None, reason: str | None = None, *, now: int) -> list[dict[str, Any]]:
        self._finishing = True
        return super().finish(status, reason, now=now)

    def close_open(self) -> list[dict[str, Any]]:
        out = super().close_open()
        if not self._finishing:  # a message's end: its MCP calls run next
            return out
        for _, idx in list(self._open_mcp.items()):
            item = self.output[idx]
            if item["type"] == "mcp_call":
                item["status"] = "incomplete"
            out.append(self._ev("response.output_item.done", output_index=idx, item=dict(item)))
        self._open_mcp.clear()
        return out
