"""History files of conversations: the files of :mod:`allm.formats`, in any of its formats.

A file is gzip-compressed JSON with a format name and version (see
:func:`allm.formats.export_history`)::

    {"format": "anthropic", "version": 1, "payload": {"system": [...], "messages": [...]},
     "export_warnings": [{"kind": ..., "path": ..., "message": ...}]}

``format`` is one of :data:`allm.formats.FORMATS` (``allm``, the lossless one, by default;
``openai_chat``, ``openai_responses``, ``anthropic``, ``gemini``). Reading also takes a bare
provider-shaped JSON file (a recorded request body) given its format, and files of the
earlier ``allm.history`` layout. What a format cannot hold is reported as
:class:`~allm.formats.FormatWarning` values (in the result and in the file), never dropped
silently. Files are written atomically (a temporary file renamed over the target).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import attrs

from .. import Message, Thread
from ..formats import FormatWarning, export_history

__all__ = ["HistoryInfo", "write_history"]


@attrs.frozen
class HistoryInfo:
    """What an export or import did: the file ``path``, its ``size_bytes`` (compressed, as
    on disk), the ``message_count``, the ``conversation_id``, the file's ``format`` and the
    ``warnings`` (:class:`~allm.formats.FormatWarning`: what the format could not keep, on
    export; on import, those recorded at export followed by those of the import)."""

    path: str
    size_bytes: int
    message_count: int
    conversation_id: str
    format: str = "allm"
    warnings: tuple[FormatWarning, ...] = ()


def write_history(
    path: str | os.PathLike[str],
    conversation_id: str,
    messages: Sequence[Message],
    format: str = "allm",
    *,
    strict: bool = False,
) -> HistoryInfo:
    """Write ``messages`` to ``path`` as a history file in ``format`` (atomically).

    Raises ``OSError`` when the file cannot be written, and
    :class:`~allm.formats.FormatError`: ``unknown_format``; ``unrepresentable`` when
    ``strict`` and the format cannot keep everything (nothing is written);
    ``invalid_payload`` for metadata JSON cannot hold.
    """
    info = export_history(Thread(tuple(messages)), path, format, strict=strict)
    return HistoryInfo(os.fspath(path), info.bytes_written, info.message_count, conversation_id, format, info.warnings)
