"""MCP tool names as the model sees them: ``<label>__<tool>``."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ..errors import MCPError

__all__ = ["parse_name", "qualified_name"]

_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_))*$")
_LABEL_MAX = 24
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_NAME_MAX = 64  # the function-name limit OpenAI, Anthropic and Gemini share


def check_label(label: Any) -> str:
    """``label`` if it is a valid server label, else :class:`~allm.errors.MCPError` (``invalid_server``)."""
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
    base = f"{check_label(server_label)}__"
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
