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

from .client import Client
from .config import ApprovalRule, Server
from .names import parse_name, qualified_name
from .results import Audio, CallResult, Content, Resource, ResourceLink, ToolInfo, ToolOutput

__all__ = [
    "ApprovalRule",
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
