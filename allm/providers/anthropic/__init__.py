"""The Anthropic Messages API (``POST /v1/messages``), and servers that speak it.

Follows the Messages API reference (https://docs.anthropic.com/en/api/messages) and
the streaming guide (https://docs.anthropic.com/en/docs/build-with-claude/streaming).
Modules, one concern each: ``encode`` (request body), ``decode`` (SSE stream and whole
body -> events), ``errors`` (typed errors), ``adapter`` (the :class:`Anthropic` value).
``guides/provider_anthropic.md`` has the full mapping. Sans-IO.
"""

from __future__ import annotations

from .adapter import Anthropic
from .decode import MessagesDecoder, decode_body, map_stop_reason, map_usage
from .encode import (
    ANTHROPIC_BASE_URL,
    ANTHROPIC_VERSION,
    DEFAULT_MAX_TOKENS,
    IMAGE_MEDIA_TYPES,
    encode_messages,
    encode_tool,
    encode_tool_choice,
    wire_tool_id,
)
from .errors import error_from_body, stream_error

__all__ = [
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "IMAGE_MEDIA_TYPES",
    "Anthropic",
    "MessagesDecoder",
    "decode_body",
    "encode_messages",
    "encode_tool",
    "encode_tool_choice",
    "error_from_body",
    "map_stop_reason",
    "map_usage",
    "stream_error",
    "wire_tool_id",
]
