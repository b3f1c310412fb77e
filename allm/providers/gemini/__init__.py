"""The Google Gemini API: ``generateContent`` and ``streamGenerateContent?alt=sse``.

Follows the Gemini API reference (https://ai.google.dev/api/generate-content). Modules,
one concern each: ``encode`` (request body), ``decode`` (SSE stream and whole body ->
events), ``errors`` (typed errors), ``images`` (image output), ``adapter`` (the
:class:`Gemini` value). ``guides/provider_gemini.md`` has the full mapping. Sans-IO.
"""

from __future__ import annotations

from .adapter import Gemini
from .decode import GeminiDecoder, decode_body, map_finish_reason, map_usage
from .encode import DEFAULT_BASE_URL, encode_body, encode_contents, encode_tool, encode_tool_choice, model_path
from .errors import error_from_body

__all__ = [
    "DEFAULT_BASE_URL",
    "Gemini",
    "GeminiDecoder",
    "decode_body",
    "encode_body",
    "encode_contents",
    "encode_tool",
    "encode_tool_choice",
    "error_from_body",
    "map_finish_reason",
    "map_usage",
    "model_path",
]
