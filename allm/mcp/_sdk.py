"""The ``mcp`` SDK names allm.mcp uses, imported in one place with a clear error when missing."""

from __future__ import annotations

try:
    import anyio
    import mcp.types as mt
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
    from mcp.shared.exceptions import McpError as SdkError
except ImportError as exc:
    from importlib.metadata import PackageNotFoundError, version

    try:
        _found = f" (found mcp {version('mcp')}; the 2.x line renamed these APIs)"
    except PackageNotFoundError:
        _found = ""
    raise ImportError(f"allm.mcp needs the mcp package, 1.24 or a later 1.x: pip install 'allm[mcp]'{_found}") from exc

__all__ = [
    "ClientSession",
    "SdkError",
    "StdioServerParameters",
    "anyio",
    "create_mcp_http_client",
    "mt",
    "stdio_client",
    "streamable_http_client",
]
