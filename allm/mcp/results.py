"""MCP tool results and listings as allm values: :class:`CallResult`, :class:`ToolOutput`,
:class:`ToolInfo` and the content blocks (``tools/call`` and ``tools/list`` of
https://modelcontextprotocol.io/specification/2025-11-25/server/tools)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import attrs
import orjson

from ..errors import MCPError
from ..types import Image, ImagePart, TextPart
from ._sdk import mt
from .config import Server
from .names import qualified_name

__all__ = ["Audio", "CallResult", "Content", "Resource", "ResourceLink", "ToolInfo", "ToolOutput"]


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


def result_from_sdk(res: mt.CallToolResult, server: Server, tool_name: str) -> CallResult:
    return CallResult(
        server.label,
        tool_name,
        tuple(_content(b, server, tool_name) for b in res.content),
        dict(res.structuredContent) if res.structuredContent is not None else None,
        bool(res.isError),
    )


def info_from_sdk(t: mt.Tool, server: Server) -> ToolInfo:
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
